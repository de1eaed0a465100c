//! `dobsob sync --dry-run`: what a sync would do, changing nothing on disk. It decides with the sync's own
//! [`decide`], from the same facts: the warehouse's committed sync states (the working database, opened
//! read-only, when no run holds the data directory: after a kill only it knows an interrupted load; else the
//! last published snapshot), the ledger (read-only) for the change gate, each due dataset's metadata, and,
//! when the source changed, the two counts of the full-replace check. It fetches no rows, creates no data
//! directory, writes nothing. A portal it cannot reach is said once and the plan exits 1, as a sync would; a
//! dataset whose metadata the portal refuses shows why, and exits 1.

use crate::catalog::Dataset;
use crate::cli::{SyncArgs, SyncOnly};
use crate::error::{Error, ExitStatus};
use crate::ledger::{DatasetRecord, Ledger};
use crate::printer::Printer;
use crate::settings::{retry_policy, Settings};
use crate::soda::{SodaClient, SodaError};
use crate::sync::decide::{decide, is_replace, Decision, Facts};
use crate::sync::{self, schedule, Mode};
use crate::warehouse::{StateReader, SyncState};

pub async fn print(
    settings: &Settings,
    args: &SyncArgs,
    only: &SyncOnly,
    mode: Mode,
    datasets: &[&Dataset],
    printer: Printer,
) -> Result<ExitStatus, Error> {
    let ledger = Ledger::open_read_only(&settings.ledger_path())?;
    // Held (a shared lock) while the states are read: a run starting meanwhile waits its turn (exit 75).
    let layout = settings.layout();
    let look = crate::lock::peek(&settings.data_dir);
    let states_from = match &look {
        crate::lock::Peek::Held => {
            printer.line(
                "a sync is running on this data directory: planned from the last published snapshot",
            );
            layout.published()
        }
        crate::lock::Peek::Free(_) if layout.working().exists() => layout.working(),
        crate::lock::Peek::Free(_) => layout.published(),
    };
    let mut states: Vec<Option<SyncState>> = Vec::new();
    if states_from.exists() {
        let reader = StateReader::open(&states_from)?;
        for ds in datasets {
            states.push(reader.state(ds.key.as_str())?);
        }
    } else {
        states.resize(datasets.len(), None);
    }
    drop(look);
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
    for (ds, state) in datasets.iter().zip(&states) {
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
            match action(&client, ds, rec.as_ref(), state.as_ref(), only, mode).await {
                Ok(a) => a,
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

/// What a sync would do with a due dataset: [`decide`] on the facts the sync would have.
async fn action(
    client: &SodaClient,
    ds: &Dataset,
    rec: Option<&DatasetRecord>,
    state: Option<&SyncState>,
    only: &SyncOnly,
    mode: Mode,
) -> Result<String, SodaError> {
    let meta = client.metadata(ds.id.as_str()).await?;
    let fingerprint = match sync::schema_of(ds, &meta.columns) {
        Ok(schema) => sync::fingerprint(ds, &schema),
        Err(e) => return Ok(format!("fail: unusable schema: {e}")),
    };
    let mut facts = Facts {
        mode,
        state,
        fingerprint: &fingerprint,
        force: only.force,
        gate: sync::gate_holds(
            meta.rows_updated_at,
            rec.and_then(|r| r.source_rows_updated_at),
        ),
        replaced: None,
    };
    let mut decision = decide(&facts);
    if decision == Decision::CheckReplace {
        let wm = state.and_then(|s| s.watermark.as_ref());
        let changed = client.count(ds.id.as_str(), wm).await?;
        let total = if changed == 0 {
            0
        } else {
            client.count(ds.id.as_str(), None).await?
        };
        facts.replaced = Some(is_replace(changed, total));
        decision = decide(&facts);
    }
    Ok(match decision {
        Decision::Unchanged => format!(
            "skip: {}",
            sync::unchanged_reason(meta.rows_updated_at).unwrap_or_default()
        ),
        Decision::Full { why, .. } if only.incremental_only => {
            format!("skip: a full load is needed ({why}) and --incremental-only is set")
        }
        Decision::Full { why, .. } => format!("full load ({why})"),
        Decision::Incremental | Decision::CheckReplace => {
            match state.and_then(|s| s.watermark.as_ref()) {
                Some(w) => format!("incremental from {}", w.updated_at),
                None => "incremental from the start".into(),
            }
        }
    })
}
