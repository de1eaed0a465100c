//! The run's dispatcher ([`Engine::run`], driven by [`crate::orchestrator::Orchestrator`]): starts the selected
//! datasets in priority order, several at once within limits, each a [`DatasetSync`] of its own.
//!
//! At most `max_concurrent` datasets are in flight, and among them at most `max_large` whose size is over
//! `large_mb` (the bytes of the last full load when the ledger knows them, else the catalog's `size_mb`).
//! Downloads start `throttle` apart (a dataset stopped by the change gate never waits). Fetching runs in
//! parallel; every merge goes through the one warehouse writer thread, so the warehouse stays single-writer.
//! The first job starts alone until the portal has answered once: if it cannot be reached at all, the run
//! says so once and skips the rest instead of failing every dataset the same way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{
    pass, schedule, DatasetError, DatasetReport, DatasetSync, Engine, FailureKind, Mode, Outcome,
    Progress, SyncError,
};
use crate::catalog::{Dataset, DatasetKey, Frequency, Group, Priority, SocrataId};
use crate::ledger::{AttemptId, Ledger, LedgerError, RunId};
use crate::warehouse::{Claim, WarehouseError};

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
        use crate::defaults as d;
        Limits {
            max_concurrent: d::MAX_CONCURRENT as usize,
            max_large: d::MAX_LARGE as usize,
            large_mb: d::LARGE_MB,
            throttle: Duration::from_secs_f64(d::THROTTLE_SECS),
        }
    }
}

/// One dataset job of a run: the dataset, the priority it starts with, and whether it is forced.
#[derive(Debug, Clone)]
pub struct Job {
    pub dataset: Dataset,
    pub priority: Priority,
    /// Sync even when not due and even when the source reports no change (what `--force` does for all).
    pub force: bool,
}

impl Job {
    /// A job for a catalog dataset, with the priority the catalog gives it.
    pub fn new(dataset: Dataset) -> Job {
        Job {
            priority: dataset.priority(),
            force: false,
            dataset,
        }
    }

    /// A hand-made job for any Socrata dataset: `key` names its table, `id` is its 4x4. Daily, of unknown
    /// size, HIGH priority until told otherwise.
    pub fn custom(key: &str, id: &str) -> Result<Job, crate::Error> {
        Ok(Job::new(Dataset {
            key: DatasetKey::parse(key).map_err(crate::Error::Config)?,
            id: SocrataId::parse(id).map_err(crate::Error::Config)?,
            name: key.to_string(),
            group: Group::Primary,
            frequency: Frequency::Daily,
            size_mb: 0,
            critical: false,
            column_types: Default::default(),
            own_column_types: Vec::new(),
        }))
    }

    /// Stores column `field` as `kind` (one of `warehouse::schema::OVERRIDE_TYPES`, e.g. `text` for an
    /// identifier the portal types as a number), as a catalog's `[dataset.columns]` does.
    pub fn column_type(mut self, field: &str, kind: &str) -> Result<Job, crate::Error> {
        if !crate::warehouse::schema::OVERRIDE_TYPES.contains(&kind) {
            return Err(crate::Error::Config(format!(
                "{field} = {kind:?}: the type must be one of {}",
                crate::warehouse::schema::OVERRIDE_TYPES.join(", ")
            )));
        }
        self.dataset
            .column_types
            .insert(field.to_string(), kind.to_string());
        self.dataset.own_column_types.push(field.to_string());
        Ok(self)
    }

    pub fn priority(mut self, p: Priority) -> Job {
        self.priority = p;
        self
    }

    pub fn frequency(mut self, f: Frequency) -> Job {
        self.dataset.frequency = f;
        self
    }

    /// The size estimate in MB (decides whether the job counts against `max_large`).
    pub fn size_mb(mut self, mb: u32) -> Job {
        self.dataset.size_mb = mb;
        self
    }

    pub fn force(mut self, force: bool) -> Job {
        self.force = force;
        self
    }
}

