//! A run's report, all of it: each dataset's part ([`DatasetReport`]: outcome, error, progress; `dataset.rs`),
//! the finished [`RunReport`] the orchestrator returns, the JSON file it writes in the original orchestration
//! guide's shape (plus dobsob's own fields), the pruning of old report files, and the webhook's line and
//! payload ([`webhook`]).

mod dataset;
pub mod webhook;

pub use dataset::{DatasetError, DatasetReport, FailureKind, Outcome, Progress, SyncMode, Timings};

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::error::{Error, ErrorKind};
use crate::sync::{Limits, RunMetrics};
use crate::warehouse::{Published, WriterTimings};

/// Why a run failed as a whole (its datasets' failures are theirs): the engine error's kind, and the
/// message a person reads (it serializes as the message alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Serialize for RunError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.message)
    }
}

/// A finished run: what the orchestrator returns and the JSON it writes to
/// `reports/orchestration_report_YYYYMMDD_HHMMSS.json` (see [`RunReport::to_json`] for the shape).
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub command: &'static str,
    pub portal: String,
    pub outcome: Outcome,
    /// Why the run itself stopped early (a ledger error) or could not publish, if it did.
    pub error: Option<RunError>,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub limits: Limits,
    pub max_requests_per_second: f64,
    pub request_burst: u32,
    /// DuckDB's memory cap at the start of the run.
    pub memory: crate::warehouse::MemoryLimit,
    pub metrics: RunMetrics,
    /// Peak resident memory of this process (Linux's VmHWM), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Every dataset of the plan that started or was skipped, in start order.
    pub datasets: Vec<DatasetReport>,
    /// The publish at the end of the run (size, seconds, reflink or copy), when it succeeded.
    pub published: Option<Published>,
    /// Busy seconds of the warehouse writer's steps, the whole run (before the final publish).
    pub writer_timings: WriterTimings,
    /// Where the report was written.
    pub path: Option<PathBuf>,
}

/// Which of the report's three lists a dataset goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Synced (outcome ok, something fetched or checked).
    Completed,
    /// Failed or drifted.
    Failed,
    /// Stopped by Ctrl-C or SIGTERM; the next run resumes it (and `--retry-failed` retries it).
    Interrupted,
    /// Not synced, with a reason: not due, source unchanged, not started.
    Skipped,
}

pub fn bucket(d: &DatasetReport) -> Bucket {
    match d.outcome {
        Outcome::Failed | Outcome::Drift => Bucket::Failed,
        Outcome::Interrupted => Bucket::Interrupted,
        Outcome::Skipped => Bucket::Skipped,
        Outcome::Ok if d.progress.mode == Some(crate::sync::SyncMode::Unchanged) => Bucket::Skipped,
        Outcome::Ok => Bucket::Completed,
    }
}

impl RunReport {
    pub fn completed(&self) -> impl Iterator<Item = &DatasetReport> {
        self.in_bucket(Bucket::Completed)
    }
    pub fn failed(&self) -> impl Iterator<Item = &DatasetReport> {
        self.in_bucket(Bucket::Failed)
    }
    pub fn skipped(&self) -> impl Iterator<Item = &DatasetReport> {
        self.in_bucket(Bucket::Skipped)
    }
    pub fn interrupted(&self) -> impl Iterator<Item = &DatasetReport> {
        self.in_bucket(Bucket::Interrupted)
    }
    fn in_bucket(&self, b: Bucket) -> impl Iterator<Item = &DatasetReport> {
        self.datasets.iter().filter(move |d| bucket(d) == b)
    }

    /// Bytes downloaded by every dataset.
    pub fn bytes(&self) -> u64 {
        self.datasets.iter().map(|d| d.progress.bytes).sum()
    }

    /// Completed out of completed and failed (skips and interruptions do not count), 100 when nothing ran.
    pub fn success_rate_percent(&self) -> f64 {
        let (ok, bad) = (self.completed().count(), self.failed().count());
        if ok + bad == 0 {
            100.0
        } else {
            ((ok as f64 * 100.0 / (ok + bad) as f64) * 10.0).round() / 10.0
        }
    }

