//! The orchestrator as a library: a [`Plan`] of jobs (from the catalog, or made by hand), a [`Config`], and
//! [`Orchestrator::run`], which takes the data directory's lock, runs the jobs within the limits, records the
//! run in the ledger, writes the run report and returns it. Nothing is printed; progress goes to an
//! [`Observer`] (the CLI's is the live display) and diagnostics to `tracing`.
//!
//! ```no_run
//! # async fn example() -> Result<(), dobsob::error::Error> {
//! use dobsob::catalog::Priority;
//! use dobsob::orchestrator::{Config, Job, Orchestrator, Plan};
//!
//! let portal = url::Url::parse("https://data.cityofnewyork.us").unwrap();
//! let plan = Plan::new(vec![
//!     Job::custom("dob_violations", "3h2n-5cm9").unwrap().priority(Priority::Critical),
//!     Job::custom("hpd_litigations", "59kj-x8nc").unwrap().size_mb(40).force(true),
//! ]);
//! let report = Orchestrator::new(Config::new("data".into(), portal))
//!     .run(&plan, dobsob::sync::Shutdown::default())
//!     .await?;
//! println!("{} of {} jobs failed", report.failed().count(), report.datasets.len());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use url::Url;

use crate::catalog::Dataset;
use crate::error::Error;
use crate::layout::DataDir;
use crate::ledger::{now, Ledger};
use crate::soda::{AppToken, Budget, RetryPolicy, SodaClient};
use crate::sync::{start_order, Engine, Quiet, Throttle};
pub use crate::sync::{
    DatasetReport, DeleteGuard, Job, Limits, Mode, Observer, Outcome, RunMetrics, RunOptions,
    Shutdown,
};
use crate::warehouse::{Published, Warehouse, WarehouseHandle, WriterTimings};

/// The jobs of a run, in start order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub jobs: Vec<Job>,
}

impl Plan {
    /// A plan of these jobs, sorted into start order (priority, then group, then smallest first).
    pub fn new(mut jobs: Vec<Job>) -> Plan {
        start_order(&mut jobs);
        Plan { jobs }
    }

    /// A plan of catalog datasets (see [`crate::settings::Settings::select`]), each with its catalog priority.
    pub fn from_datasets<'a>(datasets: impl IntoIterator<Item = &'a Dataset>) -> Plan {
        Plan::new(datasets.into_iter().cloned().map(Job::new).collect())
    }

    /// Only the jobs whose last attempt failed, drifted, was interrupted or abandoned (its process killed),
    /// by the ledger of `data_dir` (none without one): what `--retry-failed` runs.
    pub fn retry_failed(mut self, data_dir: &Path) -> Result<Plan, Error> {
        let path = DataDir(data_dir).ledger();
        if !path.exists() {
            self.jobs.clear();
            return Ok(self);
        }
        let ledger = Ledger::open(&path)?;
        for j in std::mem::take(&mut self.jobs) {
            let r = ledger.dataset(j.dataset.key.as_str())?;
            if r.is_some_and(|r| {
                matches!(
                    r.last_outcome.as_deref(),
                    Some("failed" | "drift" | "interrupted" | "abandoned")
                )
            }) {
                self.jobs.push(j);
            }
        }
        Ok(self)
    }
}

/// How a run goes: where, against which portal, and every limit. [`Config::new`] gives the CLI's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub portal: Url,
    pub token: Option<AppToken>,
    /// `sync` or `rebuild`: the command recorded in the ledger and the report.
    pub command: &'static str,
    pub mode: Mode,
    pub page_size: u64,
    pub retry: RetryPolicy,
    /// How long to wait for data from the portal before a request counts as failed.
    pub timeout: Duration,
    pub limits: Limits,
    /// The whole run's request budget (all datasets together): an average rate, and how many requests
    /// may go out back to back after a pause.
    pub max_requests_per_second: f64,
    pub request_burst: u32,
    /// DuckDB's memory cap (`--memory-limit`, else automatic).
    pub memory: crate::warehouse::MemoryLimit,
    /// The storage version the warehouse is written in (`--storage-version`; `None`: the one the data
    /// directory records, else `v1.0.0`, readable by every DuckDB from 1.0 on).
    pub storage_version: Option<crate::warehouse::StorageVersion>,
    /// Who reads the published snapshot (`--share-group`; `None`: what the data directory remembers).
    pub sharing: Option<crate::warehouse::Sharing>,
    pub options: RunOptions,
    pub overlap: Duration,
    pub late_window: Duration,
    pub deletes: DeleteGuard,
    /// A deadline: past it nothing new starts and running datasets stop at a page boundary.
    pub max_duration: Option<Duration>,
    /// Where the run report is written (None: not written).
    pub report_dir: Option<PathBuf>,
    /// Reports older than this are removed from `report_dir` after a run (None: kept).
    pub report_retention: Option<Duration>,
    /// POSTed a JSON summary when the run ends; a failure is a warning, never a failed run.
    pub notify_webhook: Option<Url>,
    /// During a run, publish what committed at most this often (None: only at the end).
    pub publish_interval: Option<Duration>,
}

