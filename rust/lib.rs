//! `core_api._native`: the Rust hot paths of core-api.
//!
//! The pure modules (`error`, `keys`, `keycache`, `shm`, `invalog`, `ratelimit`,
//! `webhooks`, `pixel`, `pixel_hit`,
//! `pixel_gate`) do not use pyo3 and are tested with
//! `cargo test --no-default-features`. The `python` feature (on by default, used by maturin) adds the thin PyO3
//! bindings in `python/`, one file per concern: argument conversion, the one
//! error conversion (`NativeError` -> Python exception) and nothing else.

pub mod error;
pub mod invalog;
pub mod keycache;
pub mod keys;
pub mod pixel;
pub mod pixel_gate;
pub mod pixel_hit;
pub mod ratelimit;
pub mod shm;
pub mod webhooks;

#[cfg(feature = "python")]
mod python;