    /// The report in the original orchestration guide's shape, plus dobsob's own fields:
    ///
    /// - `run_id`, `command`, `portal`, `outcome`, `error`;
    /// - `execution_summary`: start_time, end_time, total_duration_seconds, total_jobs, completed_jobs,
    ///   failed_jobs, interrupted_jobs, skipped_jobs, success_rate_percent, total_data_downloaded_mb, average_speed_mbps
    ///   (megabytes per second over the run's wall time), total_requests;
    /// - `job_order`: every dataset's key in start order;
    /// - `completed_jobs`, `failed_jobs`, `interrupted_jobs`, `skipped_jobs`: objects keyed by dataset (see
    ///   [`JobEntry`]); unchanged datasets (outcome ok, mode `unchanged`) are in `skipped_jobs`;
    /// - `performance_metrics`: peak_concurrent_jobs, max_concurrent_jobs, max_large_jobs,
    ///   throttle_delay_seconds, max_requests_per_second, request_burst, retry_attempts, large_files_processed,
    ///   memory_limit_mb (DuckDB's cap at the start), memory_limit_auto (whether dobsob may raise it), peak_rss_mb,
    ///   publish_seconds, published_mb, publish_reflink.
    pub fn to_json(&self) -> serde_json::Value {
        let mb = self.bytes() as f64 / 1e6;
        // A stage's busy seconds, all datasets together.
        let per_dataset = |stage: fn(&crate::sync::Timings) -> f64| {
            round2(
                self.datasets
                    .iter()
                    .map(|d| stage(&d.progress.timings))
                    .sum(),
            )
        };
        let file = ReportFile {
            run_id: self.run_id,
            command: self.command,
            portal: &self.portal,
            outcome: self.outcome,
            error: self.error.as_ref().map(|e| e.message.as_str()),
            execution_summary: ExecutionSummary {
                start_time: &self.started_at,
                end_time: &self.finished_at,
                total_duration_seconds: round2(self.seconds),
                total_jobs: self.datasets.len(),
                completed_jobs: self.completed().count(),
                failed_jobs: self.failed().count(),
                interrupted_jobs: self.interrupted().count(),
                skipped_jobs: self.skipped().count(),
                success_rate_percent: self.success_rate_percent(),
                total_data_downloaded_mb: round2(mb),
                average_speed_mbps: if self.seconds > 0.0 {
                    round2(mb / self.seconds)
                } else {
                    0.0
                },
                total_requests: self.metrics.requests,
            },
            job_order: self.datasets.iter().map(|d| d.key.as_str()).collect(),
            completed_jobs: Jobs(self.completed().collect()),
            failed_jobs: Jobs(self.failed().collect()),
            interrupted_jobs: Jobs(self.interrupted().collect()),
            skipped_jobs: Jobs(self.skipped().collect()),
            performance_metrics: PerformanceMetrics {
                peak_concurrent_jobs: self.metrics.peak_concurrent_jobs,
                max_concurrent_jobs: self.limits.max_concurrent,
                max_large_jobs: self.limits.max_large,
                throttle_delay_seconds: self.limits.throttle.as_secs_f64(),
                max_requests_per_second: self.max_requests_per_second,
                request_burst: self.request_burst,
                retry_attempts: self.metrics.retries,
                large_files_processed: self.metrics.large_jobs,
                memory_limit_mb: self.memory.start_mb(),
                memory_limit_auto: self.memory.is_auto(),
                peak_rss_mb: self.peak_rss_bytes.map(|b| round2(b as f64 / 1e6)),
                publish_seconds: self.published.map(|p| round2(p.seconds)),
                published_mb: self.published.map(|p| round2(p.bytes as f64 / 1e6)),
                publish_reflink: self.published.map(|p| p.reflink),
                breakdown: Breakdown {
                    download_s: per_dataset(|t| t.download_s),
                    hash_s: per_dataset(|t| t.hash_s),
                    check_s: per_dataset(|t| t.check_s),
                    merge_s: per_dataset(|t| t.merge_s),
                    stage_s: round2(self.writer_timings.stage_s),
                    insert_s: round2(self.writer_timings.insert_s),
                    uncastable_s: round2(self.writer_timings.uncastable_s),
                    commit_s: round2(self.writer_timings.commit_s),
                    count_s: round2(self.writer_timings.count_s),
                    swap_s: round2(self.writer_timings.swap_s),
                    publish_s: round2(
                        self.writer_timings.publish_s + self.published.map_or(0.0, |p| p.seconds),
                    ),
                },
            },
        };
        serde_json::to_value(file).expect("a report serializes")
    }

    /// Writes the report into `dir` as `orchestration_report_YYYYMMDD_HHMMSS.json` (the run's start, UTC;
    /// `_run<ID>` is added when two runs started in the same second), private to the user.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, Error> {
        let stamp = crate::sync::schedule::parse_time(&self.started_at)
            .unwrap_or_else(chrono::Utc::now)
            .format("%Y%m%d_%H%M%S");
        let mut path = dir.join(format!("orchestration_report_{stamp}.json"));
        if path.exists() {
            path = dir.join(format!(
                "orchestration_report_{stamp}_run{}.json",
                self.run_id
            ));
        }
        let json = serde_json::to_string_pretty(&self.to_json()).expect("a report serializes");
        crate::files::write_private(&path, json.as_bytes())
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[derive(Serialize)]
struct ReportFile<'a> {
    run_id: i64,
    command: &'a str,
    portal: &'a str,
    outcome: Outcome,
    error: Option<&'a str>,
    execution_summary: ExecutionSummary<'a>,
    job_order: Vec<&'a str>,
    completed_jobs: Jobs<'a>,
    failed_jobs: Jobs<'a>,
    interrupted_jobs: Jobs<'a>,
    skipped_jobs: Jobs<'a>,
    performance_metrics: PerformanceMetrics,
}

