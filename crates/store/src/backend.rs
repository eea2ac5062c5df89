//! The file under redb, with the sync policy applied where the disk is actually flushed.
//!
//! Every commit is a full redb commit (so the file is always consistent as far as the OS is
//! concerned, and a killed process loses nothing committed); the policy only decides how
//! often `fsync` runs, which is what power loss cares about.

use std::fs::File;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::sync::Mutex;

use crate::SyncPolicy;

#[derive(Debug)]
pub(crate) struct SyncedFile {
    file: FileBackend,
    policy: SyncPolicy,
    last_sync: Mutex<Instant>,
    /// Written since the last fsync.
    dirty: AtomicBool,
    /// While set, every write and fsync fails with "no space left on device" (tests: an
    /// injected I/O error, as a full disk gives it).
    faults: Arc<AtomicBool>,
}

impl SyncedFile {
    pub(crate) fn new(
        file: File,
        policy: SyncPolicy,
        faults: Arc<AtomicBool>,
    ) -> Result<Arc<Self>, redb::DatabaseError> {
        Ok(Arc::new(SyncedFile {
            file: FileBackend::new(file)?,
            policy,
            last_sync: Mutex::new(Instant::now()),
            dirty: AtomicBool::new(false),
            faults,
        }))
    }

    pub(crate) fn policy(&self) -> SyncPolicy {
        self.policy
    }

    fn injected(&self) -> std::io::Result<()> {
        if self.faults.load(Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }

    /// fsync now, whatever the policy (idle flush under `interval-ms`, clean shutdown).
    pub(crate) fn sync_now(&self) -> std::io::Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.injected().and_then(|()| self.file.sync_data()) {
                // Still unsynced: the next attempt must not think otherwise.
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
            if let Ok(mut last) = self.last_sync.lock() {
                *last = Instant::now();
            }
        }
        Ok(())
    }

    /// How long until an unsynced write is due for its fsync (`None`: nothing is due).
    pub(crate) fn sync_due_in(&self) -> Option<Duration> {
        let SyncPolicy::IntervalMs(ms) = self.policy else {
            return None;
        };
        if !self.dirty.load(Ordering::Acquire) {
            return None;
        }
        let last = *self.last_sync.lock().ok()?;
        Some(Duration::from_millis(ms).saturating_sub(last.elapsed()))
    }
}

/// The handle redb owns.
#[derive(Debug)]
pub(crate) struct Backend(pub(crate) Arc<SyncedFile>);

impl StorageBackend for Backend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.dirty.store(true, Ordering::Release);
        self.0.injected()?;
        self.0.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.dirty.store(true, Ordering::Release);
        match self.0.policy {
            SyncPolicy::Always => self.0.sync_now(),
            SyncPolicy::Never => Ok(()),
            SyncPolicy::IntervalMs(_) => match self.0.sync_due_in() {
                Some(left) if left.is_zero() => self.0.sync_now(),
                _ => Ok(()),
            },
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.dirty.store(true, Ordering::Release);
        self.0.injected()?;
        self.0.file.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        // Closed (and unlocked) even when the fsync fails: the writer reopens the file after
        // a failed commit, and a lock left behind would keep it out.
        let synced = self.0.sync_now();
        let closed = self.0.file.close();
        synced.and(closed)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.unlock_range(start, end)
    }
}
