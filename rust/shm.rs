//! A small shared-memory region in a file, mmapped by every worker process on
//! one host (pure Rust, no pyo3). It holds only transient state: a
//! cross-process cache-invalidation generation, the invalidation log (see
//! `invalog`) and the rate-limit slot table.
//!
//! File layout (little-endian, native atomics):
//!
//! | offset | size | field                                         |
//! |--------|------|-----------------------------------------------|
//! | 0      | 8    | magic `b"COREAPI\x01"`                          |
//! | 8      | 4    | layout version                                |
//! | 12     | 4    | number of rate-limit slots                    |
//! | 16     | 4    | slot size in bytes (64)                       |
//! | 20     | 44   | reserved                                      |
//! | 64     | 8    | generation (`AtomicU64`, own cache line)      |
//! | 72     | 56   | reserved                                      |
//! | 128    | 8    | invalidation log head (`AtomicU64`, own line) |
//! | 192    | 8    | invalidation log writer lock (own line)       |
//! | 256    | 16*L | invalidation log entries (L = [`LOG_LEN`])    |
//! | 256+16L| 64*n | rate-limit slots ([`Slot`])                   |
//!
//! Creation is race-safe between processes: a missing or incompatible file is
//! replaced, under an exclusive `flock` on `<path>.lock`, by a fully
//! initialised temporary file that is atomically renamed into place (magic
//! written last). A file is never truncated in place, so processes that still
//! map an old, incompatible file keep working on their copy (no SIGBUS).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::MmapMut;

use crate::error::{NativeError, Result};
use crate::invalog::{InvalidationLog, LogEntry, ENTRY_SIZE};

/// File magic.
pub const MAGIC: u64 = u64::from_le_bytes(*b"COREAPI\x01");
/// Bumped whenever the layout below changes.
pub const LAYOUT_VERSION: u32 = 2;
/// Header size (cache-line aligned).
pub const HEADER_SIZE: usize = 256;
/// Entries in the invalidation log: how far a process may fall behind (in
/// targets) before it must flush everything.
pub const LOG_LEN: usize = 4096;
/// Where the rate-limit slots start (cache-line aligned).
pub const SLOTS_OFFSET: usize = HEADER_SIZE + LOG_LEN * ENTRY_SIZE;
/// Size of one [`Slot`].
pub const SLOT_SIZE: usize = std::mem::size_of::<Slot>();
/// Largest accepted slot count (2^24 slots = 1 GiB file).
pub const MAX_SLOTS: u32 = 1 << 24;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_SLOTS: usize = 12;
const OFF_SLOT_SIZE: usize = 16;
const OFF_GENERATION: usize = 64;
const OFF_LOG_HEAD: usize = 128;
const OFF_LOG_LOCK: usize = 192;

/// One rate-limit slot, 64 bytes (one cache line). Every field is an atomic
/// so that concurrent access from several processes is well defined; the
/// data fields are only written while `lock` is held (see `ratelimit`).
#[repr(C, align(64))]
#[derive(Default)]
pub struct Slot {
    /// 64-bit hash of the bucket key; 0 = never used.
    pub key: AtomicU64,
    /// Spinlock guarding the data fields: 0 = free, else owner tag.
    pub lock: AtomicU64,
    /// Insertion lock for keys whose home (first probe) slot is this one.
    pub ins_lock: AtomicU64,
    /// Tokens (f64 bits).
    pub tokens: AtomicU64,
    /// Clock value (ns) of the last update.
    pub updated_ns: AtomicU64,
    /// Bucket capacity (f64 bits) at the last check; 0 = unknown.
    pub capacity: AtomicU64,
    /// Refill rate per second (f64 bits) at the last check; 0 = unknown.
    pub refill: AtomicU64,
    _reserved: AtomicU64,
}

const _: () = assert!(SLOT_SIZE == 64);
const _: () = assert!(SLOTS_OFFSET.is_multiple_of(64));

/// A mapped region; cheap to share between threads (`Send + Sync`).
pub struct SharedRegion {
    mmap: MmapMut,
    slots: u32,
    path: PathBuf,
}

fn file_len(slots: u32) -> u64 {
    (SLOTS_OFFSET + slots as usize * SLOT_SIZE) as u64
}

