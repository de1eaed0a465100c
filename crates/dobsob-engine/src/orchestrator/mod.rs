//! The orchestrator as a library: a [`Plan`] of jobs (from the catalog, or made by hand), a [`Config`], and
//! [`Orchestrator::run`], which takes the data directory's lock, runs the jobs within the limits, records the
//! run in the ledger, writes the run report and returns it. Nothing is printed; progress goes to an
//! [`Observer`] (the CLI's is the live display) and diagnostics to `tracing`.
//!
//! ```no_run
//! # async fn example() -> Result<(), dobsob_engine::Error> {
//! use dobsob_engine::catalog::Priority;
//! use dobsob_engine::orchestrator::{Config, Job, Orchestrator, Plan};
//!
//! let portal = url::Url::parse("https://data.cityofnewyork.us").unwrap();
//! let plan = Plan::new(vec![
//!     Job::custom("dob_violations", "3h2n-5cm9").unwrap().priority(Priority::Critical),
//!     Job::custom("hpd_litigations", "59kj-x8nc").unwrap().size_mb(40).force(true),
//! ]);
//! let report = Orchestrator::new(Config::new("data".into(), portal))
//!     .run(&plan, dobsob_engine::sync::Shutdown::default())
//!     .await?;
//! println!("{} of {} jobs failed", report.failed().count(), report.datasets.len());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

mod config;
mod migrate;
mod plan;
mod publisher;

pub use config::*;
use migrate::*;
pub use plan::*;
use publisher::*;

use crate::catalog::Dataset;
use crate::error::Error;
use crate::error::ErrorKind;
use crate::layout::DataDir;
use crate::ledger::{now, Ledger};
pub use crate::report::{bucket, prune_reports, Bucket, JobEntry, RunError, RunReport};
use crate::soda::{AppToken, Budget, RetryPolicy, SodaClient};
use crate::sync::{start_order, Engine, Quiet, Shared, Throttle};
pub use crate::sync::{
    DatasetReport, DeleteGuard, Job, Limits, Mode, Observer, Outcome, RunMetrics, RunOptions,
    Shutdown,
};
use crate::warehouse::postgres::{off_runtime, PgWarehouse};
use crate::warehouse::{Published, Target, Warehouse, WarehouseHandle};

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
        create_dirs(c)?;
        let layout = c.layout();
        // Held until this function returns: one run per data directory.
        let _lock = crate::lock::RunLock::acquire(&c.data_dir)?;
        let client = SodaClient::new(&c.portal, c.token.clone(), c.retry, c.timeout)?
            .with_budget(Budget::new(c.max_requests_per_second, c.request_burst));
        let mut ledger = Ledger::open(&layout.ledger())?;
        let abandoned = ledger.mark_abandoned()?;
        if abandoned > 0 {
            tracing::warn!(
                "{abandoned} earlier run(s) ended without finishing (killed?): marked abandoned in the ledger"
            );
        }
        let tmp_dir = layout.tmp();
        let published = layout.published();
        let (target, first_publish) = match &c.warehouse {
            // A PostgreSQL warehouse: analysts read the live tables; nothing to copy.
            Some(info) => (
                Box::new(off_runtime(|| PgWarehouse::open(info))?) as Box<dyn Target>,
                false,
            ),
            None => {
                let working = layout.working();
                adopt_old_layout(&working, &published)?;
                let mut warehouse =
                    Warehouse::open(&working, &tmp_dir, c.memory, c.storage_version.as_ref())?;
                if let Some(n) = c.cpu_threads {
                    warehouse.set_threads(n)?;
                }
                warehouse.set_sharing(c.sharing.clone(), &c.data_dir)?;
                // Analysts get a file from the first run on (and at once after adopting an old layout); a
                // converted warehouse is published at once: the analysts' file is the one they can open.
                let first = !published.exists() || warehouse.converted().is_some();
                (Box::new(warehouse) as Box<dyn Target>, first)
            }
        };
        let (handle, writer) = WarehouseHandle::spawn(target);
        let publisher = Publisher {
            handle: handle.clone(),
            ledger_path: layout.ledger(),
            target: published.clone(),
            last: Arc::default(),
        };
        let first = if first_publish {
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
        let shared = Arc::new(Shared {
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
            checks: Arc::new(tokio::sync::Semaphore::new(c.cpu_threads())),
        });
        let mut engine = Engine {
            shared,
            client,
            ledger,
        };
        let deadline = c
            .max_duration
            .map(|limit| spawn_deadline(limit, shutdown.clone()));
        // During a long run, what has committed is published every --publish-interval.
        let periodic = c
            .publish_interval
            .map(|every| publisher.clone().spawn_periodic(every));
        let ran = engine.run(run_id, &plan.jobs, c.mode).await;
        if let Some(d) = deadline {
            d.abort();
        }
        if let Some(p) = periodic {
            p.abort();
            let _ = p.await;
        }
        let Engine {
            mut ledger, shared, ..
        } = engine;
        // Every job has ended: the run holds the last reference to what they shared.
        let warehouse = Arc::into_inner(shared)
            .expect("no dataset job outlives the run")
            .warehouse;
        // A ledger error mid-run still ends the run properly: what ran is reported, the run is failed.
        let (datasets, metrics, run_error) = (
            ran.reports,
            ran.metrics,
            ran.error.map(|e| RunError {
                kind: ErrorKind::Ledger,
                message: e.to_string(),
            }),
        );
        let tally = Tally::of(&datasets);
        let outcome = tally.run_outcome(&shutdown, run_error.is_some());
        let writer_timings = publisher
            .handle
            .call(|w| Ok(w.timings()))
            .await
            .unwrap_or_default();
        // Whatever the outcome, what committed is published; a run whose publish failed has failed.
        let publish = publisher.publish().await.map_err(|e| RunError {
            kind: e.kind(),
            message: format!("cannot publish the warehouse: {e}"),
        });
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
            tally.ok as i64,
            tally.not_ok as i64,
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
            report.error.get_or_insert(RunError {
                kind: ErrorKind::Ledger,
                message: e.to_string(),
            });
        }
        deliver(&mut report, c).await?;
        Ok(report)
    }
}