/// Sorts jobs into start order: priority (CRITICAL first), then group, then smallest first, so the most
/// needed and quickest data is fresh first. Stable: equal jobs keep the order given.
pub fn start_order(jobs: &mut [Job]) {
    jobs.sort_by_key(|j| (j.priority, j.dataset.group, j.dataset.size_mb));
}

/// Spaces the starts of dataset downloads by a gap, across all jobs of a run (`--throttle`). Only a dataset
/// that is going to fetch rows waits: one stopped by the schedule or the change gate does not.
#[derive(Debug)]
pub struct Throttle {
    gap: Duration,
    last: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Throttle {
    pub fn new(gap: Duration) -> Throttle {
        Throttle {
            gap,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Waits until `gap` has passed since the previous start, then counts this one as started. Waiters
    /// start one by one, in the order they came.
    pub async fn wait(&self) {
        let mut last = self.last.lock().await;
        if let Some(t) = *last {
            tokio::time::sleep_until(t + self.gap).await;
        }
        *last = Some(tokio::time::Instant::now());
    }
}

/// How a run of jobs went.
#[derive(Debug)]
pub struct RunResult {
    /// The datasets that started or were skipped, in start order.
    pub reports: Vec<DatasetReport>,
    pub metrics: RunMetrics,
    /// A ledger error that stopped the run from starting more datasets.
    pub error: Option<LedgerError>,
}

/// What a run measured besides each dataset's report.
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    /// The most datasets that were in flight at once.
    pub peak_concurrent_jobs: usize,
    /// Datasets started that counted as large (over `large_mb`).
    pub large_jobs: usize,
    /// Requests sent to the portal, and how many were retries, all datasets together.
    pub requests: u64,
    pub retries: u64,
}

/// The size in MB that decides whether a dataset is large, and where it comes from: the bytes its last
/// full load downloaded (`loaded_bytes`, from the ledger) when known, else the catalog's `size_mb`.
pub fn size_estimate_mb(loaded_bytes: Option<i64>, ds: &Dataset) -> (u32, &'static str) {
    match loaded_bytes {
        Some(b) if b > 0 => (
            (b / 1_000_000).min(u32::MAX as i64) as u32,
            "last full load",
        ),
        _ => (ds.size_mb, "catalog"),
    }
}

/// A report for a dataset that was not started.
fn skipped(job: &Job, reason: String) -> DatasetReport {
    DatasetReport {
        key: job.dataset.key.to_string(),
        id: job.dataset.id.to_string(),
        name: job.dataset.name.clone(),
        priority: job.priority,
        outcome: Outcome::Skipped,
        progress: Progress {
            reason: Some(reason),
            ..Progress::default()
        },
        seconds: 0.0,
        error: None,
    }
}

/// Counts the jobs in flight and the most there were at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl InFlight {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    /// One dataset job's sync: the run's shared part, with its own ledger connection and request counts.
    fn job(&self, job: &Job) -> Result<DatasetSync, LedgerError> {
        let mut options = self.shared.options;
        options.force |= job.force;
        Ok(DatasetSync {
            run: self.shared.clone(),
            client: self.client.for_job(),
            ledger: Ledger::open(&self.shared.ledger_path)?,
            options,
        })
    }

    /// Claims `key` in the warehouse (see [`crate::warehouse::Target::claim`]).
    async fn claim(&self, key: &str) -> Result<Claim, WarehouseError> {
        let k = key.to_string();
        self.shared.warehouse.call(move |w| w.claim(&k)).await
    }

    /// Gives up the claim on a dataset that does not run after all.
    async fn release(&self, key: &str) {
        let k = key.to_string();
        if let Err(e) = self.shared.warehouse.call(move |w| w.release(&k)).await {
            tracing::warn!(dataset = key, "releasing the dataset: {e}");
        }
    }

    /// The size that decides whether a dataset is large (see [`size_estimate_mb`]).
    fn size_mb(&self, ds: &Dataset) -> Result<u32, LedgerError> {
        let loaded = self.ledger.last_full_load_bytes(ds.key.as_str())?;
        Ok(size_estimate_mb(loaded, ds).0)
    }

    /// Runs `jobs` (already in start order, see [`start_order`]) within the limits; returns their reports in
    /// that order, and what the run measured. Stops starting new ones on shutdown, and on a ledger error
    /// (which it returns too, after the datasets in flight have ended: what they did is reported).
    pub async fn run(&mut self, run: RunId, jobs: &[Job], mode: Mode) -> RunResult {
        let limits = self.shared.limits;
        let slots = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
        let large = Arc::new(Semaphore::new(limits.max_large.max(1)));
        let unreachable: Arc<Mutex<Option<String>>> = Arc::default();
        let in_flight: Arc<InFlight> = Arc::default();
        let mut metrics = RunMetrics::default();
        let mut reports: Vec<Option<DatasetReport>> = vec![None; jobs.len()];
        let mut tasks = tokio::task::JoinSet::new();
        let mut probed = false;
        let observer = self.shared.observer.clone();
        let skip = |i: usize, reports: &mut Vec<Option<DatasetReport>>, job: &Job, why: String| {
            let r = skipped(job, why);
            observer.finished(&r);
            reports[i] = Some(r);
        };
        let start_all = async {
            for (i, job) in jobs.iter().enumerate() {
                let ds = &job.dataset;
                if self.shared.shutdown.is_triggered() {
                    break;
                }
                if let (Some(grace), false) = (self.shared.options.schedule_grace, job.force) {
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
                        skip(i, &mut reports, job, reason);
                        continue;
                    }
                }
                // Capacity: a slot, and a large slot for a large dataset. (The --throttle gap is taken in the job,
                // before its first download.)
                let slot = tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    _ = self.shared.shutdown.wait() => break,
                };
                let is_large = self.size_mb(ds)? > limits.large_mb;
                let large_slot = if is_large {
                    Some(tokio::select! {
                        p = large.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                        _ = self.shared.shutdown.wait() => break,
                    })
                } else {
                    None
                };
                if let Some(why) = unreachable.lock().expect("not poisoned").clone() {
                    self.ledger.record_skip(run, ds.key.as_str(), &why)?;
                    skip(i, &mut reports, job, why);
                    continue;
                }
                // A shared warehouse: one worker syncs a dataset at a time, claimed once it has a slot (a
                // claim held while waiting would keep the other workers from sharing the work); the others
                // skip it, saying who has it.
                let key = ds.key.to_string();
                match self.claim(&key).await {
                    Ok(Claim::Granted) => {}
                    Ok(held @ Claim::Held { .. }) => {
                        let reason = held.skip_reason().unwrap_or_default();
                        tracing::info!(dataset = %ds.key, "skipped: {reason}");
                        self.ledger.record_skip(run, ds.key.as_str(), &reason)?;
                        skip(i, &mut reports, job, reason);
                        continue;
                    }
                    // Never synced unclaimed: another worker may hold it.
                    Err(e) => {
                        let reason = format!("cannot claim the dataset in the warehouse: {e}");
                        tracing::warn!(dataset = %ds.key, "skipped: {reason}");
                        self.ledger.record_skip(run, ds.key.as_str(), &reason)?;
                        skip(i, &mut reports, job, reason);
                        continue;
                    }
                }
                // Every worker's last success, read under the claim: another worker may have synced the
                // dataset since this one's ledger last saw it.
                if let (Some(grace), false) = (self.shared.options.schedule_grace, job.force) {
                    let k = key.clone();
                    let shared = self
                        .shared
                        .warehouse
                        .call(move |w| w.shared_last_success(&k))
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(dataset = %ds.key, "reading the shared state: {e}");
                            None
                        })
                        .and_then(|t| schedule::parse_time(&t));
                    let due = schedule::due(ds.frequency, shared, chrono::Utc::now(), grace);
                    if shared.is_some() && !due.is_due() {
                        self.release(&key).await;
                        let reason = format!("{} (synced by another worker)", due.reason());
                        tracing::info!(dataset = %ds.key, "skipped: {reason}");
                        self.ledger.record_skip(run, ds.key.as_str(), &reason)?;
                        skip(i, &mut reports, job, reason);
                        continue;
                    }
                }
                metrics.large_jobs += usize::from(is_large);
                // Recorded here, not in the job, so that attempts are in start (priority) order.
                tracing::info!(
                    dataset = %ds.key,
                    id = %ds.id,
                    priority = %job.priority,
                    "{} starting",
                    if mode == Mode::Rebuild { "rebuild" } else { "sync" }
                );
                // Taken before, and in the format of, the ledger's start: see `Target::record_success`.
                let attempt_started = crate::ledger::now();
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
                let engine = self.job(job)?;
                let (job2, flag, counter) = (job.clone(), unreachable.clone(), in_flight.clone());
                counter.enter();
                self.shared.observer.started(ds.key.as_str(), job.priority);
                let warehouse = self.shared.warehouse.clone();
                tasks.spawn(async move {
                    let r = engine.run_one(attempt, &job2, mode, &flag).await;
                    // Other workers see the success at once, then may claim the dataset.
                    let k = job2.dataset.key.to_string();
                    let ok = r.outcome == Outcome::Ok;
                    let at = chrono::Utc::now().to_rfc3339();
                    let ended = warehouse
                        .call(move |w| {
                            let recorded = if ok {
                                w.record_success(&k, &attempt_started, &at)
                            } else {
                                Ok(())
                            };
                            let released = w.release(&k);
                            recorded.and(released)
                        })
                        .await;
                    if let Err(e) = ended {
                        tracing::warn!(dataset = %job2.dataset.key, "releasing the dataset: {e}");
                    }
                    counter.leave();
                    drop((slot, large_slot));
                    (i, r)
                });
                // The first job runs alone until the portal has answered once, or it has ended.
                if !probed {
                    probed = true;
                    while !self.client.has_answered() && !tasks.is_empty() {
                        tokio::select! {
                            _ = self.client.answered() => {}
                            done = tasks.join_next() => {
                                if let Some(done) = done {
                                    let (j, r) = done.expect("a dataset job panicked");
                                    reports[j] = Some(r);
                                }
                            }
                        }
                    }
                }
            }
            Ok::<(), LedgerError>(())
        };
        let mut error = start_all.await.err();
        if let Some(e) = &error {
            tracing::error!("no more datasets start: {e}");
        }
        while let Some(done) = tasks.join_next().await {
            let (j, r) = done.expect("a dataset job panicked");
            reports[j] = Some(r);
        }
        // Datasets a deadline kept from starting are reported as skipped; a signal's are not reported.
        if self.shared.shutdown.by_deadline() {
            for (i, job) in jobs.iter().enumerate() {
                if reports[i].is_none() {
                    let why = "not started: the run's deadline (--max-duration) passed".to_string();
                    if let Err(e) = self.ledger.record_skip(run, job.dataset.key.as_str(), &why) {
                        error.get_or_insert(e);
                    }
                    skip(i, &mut reports, job, why);
                }
            }
        }
        metrics.peak_concurrent_jobs = in_flight.peak.load(Ordering::SeqCst);
        metrics.requests = self.client.run_stats().requests();
        metrics.retries = self.client.run_stats().retries();
        RunResult {
            reports: reports.into_iter().flatten().collect(),
            metrics,
            error,
        }
    }
}

