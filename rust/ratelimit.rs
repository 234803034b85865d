//! Token buckets in the shared-memory slot table (pure Rust, no pyo3).
//!
//! * A bucket is found by a 64-bit SipHash-1-3 (fixed key, identical in every
//!   process) of its key, with linear probing over a window of
//!   [`PROBE_WINDOW`] slots starting at the key's home slot.
//! * Classic token bucket: `tokens = min(capacity, tokens + elapsed * refill)`;
//!   a new bucket starts full; a request of `cost` is admitted when
//!   `tokens >= cost` and consumes it. The clock is passed in (`now_ns`); a
//!   clock going backwards adds no tokens.
//! * Bounded memory: the table never grows. A slot whose bucket is full at
//!   `now_ns` holds no information and may be reused by another key; if the
//!   window has neither a free nor such a slot, the slot with the oldest
//!   update is reused (documented approximation: the evicted key starts full
//!   again; requests are never admitted without a bucket).
//! * Locking: every slot has a data spinlock, and an insertion lock used by
//!   keys whose home is that slot (so that one key is never inserted twice
//!   by racing processes). Lock order: insertion lock, then one data lock.
//!   A lock word holds `pid << 32 | sequence`; a waiter steals a lock held
//!   unchanged for [`STEAL_DEAD_AFTER`] when the holder process no longer
//!   exists (Linux `/proc` check; elsewhere assumed dead), and after
//!   [`STEAL_ALIVE_AFTER`] in any case.

use std::hash::Hasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use siphasher::sip::SipHasher13;

use crate::error::{NativeError, Result};
use crate::shm::{SharedRegion, Slot};

/// Number of slots probed for one key.
pub const PROBE_WINDOW: usize = 16;
/// Steal a lock whose holder process is gone after this long.
pub const STEAL_DEAD_AFTER: Duration = Duration::from_millis(2);
/// Steal a lock held this long even if the holder seems alive.
pub const STEAL_ALIVE_AFTER: Duration = Duration::from_millis(100);

/// Slack for floating-point accumulation when comparing tokens with cost.
const EPSILON: f64 = 1e-9;
const NS_PER_S: f64 = 1e9;
const SIP_K0: u64 = 0x636f_7265_2d61_7069; // "core-api"
const SIP_K1: u64 = 0x7261_7465_6c69_6d31; // "ratelim1"

/// Outcome of [`Buckets::check`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Tokens left after this request, floored at 0.
    pub remaining: f64,
    /// 0 when allowed; else seconds until `cost` tokens are available (for a
    /// cost above capacity: until the bucket is full).
    pub retry_after_s: f64,
    /// Seconds until the bucket is full again.
    pub reset_after_s: f64,
}

fn validate(capacity: f64, refill_per_sec: f64) -> Result<()> {
    if !(capacity.is_finite() && capacity > 0.0) {
        return Err(NativeError::invalid("capacity must be a finite number > 0"));
    }
    if !(refill_per_sec.is_finite() && refill_per_sec > 0.0) {
        return Err(NativeError::invalid(
            "refill_per_sec must be a finite number > 0",
        ));
    }
    Ok(())
}

fn validate_cost(cost: f64) -> Result<()> {
    if cost.is_finite() && cost >= 0.0 {
        Ok(())
    } else {
        Err(NativeError::invalid("cost must be a finite number >= 0"))
    }
}

/// Validated bucket parameters (a tier): checked once, then used by
/// [`Buckets::take`] on every request without re-validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    capacity: f64,
    refill_per_sec: f64,
}

impl Rate {
    /// Both must be finite and > 0.
    pub fn new(capacity: f64, refill_per_sec: f64) -> Result<Self> {
        validate(capacity, refill_per_sec)?;
        Ok(Self {
            capacity,
            refill_per_sec,
        })
    }

    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    pub fn refill_per_sec(&self) -> f64 {
        self.refill_per_sec
    }
}

/// The 64-bit slot key of a bucket key (never 0, which marks a free slot).
pub fn bucket_hash(key: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(SIP_K0, SIP_K1);
    h.write(key);
    match h.finish() {
        0 => 1,
        v => v,
    }
}

// ---------------------------------------------------------------- locking