/// Requests that may go out back to back after a pause (`--request-burst`).
pub const DEFAULT_REQUEST_BURST: u32 = crate::defaults::REQUEST_BURST;

/// The request budget when none is asked for: 5 requests per second without an app token (the portal's
/// shared per-IP pool), 20 with one.
pub fn default_requests_per_second(token: Option<&AppToken>) -> f64 {
    if token.is_some() {
        crate::defaults::REQUESTS_PER_SECOND_WITH_TOKEN
    } else {
        crate::defaults::REQUESTS_PER_SECOND
    }
}

impl Config {
    /// The CLI's defaults, with reports in `<data_dir>/reports`.
    pub fn new(data_dir: PathBuf, portal: Url) -> Config {
        use crate::defaults as d;
        Config {
            report_dir: Some(DataDir(&data_dir).reports()),
            data_dir,
            portal,
            token: None,
            command: "sync",
            mode: Mode::Sync,
            page_size: d::PAGE_SIZE,
            retry: RetryPolicy {
                max_retries: d::MAX_RETRIES,
                base_delay: Duration::from_millis(d::RETRY_BASE_MS),
                max_delay: Duration::from_secs(d::RETRY_MAX_DELAY_SECS),
            },
            timeout: Duration::from_secs(d::TIMEOUT_SECS),
            limits: Limits::default(),
            max_requests_per_second: default_requests_per_second(None),
            request_burst: DEFAULT_REQUEST_BURST,
            memory: crate::warehouse::MemoryLimit::default(),
            storage_version: None,
            sharing: None,
            options: RunOptions::default(),
            overlap: Duration::from_secs(d::OVERLAP_SECS),
            late_window: Duration::from_secs(d::LATE_WINDOW_SECS),
            deletes: DeleteGuard {
                max_rows: d::MAX_DELETE_ROWS,
                max_percent: d::MAX_DELETE_PERCENT,
                allow: false,
            },
            max_duration: None,
            report_retention: Some(Duration::from_secs(d::REPORT_RETENTION_DAYS * 86_400)),
            notify_webhook: None,
            publish_interval: Some(Duration::from_secs(d::PUBLISH_INTERVAL_SECS)),
        }
    }

    /// The data directory's layout.
    pub fn layout(&self) -> DataDir<'_> {
        DataDir(&self.data_dir)
    }
}

pub struct Orchestrator {
    config: Config,
    observer: Arc<dyn Observer>,
}

impl Orchestrator {
    /// An orchestrator that shows nothing while it runs.
    pub fn new(config: Config) -> Orchestrator {
        Orchestrator {
            config,
            observer: Arc::new(Quiet),
        }
    }

