//! Host-wide shared memory: the invalidation generation and the rate-limit
//! buckets (bindings of `crate::shm` and `crate::ratelimit`).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::non_negative;
use super::pixel::{rate_limit_headers, RawTier};
use crate::error::NativeError;
use crate::invalog::Kind;
use crate::ratelimit::Rate;
use crate::shm::{self, SharedRegion};

/// Validated token-bucket parameters (a tier), for `SharedState.rate_take`.
#[pyclass(frozen, module = "core_api._native")]
struct RateTier {
    rate: Rate,
}

#[pymethods]
impl RateTier {
    #[new]
    fn new(capacity: f64, refill_per_sec: f64) -> Result<Self, NativeError> {
        Ok(Self {
            rate: Rate::new(capacity, refill_per_sec)?,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "RateTier(capacity={:?}, refill_per_sec={:?})",
            self.rate.capacity(),
            self.rate.refill_per_sec()
        )
    }
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
    fn new(path: PathBuf, rate_slots: i64) -> Result<Self, NativeError> {
        Ok(Self {
            region: SharedRegion::open_or_create(path, shm::checked_slots(rate_slots)?)?,
        })
    }

    fn generation(&self) -> u64 {
        self.region.generation()
    }

    fn bump_generation(&self) -> u64 {
        self.region.bump_generation()
    }

    /// Entries ever appended to the invalidation log.
    fn log_head(&self) -> u64 {
        self.region.log().head()
    }

    /// Append `(kind, id)` targets; returns the new head.
    fn log_append(&self, targets: Vec<(String, i64)>) -> Result<u64, NativeError> {
        Ok(self.region.log().append(&parse_targets(&targets)?))
    }

    /// Full flush everywhere on the host (bumps the generation too); returns the generation.
    fn log_flush(&self) -> u64 {
        self.region.flush_all()
    }

    /// The targets in `[start, end)`, or None when the caller must flush everything.
    fn log_read(&self, start: u64, end: u64) -> Option<Vec<(&'static str, i64)>> {
        let entries = self.region.log().read(start, end)?;
        Some(entries.into_iter().map(|(k, id)| (k.name(), id)).collect())
    }

    /// Whether anything logged since head `since` may touch one of `targets`.
    fn log_touches(&self, since: u64, targets: Vec<(String, i64)>) -> Result<bool, NativeError> {
        Ok(self.region.log().touches(since, &parse_targets(&targets)?))
    }

    #[classattr]
    fn log_len() -> usize {
        shm::LOG_LEN
    }

    /// Take `cost` tokens from the bucket of `bucket_key` if available.
    ///
    /// Returns (allowed, remaining whole tokens, retry_after_s, reset_after_s).
    #[pyo3(signature = (bucket_key, tier, now_ns, cost = 1.0, /))]
    fn rate_take(
        &self,
        bucket_key: &[u8],
        tier: &Bound<'_, RateTier>,
        now_ns: i64,
        cost: f64,
    ) -> Result<(bool, u64, f64, f64), NativeError> {
        let now = non_negative("now_ns", now_ns)?;
        let d = self
            .region
            .buckets()
            .take(bucket_key, &tier.get().rate, cost, now)?;
        // `remaining` is finite, >= 0 and <= capacity: the cast floors it.
        Ok((
            d.allowed,
            d.remaining as u64,
            d.retry_after_s,
            d.reset_after_s,
        ))
    }

    /// `rate_take` and, when allowed, the five rate-limit headers of the decision in
    /// the same call (`rate_limit_headers`, `raw` the tier's constant values, `now_s`
    /// the wall clock in seconds); None when refused, having taken nothing.
    #[pyo3(signature = (bucket_key, tier, now_ns, now_s, raw, /))]
    fn rate_take_headers<'py>(
        &self,
        py: Python<'py>,
        bucket_key: &[u8],
        tier: &Bound<'_, RateTier>,
        now_ns: i64,
        now_s: f64,
        raw: RawTier<'py>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let now = non_negative("now_ns", now_ns)?;
        let d = self
            .region
            .buckets()
            .take(bucket_key, &tier.get().rate, 1.0, now)?;
        if !d.allowed {
            return Ok(None);
        }
        let reset_after = d.reset_after_s;
        rate_limit_headers(
            py,
            raw,
            d.remaining as i64,
            now_s + reset_after,
            reset_after,
        )
        .map(Some)
    }
}

fn parse_targets(targets: &[(String, i64)]) -> Result<Vec<(Kind, i64)>, NativeError> {
    targets
        .iter()
        .map(|(kind, id)| {
            Kind::parse(kind).map(|k| (k, *id)).ok_or_else(|| {
                NativeError::invalid(format!(
                    "target kind must be key, workspace, user, key_list, workspace_list or pixel_site, got {kind:?}"
                ))
            })
        })
        .collect()
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RateTier>()?;
    m.add_class::<SharedState>()?;
    Ok(())
}
