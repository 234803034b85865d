//! Pixel ingest hot path (pure Rust, no pyo3).
//!
//! * [`EventBuffer`]: a bounded per-process FIFO of tracked events. `push` refuses
//!   (returns `false`) once buffered + in-flight events reach the capacity, so memory
//!   stays bounded whatever the database does; the caller answers 503.
//!   [`EventBuffer::take`] moves up to `n` events into a [`Batch`] (still counted
//!   against the capacity while in flight); the writer then either
//!   [`EventBuffer::commit`]s it (written) or [`EventBuffer::restore`]s it to the
//!   front (write failed, retried later, order kept). Nothing is dropped silently.
//! * [`Batch::copy_binary`]: the batch as one PostgreSQL `COPY ... FROM STDIN
//!   (FORMAT BINARY)` payload (no text escaping, no integer parsing on the server).
//! * [`visitor_hash`] / [`Sessions`]: the privacy-preserving ids. The visitor id is
//!   SipHash-2-4 keyed with the day's 16-byte key (derived from the daily salt) over
//!   the site id, IP and user agent: the raw IP and user agent never leave the
//!   request. [`Sessions`] assigns session ids: a visitor idle for more than the
//!   idle window (30 minutes) starts a new session; the table is bounded.

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;

use siphasher::sip::SipHasher24;

/// One tracked event, ready to be written (no raw IP or user agent in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub site_id: i64,
    pub ts: i64,
    pub name: String,
    pub path: String,
    pub referrer_source: Option<String>,
    pub visitor_id: i64,
    pub session_id: Option<i64>,
    pub browser: String,
    pub device: String,
    pub props: Option<String>,
}

impl Event {
    /// Bytes held by the event (for the memory bound documented in docs/pixel.md).
    pub fn heap_bytes(&self) -> usize {
        self.name.len()
            + self.path.len()
            + self.referrer_source.as_ref().map_or(0, String::len)
            + self.browser.len()
            + self.device.len()
            + self.props.as_ref().map_or(0, String::len)
    }
}

/// Events taken out of the buffer for one write.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
}

/// The columns of `pixel_events` in the order every encoding uses.
pub const COLUMNS: [&str; 10] = [
    "site_id",
    "ts",
    "name",
    "path",
    "referrer_source",
    "visitor_id",
    "session_id",
    "browser",
    "device",
    "props",
];

const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_text(out: &mut Vec<u8>, v: &str) {
    // Lengths are bounded by validation (a few KB); i32 cannot overflow.
    out.extend_from_slice(&(v.len() as i32).to_be_bytes());
    out.extend_from_slice(v.as_bytes());
}

fn put_null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

