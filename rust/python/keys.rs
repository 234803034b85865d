//! Key generation, hashing and comparison (bindings of `crate::keys`).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::keys;

/// A new random API key: `sk_live_` + 32 base62 + 6 base62 CRC32.
#[pyfunction]
fn generate_key() -> String {
    keys::generate_key()
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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(hash_key, m)?)?;
    m.add_function(wrap_pyfunction!(key_prefix, m)?)?;
    m.add_function(wrap_pyfunction!(constant_time_eq, m)?)?;
    Ok(())
}
