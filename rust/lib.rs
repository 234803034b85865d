//! `core_api._native`: the Rust hot paths of core-api.
//!
//! The pure modules (`keys`, `keycache`, `shm`, `ratelimit`) do not use pyo3
//! and are tested with `cargo test --no-default-features`. The `python`
//! feature (on by default, used by maturin) adds the thin PyO3 bindings below:
//! argument checks, error mapping (invalid arguments -> ValueError, I/O ->
//! OSError) and nothing else.

pub mod keycache;
pub mod keys;
pub mod ratelimit;
pub mod shm;

#[cfg(feature = "python")]
mod python {
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;

    use crate::keycache::{KeyCache, HASH_LEN};
    use crate::keys::{self, KeyHasher};
    use crate::ratelimit::InvalidParam;
    use crate::shm::{SharedRegion, MAX_SLOTS};

    fn invalid(e: InvalidParam) -> PyErr {
        PyValueError::new_err(e.0)
    }

    fn non_negative(name: &str, v: i64) -> PyResult<u64> {
        u64::try_from(v).map_err(|_| PyValueError::new_err(format!("{name} must be >= 0")))
    }

    /// A new random API key: `sk_live_` + 32 base62 + 6 base62 CRC32.
    #[pyfunction]
    fn generate_key() -> String {
        keys::generate_key()
    }

    /// True if `key` has the right prefix, length, charset and checksum.
    #[pyfunction]
    fn is_well_formed(key: &str) -> bool {
        keys::is_well_formed(key)
    }

    /// HMAC-SHA256(pepper, key).
    #[pyfunction]
    fn hash_key<'py>(py: Python<'py>, pepper: &[u8], key: &str) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &keys::hash_key(pepper, key))
    }

    /// The displayable prefix (first 11 characters).
    #[pyfunction]
    fn key_prefix(key: &str) -> &str {
        keys::prefix(key)
    }

    /// Constant-time comparison of two byte strings.
    #[pyfunction]
    fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        keys::ct_eq(a, b)
    }

    /// Host-wide shared memory: invalidation generation + rate-limit buckets.
    #[pyclass(frozen, module = "core_api._native")]
    struct SharedState {
        region: SharedRegion,
    }

    #[pymethods]
    impl SharedState {
        #[new]
        #[pyo3(signature = (path, rate_slots = 65536))]
        fn new(path: std::path::PathBuf, rate_slots: i64) -> PyResult<Self> {
            let slots = u32::try_from(rate_slots)
                .ok()
                .filter(|&s| (1..=MAX_SLOTS).contains(&s))
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "rate_slots must be between 1 and {MAX_SLOTS}, got {rate_slots}"
                    ))
                })?;
            Ok(Self {
                region: SharedRegion::open_or_create(path, slots)?,
            })
        }

        fn generation(&self) -> u64 {
            self.region.generation()
        }

        fn bump_generation(&self) -> u64 {
            self.region.bump_generation()
        }

        fn rate_check(
            &self,
            bucket_key: &[u8],
            capacity: f64,
            refill_per_sec: f64,
            cost: f64,
            now_ns: i64,
        ) -> PyResult<(bool, f64, f64, f64)> {
            let now = non_negative("now_ns", now_ns)?;
            let d = self
                .region
                .buckets()
                .check(bucket_key, capacity, refill_per_sec, cost, now)
                .map_err(invalid)?;
            Ok((d.allowed, d.remaining, d.retry_after_s, d.reset_after_s))
        }

        fn rate_peek(
            &self,
            bucket_key: &[u8],
            capacity: f64,
            refill_per_sec: f64,
            now_ns: i64,
        ) -> PyResult<f64> {
            let now = non_negative("now_ns", now_ns)?;
            self.region
                .buckets()
                .peek(bucket_key, capacity, refill_per_sec, now)
                .map_err(invalid)
        }

        fn rate_set(&self, bucket_key: &[u8], tokens: f64, now_ns: i64) -> PyResult<()> {
            let now = non_negative("now_ns", now_ns)?;
            self.region
                .buckets()
                .set_tokens(bucket_key, tokens, now)
                .map_err(invalid)
        }

        #[getter]
        fn path(&self) -> std::path::PathBuf {
            self.region.path().to_path_buf()
        }

        #[getter]
        fn rate_slots(&self) -> u32 {
            self.region.slot_count()
        }
    }

    /// Bounded cache: HMAC(pepper, key) -> resolved key object.
    #[pyclass(frozen, module = "core_api._native", name = "KeyCache")]
    struct PyKeyCache {
        hasher: KeyHasher,
        cache: KeyCache<Py<PyAny>>,
    }

    fn to_hash(key_hash: &[u8]) -> PyResult<[u8; HASH_LEN]> {
        key_hash.try_into().map_err(|_| {
            PyValueError::new_err(format!(
                "key_hash must be {HASH_LEN} bytes, got {}",
                key_hash.len()
            ))
        })
    }

    #[pymethods]
    impl PyKeyCache {
        #[new]
        #[pyo3(signature = (pepper, capacity = 100_000))]
        fn new(pepper: &[u8], capacity: i64) -> PyResult<Self> {
            let capacity = usize::try_from(capacity)
                .ok()
                .filter(|&c| c >= 1)
                .ok_or_else(|| PyValueError::new_err("capacity must be >= 1"))?;
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

        #[pyo3(signature = (key_hash, key_id, value, generation = None))]
        fn insert(
            &self,
            key_hash: &[u8],
            key_id: i64,
            value: Py<PyAny>,
            generation: Option<u64>,
        ) -> PyResult<()> {
            let hash = to_hash(key_hash)?;
            drop(self.cache.insert(hash, key_id, value, generation));
            Ok(())
        }

        fn remove_key_id(&self, key_id: i64) {
            drop(self.cache.remove_by_id(key_id));
        }

        fn clear(&self) {
            drop(self.cache.clear());
        }

        fn drain_last_used(&self) -> Vec<(i64, i64)> {
            self.cache.drain_dirty()
        }

        #[getter]
        fn capacity(&self) -> usize {
            self.cache.capacity()
        }

        fn __len__(&self) -> usize {
            self.cache.len()
        }
    }

    #[pymodule]
    fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(generate_key, m)?)?;
        m.add_function(wrap_pyfunction!(is_well_formed, m)?)?;
        m.add_function(wrap_pyfunction!(hash_key, m)?)?;
        m.add_function(wrap_pyfunction!(key_prefix, m)?)?;
        m.add_function(wrap_pyfunction!(constant_time_eq, m)?)?;
        m.add_class::<SharedState>()?;
        m.add_class::<PyKeyCache>()?;
        m.add("KEY_LENGTH", keys::KEY_LEN)?;
        m.add("KEY_PREFIX", keys::KEY_PREFIX)?;
        Ok(())
    }
}
