//! Pixel ingest (bindings of `crate::pixel`): the bounded event buffer, its batches
//! (PostgreSQL binary COPY payload, SQLite rows) and the visitor/session ids.
//!
//! Each class is used by one event loop (one process, one thread): PyO3's borrow flag
//! is the only guard, so the request path takes no lock.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::error::NativeError;
use crate::pixel::{self, Batch, Event, EventBuffer, Sessions};
use crate::pixel_gate::{AgentClass, Gate, Request, SiteRule, Verdict};
use crate::pixel_hit::{self, accepts_content_type, content_length, Hit};

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
    pixel_hit::parse(body).map(hit_fields)
}

fn hit_fields(h: Hit) -> HitFields {
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
}

/// A track body parsed by the Rust twin of `parse_hit` (see `pixel_parse_hit`), kept in
/// Rust until the gate decides it; `fields()` hands it to Python when the gate defers.
#[pyclass(module = "core_api._native", name = "PixelHit")]
struct PyHit {
    hit: Hit,
}

#[pymethods]
impl PyHit {
    /// The fields of `Hit` (core_api/pixel/ingest.py), in its order.
    fn fields(&self) -> HitFields {
        hit_fields(self.hit.clone())
    }
}

/// The parsed body, or None when the Python `parse_hit` must decide.
#[pyfunction]
#[pyo3(name = "pixel_hit")]
fn parse_pixel_hit(body: &[u8]) -> Option<PyHit> {
    pixel_hit::parse(body).map(|hit| PyHit { hit })
}

/// `PixelIngest._decide` for what Python taught it (`crate::pixel_gate`), over the
/// ingest's own session table and buffer.
#[pyclass(module = "core_api._native", name = "PixelGate")]
struct PyGate {
    gate: Gate,
    sessions: Py<PySessions>,
    buffer: Py<PyBuffer>,
}

/// `decide`'s verdict codes (`core_api/pixel/ingest.py` maps them to outcomes).
const TRACKED: i64 = 0;
const BOT: i64 = 1;
const DO_NOT_TRACK: i64 = 2;
const EXCLUDED_PATH: i64 = 3;
const FEATURE_DISABLED: i64 = 4;
const SAMPLED_OUT: i64 = 5;
const FULL: i64 = 6;
const DEFER: i64 = -1;

#[pymethods]
impl PyGate {
    #[new]
    fn new(sessions: Py<PySessions>, buffer: Py<PyBuffer>) -> Self {
        Self {
            gate: Gate::new(),
            sessions,
            buffer,
        }
    }

    /// (code, a, b): (TRACKED, workspace id, events pending), (BOT, site id, 0), a
    /// reason code with zeros, or (DEFER, 0, 0) having changed nothing.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (hit, ip, user_agent, origin, dnt, gpc, now_ms, head))]
    fn decide(
        &mut self,
        py: Python<'_>,
        mut hit: PyRefMut<'_, PyHit>,
        ip: &str,
        user_agent: &[u8],
        origin: Option<&[u8]>,
        dnt: Option<&[u8]>,
        gpc: Option<&[u8]>,
        now_ms: i64,
        head: u64,
    ) -> (i64, i64, usize) {
        let req = Request {
            ip,
            user_agent,
            origin,
            dnt,
            gpc,
            now_ms,
            head,
        };
        let mut sessions = self.sessions.borrow_mut(py);
        let mut buffer = self.buffer.borrow_mut(py);
        let verdict = self.gate.decide(
            &mut hit.hit,
            &req,
            &mut sessions.sessions,
            &mut buffer.buffer,
        );
        match verdict {
            Verdict::Tracked {
                workspace_id,
                pending,
            } => (TRACKED, workspace_id, pending),
            Verdict::Bot { site_id } => (BOT, site_id, 0),
            Verdict::DoNotTrack => (DO_NOT_TRACK, 0, 0),
            Verdict::ExcludedPath => (EXCLUDED_PATH, 0, 0),
            Verdict::FeatureDisabled => (FEATURE_DISABLED, 0, 0),
            Verdict::SampledOut => (SAMPLED_OUT, 0, 0),
            Verdict::Full => (FULL, 0, 0),
            Verdict::Defer => (DEFER, 0, 0),
        }
    }

    /// Learn `host`'s enabled site as read at log head `head`; False when not learnt
    /// (an older head, or a glob among the excluded paths).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (host, head, id, workspace_id, domain, allowed_origins, honor_dnt, pageviews, events, sessions, sample_rate, excluded_paths))]
    fn learn_site(
        &mut self,
        host: &str,
        head: u64,
        id: i64,
        workspace_id: i64,
        domain: String,
        allowed_origins: Vec<String>,
        honor_dnt: bool,
        pageviews: bool,
        events: bool,
        sessions: bool,
        sample_rate: f64,
        excluded_paths: Vec<String>,
    ) -> bool {
        let site = SiteRule {
            id,
            workspace_id,
            domain,
            allowed_origins,
            honor_dnt,
            pageviews,
            events,
            sessions,
            sample_rate,
            excluded_prefixes: excluded_paths,
        };
        self.gate.learn_site(host, head, site)
    }

    fn learn_agent(&mut self, user_agent: &str, bot: bool, browser: String, device: String) {
        let class = AgentClass {
            bot,
            browser,
            device,
        };
        self.gate.learn_agent(user_agent, class);
    }

