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
use std::time::{Duration, Instant};

use url::Url;

use crate::catalog::Dataset;
use crate::error::Error;
use crate::layout::DataDir;
use crate::ledger::{now, Ledger};
pub use crate::report::{bucket, prune_reports, Bucket, JobEntry, RunReport};
use crate::soda::{AppToken, Budget, RetryPolicy, SodaClient};
use crate::sync::{start_order, Engine, Quiet, Throttle};
pub use crate::sync::{
    DatasetReport, DeleteGuard, Job, Limits, Mode, Observer, Outcome, RunMetrics, RunOptions,
    Shutdown,
};
use crate::warehouse::{Published, Warehouse, WarehouseHandle};

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

    /// A plan of catalog datasets (see [`crate::catalog::Catalog::select`]), each with its catalog priority.
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
        crate::files::create_private_dir(&c.data_dir).map_err(|e| {
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
            crate::files::create_private_dir(&d).map_err(|e| {
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
        let first = if !published.exists() || converted {
            publisher.publish().await.map(|_| ())
        } else {
            Ok(())
        };
        let started = Instant::now();
        let started_at = now();
        let run_id = first.and_then(|()| Ok(ledger.start_run(c.command)?));
        let run_id = match run_id {
            Ok(id) => id,
            Err(e) => {
                // The writer thread owns the database: let it close it before the error ends the process
                // (a process exiting under a live DuckDB thread can crash in its destructors).
                drop(publisher);
                drop(handle);
                let _ = writer.join();
                return Err(e);
            }
        };
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

/// VmHWM from /proc/self/status: the peak resident set of this process.
fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
