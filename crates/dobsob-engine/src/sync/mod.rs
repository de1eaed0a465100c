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

use serde::Serialize;

use crate::ledger::{Ledger, LedgerError};
use crate::soda::{SodaClient, SodaError};
use crate::warehouse::{WarehouseError, WarehouseHandle};
pub use dataset::{fingerprint, gate_holds, schema_of, unchanged_reason};
pub use reconcile::DeleteGuard;
pub use run::{size_estimate_mb, start_order, Job, Limits, RunMetrics, RunResult, Throttle};
pub use shutdown::Shutdown;

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

/// How a dataset, or a whole run, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Synced, but the warehouse's row count still differs from the source's (both are reported): not ok.
    Drift,
    Failed,
    /// Not synced, with a reason: not due (`--schedule-check`), or a full load needed under
    /// `--incremental-only`.
    Skipped,
    /// Stopped by Ctrl-C or SIGTERM at a page boundary; the next run resumes.
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
            SyncError::Soda(_) => FailureKind::Portal,
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

/// Why a dataset did not end ok: a kind to act on, and the message a person reads (what the report file,
/// the webhook and the summary show: it serializes as the message alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetError {
    pub kind: FailureKind,
    pub message: String,
}

impl DatasetError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> DatasetError {
        DatasetError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for DatasetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Serialize for DatasetError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.message)
    }
}

/// The kinds of [`DatasetError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The portal refused or failed after the retries.
    Portal,
    /// The portal could not be reached at all.
    Unreachable,
    Warehouse,
    Ledger,
    /// The portal's metadata makes no usable table.
    Schema,
    /// A page that is not a page of rows.
    Page,
    /// Pages that do not move the pass forward (a portal ignoring `$where` or `$order`).
    Paging,
    /// A full load that failed its completeness checks (not swapped in).
    Incomplete,
    /// Deletions beyond the limits, waiting for confirmation.
    MassDelete,
    /// Synced, but the table still differs from the source.
    Drift,
    Skipped,
    /// Stopped by Ctrl-C or SIGTERM; the next run resumes.
    Interrupted,
    /// Cut by the run's deadline (`--max-duration`); the next run resumes.
    Deadline,
}

impl FailureKind {
    /// Whether running again, changing nothing, may succeed: the portal's and the network's failures, an
    /// interruption, a deadline, a load that saw the source change under it. A bad schema, bad pages, a
    /// paging portal, a mass deletion or a drift need someone to look (or a rebuild).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureKind::Portal
                | FailureKind::Unreachable
                | FailureKind::Incomplete
                | FailureKind::Interrupted
                | FailureKind::Deadline
        )
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Drift => "drift",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// How a dataset was synced: what the ledger's `attempts.mode` and the report's `mode` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Every row loaded into a fresh table, swapped in.
    Full,
    /// The rows changed after the watermark, upserted.
    Incremental,
    /// Nothing: the source had not changed since the last sync.
    Unchanged,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Incremental => "incremental",
            SyncMode::Unchanged => "unchanged",
        }
    }
}

/// What a dataset's sync has done so far (reported even when it fails half-way).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// `full`, `incremental`, `unchanged` (nothing changed at the source), or null if it failed early.
    pub mode: Option<SyncMode>,
    pub rows_fetched: u64,
    pub rows_deleted: u64,
    /// Rows in the table after the sync.
    pub rows: Option<i64>,
    /// Rows the source counted at the end of the sync.
    pub source_rows: Option<i64>,
    /// Why the table does not equal the source (outcome `drift`).
    pub drift: Option<String>,
    /// Things the portal did that dobsob worked around (capped `$limit`, columns the metadata lacks, ...).
    pub warnings: Vec<String>,
    /// Why nothing was fetched: "source unchanged since T", "not due until T", ...
    pub reason: Option<String>,
    /// Values that did not fit their column's type, kept in `dobsob.uncastable`.
    pub uncastable: Option<i64>,
    pub pages: u64,
    pub bytes: u64,
    /// Rows of incremental pages that were new to the table (a full load's rows all count as inserted).
    pub rows_inserted: u64,
    /// Rows of incremental pages that replaced a row the table had.
    pub rows_updated: u64,
    /// Requests this dataset sent to the portal, and how many of them were retries.
    pub requests: u64,
    pub retries: u64,
    /// Rows the current pass expects (the source's count for it), for a progress display's ETA.
    #[serde(skip)]
    pub pass_expected: Option<u64>,
    /// Rows the current pass has received so far.
    #[serde(skip)]
    pub pass_received: u64,
    /// Where the time went (busy seconds of each stage; downloads overlap merges).
    pub timings: Timings,
    /// What the catalog and the portal say of the dataset, once its metadata was read (for the table's
    /// comments and `dobsob_datasets`).
    #[serde(skip)]
    pub description: Option<crate::warehouse::Description>,
    /// sha256 over the page hashes, in order.
    #[serde(skip)]
    digest: sha2::Sha256,
}

/// Busy seconds of each stage of a dataset's pages. Downloads overlap the merge of the page (or the full
/// load's batch) before, so these add up to more than the wall time when the overlap works.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Receiving pages (HTTP, the file, the sha256 computed on the fly).
    pub download_s: f64,
    /// Of `download_s`, computing the sha256.
    pub hash_s: f64,
    /// The page checks in Rust (quotes, header, keys, order, decimals).
    pub check_s: f64,
    /// Merging pages on the writer thread (staging, typed insert, uncastable cells, counts).
    pub merge_s: f64,
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

/// The outcome of one dataset in a run.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    pub key: String,
    pub id: String,
    /// The dataset's name in the catalog.
    pub name: String,
    pub priority: crate::catalog::Priority,
    pub outcome: Outcome,
    #[serde(flatten)]
    pub progress: Progress,
    pub seconds: f64,
    pub error: Option<DatasetError>,
}

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
}
