//! Standard Webhooks signing (bindings of `crate::webhooks`).

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;

use crate::error::NativeError;
use crate::webhooks;

/// The `webhook-signature` header value for `body` under each of `secrets`.
#[pyfunction]
fn webhook_sign(
    secrets: Vec<PyBackedBytes>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, NativeError> {
    if secrets.is_empty() {
        return Err(NativeError::invalid("at least one secret is required"));
    }
    if secrets.iter().any(|s| s.is_empty()) {
        return Err(NativeError::invalid("a secret must not be empty"));
    }
    Ok(webhooks::sign(&secrets, msg_id, timestamp, body))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(webhook_sign, m)?)?;
    Ok(())
}
