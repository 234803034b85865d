//! The crate's one error type (pure Rust, no pyo3).
//!
//! Every fallible operation, pure or binding, returns [`NativeError`]; the
//! bindings turn it into a Python exception in exactly one place
//! (`impl From<NativeError> for PyErr` in `python/mod.rs`).

use std::borrow::Cow;
use std::{fmt, io};

/// Why a native operation failed.
#[derive(Debug)]
pub enum NativeError {
    /// An argument outside its domain; the message names the argument.
    /// Python: `ValueError`.
    InvalidArgument(Cow<'static, str>),
    /// The operating system refused (shared-memory file). Python: the
    /// matching `OSError` subclass.
    Io(io::Error),
}

impl NativeError {
    /// An [`NativeError::InvalidArgument`] with `message`.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidArgument(message.into())
    }
}

impl fmt::Display for NativeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidArgument(message) => f.write_str(message),
            Self::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for NativeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidArgument(_) => None,
            Self::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for NativeError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// `Result` with [`NativeError`].
pub type Result<T, E = NativeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_sources() {
        let e = NativeError::invalid("cost must be a finite number >= 0");
        assert_eq!(e.to_string(), "cost must be a finite number >= 0");
        assert!(std::error::Error::source(&e).is_none());
        let e = NativeError::from(io::Error::new(io::ErrorKind::NotFound, "gone"));
        assert_eq!(e.to_string(), "gone");
        assert!(std::error::Error::source(&e).is_some());
    }
}
