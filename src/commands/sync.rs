//! `dobsob sync` and `dobsob rebuild`: open the ledger and the warehouse, run the engine over the selected
//! datasets, write a run report, print a summary.

use std::time::Instant;

use serde::Serialize;

use crate::cli::SyncArgs;
use crate::error::{Error, ExitStatus};
use crate::ledger::{now, Ledger};
use crate::printer::Printer;
use crate::settings::{retry_policy, Settings};
use crate::soda::SodaClient;
use crate::sync::{
    DatasetReport, DeleteGuard, Engine, Limits, Mode, Outcome, RunOptions, Shutdown,
};
use crate::warehouse::{Warehouse, WarehouseHandle};

/// The JSON report written to `<data-dir>/reports/` after every run.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub run_id: i64,
    pub command: &'static str,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: Outcome,
    pub seconds: f64,
    /// Peak resident memory of this process (Linux), bytes.
    pub peak_rss_bytes: Option<u64>,
    pub datasets: Vec<DatasetReport>,
}

pub async fn run(
    settings: &Settings,
    args: &SyncArgs,
    mode: Mode,
    printer: Printer,
    shutdown: Shutdown,
) -> Result<ExitStatus, Error> {
    let mut datasets = settings.select(&args.selection)?;
    let command = if mode == Mode::Rebuild {
        "rebuild"
    } else {
        "sync"
    };
    let mode = if args.no_incremental {
        Mode::Rebuild
    } else {
        mode
    };
    if args.retry_failed {
        let failed = failed_last_time(settings)?;
        datasets.retain(|d| failed.iter().any(|k| k == d.key.as_str()));
        if datasets.is_empty() {
            printer
                .line("--retry-failed: no selected dataset failed or drifted in its last attempt");
            return Ok(ExitStatus::Ok);
        }
    }
    if args.dry_run {
        return super::plan::print(settings, args, mode, &datasets, printer).await;
    }
    settings.prepare_data_dir()?;
    // Held until this function returns: one run per data directory.
    let _lock = crate::lock::RunLock::acquire(&settings.data_dir)?;
    let per_second = args
        .max_requests_per_second
        .unwrap_or(if settings.token.is_some() { 20.0 } else { 5.0 });
    let client = SodaClient::new(
        &settings.portal,
        settings.token.clone(),
        retry_policy(args),
        std::time::Duration::from_secs(args.timeout),
    )
    .map_err(Error::Config)?
    .with_budget(crate::soda::Budget::new(per_second));
    let mut ledger = Ledger::open(&settings.ledger_path())?;
    let abandoned = ledger.mark_abandoned()?;
    if abandoned > 0 {
        tracing::warn!(
            "{abandoned} earlier run(s) ended without finishing (killed?): marked abandoned in the ledger"
        );
    }
    let warehouse = Warehouse::open(&settings.warehouse_path(), &settings.tmp_dir())?;
    let (handle, writer) = WarehouseHandle::spawn(warehouse);

    let started = Instant::now();
    let started_at = now();
    let run_id = ledger.start_run(command)?;
    tracing::info!(run = run_id, portal = %settings.portal, datasets = datasets.len(), "{command} starting");
    let mut engine = Engine {
        client,
        ledger,
        ledger_path: settings.ledger_path(),
        limits: Limits {
            max_concurrent: args.max_concurrent as usize,
            max_large: args.max_large as usize,
            large_mb: args.large_mb,
            throttle: std::time::Duration::from_secs_f64(args.throttle),
        },
        warehouse: handle,
        tmp_dir: settings.tmp_dir(),
        page_size: args.page_size,
        overlap_ms: (args.overlap as i64).saturating_mul(1000),
        late_window_ms: (args.late_window as i64).saturating_mul(1000),
        deletes: DeleteGuard {
            max_rows: args.max_delete_rows,
            max_percent: args.max_delete_percent,
            allow: args.allow_mass_delete,
        },
        options: RunOptions {
            schedule_grace: args.schedule_check.then_some(args.grace as i64),
            force: args.force,
            incremental_only: args.incremental_only,
        },
        shutdown: shutdown.clone(),
    };
    if let Some(limit) = args.max_duration {
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            tracing::warn!(
                "the run's deadline (--max-duration) passed: nothing new starts, running datasets stop at a page \
                 boundary"
            );
            s.trigger_deadline();
        });
    }
    let reports = engine.run(run_id, &datasets, mode).await?;
    let failed = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed | Outcome::Drift))
        .count();
    let ok = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Ok | Outcome::Skipped))
        .count();
    let outcome = if shutdown.by_deadline() {
        Outcome::Failed
    } else if shutdown.is_triggered() {
        Outcome::Interrupted
    } else if failed > 0 {
        Outcome::Failed
    } else {
        Outcome::Ok
    };
    let Engine {
        mut ledger,
        warehouse,
        ..
    } = engine;
    ledger.finish_run(
        run_id,
        outcome.as_str(),
        ok as i64,
        (reports.len() - ok) as i64,
    )?;
    // Let the writer thread finish its queue and checkpoint before the process ends.
    drop(warehouse);
    let _ = writer.join();

    let report = RunReport {
        run_id,
        command,
        started_at,
        finished_at: now(),
        outcome,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        datasets: reports,
    };
    let path = settings
        .reports_dir()
        .join(format!("{command}-{run_id:06}.json"));
    let json = serde_json::to_string_pretty(&report).expect("a report serializes");
    std::fs::write(&path, json)
        .map_err(|e| Error::Runtime(format!("cannot write {}: {e}", path.display())))?;
    // The summary and the report's path are printed even with -q: they are what a cron mail should say.
    print_summary(printer, &report);
    printer.data(&format!("report: {}", path.display()));
    Ok(match outcome {
        Outcome::Interrupted => ExitStatus::Interrupted,
        Outcome::Failed | Outcome::Drift => ExitStatus::Failed,
        Outcome::Ok | Outcome::Skipped => ExitStatus::Ok,
    })
}

fn print_summary(printer: Printer, report: &RunReport) {
    let rows: Vec<Vec<String>> = report
        .datasets
        .iter()
        .map(|d| {
            vec![
                d.key.clone(),
                d.priority.to_string(),
                d.outcome.as_str().to_string(),
                d.progress.mode.unwrap_or("-").to_string(),
                d.progress.rows_fetched.to_string(),
                d.progress.rows_deleted.to_string(),
                match (d.progress.rows, d.progress.source_rows) {
                    (Some(r), Some(s)) if r != s => format!("{r} (source {s})"),
                    (Some(r), _) => r.to_string(),
                    _ => "-".into(),
                },
                format!("{:.1}s", d.seconds),
                d.error
                    .clone()
                    .or_else(|| d.progress.reason.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    printer.data(&crate::printer::table(
        &[
            "DATASET", "PRIORITY", "OUTCOME", "MODE", "FETCHED", "DELETED", "ROWS", "TIME", "NOTE",
        ],
        &rows,
    ));
}

/// Keys of the datasets whose last attempt failed or drifted, from the ledger (none without one).
fn failed_last_time(settings: &Settings) -> Result<Vec<String>, Error> {
    let path = settings.ledger_path();
    if !path.exists() {
        return Ok(Vec::new());
    }
    let ledger = Ledger::open(&path)?;
    let mut out = Vec::new();
    for d in &settings.catalog.datasets {
        if let Some(r) = ledger.dataset(d.key.as_str())? {
            if matches!(r.last_outcome.as_deref(), Some("failed" | "drift")) {
                out.push(d.key.to_string());
            }
        }
    }
    Ok(out)
}

/// VmHWM from /proc/self/status: the peak resident set of this process.
fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