/// The data directory and the run's directories in it, private.
fn create_dirs(c: &Config) -> Result<(), Error> {
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
        crate::files::create_private_dir(&d)
            .map_err(|e| Error::Config(format!("cannot create directory {}: {e}", d.display())))?;
    }
    Ok(())
}

/// Stops the run `limit` from now (`--max-duration`): nothing new starts, running datasets stop at a page
/// boundary.
fn spawn_deadline(limit: Duration, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(limit).await;
        tracing::warn!(
            "the run's deadline (--max-duration) passed: nothing new starts, running datasets stop at a page \
             boundary"
        );
        shutdown.trigger_deadline();
    })
}

/// The report file (and the pruning of old ones) and the webhook, as the configuration asks.
async fn deliver(report: &mut RunReport, c: &Config) -> Result<(), Error> {
    if let Some(dir) = &c.report_dir {
        report.path = Some(report.write(dir)?);
        if let Some(keep) = c.report_retention {
            prune_reports(dir, keep);
        }
    }
    if let Some(url) = &c.notify_webhook {
        crate::report::webhook::post(url, report).await;
    }
    Ok(())
}

/// The datasets of a run, counted as the ledger's run row counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    /// Synced or skipped.
    ok: usize,
    /// Failed or drifted.
    not_ok: usize,
}

impl Tally {
    fn of(datasets: &[DatasetReport]) -> Tally {
        let count = |f: fn(Outcome) -> bool| datasets.iter().filter(|d| f(d.outcome)).count();
        Tally {
            ok: count(|o| matches!(o, Outcome::Ok | Outcome::Skipped)),
            not_ok: count(|o| matches!(o, Outcome::Failed | Outcome::Drift)),
        }
    }

    /// How the run ended: failed if a dataset failed or drifted, the run itself failed, or its deadline
    /// cut it; else interrupted if a signal stopped it; else ok.
    fn run_outcome(self, shutdown: &Shutdown, run_failed: bool) -> Outcome {
        if shutdown.by_deadline() || run_failed || self.not_ok > 0 {
            Outcome::Failed
        } else if shutdown.is_triggered() {
            Outcome::Interrupted
        } else {
            Outcome::Ok
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(outcome: Outcome) -> DatasetReport {
        DatasetReport {
            key: "k".into(),
            id: "abcd-1234".into(),
            name: "k".into(),
            priority: crate::catalog::Priority::High,
            outcome,
            progress: Default::default(),
            seconds: 0.0,
            error: None,
        }
    }

    #[test]
    fn a_run_fails_with_any_failed_or_drifted_dataset_and_is_interrupted_only_by_a_signal() {
        let all = [
            ended(Outcome::Ok),
            ended(Outcome::Skipped),
            ended(Outcome::Drift),
            ended(Outcome::Interrupted),
        ];
        let tally = Tally::of(&all);
        assert_eq!(tally, Tally { ok: 2, not_ok: 1 });
        let calm = Shutdown::default();
        assert_eq!(tally.run_outcome(&calm, false), Outcome::Failed);
        let fine = Tally::of(&all[..2]);
        assert_eq!(fine.run_outcome(&calm, false), Outcome::Ok);
        assert_eq!(fine.run_outcome(&calm, true), Outcome::Failed);
        let signal = Shutdown::default();
        signal.trigger();
        assert_eq!(fine.run_outcome(&signal, false), Outcome::Interrupted);
        let deadline = Shutdown::default();
        deadline.trigger_deadline();
        assert_eq!(fine.run_outcome(&deadline, false), Outcome::Failed);
    }
}
