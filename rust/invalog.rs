//! The host-wide invalidation log (pure Rust): a fixed ring of `(kind, id)`
//! targets in shared memory, so that a change evicts exactly what depends on
//! it in every process instead of emptying every cache.
//!
//! * `head` counts the entries ever appended; entry `s` lives in slot
//!   `s % len` until it is overwritten by entry `s + len`.
//! * Writers append under a short spinlock (the ratelimit one: a dead holder
//!   is stolen), write each slot seqlock-style (stamp `BUSY`, id, then the
//!   final stamp) and publish by storing the new `head` (Release).
//! * Readers never block writers: each process remembers the last head it
//!   applied; per request it loads `head` once, and when it moved reads the
//!   new entries. An entry whose stamp is not the expected one was
//!   overwritten (the reader fell more than `len` behind) or is being
//!   rewritten: the reader cannot tell what it missed and flushes everything.
//! * A `Flush` entry asks every process for a full flush (the old global
//!   generation semantics).
//!
//! Every append happens after the change it reports has committed, so a
//! value read from the database after `head` reached `s` already reflects
//! every change logged before `s`: a reader only has to distrust entries at
//! or after the head it saw when its read started ([`InvalidationLog::touches`]).

use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::ratelimit::acquire;

/// What a target names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Key = 1,
    Workspace = 2,
    User = 3,
    /// Everything: a full flush.
    Flush = 4,
    /// A workspace's list of keys grew or shrank (list totals only; no key changed).
    KeyList = 5,
    /// A user's list of workspaces grew or shrank (list totals only).
    WorkspaceList = 6,
    /// A pixel site was created, changed or deleted (the site directory's host lookups).
    /// The last free 3-bit code: another kind needs a wider field in the entry format.
    PixelSite = 7,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Workspace => "workspace",
            Kind::User => "user",
            Kind::Flush => "flush",
            Kind::KeyList => "key_list",
            Kind::WorkspaceList => "workspace_list",
            Kind::PixelSite => "pixel_site",
        }
    }

    /// The kind named `name` (targets only: not `flush`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "key" => Some(Kind::Key),
            "workspace" => Some(Kind::Workspace),
            "user" => Some(Kind::User),
            "key_list" => Some(Kind::KeyList),
            "workspace_list" => Some(Kind::WorkspaceList),
            "pixel_site" => Some(Kind::PixelSite),
            _ => None,
        }
    }

    fn from_bits(bits: u64) -> Option<Self> {
        match bits {
            1 => Some(Kind::Key),
            2 => Some(Kind::Workspace),
            3 => Some(Kind::User),
            4 => Some(Kind::Flush),
            5 => Some(Kind::KeyList),
            6 => Some(Kind::WorkspaceList),
            7 => Some(Kind::PixelSite),
            _ => None,
        }
    }
}

/// One ring slot (16 bytes).
#[repr(C)]
#[derive(Default)]
pub struct LogEntry {
    /// `(seq + 1) << 3 | kind`; 0 = never written, [`BUSY`] = being written.
    stamp: AtomicU64,
    id: AtomicU64,
}

pub const ENTRY_SIZE: usize = std::mem::size_of::<LogEntry>();
const _: () = assert!(ENTRY_SIZE == 16);
const BUSY: u64 = u64::MAX;

#[inline]
fn stamp_of(seq: u64, kind: Kind) -> u64 {
    ((seq + 1) << 3) | kind as u64
}

/// A view of the log inside a mapped region (or any memory that outlives it).
pub struct InvalidationLog<'a> {
    head: &'a AtomicU64,
    lock: &'a AtomicU64,
    entries: &'a [LogEntry],
}

