//! The per-process key cache (bindings of `crate::keycache`).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::NativeError;
use crate::keycache::{KeyCache, Owner, HASH_LEN};
use crate::keys::{self, KeyHasher};

/// Bounded cache: HMAC(pepper, key) -> resolved key object.
#[pyclass(frozen, module = "core_api._native", name = "KeyCache")]
struct PyKeyCache {
    hasher: KeyHasher,
    cache: KeyCache<Py<PyAny>>,
}

#[pymethods]
impl PyKeyCache {
    #[new]
    #[pyo3(signature = (pepper, capacity = 100_000))]
    fn new(pepper: &[u8], capacity: i64) -> Result<Self, NativeError> {
        let capacity = usize::try_from(capacity)
            .ok()
            .filter(|&c| c >= 1)
            .ok_or_else(|| NativeError::invalid("capacity must be >= 1"))?;
        Ok(Self {
            hasher: KeyHasher::new(pepper),
            cache: KeyCache::new(capacity),
        })
    }

    /// (hash, cached value or None); (b"", None) for a malformed key.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        generation: u64,
        now_ms: i64,
    ) -> (Bound<'py, PyBytes>, Option<Py<PyAny>>) {
        if !keys::is_well_formed(key) {
            return (PyBytes::new(py, b""), None);
        }
        let hash = self.hasher.hash(key);
        let cleared = self.cache.sync_generation(generation);
        let value = self.cache.get_with(&hash, now_ms, |v| v.clone_ref(py));
        drop(cleared); // Python objects are released outside the lock
        (PyBytes::new(py, &hash), value)
    }

    #[pyo3(signature = (key_hash, key_id, value, generation = None, *, user_id = 0, workspace_id = 0))]
    fn insert(
        &self,
        key_hash: &[u8],
        key_id: i64,
        value: Py<PyAny>,
        generation: Option<u64>,
        user_id: i64,
        workspace_id: i64,
    ) -> Result<(), NativeError> {
        let hash: [u8; HASH_LEN] = key_hash.try_into().map_err(|_| {
            NativeError::invalid(format!(
                "key_hash must be {HASH_LEN} bytes, got {}",
                key_hash.len()
            ))
        })?;
        let owner = Owner {
            user_id,
            workspace_id,
        };
        drop(
            self.cache
                .insert_owned(hash, key_id, owner, value, generation),
        );
        Ok(())
    }

    /// Drop the entry of key `key_id`; whether there was one.
    fn evict_key(&self, key_id: i64) -> bool {
        self.cache.remove_by_id(key_id).is_some()
    }

    /// Drop the entries of keys homed in workspace `workspace_id`; how many.
    fn evict_workspace(&self, workspace_id: i64) -> usize {
        self.cache.remove_by_workspace(workspace_id).len()
    }

    /// Drop the entries of keys of user `user_id`; how many.
    fn evict_user(&self, user_id: i64) -> usize {
        self.cache.remove_by_user(user_id).len()
    }

    /// Drop every entry (their unflushed usage is kept); how many.
    fn clear(&self) -> usize {
        self.cache.clear().len()
    }

    /// Entries cached now.
    fn __len__(&self) -> usize {
        self.cache.len()
    }

    /// `(hits, misses)` of lookups of well-formed keys so far.
    fn stats(&self) -> (u64, u64) {
        self.cache.stats()
    }

    /// Record a use resolved from the database (a cache miss) for the next drain.
    fn note_use(&self, key_id: i64, at_ms: i64) {
        self.cache.note_use(key_id, at_ms);
    }

    /// `(key_id, last_used_ms)` of the entries used since the last drain.
    fn drain_last_used(&self) -> Vec<(i64, i64)> {
        self.cache.drain_dirty()
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyKeyCache>()
}
