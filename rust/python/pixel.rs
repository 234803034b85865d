//! Pixel ingest (bindings of `crate::pixel`): the bounded event buffer, its batches
//! (PostgreSQL binary COPY payload, SQLite rows) and the visitor/session ids.
//!
//! Each class is used by one event loop (one process, one thread): PyO3's borrow flag
//! is the only guard, so the request path takes no lock.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::error::NativeError;
use crate::pixel::{self, Batch, Event, EventBuffer, Sessions};
use crate::pixel_hit;

fn key16(name: &str, key: &[u8]) -> Result<[u8; 16], NativeError> {
    key.try_into()
        .map_err(|_| NativeError::invalid(format!("{name} must be 16 bytes, got {}", key.len())))
}

fn positive(name: &str, v: i64) -> Result<usize, NativeError> {
    usize::try_from(v)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| NativeError::invalid(format!("{name} must be >= 1")))
}

/// Events taken from a buffer for one write; committed or restored exactly once.
#[pyclass(module = "core_api._native", name = "PixelBatch")]
struct PyBatch {
    batch: Batch,
}

#[pymethods]
impl PyBatch {
    fn __len__(&self) -> usize {
        self.batch.len()
    }

    /// The batch as one `COPY pixel_events (...) FROM STDIN (FORMAT BINARY)` payload.
    fn copy_binary<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.batch.copy_binary())
    }

    /// The batch as parameter tuples for `executemany` (columns in `PIXEL_COLUMNS` order).
    fn rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self.batch.events.iter().map(|e| {
            (
                e.site_id,
                e.ts,
                e.name.as_str(),
                e.path.as_str(),
                e.referrer_source.as_deref(),
                e.visitor_id,
                e.session_id,
                e.browser.as_str(),
                e.device.as_str(),
                e.props.as_deref(),
            )
        });
        PyList::new(py, rows)
    }
}

/// Bounded FIFO of tracked events (buffered + in flight <= capacity).
#[pyclass(module = "core_api._native", name = "PixelBuffer")]
struct PyBuffer {
    buffer: EventBuffer,
}

#[pymethods]
impl PyBuffer {
    #[new]
    fn new(capacity: i64) -> Result<Self, NativeError> {
        Ok(Self {
            buffer: EventBuffer::new(positive("capacity", capacity)?),
        })
    }

    /// Append one event; False when the buffer is full (the caller answers 503).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (site_id, ts, name, path, referrer_source, visitor_id, session_id, browser, device, props))]
    fn push(
        &mut self,
        site_id: i64,
        ts: i64,
        name: String,
        path: String,
        referrer_source: Option<String>,
        visitor_id: i64,
        session_id: Option<i64>,
        browser: String,
        device: String,
        props: Option<String>,
    ) -> bool {
        if self.buffer.is_full() {
            return false; // before building the event: a refusal costs no allocation
        }
        self.buffer.push(Event {
            site_id,
            ts,
            name,
            path,
            referrer_source,
            visitor_id,
            session_id,
            browser,
            device,
            props,
        })
    }

    /// Up to `max` of the oldest events, now in flight.
    fn take(&mut self, max: i64) -> Result<PyBatch, NativeError> {
        let batch = self.buffer.take(positive("max", max)?);
        Ok(PyBatch { batch })
    }

    /// `batch` was written; returns its size. The batch is empty afterwards.
    fn commit(&mut self, mut batch: PyRefMut<'_, PyBatch>) -> usize {
        self.buffer.commit(std::mem::take(&mut batch.batch))
    }

    /// `batch` was not written: back to the front, in order. The batch is empty afterwards.
    fn restore(&mut self, mut batch: PyRefMut<'_, PyBatch>) -> usize {
        self.buffer.restore(std::mem::take(&mut batch.batch))
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.buffer.capacity()
    }

    #[getter]
    fn pending(&self) -> usize {
        self.buffer.pending()
    }

    #[getter]
    fn in_flight(&self) -> usize {
        self.buffer.in_flight()
    }

    fn is_full(&self) -> bool {
        self.buffer.is_full()
    }
}

/// Per-process session table: visitor id -> (session id, last event time), bounded.
#[pyclass(module = "core_api._native", name = "PixelSessions")]
struct PySessions {
    sessions: Sessions,
}

#[pymethods]
impl PySessions {
    #[new]
    #[pyo3(signature = (capacity, idle_ms = 1_800_000))]
    fn new(capacity: i64, idle_ms: i64) -> Result<Self, NativeError> {
        Ok(Self {
            sessions: Sessions::new(positive("capacity", capacity)?, idle_ms),
        })
    }

    /// (visitor_id, session_id) of an event: keyed hashes of the site, IP and user agent
    /// under today's key (or yesterday's, for a session still running since then).
    #[pyo3(signature = (key, previous, site_id, ip, user_agent, now_ms))]
    fn identify(
        &mut self,
        key: &[u8],
        previous: Option<&[u8]>,
        site_id: i64,
        ip: &str,
        user_agent: &str,
        now_ms: i64,
    ) -> Result<(i64, i64), NativeError> {
        let key = key16("key", key)?;
        let previous = previous.map(|p| key16("previous", p)).transpose()?;
        Ok(self.sessions.identify(
            &key,
            previous.as_ref(),
            site_id,
            ip.as_bytes(),
            user_agent.as_bytes(),
            now_ms,
        ))
    }

    /// Forget sessions idle longer than the window; how many were dropped.
    fn sweep(&mut self, now_ms: i64) -> usize {
        self.sessions.sweep(now_ms)
    }

    fn __len__(&self) -> usize {
        self.sessions.len()
    }
}

/// SipHash-2-4 under `key` (16 bytes) of (site id, IP, user agent) as a signed 64-bit id.
#[pyfunction]
fn pixel_visitor_hash(
    key: &[u8],
    site_id: i64,
    ip: &str,
    user_agent: &str,
) -> Result<i64, NativeError> {
    let key = key16("key", key)?;
    Ok(pixel::visitor_hash(
        &key,
        site_id,
        ip.as_bytes(),
        user_agent.as_bytes(),
    ))
}

/// The fields of `Hit` (core_api/pixel/ingest.py) of a track body, in its order, or
/// None when the Python `parse_hit` must decide (see `crate::pixel_hit`).
type HitFields = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

#[pyfunction]
fn pixel_parse_hit(body: &[u8]) -> Option<HitFields> {
    pixel_hit::parse(body).map(|h| {
        (
            h.name,
            h.url,
            h.host,
            h.path,
            h.referrer,
            h.user_agent,
            h.props,
            h.domain,
        )
    })
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBatch>()?;
    m.add_class::<PyBuffer>()?;
    m.add_class::<PySessions>()?;
    m.add_function(wrap_pyfunction!(pixel_visitor_hash, m)?)?;
    m.add_function(wrap_pyfunction!(pixel_parse_hit, m)?)?;
    m.add("PIXEL_COLUMNS", pixel::COLUMNS.to_vec())?;
    Ok(())
}
