//! One dataset's part of a run's report: how it ended ([`Outcome`], and why, [`DatasetError`]), how it was
//! synced ([`SyncMode`]) and what it did ([`Progress`], [`Timings`]). The sync fills it; the run report,
//! the webhook, the summary and the live display read it.

use serde::Serialize;

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
    /// The portal kept failing (5xx, 429, cut answers) through the retries.
    Portal,
    /// The portal refused the request (404 no such dataset, 403, a bad query): running again will not help.
    Refused,
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
    /// What the data-quality profile after the sync found worth a look (also among `warnings`).
    pub quality: Vec<crate::quality::Anomaly>,
    /// The profile itself, recorded in the ledger with the attempt.
    #[serde(skip)]
    pub profile: Option<crate::quality::Profile>,
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
    pub(crate) digest: sha2::Sha256,
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