/// This process's id, cached: `getpid` is a real system call (~150 ns in a
/// VM), too slow for every lock acquisition. A fork handler clears the cache
/// in the child so that lock tags always carry the right pid.
fn current_pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    #[cfg(unix)]
    {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        extern "C" fn forget_pid_in_child() {
            PID.store(0, Ordering::Relaxed);
        }
        extern "C" {
            fn pthread_atfork(
                prepare: Option<extern "C" fn()>,
                parent: Option<extern "C" fn()>,
                child: Option<extern "C" fn()>,
            ) -> std::ffi::c_int;
        }
        // SAFETY: registers a handler that only stores to an atomic.
        REGISTER.call_once(|| unsafe {
            pthread_atfork(None, None, Some(forget_pid_in_child));
        });
    }
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

fn owner_tag() -> u64 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    // Unique among live holders: pid (never 0) + per-process sequence.
    (u64::from(current_pid()) << 32) | u64::from(SEQ.fetch_add(1, Ordering::Relaxed))
}

fn holder_alive(tag: u64) -> bool {
    let pid = (tag >> 32) as u32;
    if pid == current_pid() {
        return true; // a thread of ours: never dies inside a critical section
    }
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        false
    }
}

/// Holds a slot spinlock; releases it on drop (unless it was stolen).
pub(crate) struct SpinGuard<'a> {
    lock: &'a AtomicU64,
    tag: u64,
}

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .lock
            .compare_exchange(self.tag, 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// Spins for `lock` (also the invalidation log's writer lock), stealing it from a
/// dead or stuck holder.
pub(crate) fn acquire(lock: &AtomicU64) -> SpinGuard<'_> {
    let tag = owner_tag();
    let mut spins: u32 = 0;
    let mut observed = 0u64;
    let mut since: Option<Instant> = None;
    loop {
        let cur = match lock.compare_exchange_weak(0, tag, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return SpinGuard { lock, tag },
            Err(cur) => cur,
        };
        spins = spins.wrapping_add(1);
        if spins < 64 {
            std::hint::spin_loop();
            continue;
        }
        std::thread::yield_now();
        if cur == 0 || !spins.is_multiple_of(8) {
            continue;
        }
        let now = Instant::now();
        if cur != observed {
            observed = cur;
            since = Some(now);
            continue;
        }
        let held = now.duration_since(*since.get_or_insert(now));
        let steal = held >= STEAL_ALIVE_AFTER || (held >= STEAL_DEAD_AFTER && !holder_alive(cur));
        if steal
            && lock
                .compare_exchange(cur, tag, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return SpinGuard { lock, tag };
        }
    }
}

// ---------------------------------------------------------------- buckets

#[inline]
fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

#[inline]
fn store_f64(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
}

/// Whether the bucket in `slot` would be full at `now_ns` (racy read; only
/// used to pick an eviction candidate, re-checked under the lock).
fn is_reusable(slot: &Slot, now_ns: u64) -> bool {
    let capacity = load_f64(&slot.capacity);
    let refill = load_f64(&slot.refill);
    if !(capacity > 0.0 && refill > 0.0) {
        return false; // parameters unknown (only set via set_tokens)
    }
    let tokens = load_f64(&slot.tokens);
    let elapsed = now_ns.saturating_sub(slot.updated_ns.load(Ordering::Relaxed));
    tokens + elapsed as f64 / NS_PER_S * refill >= capacity
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Free,
    Reusable,
    Oldest,
}

/// Token buckets over a slot table (usually [`SharedRegion::buckets`]).
#[derive(Clone, Copy)]
pub struct Buckets<'a> {
    slots: &'a [Slot],
}

impl SharedRegion {
    /// The rate limiter living in this region.
    pub fn buckets(&self) -> Buckets<'_> {
        Buckets::new(self.slots())
    }
}

impl<'a> Buckets<'a> {
    /// # Panics
    /// If `slots` is empty.
    pub fn new(slots: &'a [Slot]) -> Self {
        assert!(!slots.is_empty(), "slot table must not be empty");
        Self { slots }
    }

    fn window(&self, h: u64) -> impl Iterator<Item = usize> {
        let n = self.slots.len();
        let home = ((u128::from(h) * n as u128) >> 64) as usize;
        // home + j wraps at most once (j < n): no division per probe.
        (home..home + PROBE_WINDOW.min(n)).map(move |i| if i >= n { i - n } else { i })
    }

    fn find(&self, h: u64) -> Option<usize> {
        self.window(h)
            .find(|&i| self.slots[i].key.load(Ordering::Acquire) == h)
    }