    #[pyo3(signature = (day, key, previous))]
    fn learn_keys(
        &mut self,
        day: i64,
        key: &[u8],
        previous: Option<&[u8]>,
    ) -> Result<(), NativeError> {
        let key = key16("key", key)?;
        let previous = previous.map(|p| key16("previous", p)).transpose()?;
        self.gate.learn_keys(day, key, previous);
        Ok(())
    }

    fn forget(&mut self) {
        self.gate.forget();
    }
}

/// `(content_length, user_agent (b"" when absent), origin, dnt, sec_gpc,
/// x_forwarded_for, x_request_id)`: see `pixel_headers`.
type PickedHeaders<'py> = (
    usize,
    Bound<'py, PyAny>,
    Option<Bound<'py, PyAny>>,
    Option<Bound<'py, PyAny>>,
    Option<Bound<'py, PyAny>>,
    Option<Bound<'py, PyAny>>,
    Option<Bound<'py, PyAny>>,
);

/// The request headers the track fast path reads, from the ASGI scope's `headers`, or
/// None when the body is not one it takes (another content type; a length absent,
/// malformed or over `max_body`; names that are not bytes): the Falcon route answers
/// those. Values are the scope's own bytes objects; a repeated header counts by its last
/// value. One pass instead of a dict built per request.
#[pyfunction]
fn pixel_headers<'py>(
    py: Python<'py>,
    raw: &Bound<'py, PyList>,
    max_body: usize,
) -> PyResult<Option<PickedHeaders<'py>>> {
    // content-type, content-length, user-agent, origin, dnt, sec-gpc, x-forwarded-for,
    // x-request-id
    let mut picked: [Option<Bound<'py, PyAny>>; 8] = Default::default();
    for item in raw.iter() {
        let (name, value) = match item.cast::<PyTuple>() {
            Ok(pair) if pair.len() == 2 => (pair.get_item(0)?, pair.get_item(1)?),
            _ => (item.get_item(0)?, item.get_item(1)?),
        };
        let Ok(name) = name.cast::<PyBytes>() else {
            return Ok(None);
        };
        let slot = match name.as_bytes() {
            b"content-type" => 0,
            b"content-length" => 1,
            b"user-agent" => 2,
            b"origin" => 3,
            b"dnt" => 4,
            b"sec-gpc" => 5,
            b"x-forwarded-for" => 6,
            b"x-request-id" => 7,
            _ => continue,
        };
        picked[slot] = Some(value);
    }
    let content_type: &[u8] = match &picked[0] {
        None => b"",
        Some(value) => match value.cast::<PyBytes>() {
            Ok(value) => value.as_bytes(),
            Err(_) => return Ok(None),
        },
    };
    let length = match picked[1].as_ref().map(|v| v.cast::<PyBytes>()) {
        Some(Ok(value)) => content_length(value.as_bytes(), max_body),
        _ => None,
    };
    let Some(length) = length.filter(|_| accepts_content_type(content_type)) else {
        return Ok(None);
    };
    let [_, _, agent, origin, dnt, gpc, forwarded, request_id] = picked;
    let agent = agent.unwrap_or_else(|| PyBytes::new(py, b"").into_any());
    Ok(Some((
        length, agent, origin, dnt, gpc, forwarded, request_id,
    )))
}

/// The tier's constant header values: `(limit, policy, policy name)` as bytes.
pub(super) type RawTier<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
);

/// The five rate-limit headers of a decision as ASGI pairs (`Decision.raw_headers`):
/// `tier` is `(limit, policy, policy name)` as bytes, `reset_at` and `reset_after` in
/// seconds (rounded up here, as `math.ceil` does).
#[pyfunction]
pub(super) fn rate_limit_headers<'py>(
    py: Python<'py>,
    tier: RawTier<'py>,
    remaining: i64,
    reset_at: f64,
    reset_after: f64,
) -> PyResult<Bound<'py, PyList>> {
    let (limit, policy, name) = tier;
    let remaining_text = remaining.to_string();
    let reset_at = format!("{}", reset_at.ceil() as i64);
    let mut ratelimit = name.as_bytes().to_vec();
    ratelimit.extend_from_slice(
        format!(";r={remaining_text};t={}", reset_after.ceil() as i64).as_bytes(),
    );
    let pair = |k: &[u8], v: Bound<'py, PyBytes>| (PyBytes::new(py, k), v);
    PyList::new(
        py,
        [
            pair(b"x-ratelimit-limit", limit),
            pair(
                b"x-ratelimit-remaining",
                PyBytes::new(py, remaining_text.as_bytes()),
            ),
            pair(b"x-ratelimit-reset", PyBytes::new(py, reset_at.as_bytes())),
            pair(b"ratelimit-policy", policy),
            pair(b"ratelimit", PyBytes::new(py, &ratelimit)),
        ],
    )
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBatch>()?;
    m.add_class::<PyBuffer>()?;
    m.add_class::<PySessions>()?;
    m.add_function(wrap_pyfunction!(pixel_visitor_hash, m)?)?;
    m.add_function(wrap_pyfunction!(pixel_parse_hit, m)?)?;
    m.add_class::<PyHit>()?;
    m.add_class::<PyGate>()?;
    m.add_function(wrap_pyfunction!(parse_pixel_hit, m)?)?;
    m.add_function(wrap_pyfunction!(pixel_headers, m)?)?;
    m.add_function(wrap_pyfunction!(rate_limit_headers, m)?)?;
    m.add("PIXEL_COLUMNS", pixel::COLUMNS.to_vec())?;
    Ok(())
}