#[derive(Serialize)]
struct ExecutionSummary<'a> {
    start_time: &'a str,
    end_time: &'a str,
    total_duration_seconds: f64,
    total_jobs: usize,
    completed_jobs: usize,
    failed_jobs: usize,
    interrupted_jobs: usize,
    skipped_jobs: usize,
    success_rate_percent: f64,
    total_data_downloaded_mb: f64,
    average_speed_mbps: f64,
    total_requests: u64,
}

#[derive(Serialize)]
struct PerformanceMetrics {
    peak_concurrent_jobs: usize,
    max_concurrent_jobs: usize,
    max_large_jobs: usize,
    throttle_delay_seconds: f64,
    max_requests_per_second: f64,
    request_burst: u32,
    retry_attempts: u64,
    large_files_processed: usize,
    memory_limit_mb: u32,
    memory_limit_auto: bool,
    peak_rss_mb: Option<f64>,
    /// The publish at the end of the run: seconds, size of the published file, whether it was a reflink.
    publish_seconds: Option<f64>,
    published_mb: Option<f64>,
    publish_reflink: Option<bool>,
    /// Where the time went: busy seconds per stage, all datasets together (downloads overlap merges).
    breakdown: Breakdown,
}

#[derive(Serialize)]
struct Breakdown {
    download_s: f64,
    /// Of `download_s`, hashing pages (sha256 as they arrive).
    hash_s: f64,
    check_s: f64,
    merge_s: f64,
    stage_s: f64,
    insert_s: f64,
    uncastable_s: f64,
    commit_s: f64,
    count_s: f64,
    swap_s: f64,
    publish_s: f64,
}

/// Datasets as a JSON object keyed by dataset key, in start order.
struct Jobs<'a>(Vec<&'a DatasetReport>);

impl Serialize for Jobs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for d in &self.0 {
            m.serialize_entry(&d.key, &JobEntry::from(*d))?;
        }
        m.end()
    }
}

/// One dataset in the report's `completed_jobs` / `failed_jobs` / `skipped_jobs`.
#[derive(Serialize)]
pub struct JobEntry<'a> {
    pub name: &'a str,
    pub socrata_id: &'a str,
    pub priority: crate::catalog::Priority,
    /// ok | drift | failed | interrupted | skipped.
    pub outcome: Outcome,
    /// full | incremental | unchanged, null when it failed before choosing or was not started.
    pub mode: Option<crate::sync::SyncMode>,
    pub duration_seconds: f64,
    pub rows_fetched: u64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_deleted: u64,
    /// Rows in the table after the sync, and what the source counted.
    pub rows: Option<i64>,
    pub source_rows: Option<i64>,
    pub bytes: u64,
    pub pages: u64,
    pub requests: u64,
    pub retries: u64,
    pub error: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub drift: Option<&'a str>,
    pub uncastable: Option<i64>,
    pub warnings: &'a [String],
    /// The data-quality profile's anomalies (see docs/dashboard.md).
    pub quality: &'a [crate::quality::Anomaly],
}

impl<'a> From<&'a DatasetReport> for JobEntry<'a> {
    fn from(d: &'a DatasetReport) -> Self {
        let p = &d.progress;
        JobEntry {
            name: &d.name,
            socrata_id: &d.id,
            priority: d.priority,
            outcome: d.outcome,
            mode: p.mode,
            duration_seconds: round2(d.seconds),
            rows_fetched: p.rows_fetched,
            rows_inserted: p.rows_inserted,
            rows_updated: p.rows_updated,
            rows_deleted: p.rows_deleted,
            rows: p.rows,
            source_rows: p.source_rows,
            bytes: p.bytes,
            pages: p.pages,
            requests: p.requests,
            retries: p.retries,
            error: d.error.as_ref().map(|e| e.message.as_str()),
            reason: p.reason.as_deref(),
            drift: p.drift.as_deref(),
            uncastable: p.uncastable,
            warnings: &p.warnings,
            quality: &p.quality,
        }
    }
}

/// Removes run reports older than `keep` from `dir`: only files dobsob names (`orchestration_report_*.json`,
/// and the `sync-*.json` / `rebuild-*.json` of earlier versions), never anything else a user keeps there.
pub fn prune_reports(dir: &Path, keep: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let cutoff = SystemTime::now().checked_sub(keep);
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ours = name.ends_with(".json")
            && (name.starts_with("orchestration_report_")
                || name.starts_with("sync-")
                || name.starts_with("rebuild-"));
        if !ours {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| cutoff.is_some_and(|c| t < c));
        if old {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::info!("removed report {name}: older than the report retention"),
                Err(err) => tracing::warn!("cannot remove old report {name}: {err}"),
            }
        }
    }
}

/// "1 dataset", "3 datasets": a count and its noun, the plural made by an "s" (the only nouns counted are
/// regular ones).
pub fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
