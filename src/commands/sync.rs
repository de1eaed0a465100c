//! `dobsob sync` and `dobsob rebuild`: turn the flags into an orchestrator [`Config`] and a [`Plan`], run it
//! (with the live display on a terminal), print the summary and the report's path.

use crate::cli::SyncArgs;
use crate::error::{Error, ExitStatus};
use crate::orchestrator::{default_requests_per_second, Config, Orchestrator, Plan, RunReport};
use crate::printer::Printer;
use crate::settings::{retry_policy, Settings};
use crate::sync::{DeleteGuard, Limits, Mode, Outcome, RunOptions, Shutdown};
use crate::warehouse::MemoryLimit;

/// The orchestrator's configuration for these flags.
pub fn config(settings: &Settings, args: &SyncArgs, mode: Mode) -> Config {
    let mut c = Config::new(settings.data_dir.clone(), settings.portal.clone());
    c.token = settings.token.clone();
    c.command = if mode == Mode::Rebuild {
        "rebuild"
    } else {
        "sync"
    };
    c.mode = if args.no_incremental {
        Mode::Rebuild
    } else {
        mode
    };
    c.page_size = args.page_size;
    c.retry = retry_policy(args);
    c.timeout = std::time::Duration::from_secs(args.timeout);
    c.limits = Limits {
        max_concurrent: args.max_concurrent as usize,
        max_large: args.max_large as usize,
        large_mb: args.large_mb,
        throttle: std::time::Duration::from_secs_f64(args.throttle),
    };
    c.max_requests_per_second = args
        .max_requests_per_second
        .unwrap_or_else(|| default_requests_per_second(settings.token.as_ref()));
    c.request_burst = args.request_burst;
    c.memory = args
        .memory_limit
        .map_or_else(Default::default, MemoryLimit::Fixed);
    c.storage_version = args.storage_version.clone();
    c.sharing = args.share_group.clone();
    c.options = RunOptions {
        schedule_grace: args.schedule_check.then_some(args.grace as i64),
        force: args.force,
        incremental_only: args.incremental_only,
    };
    c.overlap = std::time::Duration::from_secs(args.overlap);
    c.late_window = std::time::Duration::from_secs(args.late_window);
    c.deletes = DeleteGuard {
        max_rows: args.max_delete_rows,
        max_percent: args.max_delete_percent,
        allow: args.allow_mass_delete,
    };
    c.max_duration = args.max_duration;
    c.report_dir = Some(
        args.report_path
            .clone()
            .unwrap_or_else(|| settings.reports_dir()),
    );
    c.report_retention = Some(std::time::Duration::from_secs(
        args.report_retention_days.saturating_mul(86_400),
    ));
    c.notify_webhook = args.notify_webhook.clone();
    c.publish_interval = (!args.publish_interval.is_zero()).then_some(args.publish_interval);
    c
}

pub async fn run(
    settings: &Settings,
    args: &SyncArgs,
    mode: Mode,
    printer: Printer,
    shutdown: Shutdown,
) -> Result<ExitStatus, Error> {
    let config = config(settings, args, mode);
    let mut plan = Plan::from_datasets(settings.select(&args.selection)?);
    if args.retry_failed {
        plan = plan.retry_failed(&settings.data_dir)?;
        if plan.jobs.is_empty() {
            printer
                .line("--retry-failed: no selected dataset failed or drifted in its last attempt");
            return Ok(ExitStatus::Ok);
        }
    }
    if args.dry_run {
        let datasets: Vec<_> = plan.jobs.iter().map(|j| &j.dataset).collect();
        return super::plan::print(settings, args, config.mode, &datasets, printer).await;
    }
    let mut orchestrator = Orchestrator::new(config);
    let display = (!printer.quiet && !args.no_progress)
        .then(|| crate::progress::Display::on_terminal(plan.jobs.len()))
        .flatten();
    if let Some(d) = &display {
        orchestrator = orchestrator.with_observer(d.clone());
    }
    let report = orchestrator.run(&plan, shutdown).await;
    if let Some(d) = display {
        d.clear();
    }
    let report = report?;
    // The summary and the report's path are printed even with -q: they are what a cron mail should say. The
    // summary's last line says why the run stopped early, if it did.
    print_summary(printer, &report);
    if let Some(p) = &report.path {
        printer.data(&format!("report: {}", p.display()));
    }
    Ok(match report.outcome {
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
    printer.data(&crate::notify::one_line(report));
}