impl DatasetSync {
    /// Tells the observer how far a dataset has got (with its request counts so far).
    pub(super) fn observe(&self, ds: &Dataset, progress: &mut Progress) {
        progress.count_requests(&self.client);
        self.run.observer.progress(ds.key.as_str(), progress);
    }

    /// Syncs one dataset and records its outcome; the report says how it ended.
    async fn run_one(
        mut self,
        attempt: AttemptId,
        job: &Job,
        mode: Mode,
        unreachable: &Mutex<Option<String>>,
    ) -> DatasetReport {
        let ds = &job.dataset;
        let started = Instant::now();
        let mut progress = Progress::default();
        let result = self.sync_dataset(ds, mode, attempt, &mut progress).await;
        // The table's comments and its row of dobsob_datasets, from the metadata just read (also when the
        // source was unchanged: a description edited on the portal shows up at the next sync).
        if let Some(mut d) = progress.description.take() {
            d.priority = job.priority.to_string();
            if let Err(e) = self.run.warehouse.call(move |w| w.describe(&d)).await {
                progress.warn(
                    ds.key.as_str(),
                    format!("cannot record the dataset's description: {e}"),
                );
            }
        }
        progress.count_requests(&self.client);
        let slots = (0..pass::PAGE_SLOTS).map(pass::page_slot);
        for what in slots.chain(["ids".to_string()]) {
            let _ = std::fs::remove_file(self.page_path(ds.key.as_str(), &what));
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut report = DatasetReport {
            key: ds.key.to_string(),
            id: ds.id.to_string(),
            name: ds.name.clone(),
            priority: job.priority,
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
                report.error = Some(DatasetError::new(
                    FailureKind::Drift,
                    format!("{}: drift: {why}", ds.key),
                ));
            }
            Ok(()) => {
                tracing::info!(
                    dataset = %ds.key,
                    mode = report.progress.mode.map_or("-", |m| m.as_str()),
                    fetched = report.progress.rows_fetched,
                    deleted = report.progress.rows_deleted,
                    rows = report.progress.rows.unwrap_or(0),
                    "{} done in {seconds:.1}s",
                    if report.progress.mode == Some(super::SyncMode::Full) { "load" } else { "sync" }
                );
            }
            Err(SyncError::Skipped(reason)) => {
                tracing::warn!("{}: skipped: {reason}", ds.key);
                let recorded = self.ledger.finish_attempt_skipped(attempt, &reason);
                report.outcome = Outcome::Skipped;
                report.progress.reason = Some(reason);
                not_recorded(&mut report, recorded);
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
                let (kind, message) = if interrupted && self.run.shutdown.by_deadline() {
                    (
                        FailureKind::Deadline,
                        format!(
                            "{}: cut by the run's deadline (--max-duration); the next run resumes from the \
                             last committed page",
                            ds.key
                        ),
                    )
                } else {
                    (e.kind(), format!("{}: {e}", ds.key))
                };
                if interrupted {
                    tracing::warn!(
                        "{}: interrupted; the next run resumes from the last committed page",
                        ds.key
                    );
                } else {
                    tracing::error!("{message}");
                }
                let recorded = self.ledger.finish_attempt_failed(
                    attempt,
                    ds.key.as_str(),
                    &e.to_string(),
                    interrupted,
                );
                report.outcome = if interrupted {
                    Outcome::Interrupted
                } else {
                    Outcome::Failed
                };
                report.error = Some(DatasetError::new(kind, message));
                not_recorded(&mut report, recorded);
            }
        }
        if let Err(e) = self
            .ledger
            .set_attempt_requests(attempt, report.progress.requests as i64)
        {
            tracing::warn!("{}: the ledger cannot record the requests: {e}", ds.key);
        }
        self.run.observer.finished(&report);
        report
    }
}

