//! `core_api._native`: the Rust hot paths of core-api.
//!
//! The pure modules (`keys`, `keycache`, `shm`, `ratelimit`) do not use pyo3
//! and are tested with `cargo test --no-default-features`. The `python`
//! feature (on by default, used by maturin) adds the thin PyO3 bindings below:
//! argument checks, error mapping (invalid arguments -> ValueError, I/O ->
//! OSError) and nothing else. The one exception is `SharedState.rate_take`,
//! the per-request limiter check, which is a plain CPython `METH_FASTCALL`
//! method (see `fast`): the generic PyO3 call path costs about as much as the
//! token bucket itself.

pub mod keycache;
pub mod keys;
pub mod ratelimit;
pub mod shm;

#[cfg(feature = "python")]
mod python {
    use std::sync::atomic::{AtomicPtr, Ordering};

    use pyo3::exceptions::PyValueError;
    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::{PyBool, PyBytes, PyFloat, PyTuple};

    use crate::keycache::{KeyCache, HASH_LEN};
    use crate::keys::{self, KeyHasher};
    use crate::ratelimit::{Decision, InvalidParam, Rate};
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
        /// `0.0`, the retry-after of every admitted request (no allocation).
        zero: Py<PyFloat>,
        /// The last decision tuple, refilled in place when nobody holds it.
        result: ReusedTuple,
    }

    /// A 4-tuple that is reused for the next result once its previous user
    /// has dropped it (the trick CPython's `zip`, `enumerate` and dict
    /// iterators use): a limiter check is typically unpacked at once, so the
    /// tuple allocation and its deallocation are skipped.
    ///
    /// Reuse happens only when this cache holds the sole reference: nobody
    /// else can observe the tuple change. Exclusive access relies on the GIL:
    /// the module is built for the stable ABI, which free-threaded CPython
    /// cannot load, and it keeps PyO3's default `gil_used = true`.
    struct ReusedTuple(AtomicPtr<ffi::PyObject>);

    impl ReusedTuple {
        fn new() -> Self {
            Self(AtomicPtr::new(std::ptr::null_mut()))
        }

        fn fill<'py>(
            &self,
            py: Python<'py>,
            items: [Bound<'py, PyAny>; 4],
        ) -> PyResult<Bound<'py, PyTuple>> {
            let cached = self.0.load(Ordering::Relaxed);
            // SAFETY: `cached` is null or a tuple we own one reference to;
            // the GIL is held, so its reference count cannot change under us
            // and a count of 1 means nobody else can see it. `PyTuple_SetItem`
            // steals the item references and releases the previous items.
            unsafe {
                let tuple = if !cached.is_null() && ffi::Py_REFCNT(cached) == 1 {
                    cached
                } else {
                    let fresh = ffi::PyTuple_New(4);
                    if fresh.is_null() {
                        return Err(PyErr::fetch(py));
                    }
                    self.0.store(fresh, Ordering::Relaxed);
                    if !cached.is_null() {
                        ffi::Py_DECREF(cached); // still held by its user
                    }
                    fresh
                };
                for (i, item) in (0..).zip(items) {
                    if ffi::PyTuple_SetItem(tuple, i, item.into_ptr()) != 0 {
                        return Err(PyErr::fetch(py));
                    }
                }
                Ok(Bound::from_borrowed_ptr(py, tuple).cast_into_unchecked())
            }
        }
    }

    impl Drop for ReusedTuple {
        fn drop(&mut self) {
            let tuple = std::mem::replace(self.0.get_mut(), std::ptr::null_mut());
            if !tuple.is_null() {
                // SAFETY: we own one reference to `tuple`.
                Python::attach(|py| drop(unsafe { Bound::from_owned_ptr(py, tuple) }));
            }
        }
    }

    impl SharedState {
        fn float<'py>(&self, py: Python<'py>, v: f64) -> Bound<'py, PyAny> {
            if v == 0.0 {
                self.zero.bind(py).clone().into_any()
            } else {
                PyFloat::new(py, v).into_any()
            }
        }

        /// `(allowed, remaining, retry_after_s, reset_after_s)` of `rate_check`.
        fn check_result<'py>(
            &self,
            py: Python<'py>,
            d: &Decision,
        ) -> PyResult<Bound<'py, PyTuple>> {
            self.result.fill(
                py,
                [
                    PyBool::new(py, d.allowed).to_owned().into_any(),
                    self.float(py, d.remaining),
                    self.float(py, d.retry_after_s),
                    self.float(py, d.reset_after_s),
                ],
            )
        }

        /// `(allowed, remaining whole tokens, retry_after_s, reset_after_s)`.
        fn take_result<'py>(&self, py: Python<'py>, d: &Decision) -> PyResult<Bound<'py, PyTuple>> {
            // `remaining` is finite, >= 0 and <= capacity: the cast floors it.
            let whole = d.remaining as u64;
            self.result.fill(
                py,
                [
                    PyBool::new(py, d.allowed).to_owned().into_any(),
                    whole.into_pyobject(py)?.into_any(),
                    self.float(py, d.retry_after_s),
                    self.float(py, d.reset_after_s),
                ],
            )
        }
    }

    /// Validated token-bucket parameters (a tier), for `SharedState.rate_take`.
    #[pyclass(frozen, module = "core_api._native")]
    struct RateTier {
        rate: Rate,
    }

    #[pymethods]
    impl RateTier {
        #[new]
        fn new(capacity: f64, refill_per_sec: f64) -> PyResult<Self> {
            Ok(Self {
                rate: Rate::new(capacity, refill_per_sec).map_err(invalid)?,
            })
        }

        #[getter]
        fn capacity(&self) -> f64 {
            self.rate.capacity()
        }

        #[getter]
        fn refill_per_sec(&self) -> f64 {
            self.rate.refill_per_sec()
        }

        fn __repr__(&self) -> String {
            format!(
                "RateTier(capacity={:?}, refill_per_sec={:?})",
                self.rate.capacity(),
                self.rate.refill_per_sec()
            )
        }
    }

    /// `SharedState.rate_take` as a plain CPython `METH_FASTCALL` method.
    ///
    /// PyO3's generic method path (GIL-count bookkeeping, the argument
    /// descriptor machinery, `&self` extraction) costs ~20 ns per call, as
    /// much as the token bucket itself; this is the one call made on every
    /// request. It uses only borrowed `Bound`s (no `Py<T>` is dropped here, so
    /// PyO3's GIL count is irrelevant) and catches panics.
    mod fast {
        use std::panic::{catch_unwind, AssertUnwindSafe};

        use pyo3::exceptions::PyTypeError;
        use pyo3::ffi;
        use pyo3::panic::PanicException;
        use pyo3::prelude::*;
        use pyo3::types::{PyBytes, PyTuple, PyType};
        use pyo3::Borrowed;

        use super::{invalid, non_negative, RateTier, SharedState};

        const NAME: &std::ffi::CStr = c"rate_take";
        const DOC: &std::ffi::CStr = c"rate_take($self, bucket_key, tier, now_ns, cost=1.0, /)
--

Take `cost` tokens from the bucket of `bucket_key` if available.

Returns (allowed, remaining, retry_after_s, reset_after_s): remaining whole
tokens (int), seconds until `cost` tokens are available (0.0 if allowed),
seconds until the bucket is full. Same bucket and math as rate_check.";

        // CPython never writes to a method definition; it must outlive the type.
        static mut DEF: ffi::PyMethodDef = ffi::PyMethodDef {
            ml_name: NAME.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFast: rate_take,
            },
            ml_flags: ffi::METH_FASTCALL,
            ml_doc: DOC.as_ptr(),
        };

        /// Adds `rate_take` to the `SharedState` type.
        pub(super) fn register(ty: &Bound<'_, PyType>) -> PyResult<()> {
            // SAFETY: `DEF` is a valid, 'static method definition for
            // instances of `ty` (the descriptor checks `self`'s type).
            let descr = unsafe {
                Bound::from_owned_ptr_or_err(
                    ty.py(),
                    ffi::PyDescr_NewMethod(ty.as_type_ptr(), &raw mut DEF),
                )?
            };
            ty.setattr("rate_take", descr)
        }

        unsafe extern "C" fn rate_take(
            slf: *mut ffi::PyObject,
            args: *mut *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
        ) -> *mut ffi::PyObject {
            // SAFETY: CPython calls a method with the GIL held.
            let py = unsafe { Python::assume_attached() };
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let n = usize::try_from(nargs).unwrap_or(0);
                if !(3..=4).contains(&n) {
                    return Err(PyTypeError::new_err(format!(
                        "rate_take() takes 3 or 4 positional arguments ({n} given)"
                    )));
                }
                // SAFETY: the method descriptor only calls us with an
                // instance of `SharedState` (CPython checks the type of
                // `self`) and `nargs` valid borrowed argument references.
                unsafe {
                    let state = Borrowed::from_ptr(py, slf).cast_unchecked::<SharedState>();
                    let args = std::slice::from_raw_parts(args, n);
                    take(py, state.get(), args)
                }
            }));
            let err = match outcome {
                Ok(Ok(tuple)) => return tuple.into_ptr(),
                Ok(Err(e)) => e,
                Err(payload) => {
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic in rate_take".to_owned());
                    PanicException::new_err(msg)
                }
            };
            err.restore(py);
            std::ptr::null_mut()
        }

        /// # Safety
        /// `args` must be valid borrowed references.
        unsafe fn take<'py>(
            py: Python<'py>,
            state: &SharedState,
            args: &[*mut ffi::PyObject],
        ) -> PyResult<Bound<'py, PyTuple>> {
            // SAFETY: per the contract above.
            let arg = |i: usize| unsafe { Borrowed::from_ptr(py, args[i]) };
            // Like PyO3's own argument errors: a TypeError names the argument.
            let bad = |name: &str, e: PyErr| {
                if e.is_instance_of::<PyTypeError>(py) {
                    PyTypeError::new_err(format!("argument '{name}': {}", e.value(py)))
                } else {
                    e
                }
            };
            let key = arg(0);
            let key = key
                .cast::<PyBytes>()
                .map_err(|e| bad("bucket_key", e.into()))?;
            let tier = arg(1);
            let tier = tier.cast::<RateTier>().map_err(|e| bad("tier", e.into()))?;
            let now_ns: i64 = arg(2).extract().map_err(|e| bad("now_ns", e))?;
            let cost: f64 = match args.get(3) {
                Some(_) => arg(3).extract().map_err(|e| bad("cost", e))?,
                None => 1.0,
            };
            let now = non_negative("now_ns", now_ns)?;
            let d = state
                .region
                .buckets()
                .take(key.as_bytes(), &tier.get().rate, cost, now)
                .map_err(invalid)?;
            state.take_result(py, &d)
        }
    }

    #[pymethods]
    impl SharedState {
        #[new]
        #[pyo3(signature = (path, rate_slots = 65536))]
        fn new(py: Python<'_>, path: std::path::PathBuf, rate_slots: i64) -> PyResult<Self> {
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
                zero: PyFloat::new(py, 0.0).unbind(),
                result: ReusedTuple::new(),
            })
        }

        fn generation(&self) -> u64 {
            self.region.generation()
        }

        fn bump_generation(&self) -> u64 {
            self.region.bump_generation()
        }

        fn rate_check<'py>(
            &self,
            py: Python<'py>,
            bucket_key: &[u8],
            capacity: f64,
            refill_per_sec: f64,
            cost: f64,
            now_ns: i64,
        ) -> PyResult<Bound<'py, PyTuple>> {
            let now = non_negative("now_ns", now_ns)?;
            let d = self
                .region
                .buckets()
                .check(bucket_key, capacity, refill_per_sec, cost, now)
                .map_err(invalid)?;
            self.check_result(py, &d)
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
        fast::register(&m.py().get_type::<SharedState>())?;
        m.add_class::<RateTier>()?;
        m.add_class::<PyKeyCache>()?;
        m.add("KEY_LENGTH", keys::KEY_LEN)?;
        m.add("KEY_PREFIX", keys::KEY_PREFIX)?;
        Ok(())
    }
}
