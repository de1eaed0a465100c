//! The orchestrator: runs the selected datasets in priority order, several at once within limits.
//!
//! At most `max_concurrent` datasets are in flight, and among them at most `max_large` whose size is over
//! `large_mb` (the catalog's `size_mb`). Starts are spaced by `throttle`. Fetching runs in parallel; every
//! merge goes through the one warehouse writer thread, so the warehouse stays single-writer. The first job
//! starts alone until the portal has answered once: if it cannot be reached at all, the run says so once and
//! skips the rest instead of failing every dataset the same way.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{pass, schedule, DatasetReport, Engine, Mode, Outcome, Progress, SyncError};
use crate::catalog::Dataset;
use crate::ledger::{AttemptId, Ledger, LedgerError, RunId};

/// How many datasets run at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_concurrent: usize,
    pub max_large: usize,
    pub large_mb: u32,
    /// Pause between dataset starts.
    pub throttle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: 4,
            max_large: 2,
            large_mb: 100,
            throttle: Duration::from_secs(1),
        }
    }
}

/// A report for a dataset that was not started.
fn skipped(ds: &Dataset, reason: String) -> DatasetReport {
    DatasetReport {
        key: ds.key.to_string(),
        id: ds.id.to_string(),
        priority: ds.priority(),
        outcome: Outcome::Skipped,
        progress: Progress {
            reason: Some(reason),
            ..Progress::default()
        },
        seconds: 0.0,
        error: None,
    }
}

impl Engine {
    /// A copy of this engine for one dataset job, with its own ledger connection.
    fn job(&self) -> Result<Engine, LedgerError> {
        Ok(Engine {
            client: self.client.clone(),
            ledger: Ledger::open(&self.ledger_path)?,
            ledger_path: self.ledger_path.clone(),
            limits: self.limits,
            warehouse: self.warehouse.clone(),
            tmp_dir: self.tmp_dir.clone(),
            page_size: self.page_size,
            overlap_ms: self.overlap_ms,
            late_window_ms: self.late_window_ms,
            deletes: self.deletes,
            options: self.options,
            shutdown: self.shutdown.clone(),
        })
    }

