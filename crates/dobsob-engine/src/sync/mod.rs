//! The sync engine: for each requested dataset, plan (full load or incremental pass), fetch pages, merge
//! them into the warehouse, record them in the ledger, reconcile deletions, and report.
//!
//! Order of writes, the rule everything rests on: a page is merged into DuckDB together with the dataset's
//! sync state in one DuckDB transaction; only then is it recorded in the ledger. A crash at any point leaves a
//! warehouse that knows exactly what it holds, and the next run resumes from there (see
//! `docs/architecture.md`).

mod dataset;
pub mod decide;
mod full;
pub(crate) mod page;
pub(crate) mod pass;
pub mod reconcile;
mod run;
pub mod schedule;
pub mod shutdown;

use std::path::PathBuf;
use std::sync::Arc;

use crate::ledger::{Ledger, LedgerError};
use crate::soda::{SodaClient, SodaError};
use crate::warehouse::{WarehouseError, WarehouseHandle};
pub use dataset::{fingerprint, gate_holds, schema_of, unchanged_reason};
pub use reconcile::DeleteGuard;
pub use run::{size_estimate_mb, start_order, Job, Limits, RunMetrics, RunResult, Throttle};
pub use shutdown::Shutdown;

pub use crate::report::{
    DatasetError, DatasetReport, FailureKind, Outcome, Progress, SyncMode, Timings,
};

/// What to do with each dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Incremental when possible; a full load the first time or when the schema changed.
    Sync,
    /// A full reload into a fresh table, swapped in at the end.
    Rebuild,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Soda(#[from] SodaError),
    #[error("{0}")]
    Warehouse(#[from] WarehouseError),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    #[error("unusable schema: {0}")]
    Schema(String),
    /// A page that is not a page of rows (malformed CSV, a header without the system fields, ...).
    #[error("bad page {page} from {url}: {message}")]
    Page {
        page: u64,
        url: String,
        message: String,
    },
    /// A page that does not move the pass forward (a portal ignoring `$where` or `$order`); nothing of it
    /// was committed.
    #[error("page {page}: {message}")]
    Paging { page: u64, message: String },
    /// A full load that failed its completeness checks and was not swapped in.
    #[error("{0}")]
    Incomplete(String),
    /// The id check would delete more than the limits allow without confirmation.
    #[error(
        "refusing to delete {would_delete} of {rows} rows ({why}): the portal may be serving a partial \
         dataset. If the deletions are real, run again with --allow-mass-delete, or `dobsob rebuild --datasets KEY` the dataset"
    )]
    MassDelete {
        would_delete: u64,
        rows: u64,
        why: String,
    },
    /// The dataset was not synced, for this reason (not an error).
    #[error("skipped: {0}")]
    Skipped(String),
    #[error("interrupted")]
    Interrupted,
}

impl SyncError {
    /// The portal could not be reached at all: the other datasets of the run would fail the same way.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SyncError::Soda(e) if e.is_unreachable())
    }

    /// What kind of failure this is, for a report that is read by programs.
    pub fn kind(&self) -> FailureKind {
        match self {
            SyncError::Soda(e) if e.is_unreachable() => FailureKind::Unreachable,
            SyncError::Soda(e) if e.is_retryable() => FailureKind::Portal,
            SyncError::Soda(_) => FailureKind::Refused,
            SyncError::Warehouse(_) => FailureKind::Warehouse,
            SyncError::Ledger(_) => FailureKind::Ledger,
            SyncError::Schema(_) => FailureKind::Schema,
            SyncError::Page { .. } => FailureKind::Page,
            SyncError::Paging { .. } => FailureKind::Paging,
            SyncError::Incomplete(_) => FailureKind::Incomplete,
            SyncError::MassDelete { .. } => FailureKind::MassDelete,
            SyncError::Skipped(_) => FailureKind::Skipped,
            SyncError::Interrupted => FailureKind::Interrupted,
        }
    }
}

/// Watches a run as it goes, for a live display. Called from the dataset jobs (any thread); the default
/// methods do nothing, so a library user who wants no output passes [`Quiet`].
pub trait Observer: Send + Sync {
    /// A dataset job started.
    fn started(&self, _key: &str, _priority: crate::catalog::Priority) {}
    /// A dataset committed a page (or finished listing ids): its progress so far.
    fn progress(&self, _key: &str, _progress: &Progress) {}
    /// A dataset ended (or was skipped).
    fn finished(&self, _report: &DatasetReport) {}
}

/// An observer that shows nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// What every dataset job of a run shares, built once per run by the orchestrator: the limits, the one
/// warehouse writer, the page directory, the sync's settings, the shutdown, the observer and the throttle.
pub(crate) struct Shared {
    /// Where the ledger is, so that each concurrent job opens its own connection (SQLite WAL).
    pub(crate) ledger_path: PathBuf,
    pub(crate) limits: Limits,
    pub(crate) warehouse: WarehouseHandle,
    /// Where pages are written while they are checked and loaded.
    pub(crate) tmp_dir: PathBuf,
    pub(crate) page_size: u64,
    /// How far behind the watermark an incremental pass starts (milliseconds; 0: exactly at it).
    pub(crate) overlap_ms: i64,
    /// How far behind the watermark the ids of changed rows are listed to find late rows (ms; 0: never).
    pub(crate) late_window_ms: i64,
    pub(crate) deletes: DeleteGuard,
    pub(crate) options: RunOptions,
    pub(crate) shutdown: Shutdown,
    /// Told of each dataset's start, pages and end.
    pub(crate) observer: Arc<dyn Observer>,
    /// Spaces the starts of dataset downloads, across all jobs.
    pub(crate) throttle: Arc<Throttle>,
    /// Page checks running at once, across all jobs (`--cpu-threads`, else the machine's cores).
    pub(crate) checks: Arc<tokio::sync::Semaphore>,
}

/// A run's driver (not public: its `run` takes no lock and publishes nothing;
/// [`crate::orchestrator::Orchestrator`] is the library's way in): what the run shares, and the run's own
/// HTTP client (whose request budget every job shares) and ledger connection, with which it starts the
/// jobs in order and within the limits.
pub(crate) struct Engine {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: SodaClient,
    pub(crate) ledger: Ledger,
}

/// One dataset's sync: what the run shares, and what this job holds alone: a client counting its own
/// requests (on the run's budget), its own ledger connection, and its options (`force` may be the job's).
/// Each borrows apart, so a page downloads with the client while a merged batch is recorded in the ledger.
pub(crate) struct DatasetSync {
    pub(crate) run: Arc<Shared>,
    pub(crate) client: SodaClient,
    pub(crate) ledger: Ledger,
    pub(crate) options: RunOptions,
}

/// How a run picks and treats datasets (the sync command's flags).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// `--schedule-check`: skip datasets not due; the grace in seconds.
    pub schedule_grace: Option<i64>,
    /// `--force`: ignore the change gate.
    pub force: bool,
    /// `--incremental-only`: never start a full load.
    pub incremental_only: bool,
    /// When a dataset's data-quality profile is an anomaly (the catalog's `[quality]`).
    pub quality: crate::quality::Thresholds,
}