    /// Tells `observer` of each dataset's start, pages and end (e.g. a live display).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Orchestrator {
        self.observer = observer;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs the plan: holds the data directory's lock for the whole run, records it in the ledger, writes
    /// the report (and prunes old ones), notifies the webhook, and returns the report. Fails only when the
    /// run cannot happen or be recorded at all (lock held, data directory, ledger, warehouse); a dataset's
    /// failure is in the report.
    pub async fn run(&self, plan: &Plan, shutdown: Shutdown) -> Result<RunReport, Error> {
        let c = &self.config;
        crate::settings::create_private_dir(&c.data_dir).map_err(|e| {
            Error::Config(format!(
                "cannot create data directory {}: {e}",
                c.data_dir.display()
            ))
        })?;
        let layout = c.layout();
        for d in [layout.tmp(), layout.work_dir()]
            .into_iter()
            .chain(c.report_dir.clone())
        {
            crate::settings::create_private_dir(&d).map_err(|e| {
                Error::Config(format!("cannot create directory {}: {e}", d.display()))
            })?;
        }
        // Held until this function returns: one run per data directory.
        let _lock = crate::lock::RunLock::acquire(&c.data_dir)?;
        let client = SodaClient::new(&c.portal, c.token.clone(), c.retry, c.timeout)
            .map_err(Error::Config)?
            .with_budget(Budget::new(c.max_requests_per_second, c.request_burst));
        let mut ledger = Ledger::open(&layout.ledger())?;
        let abandoned = ledger.mark_abandoned()?;
        if abandoned > 0 {
            tracing::warn!(
                "{abandoned} earlier run(s) ended without finishing (killed?): marked abandoned in the ledger"
            );
        }
        let tmp_dir = layout.tmp();
        let (working, published) = (layout.working(), layout.published());
        adopt_old_layout(&working, &published)?;
        let mut warehouse =
            Warehouse::open(&working, &tmp_dir, c.memory, c.storage_version.as_ref())?;
        warehouse.set_sharing(c.sharing.clone(), &c.data_dir)?;
        // A converted warehouse is published at once: the analysts' file is the one they can open.
        let converted = warehouse.converted().is_some();
        let (handle, writer) = WarehouseHandle::spawn(warehouse);
        let publisher = Publisher {
            handle: handle.clone(),
            ledger_path: layout.ledger(),
            target: published.clone(),
            last: Arc::default(),
        };
        // Analysts get a file from the first run on (and at once after adopting an old layout).
        if !published.exists() || converted {
            publisher.publish().await?;
        }

        let started = Instant::now();
        let started_at = now();
        let run_id = ledger.start_run(c.command)?;
        tracing::info!(run = run_id, portal = %c.portal, datasets = plan.jobs.len(), "{} starting", c.command);
        let mut engine = Engine {
            client,
            ledger,
            ledger_path: layout.ledger(),
            limits: c.limits,
            warehouse: handle,
            tmp_dir,
            page_size: c.page_size,
            overlap_ms: c.overlap.as_millis() as i64,
            late_window_ms: c.late_window.as_millis() as i64,
            deletes: c.deletes,
            options: c.options,
            shutdown: shutdown.clone(),
            observer: self.observer.clone(),
            throttle: Arc::new(Throttle::new(c.limits.throttle)),
        };
        let deadline = c.max_duration.map(|limit| {
            let s = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                tracing::warn!(
                    "the run's deadline (--max-duration) passed: nothing new starts, running datasets stop at \
                     a page boundary"
                );
                s.trigger_deadline();
            })
        });
        // During a long run, what has committed is published every --publish-interval.
        let periodic = c.publish_interval.map(|every| {
            let p = publisher.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    if let Err(e) = p.publish_if_changed().await {
                        tracing::warn!("publishing during the run failed (the run goes on): {e}");
                    }
                }
            })
        });
        let ran = engine.run(run_id, &plan.jobs, c.mode).await;
        if let Some(d) = deadline {
            d.abort();
        }
        if let Some(p) = periodic {
            p.abort();
            let _ = p.await;
        }
        let Engine {
            mut ledger,
            warehouse,
            ..
        } = engine;
        // A ledger error mid-run still ends the run properly: what ran is reported, the run is failed.
        let (datasets, metrics, run_error) =
            (ran.reports, ran.metrics, ran.error.map(|e| e.to_string()));
        let not_ok = datasets
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed | Outcome::Drift))
            .count();
        let outcome = if shutdown.by_deadline() || run_error.is_some() || not_ok > 0 {
            Outcome::Failed
        } else if shutdown.is_triggered() {
            Outcome::Interrupted
        } else {
            Outcome::Ok
        };
        let ok = datasets
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Ok | Outcome::Skipped))
            .count();
        let interrupted = datasets
            .iter()
            .filter(|r| r.outcome == Outcome::Interrupted)
            .count();
        let writer_timings = publisher
            .handle
            .call(|w| Ok(w.timings))
            .await
            .unwrap_or_default();
        // Whatever the outcome, what committed is published; a run whose publish failed has failed.
        let publish = publisher
            .publish()
            .await
            .map_err(|e| format!("cannot publish the warehouse: {e}"));
        if let Err(e) = &publish {
            tracing::error!("{e}");
        }
        let finished = ledger.finish_run(
            run_id,
            if publish.is_err() {
                Outcome::Failed.as_str()
            } else {
                outcome.as_str()
            },
            ok as i64,
            (datasets.len() - ok - interrupted) as i64,
        );
        drop(publisher);
        // Let the writer thread finish its queue and checkpoint before the report says the run is over.
        drop(warehouse);
        let _ = writer.join();

        let mut report = RunReport {
            run_id,
            command: c.command,
            portal: c.portal.to_string(),
            outcome,
            error: run_error,
            started_at,
            finished_at: now(),
            seconds: started.elapsed().as_secs_f64(),
            limits: c.limits,
            max_requests_per_second: c.max_requests_per_second,
            request_burst: c.request_burst,
            memory: c.memory,
            metrics,
            peak_rss_bytes: peak_rss_bytes(),
            datasets,
            published: None,
            writer_timings,
            path: None,
        };
        report.published = publish.as_ref().ok().copied();
        if let Err(e) = publish {
            report.outcome = Outcome::Failed;
            report.error.get_or_insert(e);
        }
        if let Err(e) = finished {
            tracing::error!("{e}");
            report.outcome = Outcome::Failed;
            report.error.get_or_insert(e.to_string());
        }
        if let Some(dir) = &c.report_dir {
            report.path = Some(report.write(dir)?);
            if let Some(keep) = c.report_retention {
                prune_reports(dir, keep);
            }
        }
        if let Some(url) = &c.notify_webhook {
            crate::notify::post(url, &report).await;
        }
        Ok(report)
    }
}

