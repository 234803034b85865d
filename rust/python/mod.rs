//! The PyO3 module `core_api._native`. Each submodule binds one concern and
//! registers its own functions and classes; the Python-facing contract is
//! `python/core_api/_native.pyi` (checked by stubtest in `make lint`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::NativeError;

mod key_cache;
mod keys;
mod pixel;
mod shared_state;
mod webhooks;

/// The single mapping of native errors to Python exceptions: invalid
/// arguments raise `ValueError`, I/O failures the matching `OSError`.
impl From<NativeError> for PyErr {
    fn from(e: NativeError) -> Self {
        match e {
            NativeError::InvalidArgument(message) => PyValueError::new_err(message.into_owned()),
            NativeError::Io(e) => e.into(),
        }
    }
}

/// `v` as a `u64`, or an error naming the argument.
fn non_negative(name: &str, v: i64) -> Result<u64, NativeError> {
    u64::try_from(v).map_err(|_| NativeError::invalid(format!("{name} must be >= 0")))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    keys::register(m)?;
    key_cache::register(m)?;
    pixel::register(m)?;
    shared_state::register(m)?;
    webhooks::register(m)?;
    Ok(())
}
