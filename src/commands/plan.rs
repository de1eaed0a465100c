//! `dobsob sync --dry-run`: print what a sync would do, changing nothing on disk. The engine decides
//! (`dobsob_engine::preview`, with the sync's own decision); this prints its answer and the limits the run
//! would use.

use dobsob_engine::catalog::Dataset;
use dobsob_engine::preview::{preview, PreviewOptions, StatesFrom};
use dobsob_engine::sync::Mode;

use crate::cli::{SyncArgs, SyncOnly};
use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::{retry_policy, Settings};

pub async fn print(
    settings: &Settings,
    args: &SyncArgs,
    only: &SyncOnly,
    mode: Mode,
    datasets: &[&Dataset],
    printer: Printer,
) -> Result<ExitStatus, Error> {
    let options = PreviewOptions {
        mode,
        schedule_grace: only.schedule_check.then_some(only.grace as i64),
        force: only.force,
        incremental_only: only.incremental_only,
        large_mb: args.large_mb,
        retry: retry_policy(args),
        timeout: std::time::Duration::from_secs(args.timeout),
        warehouse: crate::settings::warehouse(args.warehouse.as_deref())?,
    };
    let plan = preview(
        &settings.data_dir,
        &settings.portal,
        settings.token.clone(),
        datasets,
        &options,
    )
    .await?;
    if plan.states_from
        == (StatesFrom::Published {
            run_in_progress: true,
        })
    {
        printer.line(
            "a sync is running on this data directory: planned from the last published snapshot",
        );
    }
    if plan.states_from == StatesFrom::Postgres {
        printer.line("planned from the PostgreSQL warehouse's committed states (every worker's)");
    }
    let unanswered = plan.unanswered();
    let rows: Vec<Vec<String>> = plan
        .rows
        .iter()
        .map(|r| {
            let large = if r.large { ", large" } else { "" };
            let size = match r.rows {
                Some(n) => format!("{} MB ({}{large}), {n} rows", r.size_mb, r.size_source),
                None => format!("{} MB ({}{large})", r.size_mb, r.size_source),
            };
            vec![
                r.key.clone(),
                r.priority.to_string(),
                r.schedule.clone().unwrap_or_else(|| "-".into()),
                r.would.to_string(),
                size,
            ]
        })
        .collect();
    printer.line(&format!(
        "dry run: nothing is fetched or written; {}, portal {}",
        crate::printer::count(datasets.len(), "dataset"),
        settings.portal
    ));
    printer.line(&crate::printer::table(
        &["DATASET", "PRIORITY", "SCHEDULE", "WOULD", "SIZE"],
        &rows,
    ));
    let per_second = args.max_requests_per_second.unwrap_or_else(|| {
        dobsob_engine::orchestrator::default_requests_per_second(settings.token.as_ref())
    });
    printer.line(&format!(
        "concurrency: --max-concurrent {}, --max-large {} (over --large-mb {}), --max-requests-per-second {} \
         (--request-burst {}), --throttle {}s{}",
        args.max_concurrent,
        args.max_large,
        args.large_mb,
        per_second,
        args.request_burst,
        args.throttle,
        match args.max_duration {
            Some(d) => format!(", --max-duration {}s", d.as_secs()),
            None => String::new(),
        }
    ));
    printer.line(&format!(
        "limits: --page-size {}, --max-retries {}, --timeout {}s, --overlap {}s, --late-window {}s, \
         --max-delete-rows {}, --max-delete-percent {}{}{}",
        args.page_size,
        args.max_retries,
        args.timeout,
        args.overlap,
        args.late_window,
        args.max_delete_rows,
        args.max_delete_percent,
        if args.allow_mass_delete {
            ", --allow-mass-delete"
        } else {
            ""
        },
        if only.force { ", --force" } else { "" }
    ));
    if unanswered > 0 {
        printer.data(&format!(
            "the portal did not answer for {unanswered} dataset{} (see WOULD): a sync would fail {}",
            if unanswered == 1 { "" } else { "s" },
            if unanswered == 1 { "it" } else { "them" }
        ));
        return Ok(ExitStatus::Failed);
    }
    Ok(ExitStatus::Ok)
}
