//! Opening the durable store for `serve` (`--data-dir`, `--in-memory`, `--sync`,
//! `--strict-recovery`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use edgemq_broker::Durable;
use edgemq_store::{Recovery, Store, SyncPolicy};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    pub in_memory: bool,
    pub sync: SyncPolicy,
    pub strict_recovery: bool,
    /// `--max-store-bytes` (or the Broker's `persistence.maxSize`); `None`: the default.
    pub max_bytes: Option<u64>,
}

/// Open the store and read back what it holds; `None` when running in memory. A store that
/// cannot be used (in use by another process, unreadable directory, damaged under
/// `--strict-recovery`) stops the start with exit code 2.
pub fn open(options: &StoreOptions) -> Result<Option<Durable>, ExitCode> {
    if options.in_memory {
        tracing::warn!(
            "--in-memory: sessions, queued and retained messages do not survive a restart"
        );
        return Ok(None);
    }
    let recovery = if options.strict_recovery {
        Recovery::Strict
    } else {
        Recovery::Quarantine
    };
    match Store::open(&options.data_dir, options.sync, recovery) {
        Ok((store, recovered)) => {
            let budget = options
                .max_bytes
                .unwrap_or_else(|| default_budget(&options.data_dir, store.usage()));
            store.set_budget(budget);
            tracing::info!(
                path = %store.path().display(), sync = %store.policy(),
                usage = store.usage(), max_store_bytes = budget,
                "store opened"
            );
            Ok(Some(Durable {
                store: Arc::new(store),
                recovered,
            }))
        }
        Err(e) => {
            tracing::error!("{e}");
            if options.strict_recovery {
                tracing::error!("--strict-recovery is set: not starting with a damaged store (without it, the store is moved aside and the broker starts empty)");
            }
            Err(ExitCode::from(2))
        }
    }
}

/// Half of what the data dir's file system has free, plus what the store already holds: room
/// for the broker's state that leaves the rest of the disk to the system. (No budget if the
/// file system cannot be asked.)
fn default_budget(dir: &std::path::Path, usage: u64) -> u64 {
    #[cfg(unix)]
    if let Ok(fs) = rustix::fs::statvfs(dir) {
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        return (free / 2).saturating_add(usage).max(1);
    }
    let _ = (dir, usage);
    0
}