impl<'a> InvalidationLog<'a> {
    /// # Panics
    /// If `entries` is empty.
    pub fn new(head: &'a AtomicU64, lock: &'a AtomicU64, entries: &'a [LogEntry]) -> Self {
        assert!(!entries.is_empty(), "the log needs at least one entry");
        Self {
            head,
            lock,
            entries,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Entries ever appended (one atomic load: the per-request check).
    #[inline]
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Appends `targets` (all visible at once); returns the new head.
    pub fn append(&self, targets: &[(Kind, i64)]) -> u64 {
        let _guard = acquire(self.lock);
        let mut seq = self.head.load(Ordering::Relaxed);
        for &(kind, id) in targets {
            let slot = &self.entries[(seq % self.entries.len() as u64) as usize];
            slot.stamp.store(BUSY, Ordering::Relaxed);
            fence(Ordering::Release); // BUSY is visible before the new id
            slot.id.store(id as u64, Ordering::Relaxed);
            slot.stamp.store(stamp_of(seq, kind), Ordering::Release);
            seq += 1;
        }
        self.head.store(seq, Ordering::Release);
        seq
    }

    /// A full flush for every reader.
    pub fn append_flush(&self) -> u64 {
        self.append(&[(Kind::Flush, 0)])
    }

    /// Entry `seq`, if the ring still holds it intact.
    fn entry(&self, seq: u64) -> Option<(Kind, i64)> {
        let slot = &self.entries[(seq % self.entries.len() as u64) as usize];
        let before = slot.stamp.load(Ordering::Acquire);
        let id = slot.id.load(Ordering::Relaxed);
        fence(Ordering::Acquire); // the id is read before the stamp is re-read
        let after = slot.stamp.load(Ordering::Relaxed);
        if before != after || before >> 3 != seq + 1 {
            return None;
        }
        Some((Kind::from_bits(before & 7)?, id as i64))
    }

    /// The targets appended in `[from, to)`, or `None` when the caller must flush
    /// everything instead: the range is no longer (or never was) in the ring, an
    /// entry was overwritten meanwhile, or one of them is a [`Kind::Flush`].
    pub fn read(&self, from: u64, to: u64) -> Option<Vec<(Kind, i64)>> {
        if to < from || to - from > self.entries.len() as u64 || to > self.head() {
            return None;
        }
        let mut out = Vec::with_capacity((to - from) as usize);
        for seq in from..to {
            match self.entry(seq)? {
                (Kind::Flush, _) => return None,
                target => out.push(target),
            }
        }
        Some(out)
    }

    /// Whether anything appended since `since` may touch one of `targets`:
    /// true if an entry names one of them, asks for a flush, or can no longer
    /// be read. A value read from the database after the head was `since` may
    /// be cached only when this is false.
    pub fn touches(&self, since: u64, targets: &[(Kind, i64)]) -> bool {
        let head = self.head();
        if head == since {
            return false;
        }
        match self.read(since, head) {
            None => true,
            Some(entries) => entries.iter().any(|e| targets.contains(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Mem {
        head: AtomicU64,
        lock: AtomicU64,
        entries: Vec<LogEntry>,
    }

    fn mem(n: usize) -> Arc<Mem> {
        Arc::new(Mem {
            head: AtomicU64::new(0),
            lock: AtomicU64::new(0),
            entries: (0..n).map(|_| LogEntry::default()).collect(),
        })
    }

    fn log(m: &Mem) -> InvalidationLog<'_> {
        InvalidationLog::new(&m.head, &m.lock, &m.entries)
    }

    #[test]
    fn append_and_read() {
        let m = mem(8);
        let l = log(&m);
        assert_eq!(l.head(), 0);
        assert_eq!(l.read(0, 0), Some(vec![]));
        assert_eq!(l.append(&[(Kind::Key, 5), (Kind::Workspace, 9)]), 2);
        assert_eq!(l.append(&[(Kind::User, 3)]), 3);
        assert_eq!(
            l.read(0, 3),
            Some(vec![(Kind::Key, 5), (Kind::Workspace, 9), (Kind::User, 3)])
        );
        assert_eq!(l.read(2, 3), Some(vec![(Kind::User, 3)]));
        // Beyond the head, or backwards: the caller must flush.
        assert_eq!(l.read(0, 4), None);
        assert_eq!(l.read(3, 2), None);
    }

    #[test]
    fn wraparound_keeps_the_last_len_entries() {
        let m = mem(4);
        let l = log(&m);
        for i in 0..10 {
            l.append(&[(Kind::Key, i)]);
        }
        assert_eq!(l.head(), 10);
        assert_eq!(
            l.read(6, 10),
            Some((6..10).map(|i| (Kind::Key, i)).collect())
        );
        // Fell behind by more than the ring: the entries are gone.
        assert_eq!(l.read(5, 10), None);
        assert_eq!(l.read(0, 10), None);
        // Within range but already overwritten (the range check alone passes).
        assert_eq!(l.read(5, 8), None);
    }

    #[test]
    fn flush_entries_and_reset_ask_for_a_flush() {
        let m = mem(8);
        let l = log(&m);
        l.append(&[(Kind::Key, 1)]);
        l.append_flush();
        l.append(&[(Kind::Key, 2)]);
        assert_eq!(l.read(0, 3), None);
        assert_eq!(l.read(2, 3), Some(vec![(Kind::Key, 2)]));
        // A reader that remembers a head the log never reached (a new file).
        assert_eq!(l.read(7, 9), None);
        // A torn entry (being rewritten) is not trusted.
        m.entries[2].stamp.store(BUSY, Ordering::Relaxed);
        assert_eq!(l.read(2, 3), None);
    }

    #[test]
    fn touches_only_named_targets() {
        let m = mem(8);
        let l = log(&m);
        let since = l.head();
        assert!(!l.touches(since, &[(Kind::Key, 1)]));
        l.append(&[(Kind::Key, 2), (Kind::Workspace, 7)]);
        assert!(!l.touches(since, &[(Kind::Key, 1), (Kind::Workspace, 8)]));
        assert!(l.touches(since, &[(Kind::Key, 1), (Kind::Workspace, 7)]));
        assert!(!l.touches(l.head(), &[(Kind::Workspace, 7)]));
        // Same id, other kind: untouched.
        assert!(!l.touches(since, &[(Kind::User, 2)]));
        let before_flush = l.head();
        l.append_flush();
        assert!(l.touches(before_flush, &[(Kind::Key, 1)]));
        // Fell behind: everything is suspect.
        for i in 0..20 {
            l.append(&[(Kind::User, 100 + i)]);
        }
        assert!(l.touches(before_flush + 1, &[(Kind::Key, 1)]));
    }

    #[test]
    fn concurrent_writers_and_a_reader() {
        let m = mem(64);
        let writers: Vec<_> = (0..4i64)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..5_000i64 {
                        log(&m).append(&[(Kind::Key, t * 1_000_000 + i), (Kind::User, t)]);
                    }
                })
            })
            .collect();
        // A reader following along: every entry it gets is one a writer wrote
        // (kind and id consistent), in order per writer; it flushes when lapped.
        let reader = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let l = log(&m);
                let (mut applied, mut flushes, mut seen) = (0u64, 0u32, 0u64);
                let mut last = [-1i64; 4];
                while applied < 40_000 {
                    let head = l.head();
                    match l.read(applied, head) {
                        None => {
                            flushes += 1;
                            last = [-1; 4];
                        }
                        Some(entries) => {
                            for (kind, id) in entries {
                                seen += 1;
                                match kind {
                                    Kind::Key => {
                                        let t = (id / 1_000_000) as usize;
                                        assert!(id % 1_000_000 > last[t], "out of order");
                                        last[t] = id % 1_000_000;
                                    }
                                    Kind::User => assert!((0..4).contains(&id)),
                                    _ => panic!("unexpected {kind:?}"),
                                }
                            }
                        }
                    }
                    applied = head;
                }
                (flushes, seen)
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        let (flushes, seen) = reader.join().unwrap();
        assert_eq!(m.head.load(Ordering::Relaxed), 40_000);
        assert!(seen > 0 || flushes > 0);
        // The last 64 entries are intact and well formed.
        let l = log(&m);
        let tail = l.read(40_000 - 64, 40_000).unwrap();
        assert_eq!(tail.len(), 64);
        assert_eq!(tail.iter().filter(|(k, _)| *k == Kind::User).count(), 32);
    }
}
