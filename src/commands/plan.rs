//! `dobsob sync --dry-run`: what a sync would do, changing nothing on disk. It reads the ledger read-only
//! (when there is one) and asks the portal for each due dataset's metadata, the change gate's one request;
//! it fetches no rows, creates no data directory, takes no lock. A portal it cannot reach is said once and
//! the plan exits 1, as a sync would; a dataset whose metadata the portal refuses shows why, and exits 1.

use crate::catalog::Dataset;
use crate::cli::{SyncArgs, SyncOnly};
use crate::error::{Error, ExitStatus};
use crate::ledger::{DatasetRecord, Ledger};
use crate::printer::Printer;
use crate::settings::{retry_policy, Settings};
use crate::soda::SodaClient;
use crate::sync::{self, schedule, Mode};

pub async fn print(
    settings: &Settings,
    args: &SyncArgs,
    only: &SyncOnly,
    mode: Mode,
    datasets: &[&Dataset],
    printer: Printer,
) -> Result<ExitStatus, Error> {
    let ledger = Ledger::open_read_only(&settings.ledger_path())?;
    let client = SodaClient::new(
        &settings.portal,
        settings.token.clone(),
        retry_policy(args),
        std::time::Duration::from_secs(args.timeout),
    )
    .map_err(Error::Config)?;
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    let mut unanswered = 0;
    for ds in datasets {
        let rec = match &ledger {
            Some(l) => l.dataset(ds.key.as_str())?,
            None => None,
        };
        let last = rec
            .as_ref()
            .and_then(|r| r.last_success_at.as_deref())
            .and_then(schedule::parse_time);
        let grace = only.grace as i64;
        let due = schedule::due(ds.frequency, last, now, grace);
        let action = if only.schedule_check && !due.is_due() {
            format!("skip: {}", due.reason())
        } else {
            match client.metadata(ds.id.as_str()).await {
                Ok(meta) => action(ds, rec.as_ref(), &meta, only, mode),
                Err(e) if e.is_unreachable() => {
                    return Err(Error::Runtime(format!(
                        "cannot reach the portal {}: {e}. Check the network, or point --portal (or \
                         DOBSOB_PORTAL) at a reachable Socrata portal",
                        settings.portal
                    )))
                }
                Err(e) => {
                    unanswered += 1;
                    format!("unknown: {e}")
                }
            }
        };
        let loaded = match &ledger {
            Some(l) => l.last_full_load_bytes(ds.key.as_str())?,
            None => None,
        };
        let (mb, source) = sync::size_estimate_mb(loaded, ds);
        let large = if mb > args.large_mb { ", large" } else { "" };
        let size = match rec.as_ref().and_then(|r| r.row_count) {
            Some(n) => format!("{mb} MB ({source}{large}), {n} rows"),
            None => format!("{mb} MB ({source}{large})"),
        };
        rows.push(vec![
            ds.key.to_string(),
            ds.priority().to_string(),
            if only.schedule_check {
                due.reason()
            } else {
                "-".into()
            },
            action,
            size,
        ]);
    }
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
        crate::orchestrator::default_requests_per_second(settings.token.as_ref())
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

/// What a sync would do with a due dataset, from the ledger and its metadata.
fn action(
    ds: &Dataset,
    rec: Option<&DatasetRecord>,
    meta: &crate::soda::ViewMetadata,
    only: &SyncOnly,
    mode: Mode,
) -> String {
    let full = |why: &str| {
        if only.incremental_only {
            format!("skip: a full load is needed ({why}) and --incremental-only is set")
        } else {
            format!("full load ({why})")
        }
    };
    let Some(rec) = rec.filter(|r| r.watermark.is_some() && r.schema_fingerprint.is_some()) else {
        return full("never loaded");
    };
    if mode == Mode::Rebuild {
        return "full load (rebuild)".into();
    }
    let fingerprint = sync::schema_of(ds, &meta.columns)
        .map(|s| sync::fingerprint(ds, &s))
        .ok();
    if fingerprint.as_deref() != rec.schema_fingerprint.as_deref() {
        return full("columns or type mapping changed");
    }
    if !only.force && sync::gate_holds(meta.rows_updated_at, rec.source_rows_updated_at) {
        let why = sync::unchanged_reason(meta.rows_updated_at).unwrap_or_default();
        return format!("skip: {why}");
    }
    let wm = rec
        .watermark
        .as_ref()
        .map(|w| w.updated_at.clone())
        .unwrap_or_default();
    format!("incremental from {wm}")
}