/// A dataset whose outcome the ledger could not record has failed, whatever it did: the next run sees it
/// as not finished and repairs the ledger from the warehouse.
fn not_recorded(report: &mut DatasetReport, recorded: Result<(), LedgerError>) {
    if let Err(e) = recorded {
        tracing::error!("{}: the ledger cannot record the outcome: {e}", report.key);
        report.outcome = Outcome::Failed;
        let why = format!("the ledger cannot record the outcome: {e}");
        let message = match report.error.take() {
            Some(m) => format!("{m}; {why}"),
            None => format!("{}: {why}", report.key),
        };
        report.error = Some(DatasetError::new(FailureKind::Ledger, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_made_job_types_a_column_as_a_catalog_does_and_refuses_an_unknown_type() {
        let job = Job::custom("hpd", "wvxf-dwi5")
            .unwrap()
            .column_type("bin", "text")
            .unwrap();
        assert_eq!(
            job.dataset.column_types.get("bin").map(String::as_str),
            Some("text")
        );
        assert_eq!(job.dataset.own_column_types, ["bin"]);
        let e = Job::custom("hpd", "wvxf-dwi5")
            .unwrap()
            .column_type("bin", "varchar")
            .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Config);
        let e = e.to_string();
        assert!(e.contains("bin = \"varchar\"") && e.contains("text"), "{e}");
    }
}