    /// Runs `datasets` (already in priority order) within the limits; returns their reports in that order.
    /// Stops starting new ones on shutdown.
    pub async fn run(
        &mut self,
        run: RunId,
        datasets: &[&Dataset],
        mode: Mode,
    ) -> Result<Vec<DatasetReport>, LedgerError> {
        let limits = self.limits;
        let slots = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        let large = Arc::new(Semaphore::new(limits.max_large.max(1)));
        let unreachable: Arc<Mutex<Option<String>>> = Arc::default();
        let mut reports: Vec<Option<DatasetReport>> = vec![None; datasets.len()];
        let mut jobs = tokio::task::JoinSet::new();
        let mut last_start: Option<Instant> = None;
        let mut probed = false;
        for (i, ds) in datasets.iter().enumerate() {
            if self.shutdown.is_triggered() {
                break;
            }
            if let Some(grace) = self.options.schedule_grace {
                let last = self
                    .ledger
                    .dataset(ds.key.as_str())?
                    .and_then(|r| r.last_success_at)
                    .and_then(|t| schedule::parse_time(&t));
                let due = schedule::due(ds.frequency, last, chrono::Utc::now(), grace);
                if !due.is_due() {
                    let reason = due.reason();
                    tracing::info!(dataset = %ds.key, "skipped: {reason}");
                    self.ledger.record_skip(run, ds.key.as_str(), &reason)?;
                    reports[i] = Some(skipped(ds, reason));
                    continue;
                }
            }
            // Capacity first (a slot, and a large slot for a large dataset), then the throttle gap.
            let slot = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = self.shutdown.wait() => break,
            };
            let large_slot = if ds.size_mb > limits.large_mb {
                Some(tokio::select! {
                    p = large.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    _ = self.shutdown.wait() => break,
                })
            } else {
                None
            };
            if let Some(t) = last_start {
                let wait = limits.throttle.saturating_sub(t.elapsed());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shutdown.wait() => break,
                }
            }
            if let Some(why) = unreachable.lock().expect("not poisoned").clone() {
                self.ledger.record_skip(run, ds.key.as_str(), &why)?;
                reports[i] = Some(skipped(ds, why));
                continue;
            }
            last_start = Some(Instant::now());
            // Recorded here, not in the job, so that attempts are in start (priority) order.
            tracing::info!(dataset = %ds.key, id = %ds.id, priority = %ds.priority(), "sync starting");
            let attempt = self.ledger.start_attempt(
                run,
                ds.key.as_str(),
                ds.id.as_str(),
                if mode == Mode::Rebuild {
                    "full"
                } else {
                    "incremental"
                },
            )?;
            let job = self.job()?;
            let (ds2, flag) = ((*ds).clone(), unreachable.clone());
            jobs.spawn(async move {
                let r = job.run_one(attempt, &ds2, mode, &flag).await;
                drop((slot, large_slot));
                (i, r)
            });
            // The first job runs alone until the portal has answered once, or it has ended.
            if !probed {
                probed = true;
                while !self.client.has_answered() && !jobs.is_empty() {
                    tokio::select! {
                        _ = self.client.answered() => {}
                        done = jobs.join_next() => {
                            if let Some(done) = done {
                                let (j, r) = done.expect("a dataset job panicked");
                                reports[j] = Some(r?);
                            }
                        }
                    }
                }
            }
        }
        while let Some(done) = jobs.join_next().await {
            let (j, r) = done.expect("a dataset job panicked");
            reports[j] = Some(r?);
        }
        // Datasets a deadline kept from starting are reported as skipped; a signal's are not reported.
        if self.shutdown.by_deadline() {
            for (i, ds) in datasets.iter().enumerate() {
                if reports[i].is_none() {
                    let why = "not started: the run's deadline (--max-duration) passed".to_string();
                    self.ledger.record_skip(run, ds.key.as_str(), &why)?;
                    reports[i] = Some(skipped(ds, why));
                }
            }
        }
        Ok(reports.into_iter().flatten().collect())
    }

    /// Syncs one dataset and records its outcome; the report says how it ended.
    async fn run_one(
        mut self,
        attempt: AttemptId,
        ds: &Dataset,
        mode: Mode,
        unreachable: &Mutex<Option<String>>,
    ) -> Result<DatasetReport, LedgerError> {
        let started = Instant::now();
        let mut progress = Progress::default();
        let result = self.sync_dataset(ds, mode, attempt, &mut progress).await;
        for what in pass::PAGE_SLOTS.iter().chain(&["ids"]) {
            let _ = std::fs::remove_file(self.page_path(ds.key.as_str(), what));
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut report = DatasetReport {
            key: ds.key.to_string(),
            id: ds.id.to_string(),
            priority: ds.priority(),
            outcome: Outcome::Ok,
            progress,
            seconds,
            error: None,
        };
        match result {
            Ok(()) if report.progress.drift.is_some() => {
                let why = report.progress.drift.clone().unwrap_or_default();
                tracing::error!("{}: drift: {why}", ds.key);
                report.outcome = Outcome::Drift;
                report.error = Some(format!("{}: drift: {why}", ds.key));
            }
            Ok(()) => {
                tracing::info!(
                    dataset = %ds.key,
                    mode = report.progress.mode.unwrap_or("-"),
                    fetched = report.progress.rows_fetched,
                    deleted = report.progress.rows_deleted,
                    rows = report.progress.rows.unwrap_or(0),
                    "sync done in {seconds:.1}s"
                );
            }
            Err(SyncError::Skipped(reason)) => {
                tracing::warn!("{}: skipped: {reason}", ds.key);
                self.ledger.finish_attempt_skipped(attempt, &reason)?;
                report.outcome = Outcome::Skipped;
                report.progress.reason = Some(reason);
            }
            Err(e) => {
                if e.is_unreachable() {
                    let mut flag = unreachable.lock().expect("not poisoned");
                    if flag.is_none() {
                        tracing::error!(
                            "cannot reach the portal {}: {e}. Check the network, or point --portal (or \
                             DOBSOB_PORTAL) at a reachable Socrata portal; the remaining datasets are skipped",
                            self.client.portal()
                        );
                        *flag = Some(format!(
                            "portal {} unreachable (see {})",
                            self.client.portal(),
                            ds.key
                        ));
                    }
                }
                let interrupted = matches!(e, SyncError::Interrupted);
                let message = if interrupted && self.shutdown.by_deadline() {
                    format!(
                        "{}: cut by the run's deadline (--max-duration); the next run resumes from the last \
                         committed page",
                        ds.key
                    )
                } else {
                    format!("{}: {e}", ds.key)
                };
                if interrupted {
                    tracing::warn!(
                        "{}: interrupted; the next run resumes from the last committed page",
                        ds.key
                    );
                } else {
                    tracing::error!("{message}");
                }
                self.ledger.finish_attempt_failed(
                    attempt,
                    ds.key.as_str(),
                    &e.to_string(),
                    interrupted,
                )?;
                report.outcome = if interrupted {
                    Outcome::Interrupted
                } else {
                    Outcome::Failed
                };
                report.error = Some(message);
            }
        }
        Ok(report)
    }
}