impl Batch {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The whole batch as a PostgreSQL binary COPY stream (header, rows, trailer),
    /// columns in [`COLUMNS`] order: int8, int8, text, text, text?, int8, int8?,
    /// text, text, text?.
    pub fn copy_binary(&self) -> Vec<u8> {
        let estimate: usize = self
            .events
            .iter()
            .map(|e| 2 + 10 * 4 + 32 + e.heap_bytes())
            .sum();
        let mut out = Vec::with_capacity(19 + estimate + 2);
        out.extend_from_slice(COPY_SIGNATURE);
        out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        for e in &self.events {
            out.extend_from_slice(&(COLUMNS.len() as i16).to_be_bytes());
            put_i64(&mut out, e.site_id);
            put_i64(&mut out, e.ts);
            put_text(&mut out, &e.name);
            put_text(&mut out, &e.path);
            match &e.referrer_source {
                Some(s) => put_text(&mut out, s),
                None => put_null(&mut out),
            }
            put_i64(&mut out, e.visitor_id);
            match e.session_id {
                Some(s) => put_i64(&mut out, s),
                None => put_null(&mut out),
            }
            put_text(&mut out, &e.browser);
            put_text(&mut out, &e.device);
            match &e.props {
                Some(s) => put_text(&mut out, s),
                None => put_null(&mut out),
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }
}

/// Bounded FIFO of events; see the module docs for the take/commit/restore cycle.
#[derive(Debug)]
pub struct EventBuffer {
    pending: VecDeque<Event>,
    in_flight: usize,
    capacity: usize,
}

impl EventBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            // Grown on demand: an idle process holds no memory for its capacity.
            pending: VecDeque::new(),
            in_flight: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Events waiting to be taken.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Events taken but neither committed nor restored yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn is_full(&self) -> bool {
        self.pending.len() + self.in_flight >= self.capacity
    }

    /// Append `event`; `false` (and the event is dropped by the caller, who answers
    /// 503) when the buffer is full.
    pub fn push(&mut self, event: Event) -> bool {
        if self.is_full() {
            return false;
        }
        self.pending.push_back(event);
        true
    }

    /// Up to `max` of the oldest events, now in flight.
    pub fn take(&mut self, max: usize) -> Batch {
        let n = max.min(self.pending.len());
        let events: Vec<Event> = self.pending.drain(..n).collect();
        self.in_flight += events.len();
        // Give memory back after a burst (a drained VecDeque keeps its allocation).
        if self.pending.is_empty() && self.pending.capacity() > 4096 {
            self.pending = VecDeque::new();
        }
        Batch { events }
    }

    /// The batch was written: it no longer counts against the capacity.
    pub fn commit(&mut self, batch: Batch) -> usize {
        let n = batch.len();
        self.in_flight = self.in_flight.saturating_sub(n);
        n
    }

    /// The write failed: the batch goes back to the front, in its order.
    pub fn restore(&mut self, batch: Batch) -> usize {
        let n = batch.len();
        self.in_flight = self.in_flight.saturating_sub(n);
        for event in batch.events.into_iter().rev() {
            self.pending.push_front(event);
        }
        n
    }
}

/// SipHash-2-4 under `key` of (site id, IP, user agent), as a signed 64-bit id.
/// The fields are length-delimited, so no two inputs share an encoding.
pub fn visitor_hash(key: &[u8; 16], site_id: i64, ip: &[u8], user_agent: &[u8]) -> i64 {
    let mut h = SipHasher24::new_with_key(key);
    h.write(&site_id.to_le_bytes());
    h.write(&(ip.len() as u64).to_le_bytes());
    h.write(ip);
    h.write(&(user_agent.len() as u64).to_le_bytes());
    h.write(user_agent);
    h.finish() as i64
}

/// A session's id: SipHash-2-4 under `key` of (visitor id, first event time).
pub fn session_hash(key: &[u8; 16], visitor_id: i64, started_ms: i64) -> i64 {
    let mut h = SipHasher24::new_with_key(key);
    h.write(b"session");
    h.write(&visitor_id.to_le_bytes());
    h.write(&started_ms.to_le_bytes());
    h.finish() as i64
}

#[derive(Clone, Copy, Debug)]
struct Session {
    id: i64,
    last_ms: i64,
}

/// Per-process session table: visitor id -> (session id, last event time), bounded.
#[derive(Debug)]
pub struct Sessions {
    map: HashMap<i64, Session>,
    capacity: usize,
    idle_ms: i64,
}

impl Sessions {
    pub fn new(capacity: usize, idle_ms: i64) -> Self {
        Self {
            map: HashMap::new(),
            capacity: capacity.max(1),
            idle_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The visitor and session ids of an event at `now_ms`. `key` is today's key;
    /// `previous` yesterday's, so that a session crossing midnight keeps its visitor
    /// and session ids (they were hashed with yesterday's key).
    pub fn identify(
        &mut self,
        key: &[u8; 16],
        previous: Option<&[u8; 16]>,
        site_id: i64,
        ip: &[u8],
        user_agent: &[u8],
        now_ms: i64,
    ) -> (i64, i64) {
        let visitor = visitor_hash(key, site_id, ip, user_agent);
        if let Some(id) = self.touch(visitor, now_ms) {
            return (visitor, id);
        }
        if let Some(prev) = previous {
            let old = visitor_hash(prev, site_id, ip, user_agent);
            if let Some(id) = self.touch(old, now_ms) {
                return (old, id);
            }
        }
        let id = session_hash(key, visitor, now_ms);
        if self.map.len() >= self.capacity {
            self.sweep(now_ms);
            if self.map.len() >= self.capacity {
                // Still full of live sessions: forget them all rather than grow (a
                // visitor seen again starts a new session; documented).
                self.map.clear();
            }
        }
        self.map.insert(
            visitor,
            Session {
                id,
                last_ms: now_ms,
            },
        );
        (visitor, id)
    }

    /// Extend `visitor`'s live session, if any.
    fn touch(&mut self, visitor: i64, now_ms: i64) -> Option<i64> {
        let session = self.map.get_mut(&visitor)?;
        if now_ms - session.last_ms > self.idle_ms {
            return None;
        }
        session.last_ms = session.last_ms.max(now_ms);
        Some(session.id)
    }

    /// Drop sessions idle for longer than the window; how many were dropped.
    pub fn sweep(&mut self, now_ms: i64) -> usize {
        let before = self.map.len();
        let idle = self.idle_ms;
        self.map.retain(|_, s| now_ms - s.last_ms <= idle);
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: i64) -> Event {
        Event {
            site_id: 1,
            ts: 1_000 + i,
            name: "pageview".into(),
            path: format!("/p/{i}"),
            referrer_source: if i % 2 == 0 {
                Some("google.com".into())
            } else {
                None
            },
            visitor_id: -i,
            session_id: if i % 3 == 0 { None } else { Some(i * 7) },
            browser: "Firefox".into(),
            device: "desktop".into(),
            props: None,
        }
    }

    #[test]
    fn bounded_push_take_commit() {
        let mut b = EventBuffer::new(3);
        assert!(b.push(event(1)) && b.push(event(2)) && b.push(event(3)));
        assert!(!b.push(event(4)), "full");
        let batch = b.take(2);
        assert_eq!(batch.len(), 2);
        assert_eq!((b.pending(), b.in_flight()), (1, 2));
        assert!(!b.push(event(4)), "in-flight events still count");
        assert_eq!(b.commit(batch), 2);
        assert!(b.push(event(4)));
        assert_eq!(b.pending(), 2);
    }

    #[test]
    fn restore_keeps_order_at_the_front() {
        let mut b = EventBuffer::new(10);
        for i in 0..5 {
            b.push(event(i));
        }
        let first = b.take(3);
        b.push(event(9));
        b.restore(first);
        let all = b.take(100);
        let paths: Vec<_> = all.events.iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, ["/p/0", "/p/1", "/p/2", "/p/3", "/p/4", "/p/9"]);
        assert_eq!(b.in_flight(), 6);
        b.commit(all);
        assert_eq!((b.pending(), b.in_flight()), (0, 0));
    }

    #[test]
    fn take_from_empty_is_empty() {
        let mut b = EventBuffer::new(1);
        assert!(b.take(10).is_empty());
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn copy_binary_layout() {
        let batch = Batch {
            events: vec![event(2), event(3)],
        };
        let out = batch.copy_binary();
        assert_eq!(&out[..11], COPY_SIGNATURE);
        assert_eq!(&out[11..19], &[0u8; 8]);
        assert_eq!(&out[out.len() - 2..], &[0xff, 0xff]);
        // First row: field count, then site_id as 8-byte big-endian.
        assert_eq!(&out[19..21], &10i16.to_be_bytes());
        assert_eq!(&out[21..25], &8i32.to_be_bytes());
        assert_eq!(&out[25..33], &1i64.to_be_bytes());
        // Walk every row to check field lengths add up.
        let mut pos = 19;
        let mut rows = 0;
        let mut nulls = 0;
        loop {
            let n = i16::from_be_bytes([out[pos], out[pos + 1]]);
            pos += 2;
            if n == -1 {
                break;
            }
            assert_eq!(n, 10);
            for _ in 0..n {
                let len = i32::from_be_bytes(out[pos..pos + 4].try_into().unwrap());
                pos += 4;
                if len < 0 {
                    nulls += 1;
                } else {
                    pos += len as usize;
                }
            }
            rows += 1;
        }
        assert_eq!((rows, pos), (2, out.len()));
        // Props NULL twice; row 2 (i = 3): referrer NULL (odd), session NULL (3 | i).
        assert_eq!(nulls, 4);
    }

    #[test]
    fn visitor_hash_is_keyed_and_separates_fields() {
        let k1 = [1u8; 16];
        let k2 = [2u8; 16];
        let a = visitor_hash(&k1, 1, b"10.0.0.1", b"UA");
        assert_eq!(a, visitor_hash(&k1, 1, b"10.0.0.1", b"UA"));
        assert_ne!(
            a,
            visitor_hash(&k2, 1, b"10.0.0.1", b"UA"),
            "another day's key"
        );
        assert_ne!(a, visitor_hash(&k1, 2, b"10.0.0.1", b"UA"), "another site");
        assert_ne!(a, visitor_hash(&k1, 1, b"10.0.0.2", b"UA"), "another IP");
        assert_ne!(
            visitor_hash(&k1, 1, b"ab", b"c"),
            visitor_hash(&k1, 1, b"a", b"bc"),
            "length-delimited"
        );
    }

    #[test]
    fn sessions_end_after_idle_window() {
        let key = [7u8; 16];
        let mut s = Sessions::new(100, 30 * 60_000);
        let (v, s1) = s.identify(&key, None, 1, b"ip", b"ua", 0);
        let (v2, s2) = s.identify(&key, None, 1, b"ip", b"ua", 29 * 60_000);
        assert_eq!((v, s1), (v2, s2), "within 30 min: same session");
        let (_, s3) = s.identify(&key, None, 1, b"ip", b"ua", 29 * 60_000 + 30 * 60_000);
        assert_eq!(s3, s2, "idle is measured from the last event");
        let (_, s4) = s.identify(&key, None, 1, b"ip", b"ua", 90 * 60_000 + 1);
        assert_ne!(s4, s3, "more than 30 idle minutes: a new session");
    }

    #[test]
    fn a_session_crosses_midnight_with_yesterdays_key() {
        let yesterday = [1u8; 16];
        let today = [2u8; 16];
        let mut s = Sessions::new(100, 30 * 60_000);
        let (v1, s1) = s.identify(&yesterday, None, 1, b"ip", b"ua", 1_000);
        let (v2, s2) = s.identify(&today, Some(&yesterday), 1, b"ip", b"ua", 2_000);
        assert_eq!((v1, s1), (v2, s2));
        // Once that session ended, today's key gives a new visitor id.
        let (v3, _) = s.identify(&today, Some(&yesterday), 1, b"ip", b"ua", 3_000_000);
        assert_ne!(v3, v1);
    }

    #[test]
    fn sessions_stay_bounded() {
        let key = [3u8; 16];
        let mut s = Sessions::new(10, 1_000);
        for i in 0..10 {
            s.identify(&key, None, 1, format!("{i}").as_bytes(), b"ua", 0);
        }
        assert_eq!(s.len(), 10);
        // All idle: swept to make room.
        s.identify(&key, None, 1, b"new", b"ua", 5_000);
        assert_eq!(s.len(), 1);
        for i in 0..20 {
            s.identify(&key, None, 1, format!("x{i}").as_bytes(), b"ua", 5_000);
            assert!(s.len() <= 10);
        }
        let live = s.len();
        assert_eq!(s.sweep(10_000), live);
        assert!(s.is_empty());
    }
}
