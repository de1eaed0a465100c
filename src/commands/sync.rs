//! `dobsob sync` and `dobsob rebuild`: turn the flags into an orchestrator [`Config`] and a [`Plan`], run it
//! (with the live display on a terminal), print the summary and the report's path.

use dobsob_engine::orchestrator::{
    default_requests_per_second, Config, Orchestrator, Plan, RunReport,
};
use dobsob_engine::sync::{DeleteGuard, Limits, Mode, Outcome, RunOptions, Shutdown};
use dobsob_engine::warehouse::MemoryLimit;

use crate::cli::{SyncArgs, SyncOnly};
use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::{retry_policy, Settings};

/// The orchestrator's configuration for these flags.
pub fn config(
    settings: &Settings,
    args: &SyncArgs,
    only: &SyncOnly,
    mode: Mode,
) -> Result<Config, Error> {
    let mut c = Config::new(settings.data_dir.clone(), settings.portal.clone());
    c.token = settings.token.clone();
    c.command = if mode == Mode::Rebuild {
        "rebuild"
    } else {
        "sync"
    };
    c.mode = if only.no_incremental {
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
    c.warehouse = crate::settings::warehouse(args.warehouse.as_deref())?;
    c.options = RunOptions {
        schedule_grace: only.schedule_check.then_some(only.grace as i64),
        force: only.force,
        incremental_only: only.incremental_only,
        quality: settings.catalog.quality,
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
    c.cpu_threads = args.cpu_threads.map(|n| n as usize);
    Ok(c)
}

pub async fn run(
    settings: &Settings,
    args: &SyncArgs,
    only: &SyncOnly,
    mode: Mode,
    printer: Printer,
    shutdown: Shutdown,
) -> Result<ExitStatus, Error> {
    if mode == Mode::Rebuild && args.selection.is_empty() && !args.dry_run {
        confirm_rebuild_all(settings)?;
    }
    let mut config = config(settings, args, only, mode)?;
    let mut plan = Plan::from_datasets(settings.select(&args.selection)?);
    if only.retry_failed {
        plan = plan.retry_failed(&settings.data_dir)?;
        if plan.jobs.is_empty() {
            printer.line(
                "--retry-failed: no selected dataset failed, drifted or was interrupted in its last attempt",
            );
            return Ok(ExitStatus::Ok);
        }
    }
    let switched = settings.portal_switched();
    if switched {
        // The tables came from another portal: their watermarks mean nothing here. Every dataset is
        // reloaded, in one run, before the new portal is recorded.
        let partial = !(args.selection.is_empty() || args.selection.all)
            || only.schedule_check
            || only.retry_failed;
        if partial {
            return Err(Error::Config(format!(
                "switching the portal to {} reloads every dataset of the catalog in full (their watermarks \
                 belong to the old portal): run it for all of them, without --datasets, a group, \
                 --schedule-check or --retry-failed",
                settings.portal
            )));
        }
        tracing::warn!(
            "the data directory was filled from another portal: reloading every dataset in full"
        );
        config.mode = Mode::Rebuild;
    }
    if args.dry_run {
        let datasets: Vec<_> = plan.jobs.iter().map(|j| &j.dataset).collect();
        return super::plan::print(settings, args, only, config.mode, &datasets, printer).await;
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
    // The source is recorded once it has filled something: a portal that could not be reached, or a
    // catalog whose every dataset failed, does not become the data directory's source. A new portal is
    // recorded once every dataset was reloaded from it; until then the next run reloads them all again.
    let loaded =
        |d: &dobsob_engine::sync::DatasetReport| matches!(d.outcome, Outcome::Ok | Outcome::Drift);
    let record = if switched {
        report.datasets.iter().all(loaded)
    } else {
        report
            .datasets
            .iter()
            .any(|d| loaded(d) || d.outcome == Outcome::Interrupted)
    };
    if record && settings.recorded.as_ref() != Some(&settings.source) {
        settings.source.write(&settings.data_dir)?;
    } else if switched && !record {
        tracing::warn!(
            "not every dataset was reloaded from the new portal: it is not recorded yet; run the same command \
             again (with --switch-source) to reload them all"
        );
    }
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

/// A bare `rebuild` would download every dataset again (tens of millions of rows for the NYC catalog): on a
/// terminal it asks, elsewhere it is a usage error.
fn confirm_rebuild_all(settings: &Settings) -> Result<(), Error> {
    use std::io::{BufRead, IsTerminal, Write};
    let n = settings.catalog.datasets.len();
    let mb: u64 = settings
        .catalog
        .datasets
        .iter()
        .map(|d| d.size_mb as u64)
        .sum();
    let refuse = || {
        Error::Config(format!(
            "rebuild reloads datasets in full: name them with --datasets KEY,..., a group (--primary, \
             --secondary, --tertiary), or --all for every dataset of the catalog ({n} datasets, about {mb} MB)"
        ))
    };
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(refuse());
    }
    eprint!("Reload all {n} datasets in full (about {mb} MB to download)? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Config(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(refuse())
    }
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
                d.progress.mode.map_or("-", |m| m.as_str()).to_string(),
                d.progress.rows_fetched.to_string(),
                d.progress.rows_deleted.to_string(),
                match (d.progress.rows, d.progress.source_rows) {
                    (Some(r), Some(s)) if r != s => format!("{r} (source {s})"),
                    (Some(r), _) => r.to_string(),
                    _ => "-".into(),
                },
                format!("{:.1}s", d.seconds),
                d.error
                    .as_ref()
                    .map(|e| e.message.clone())
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
    // FETCHED is every row downloaded, some of them twice: say so, rather than leave a FETCHED of 300,100
    // for a table of 300,000 unexplained.
    let read_twice = report.datasets.iter().any(|d| {
        let p = &d.progress;
        match p.mode {
            Some(dobsob_engine::sync::SyncMode::Full) => {
                p.rows.is_some_and(|r| p.rows_fetched > r.max(0) as u64)
            }
            _ => p.rows_fetched > p.rows_inserted,
        }
    });
    if read_twice {
        printer.line(
            "FETCHED counts every row downloaded: new rows, changed rows, and rows read again (the --overlap \
             window behind the watermark, rows that moved to a later page while the source changed, pages \
             re-read after an interruption), which replace themselves. ROWS is what each table holds.",
        );
    }
    for d in &report.datasets {
        for a in &d.progress.quality {
            printer.line(&format!("data quality: {}: {}", d.key, a.message));
        }
    }
    printer.data(&dobsob_engine::report::webhook::one_line(report));
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// The flags' defaults and the library's are one set (`dobsob_engine::defaults`): a plain `dobsob sync` runs
    /// with exactly `Config::new`'s settings.
    #[test]
    fn a_plain_sync_runs_with_the_librarys_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let cli = crate::cli::Cli::try_parse_from([
            "dobsob",
            "--data-dir",
            data.to_str().unwrap(),
            "--portal",
            "https://data.cityofnewyork.us",
            "sync",
        ])
        .unwrap();
        let crate::cli::Command::Sync(cmd) = &cli.command else {
            panic!("a sync")
        };
        let settings =
            crate::settings::Settings::from_args(&cli.global, crate::settings::SourceUse::Strict)
                .unwrap();
        let ours = super::config(
            &settings,
            &cmd.run,
            &cmd.only,
            dobsob_engine::sync::Mode::Sync,
        )
        .unwrap();
        let lib = dobsob_engine::orchestrator::Config::new(data, settings.portal.clone());
        // Debug shows every field of each part; the token and anything else left unset is None in both.
        let show = |c: &dobsob_engine::orchestrator::Config| {
            format!(
                "{} {:?} {:?} {:?} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                c.page_size,
                c.retry,
                c.timeout,
                c.limits,
                c.max_requests_per_second,
                c.request_burst,
                c.memory,
                c.overlap,
                c.late_window,
                c.deletes,
                c.report_retention,
                c.publish_interval,
                c.max_duration,
                c.options,
            )
        };
        assert_eq!(show(&ours), show(&lib));
    }
}
