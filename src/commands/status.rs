//! `dobsob status`: how fresh each catalog dataset is, from the ledger alone (so it works while a sync holds
//! the warehouse).

use dobsob_engine::ledger::{LastOutcome, Ledger};
pub use dobsob_engine::status::DatasetStatus;
use dobsob_engine::warehouse::postgres::ConnInfo;

use crate::error::{Error, ExitStatus};
use crate::printer::{age, table, Printer};
use crate::settings::Settings;

/// The data directory's ledger for reading ([`Ledger::open_for_reading`]).
pub fn open_ledger(settings: &Settings) -> Result<Option<Ledger>, Error> {
    Ok(Ledger::open_for_reading(&settings.ledger_path())?)
}

/// Every selected dataset's status ([`dobsob_engine::status::collect`]) for this data directory. Blocking
/// (it may connect to PostgreSQL).
pub fn collect(
    settings: &Settings,
    selection: &crate::cli::Selection,
    postgres: Option<&ConnInfo>,
) -> Result<Vec<DatasetStatus>, Error> {
    let selected = settings.select(selection)?;
    let ledger = open_ledger(settings)?;
    dobsob_engine::status::collect(&selected, ledger.as_ref(), postgres)
}

pub fn run(
    settings: &Settings,
    args: &crate::cli::StatusArgs,
    printer: Printer,
) -> Result<ExitStatus, Error> {
    settings.require_data_dir()?;
    let json = args.json;
    // A shared PostgreSQL warehouse: every worker's facts, where newer than this worker's ledger.
    let postgres = crate::settings::warehouse(args.warehouse.as_deref())?;
    let statuses = collect(settings, &args.selection, postgres.as_ref())?;
    if args.prometheus {
        let ledger = open_ledger(settings)?;
        let runs = match &ledger {
            Some(l) => l.runs(1)?,
            None => Vec::new(),
        };
        printer.data(crate::metrics::render(&statuses, runs.first(), None).trim_end());
        return Ok(ExitStatus::Ok);
    }
    if json {
        printer.data(&serde_json::to_string_pretty(&statuses).expect("statuses serialize"));
        return Ok(ExitStatus::Ok);
    }
    if args.check {
        return Ok(check(&statuses, printer));
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let state = match (s.age_seconds, s.stale, s.due) {
                (None, _, _) => "never",
                (_, true, _) => "STALE",
                (_, _, true) => "due",
                _ => "fresh",
            };
            let mut err = s.last_error.clone().unwrap_or_default();
            if !s.quality.is_empty() {
                err = format!(
                    "{}{}quality{}: {}",
                    err,
                    if err.is_empty() { "" } else { "; " },
                    // The column is cut at 80 characters: say how many findings there are before the first.
                    match s.quality.len() {
                        1 => String::new(),
                        n => format!(" ({n} findings, --json for all)"),
                    },
                    s.quality
                        .iter()
                        .map(|a| a.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            if err.chars().count() > 80 {
                err = err.chars().take(77).collect::<String>() + "...";
            }
            let rows = match (s.rows, s.source_rows) {
                (Some(r), Some(src)) if r != src => format!("{r} (source {src})"),
                (Some(r), _) => r.to_string(),
                _ => "-".into(),
            };
            vec![
                s.key.clone(),
                s.priority.to_string(),
                rows,
                s.last_outcome.map_or_else(|| "-".into(), |o| o.to_string()),
                s.uncastable
                    .filter(|n| *n > 0)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                s.age_seconds.map(age).unwrap_or_else(|| "never".into()),
                s.watermark
                    .as_ref()
                    .map(|w| w.updated_at.clone())
                    .unwrap_or_else(|| "-".into()),
                format!("{state} ({})", s.frequency),
                err,
            ]
        })
        .collect();
    printer.data(&table(
        &[
            "DATASET",
            "PRIORITY",
            "ROWS",
            "LAST",
            "UNCASTABLE",
            "LAST SUCCESS",
            "WATERMARK",
            "FRESHNESS",
            "LAST ERROR / QUALITY",
        ],
        &rows,
    ));
    printer.line(&match &postgres {
        // The address without its password, and where the datasets are.
        Some(info) => format!(
            "warehouse: PostgreSQL {info}, datasets in schema {} (every worker's state)",
            info.schema
        ),
        None => snapshot_line(&settings.warehouse_path()),
    });
    let source = match &settings.source.catalog {
        Some(p) => format!("catalog {}", p.display()),
        None => "the built-in catalog".into(),
    };
    printer.line(&format!("source: {source}, portal {}", settings.portal));
    Ok(ExitStatus::Ok)
}

/// What the published snapshot is: its storage version (which DuckDB releases open it) and who may read it.
fn snapshot_line(path: &std::path::Path) -> String {
    use dobsob_engine::warehouse::{storage, StorageVersion};
    if !path.exists() {
        return format!("warehouse: {} (not published yet)", path.display());
    }
    match storage::snapshot_facts(path) {
        Ok(f) => {
            let version = match &f.storage_version {
                Some(v) => match StorageVersion::parse(v) {
                    Ok(v) => format!("storage version {v} (opens in DuckDB {})", storage::readers(&v)),
                    Err(_) => format!("storage version {v}"),
                },
                None => "storage version latest, not recorded (DuckDB 2.0 and later only; the next sync \
                         converts it to v1.0.0)"
                    .into(),
            };
            let who = match f.share_group.as_deref() {
                None | Some(dobsob_engine::warehouse::share::PRIVATE) => {
                    "private to you".to_string()
                }
                Some(g) => format!("readable by the group {g}"),
            };
            format!("warehouse: {}, {version}, {who}", path.display())
        }
        Err(e) => format!("warehouse: {}: {e}", path.display()),
    }
}

/// `status --check`: one line per dataset that needs attention, exit 1 if any does.
fn check(statuses: &[DatasetStatus], printer: Printer) -> ExitStatus {
    let mut problems = Vec::new();
    for s in statuses {
        let failing = s.last_outcome.is_some_and(LastOutcome::is_failing);
        if let Some(how) = s.last_outcome.filter(|o| o.was_stopped()) {
            problems.push(format!(
                "INTERRUPTED {}: the last attempt was {how}; its committed pages are kept (`dobsob sync \
                 --retry-failed` resumes it now, a scheduled sync when it is due)",
                s.key
            ));
        }
        if failing {
            problems.push(format!(
                "FAILING {}: {} ({} consecutive)",
                s.key,
                s.last_error.as_deref().unwrap_or("last attempt failed"),
                s.consecutive_failures
            ));
        }
        match s.age_seconds {
            None => problems.push(format!("STALE {}: never synced", s.key)),
            Some(a) if s.stale => problems.push(format!(
                "STALE {}: last success {} ago ({})",
                s.key,
                age(a),
                s.frequency
            )),
            _ => {}
        }
    }
    if problems.is_empty() {
        printer.data(&format!(
            "OK: {} fresh",
            crate::printer::count(statuses.len(), "dataset")
        ));
        ExitStatus::Ok
    } else {
        printer.data(&problems.join("\n"));
        ExitStatus::Failed
    }
}