    /// The locked slot holding `h`, if present.
    fn locate(&self, h: u64) -> Option<(&'a Slot, SpinGuard<'a>)> {
        // Lock-free probe, then confirm under the slot lock (the slot may
        // have been reused by another key meanwhile).
        for _ in 0..4 {
            let slot = &self.slots[self.find(h)?];
            let guard = acquire(&slot.lock);
            if slot.key.load(Ordering::Relaxed) == h {
                return Some((slot, guard));
            }
        }
        None
    }

    /// The locked slot holding `h`, inserting a fresh (full) bucket if absent.
    fn locate_or_insert(&self, h: u64, now_ns: u64) -> (&'a Slot, SpinGuard<'a>) {
        if let Some(found) = self.locate(h) {
            return found;
        }
        // Only holders of the home slot's insertion lock insert `h`, so `h`
        // never occupies two slots.
        let home = self.window(h).next().expect("non-empty table");
        let _ins = acquire(&self.slots[home].ins_lock);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(i) = self.find(h) {
                let slot = &self.slots[i];
                let guard = acquire(&slot.lock);
                if slot.key.load(Ordering::Relaxed) == h {
                    return (slot, guard);
                }
                continue;
            }
            let (i, seen, kind) = self.choose_victim(h, now_ns);
            let slot = &self.slots[i];
            let guard = acquire(&slot.lock);
            let key = slot.key.load(Ordering::Relaxed);
            let still_valid =
                key == seen && (kind != Candidate::Reusable || is_reusable(slot, now_ns));
            if still_valid || attempt >= 8 {
                // A fresh bucket: full (infinite tokens are clamped to the
                // capacity of the first check), parameters unknown.
                store_f64(&slot.tokens, f64::INFINITY);
                slot.updated_ns.store(now_ns, Ordering::Relaxed);
                store_f64(&slot.capacity, 0.0);
                store_f64(&slot.refill, 0.0);
                slot.key.store(h, Ordering::Release);
                return (slot, guard);
            }
        }
    }

    /// First free slot in `h`'s window, else the first reusable one, else
    /// the one with the oldest update. Returns (index, key seen, kind).
    fn choose_victim(&self, h: u64, now_ns: u64) -> (usize, u64, Candidate) {
        let mut reusable = None;
        let mut oldest: Option<(usize, u64, u64)> = None;
        for i in self.window(h) {
            let slot = &self.slots[i];
            let key = slot.key.load(Ordering::Acquire);
            if key == 0 {
                return (i, 0, Candidate::Free);
            }
            if reusable.is_none() && is_reusable(slot, now_ns) {
                reusable = Some((i, key));
            }
            let updated = slot.updated_ns.load(Ordering::Relaxed);
            if oldest.is_none_or(|(_, _, u)| updated < u) {
                oldest = Some((i, key, updated));
            }
        }
        if let Some((i, key)) = reusable {
            return (i, key, Candidate::Reusable);
        }
        let (i, key, _) = oldest.expect("non-empty window");
        (i, key, Candidate::Oldest)
    }

    /// Refilled tokens of a locked slot at `now_ns` (and the new update time).
    fn refilled(slot: &Slot, capacity: f64, refill_per_sec: f64, now_ns: u64) -> (f64, u64) {
        let stored = load_f64(&slot.tokens);
        // Unknown / corrupt state counts as full; negative tokens (a debt set
        // by `set_tokens`) are bounded by one capacity.
        let tokens = if stored.is_finite() {
            stored.clamp(-capacity, capacity)
        } else {
            capacity
        };
        let updated = slot.updated_ns.load(Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(updated);
        let tokens = (tokens + elapsed as f64 / NS_PER_S * refill_per_sec).min(capacity);
        (tokens, updated.max(now_ns))
    }

    /// Takes `cost` tokens from the bucket of `bucket_key` if it has them.
    pub fn check(
        &self,
        bucket_key: &[u8],
        capacity: f64,
        refill_per_sec: f64,
        cost: f64,
        now_ns: u64,
    ) -> Result<Decision> {
        let rate = Rate::new(capacity, refill_per_sec)?;
        self.take(bucket_key, &rate, cost, now_ns)
    }

    /// [`Buckets::check`] with pre-validated parameters.
    pub fn take(&self, bucket_key: &[u8], rate: &Rate, cost: f64, now_ns: u64) -> Result<Decision> {
        validate_cost(cost)?;
        let Rate {
            capacity,
            refill_per_sec,
        } = *rate;
        let h = bucket_hash(bucket_key);
        let (slot, guard) = self.locate_or_insert(h, now_ns);
        let (mut tokens, updated) = Self::refilled(slot, capacity, refill_per_sec, now_ns);
        let allowed = cost <= capacity && tokens + EPSILON >= cost;
        if allowed {
            tokens = (tokens - cost).max(0.0);
        }
        store_f64(&slot.tokens, tokens);
        slot.updated_ns.store(updated, Ordering::Relaxed);
        store_f64(&slot.capacity, capacity);
        store_f64(&slot.refill, refill_per_sec);
        drop(guard);

        let retry_after_s = if allowed {
            0.0
        } else {
            (cost.min(capacity) - tokens).max(0.0) / refill_per_sec
        };
        Ok(Decision {
            allowed,
            remaining: tokens.max(0.0),
            retry_after_s,
            reset_after_s: (capacity - tokens).max(0.0) / refill_per_sec,
        })
    }

    /// Tokens available at `now_ns` without consuming any (a missing bucket
    /// is full). Floored at 0.
    pub fn peek(
        &self,
        bucket_key: &[u8],
        capacity: f64,
        refill_per_sec: f64,
        now_ns: u64,
    ) -> Result<f64> {
        validate(capacity, refill_per_sec)?;
        let h = bucket_hash(bucket_key);
        Ok(match self.locate(h) {
            Some((slot, _guard)) => Self::refilled(slot, capacity, refill_per_sec, now_ns)
                .0
                .max(0.0),
            None => capacity,
        })
    }

    /// Sets the tokens of a bucket as of `now_ns` (reconciliation with a
    /// global view). Clamped to +-capacity of the bucket's last check; a
    /// bucket never checked takes the value as is, and the next check clamps
    /// it to its capacity. Negative values are a debt that delays refill.
    pub fn set_tokens(&self, bucket_key: &[u8], tokens: f64, now_ns: u64) -> Result<()> {
        if !tokens.is_finite() {
            return Err(NativeError::invalid("tokens must be a finite number"));
        }
        let h = bucket_hash(bucket_key);
        let (slot, _guard) = self.locate_or_insert(h, now_ns);
        let capacity = load_f64(&slot.capacity);
        let tokens = if capacity > 0.0 {
            tokens.clamp(-capacity, capacity)
        } else {
            tokens
        };
        store_f64(&slot.tokens, tokens);
        let updated = slot.updated_ns.load(Ordering::Relaxed);
        slot.updated_ns
            .store(updated.max(now_ns), Ordering::Relaxed);
        Ok(())
    }

    /// Number of occupied slots (diagnostics; racy).
    pub fn occupied(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.key.load(Ordering::Relaxed) != 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::tests::TempDir;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    const S: u64 = 1_000_000_000;

    fn table(n: usize) -> Vec<Slot> {
        (0..n).map(|_| Slot::default()).collect()
    }

    #[test]
    fn exactly_capacity_then_denied() {
        let t = table(64);
        let b = Buckets::new(&t);
        let now = 10 * S;
        for i in 0..60 {
            let d = b.check(b"k", 60.0, 1.0, 1.0, now).unwrap();
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 59.0 - f64::from(i));
            assert_eq!(d.retry_after_s, 0.0);
        }
        let d = b.check(b"k", 60.0, 1.0, 1.0, now).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0.0);
        assert!((d.retry_after_s - 1.0).abs() < 1e-9);
        assert!((d.reset_after_s - 60.0).abs() < 1e-9);
        // Other keys are independent.
        assert!(b.check(b"other", 60.0, 1.0, 1.0, now).unwrap().allowed);
    }

    #[test]
    fn refill_rate_with_fake_clock() {
        let t = table(64);
        let b = Buckets::new(&t);
        // 60/min with 50% burst: capacity 90, refill 1/s.
        let t0 = 1_000 * S;
        for _ in 0..90 {
            assert!(b.check(b"k", 90.0, 1.0, 1.0, t0).unwrap().allowed);
        }
        assert!(!b.check(b"k", 90.0, 1.0, 1.0, t0).unwrap().allowed);
        // Half a second later: still nothing, retry after 0.5 s.
        let d = b.check(b"k", 90.0, 1.0, 1.0, t0 + S / 2).unwrap();
        assert!(!d.allowed);
        assert!((d.retry_after_s - 0.5).abs() < 1e-9, "{d:?}");
        assert!((d.remaining - 0.5).abs() < 1e-9);
        // One second: exactly one more.
        assert!(b.check(b"k", 90.0, 1.0, 1.0, t0 + S).unwrap().allowed);
        assert!(!b.check(b"k", 90.0, 1.0, 1.0, t0 + S).unwrap().allowed);
        // Ten more seconds: ten more.
        let t1 = t0 + 11 * S;
        let allowed = (0..20)
            .filter(|_| b.check(b"k", 90.0, 1.0, 1.0, t1).unwrap().allowed)
            .count();
        assert_eq!(allowed, 10);
        // A long pause refills only up to capacity.
        assert_eq!(b.peek(b"k", 90.0, 1.0, t1 + 3600 * S).unwrap(), 90.0);
    }

    #[test]
    fn decision_values() {
        let t = table(64);
        let b = Buckets::new(&t);
        let now = 5 * S;
        // capacity 10, refill 2/s, cost 4.
        let d = b.check(b"k", 10.0, 2.0, 4.0, now).unwrap();
        assert_eq!(
            d,
            Decision {
                allowed: true,
                remaining: 6.0,
                retry_after_s: 0.0,
                reset_after_s: 2.0
            }
        );
        let d = b.check(b"k", 10.0, 2.0, 4.0, now).unwrap();
        assert_eq!(d.remaining, 2.0);
        assert_eq!(d.reset_after_s, 4.0);
        let d = b.check(b"k", 10.0, 2.0, 4.0, now).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.remaining, 2.0);
        assert_eq!(d.retry_after_s, 1.0); // 2 more tokens at 2/s
        assert_eq!(d.reset_after_s, 4.0);
        // Cost above capacity: never admitted, retry when full.
        let d = b.check(b"k", 10.0, 2.0, 11.0, now).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_s, 4.0);
        // Cost 0 is always admitted and consumes nothing.
        let d = b.check(b"k", 10.0, 2.0, 0.0, now).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 2.0);
    }

    #[test]
    fn invalid_parameters() {
        let t = table(4);
        let b = Buckets::new(&t);
        assert!(b.check(b"k", 0.0, 1.0, 1.0, 0).is_err());
        assert!(b.check(b"k", f64::NAN, 1.0, 1.0, 0).is_err());
        assert!(b.check(b"k", 1.0, 0.0, 1.0, 0).is_err());
        assert!(b.check(b"k", 1.0, f64::INFINITY, 1.0, 0).is_err());
        assert!(b.check(b"k", 1.0, 1.0, -1.0, 0).is_err());
        assert!(b.peek(b"k", -1.0, 1.0, 0).is_err());
        assert!(b.set_tokens(b"k", f64::NAN, 0).is_err());
        assert_eq!(
            b.check(b"k", 1.0, 1.0, f64::NAN, 0)
                .unwrap_err()
                .to_string(),
            "cost must be a finite number >= 0"
        );
        assert_eq!(b.occupied(), 0);
    }

    #[test]
    fn take_with_a_rate_equals_check() {
        let (a, b) = (table(64), table(64));
        let (a, b) = (Buckets::new(&a), Buckets::new(&b));
        let rate = Rate::new(10.0, 2.0).unwrap();
        assert_eq!((rate.capacity(), rate.refill_per_sec()), (10.0, 2.0));
        // Includes a zero cost, a cost above capacity and a clock going back.
        let steps: [(u64, f64); 10] = [
            (0, 1.0),
            (0, 4.0),
            (0, 4.0),
            (0, 4.0),
            (S / 4, 1.0),
            (S, 2.5),
            (3 * S, 0.0),
            (3 * S, 11.0),
            (10 * S, 3.0),
            (9 * S, 1.0),
        ];
        for (now, cost) in steps {
            assert_eq!(
                a.take(b"k", &rate, cost, 100 * S + now).unwrap(),
                b.check(b"k", 10.0, 2.0, cost, 100 * S + now).unwrap()
            );
        }
        assert!(Rate::new(0.0, 1.0).is_err());
        assert!(Rate::new(1.0, f64::NAN).is_err());
        assert_eq!(
            a.take(b"k", &rate, -1.0, S).unwrap_err().to_string(),
            "cost must be a finite number >= 0"
        );
    }

    #[test]
    fn probe_window_wraps_around_the_table() {
        let t = table(20);
        let b = Buckets::new(&t);
        let n = t.len() as u128;
        // Keys whose home slot is near the end of the table.
        let keys: Vec<[u8; 4]> = (0u32..)
            .map(u32::to_le_bytes)
            .filter(|k| ((u128::from(bucket_hash(k)) * n) >> 64) >= 18)
            .take(10)
            .collect();
        for k in &keys {
            assert!(b.check(k, 1.0, 1e-9, 1.0, S).unwrap().allowed);
        }
        assert_eq!(b.occupied(), 10);
        for k in &keys {
            assert!(
                !b.check(k, 1.0, 1e-9, 1.0, S).unwrap().allowed,
                "one bucket per key"
            );
        }
    }

    #[test]
    fn clock_going_backwards_adds_nothing() {
        let t = table(16);
        let b = Buckets::new(&t);
        let t0 = 100 * S;
        for _ in 0..5 {
            assert!(b.check(b"k", 5.0, 1.0, 1.0, t0).unwrap().allowed);
        }
        assert!(!b.check(b"k", 5.0, 1.0, 1.0, t0 - 50 * S).unwrap().allowed);
        assert!(!b.check(b"k", 5.0, 1.0, 1.0, t0).unwrap().allowed);
        assert_eq!(b.peek(b"k", 5.0, 1.0, t0 - S).unwrap(), 0.0);
        // Refill resumes from the latest time seen.
        assert!(b.check(b"k", 5.0, 1.0, 1.0, t0 + S).unwrap().allowed);
    }

    #[test]
    fn peek_and_set_tokens() {
        let t = table(64);
        let b = Buckets::new(&t);
        assert_eq!(b.peek(b"k", 10.0, 1.0, 0).unwrap(), 10.0);
        assert_eq!(b.occupied(), 0, "peek does not create buckets");
        b.check(b"k", 10.0, 1.0, 3.0, S).unwrap();
        assert_eq!(b.peek(b"k", 10.0, 1.0, S).unwrap(), 7.0);
        assert_eq!(b.peek(b"k", 10.0, 1.0, 2 * S).unwrap(), 8.0);
        b.set_tokens(b"k", 2.0, 2 * S).unwrap();
        assert_eq!(b.peek(b"k", 10.0, 1.0, 2 * S).unwrap(), 2.0);
        let d = b.check(b"k", 10.0, 1.0, 1.0, 2 * S).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 1.0);
        // Clamped to capacity; a debt delays refill.
        b.set_tokens(b"k", 1e9, 2 * S).unwrap();
        assert_eq!(b.peek(b"k", 10.0, 1.0, 2 * S).unwrap(), 10.0);
        b.set_tokens(b"k", -3.0, 2 * S).unwrap();
        assert_eq!(b.peek(b"k", 10.0, 1.0, 4 * S).unwrap(), 0.0);
        let d = b.check(b"k", 10.0, 1.0, 1.0, 5 * S).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0.0);
        assert_eq!(d.retry_after_s, 1.0);
        assert!(b.check(b"k", 10.0, 1.0, 1.0, 6 * S).unwrap().allowed);
        // A bucket never checked: created with the given tokens.
        b.set_tokens(b"new", 4.0, 6 * S).unwrap();
        assert_eq!(b.peek(b"new", 10.0, 1.0, 6 * S).unwrap(), 4.0);
        assert_eq!(b.peek(b"new", 3.0, 1.0, 6 * S).unwrap(), 3.0);
    }

    #[test]
    fn two_handles_share_one_budget() {
        let d = TempDir::new("rl-share");
        let p = d.file("state.shm");
        let a = SharedRegion::open_or_create(&p, 1024).unwrap();
        let b = SharedRegion::open_or_create(&p, 1024).unwrap();
        let now = 7 * S;
        let mut allowed = 0;
        for i in 0..100 {
            let region = if i % 2 == 0 { &a } else { &b };
            if region
                .buckets()
                .check(b"ws:1", 30.0, 0.5, 1.0, now)
                .unwrap()
                .allowed
            {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 30);
        assert_eq!(
            a.buckets().peek(b"ws:1", 30.0, 0.5, now + 2 * S).unwrap(),
            1.0
        );
        b.buckets().set_tokens(b"ws:1", 5.0, now + 2 * S).unwrap();
        assert_eq!(
            a.buckets().peek(b"ws:1", 30.0, 0.5, now + 2 * S).unwrap(),
            5.0
        );
    }

    #[test]
    fn threads_never_exceed_capacity() {
        let d = TempDir::new("rl-threads");
        let p = d.file("state.shm");
        // A small table so that the keys' probe windows overlap.
        let region = Arc::new(SharedRegion::open_or_create(&p, 64).unwrap());
        let keys: Vec<Vec<u8>> = (0..4).map(|i| format!("key-{i}").into_bytes()).collect();
        let admitted: Arc<Vec<AtomicUsize>> =
            Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let region = Arc::clone(&region);
                let keys = keys.clone();
                let admitted = Arc::clone(&admitted);
                std::thread::spawn(move || {
                    // Each thread opens its own mapping, like a process would.
                    let own = SharedRegion::open_or_create(region.path(), 64).unwrap();
                    for i in 0..4000 {
                        let k = (i + t) % 4;
                        let r = if i % 2 == 0 { &*region } else { &own };
                        let d = r.buckets().check(&keys[k], 1000.0, 1e-6, 1.0, S).unwrap();
                        if d.allowed {
                            admitted[k].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for a in admitted.iter() {
            assert_eq!(a.load(Ordering::Relaxed), 1000);
        }
    }

    #[test]
    fn eviction_keeps_memory_bounded_and_spares_busy_buckets() {
        let t = table(64);
        let b = Buckets::new(&t);
        // A busy bucket, drained and refilling slowly.
        let mut now = S;
        for _ in 0..10 {
            assert!(b.check(b"busy", 10.0, 0.001, 1.0, now).unwrap().allowed);
        }
        // 10k other keys, each full again one microsecond later.
        for i in 0..10_000u32 {
            now += 1_000;
            let d = b.check(&i.to_le_bytes(), 1.0, 1e6, 1.0, now).unwrap();
            assert!(d.allowed, "new or full bucket {i}");
        }
        assert!(b.occupied() <= 64);
        assert!(!b.check(b"busy", 10.0, 0.001, 1.0, now).unwrap().allowed);
        // When no slot is reusable, the oldest is evicted and starts full.
        let t = table(4);
        let b = Buckets::new(&t);
        for i in 0..100u32 {
            let d = b
                .check(&i.to_le_bytes(), 5.0, 1e-3, 5.0, S + u64::from(i))
                .unwrap();
            assert!(d.allowed);
        }
        assert_eq!(b.occupied(), 4);
    }

    #[test]
    fn bucket_hash_is_stable() {
        assert_eq!(bucket_hash(b"abc"), bucket_hash(b"abc"));
        assert_ne!(bucket_hash(b"abc"), bucket_hash(b"abd"));
        assert_ne!(bucket_hash(b""), 0);
    }

    #[test]
    fn lock_of_dead_process_is_stolen() {
        let t = table(8);
        let b = Buckets::new(&t);
        b.check(b"k", 5.0, 1.0, 1.0, S).unwrap();
        let i = b.find(bucket_hash(b"k")).unwrap();
        // Pretend a process that no longer exists died holding the lock.
        let dead_pid: u64 = 0x7fff_fff0;
        t[i].lock.store(dead_pid << 32 | 1, Ordering::Relaxed);
        let start = Instant::now();
        assert!(b.check(b"k", 5.0, 1.0, 1.0, S).unwrap().allowed);
        let waited = start.elapsed();
        assert!(waited >= STEAL_DEAD_AFTER, "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(t[i].lock.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn lock_of_live_holder_is_stolen_only_late() {
        let t = table(8);
        let b = Buckets::new(&t);
        b.check(b"k", 5.0, 1.0, 1.0, S).unwrap();
        let i = b.find(bucket_hash(b"k")).unwrap();
        t[i].lock
            .store(u64::from(std::process::id()) << 32 | 3, Ordering::Relaxed);
        let start = Instant::now();
        assert!(b.check(b"k", 5.0, 1.0, 1.0, S).unwrap().allowed);
        assert!(start.elapsed() >= STEAL_ALIVE_AFTER);
    }
}