/// Publishes the working database: the ledger's facts into `dobsob_datasets`, then checkpoint, copy and
/// rename (see `warehouse::publish`), on the writer thread between merges.
#[derive(Clone)]
struct Publisher {
    handle: WarehouseHandle,
    ledger_path: PathBuf,
    target: PathBuf,
    /// The ledger's change token at the last publish.
    last: Arc<std::sync::Mutex<Option<(i64, i64)>>>,
}

impl Publisher {
    /// Publishes unless nothing was committed since the last publish (no page and no attempt finished).
    async fn publish_if_changed(&self) -> Result<Option<Published>, Error> {
        self.publish_unless(true).await
    }

    async fn publish(&self) -> Result<Published, Error> {
        Ok(self
            .publish_unless(false)
            .await?
            .expect("an unconditional publish publishes"))
    }

    async fn publish_unless(&self, unchanged: bool) -> Result<Option<Published>, Error> {
        let ledger = Ledger::open(&self.ledger_path)?;
        let token = ledger.change_token()?;
        if unchanged && *self.last.lock().unwrap_or_else(|p| p.into_inner()) == Some(token) {
            return Ok(None);
        }
        let mut states = Vec::new();
        for key in ledger.dataset_keys()? {
            if let Some(r) = ledger.dataset(&key)? {
                states.push(r);
            }
        }
        drop(ledger);
        let target = self.target.clone();
        let published = self
            .handle
            .call(move |w| {
                w.write_dataset_states(&states)?;
                w.publish(&target)
            })
            .await?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        Ok(Some(published))
    }
}

/// A data directory written before the working database existed has its warehouse at the published path:
/// that file becomes the working database (with its WAL), without a reload. A leftover of a publish that was
/// killed is removed.
fn adopt_old_layout(working: &Path, published: &Path) -> Result<(), Error> {
    let tmp = crate::warehouse::publishing_path(published);
    if tmp.exists() {
        tracing::info!(
            "removing {}, left by a publish that did not finish",
            tmp.display()
        );
        std::fs::remove_file(&tmp)
            .map_err(|e| Error::Runtime(format!("cannot remove {}: {e}", tmp.display())))?;
    }
    if working.exists() || !published.exists() {
        return Ok(());
    }
    tracing::info!(
        "adopting {} as the working database {} (the published copy is made from it)",
        published.display(),
        working.display()
    );
    let moved = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| {
            Error::Runtime(format!(
                "cannot move {} to {}: {e}",
                from.display(),
                to.display()
            ))
        })
    };
    // The WAL first: a crash between the two leaves the database where the next run adopts it again.
    let wal_of = crate::warehouse::wal_of;
    if wal_of(published).exists() {
        moved(&wal_of(published), &wal_of(working))?;
    }
    moved(published, working)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(working, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            Error::Runtime(format!("cannot make {} writable: {e}", working.display()))
        })?;
    }
    Ok(())
}

/// A finished run: what the orchestrator returns and the JSON it writes to
/// `reports/orchestration_report_YYYYMMDD_HHMMSS.json` (see [`RunReport::to_json`] for the shape).
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub command: &'static str,
    pub portal: String,
    pub outcome: Outcome,
    /// Why the run itself stopped early (a ledger error), if it did.
    pub error: Option<String>,
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
        Outcome::Ok if d.progress.mode == Some("unchanged") => Bucket::Skipped,
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
            error: self.error.as_deref(),
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
        crate::settings::write_private(&path, json.as_bytes())
            .map_err(|e| Error::Runtime(format!("cannot write {}: {e}", path.display())))?;
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
    pub mode: Option<&'a str>,
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
            error: d.error.as_deref(),
            reason: p.reason.as_deref(),
            drift: p.drift.as_deref(),
            uncastable: p.uncastable,
            warnings: &p.warnings,
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

/// VmHWM from /proc/self/status: the peak resident set of this process.
fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