fn open_rw(path: &Path, create_new: bool) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if create_new {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// `requested` as a slot count: between 1 and [`MAX_SLOTS`].
pub fn checked_slots(requested: i64) -> Result<u32> {
    u32::try_from(requested)
        .ok()
        .filter(|n| (1..=MAX_SLOTS).contains(n))
        .ok_or_else(|| {
            NativeError::invalid(format!(
                "rate_slots must be between 1 and {MAX_SLOTS}, got {requested}"
            ))
        })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl SharedRegion {
    /// Opens the region at `path`, creating (or replacing an incompatible)
    /// file with `rate_slots` slots. Parent directories are created.
    pub fn open_or_create(path: impl AsRef<Path>, rate_slots: u32) -> Result<Self> {
        let path = path.as_ref();
        let rate_slots = checked_slots(rate_slots.into())?;
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        // Fast path: a valid file exists (files only appear fully initialised).
        if let Some(region) = Self::open_existing(path, rate_slots)? {
            return Ok(region);
        }
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(sibling(path, ".lock"))?;
        lock_file.lock()?;
        let result = match Self::open_existing(path, rate_slots) {
            Ok(Some(region)) => Ok(region),
            Ok(None) => Self::create(path, rate_slots),
            Err(e) => Err(e),
        };
        // Closing the file releases the flock as well; unlock explicitly
        // for clarity and ignore errors (the fd is closed right after).
        let _ = lock_file.unlock();
        Ok(result?)
    }

    /// `Ok(None)` when the file is missing or incompatible.
    fn open_existing(path: &Path, rate_slots: u32) -> io::Result<Option<Self>> {
        let file = match open_rw(path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if file.metadata()?.len() != file_len(rate_slots) {
            return Ok(None);
        }
        // SAFETY: the file is only ever modified through atomics in this
        // mapping (or equivalent mappings in other processes) and is never
        // truncated in place.
        let mmap = unsafe { MmapMut::map_mut(&file)? };
        let region = Self {
            mmap,
            slots: rate_slots,
            path: path.to_path_buf(),
        };
        let ok = region.atomic_u64(OFF_MAGIC).load(Ordering::Acquire) == MAGIC
            && region.atomic_u32(OFF_VERSION).load(Ordering::Relaxed) == LAYOUT_VERSION
            && region.atomic_u32(OFF_SLOTS).load(Ordering::Relaxed) == rate_slots
            && region.atomic_u32(OFF_SLOT_SIZE).load(Ordering::Relaxed) == SLOT_SIZE as u32;
        Ok(ok.then_some(region))
    }

    /// Creates a fresh file beside `path` and renames it into place.
    /// Called with the creation lock held.
    fn create(path: &Path, rate_slots: u32) -> io::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let tmp = sibling(
            path,
            &format!(
                ".tmp.{}.{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        );
        let build = || -> io::Result<Self> {
            let file = open_rw(&tmp, true)?;
            file.set_len(file_len(rate_slots))?; // zero-filled
                                                 // SAFETY: see `open_existing`; nobody else knows this file yet.
            let mmap = unsafe { MmapMut::map_mut(&file)? };
            let region = Self {
                mmap,
                slots: rate_slots,
                path: path.to_path_buf(),
            };
            region
                .atomic_u32(OFF_VERSION)
                .store(LAYOUT_VERSION, Ordering::Relaxed);
            region
                .atomic_u32(OFF_SLOTS)
                .store(rate_slots, Ordering::Relaxed);
            region
                .atomic_u32(OFF_SLOT_SIZE)
                .store(SLOT_SIZE as u32, Ordering::Relaxed);
            region.atomic_u64(OFF_MAGIC).store(MAGIC, Ordering::Release);
            std::fs::rename(&tmp, path)?;
            Ok(region)
        };
        let result = build();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= HEADER_SIZE);
        // SAFETY: in bounds, 8-aligned (the mapping is page aligned), and the
        // memory lives as long as `self.mmap`.
        unsafe { &*(self.mmap.as_ptr().add(off) as *const AtomicU64) }
    }

    fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= HEADER_SIZE);
        // SAFETY: as above.
        unsafe { &*(self.mmap.as_ptr().add(off) as *const AtomicU32) }
    }

    /// The cross-process invalidation generation.
    pub fn generation(&self) -> u64 {
        self.atomic_u64(OFF_GENERATION).load(Ordering::Acquire)
    }

    /// Increments the generation; returns the new value.
    pub fn bump_generation(&self) -> u64 {
        self.atomic_u64(OFF_GENERATION)
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_add(1)
    }

    /// The invalidation log.
    pub fn log(&self) -> InvalidationLog<'_> {
        // SAFETY: the entries lie between HEADER_SIZE and SLOTS_OFFSET (the file
        // length is checked or set on open), 16-byte aligned, and `LogEntry`
        // consists of atomics only (any bit pattern is valid).
        let entries = unsafe {
            std::slice::from_raw_parts(
                self.mmap.as_ptr().add(HEADER_SIZE) as *const LogEntry,
                LOG_LEN,
            )
        };
        InvalidationLog::new(
            self.atomic_u64(OFF_LOG_HEAD),
            self.atomic_u64(OFF_LOG_LOCK),
            entries,
        )
    }

    /// A full flush everywhere on the host: bumps the generation (for readers
    /// of it) and logs a flush entry (for readers of the log).
    pub fn flush_all(&self) -> u64 {
        let generation = self.bump_generation();
        self.log().append_flush();
        generation
    }

    /// The rate-limit slot table.
    pub fn slots(&self) -> &[Slot] {
        // SAFETY: the file is exactly SLOTS_OFFSET + slots * SLOT_SIZE bytes
        // (checked or set on open), SLOTS_OFFSET keeps 64-byte alignment, and
        // `Slot` consists of atomics only (any bit pattern is valid).
        unsafe {
            std::slice::from_raw_parts(
                self.mmap.as_ptr().add(SLOTS_OFFSET) as *const Slot,
                self.slots as usize,
            )
        }
    }

    pub fn slot_count(&self) -> u32 {
        self.slots
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    /// A fresh temporary directory (removed on drop).
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "core-api-native-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        pub(crate) fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn create_and_share_generation() {
        let d = TempDir::new("shm-gen");
        let p = d.file("sub/state.shm");
        let a = SharedRegion::open_or_create(&p, 64).unwrap();
        assert_eq!(a.generation(), 0);
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            (SLOTS_OFFSET + 64 * 64) as u64
        );
        let b = SharedRegion::open_or_create(&p, 64).unwrap();
        assert_eq!(a.bump_generation(), 1);
        assert_eq!(b.generation(), 1);
        assert_eq!(b.bump_generation(), 2);
        assert_eq!(a.generation(), 2);
        assert_eq!(a.slots().len(), 64);
        assert_eq!(a.slot_count(), 64);
        assert_eq!(a.path(), p.as_path());
        a.slots()[3].key.store(7, Ordering::Relaxed);
        assert_eq!(b.slots()[3].key.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn log_is_shared_between_mappings_and_separate_from_slots() {
        let d = TempDir::new("shm-log");
        let p = d.file("state.shm");
        let a = SharedRegion::open_or_create(&p, 8).unwrap();
        let b = SharedRegion::open_or_create(&p, 8).unwrap();
        use crate::invalog::Kind;
        assert_eq!(a.log().append(&[(Kind::Workspace, 42)]), 1);
        assert_eq!(b.log().read(0, 1), Some(vec![(Kind::Workspace, 42)]));
        assert_eq!(b.flush_all(), 1);
        assert_eq!(a.generation(), 1);
        assert_eq!(a.log().head(), 2);
        assert_eq!(
            a.log().read(0, 2),
            None,
            "a flush entry asks for a full flush"
        );
        // Filling the whole ring leaves the slots untouched.
        for i in 0..(LOG_LEN as i64 + 10) {
            a.log().append(&[(Kind::Key, i)]);
        }
        assert!(b.slots().iter().all(|s| s.key.load(Ordering::Relaxed) == 0));
        assert_eq!(b.log().read(2, b.log().head()), None, "fell behind");
    }

    #[test]
    fn incompatible_file_is_replaced_not_truncated() {
        let d = TempDir::new("shm-recreate");
        let p = d.file("state.shm");
        let old = SharedRegion::open_or_create(&p, 16).unwrap();
        old.bump_generation();
        // Different slot count: a new file replaces it.
        let new = SharedRegion::open_or_create(&p, 32).unwrap();
        assert_eq!(new.generation(), 0);
        assert_eq!(new.slots().len(), 32);
        // The old mapping still works (separate inode).
        assert_eq!(old.bump_generation(), 2);
        assert_eq!(new.generation(), 0);
        // Garbage file of the right size: replaced too.
        std::fs::write(&p, vec![0xAB; SLOTS_OFFSET + 32 * 64]).unwrap();
        let fresh = SharedRegion::open_or_create(&p, 32).unwrap();
        assert_eq!(fresh.generation(), 0);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
    }

    #[test]
    fn invalid_slot_count() {
        let d = TempDir::new("shm-invalid");
        let e = SharedRegion::open_or_create(d.file("x"), 0).err().unwrap();
        assert!(matches!(e, NativeError::InvalidArgument(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("rate_slots must be between 1 and {MAX_SLOTS}, got 0")
        );
        assert!(SharedRegion::open_or_create(d.file("x"), MAX_SLOTS + 1).is_err());
        assert!(checked_slots(-1).is_err());
        assert_eq!(checked_slots(i64::from(MAX_SLOTS)).unwrap(), MAX_SLOTS);
        assert!(!d.file("x").exists(), "nothing created for a bad count");
    }

    #[test]
    fn concurrent_creation_yields_one_region() {
        let d = TempDir::new("shm-race");
        let p = Arc::new(d.file("state.shm"));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || {
                    let r = SharedRegion::open_or_create(p.as_path(), 128).unwrap();
                    for _ in 0..100 {
                        r.bump_generation();
                    }
                    r
                })
            })
            .collect();
        let regions: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for r in &regions {
            assert_eq!(r.generation(), 800);
        }
    }
}
