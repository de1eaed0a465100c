//! `dobsob status`: how fresh each catalog dataset is, from the ledger alone (so it works while a sync holds
//! the warehouse).

use dobsob_engine::catalog::{Dataset, Frequency};
use dobsob_engine::ledger::{DatasetRecord, LastOutcome, Ledger, WatermarkRecord};
use dobsob_engine::warehouse::postgres::{off_runtime, shared_records_of, ConnInfo};
use serde::Serialize;

use crate::error::{Error, ExitStatus};
use crate::printer::{age, table, Printer};
use crate::settings::Settings;

#[derive(Debug, Serialize)]
pub struct DatasetStatus {
    pub key: String,
    pub id: String,
    pub name: String,
    pub group: String,
    pub frequency: String,
    pub priority: dobsob_engine::catalog::Priority,
    /// When the dataset is (or became) due for `sync --schedule-check`: last success + the period of its
    /// frequency - 1 hour (the default --grace); null if never synced. `dobsob_datasets.due_at` is the same.
    pub next_due_at: Option<String>,
    pub rows: Option<i64>,
    pub last_success_at: Option<String>,
    pub age_seconds: Option<i64>,
    pub watermark: Option<WatermarkRecord>,
    /// Never synced, or its period is (nearly) over: the next `sync --schedule-check` would fetch it.
    pub due: bool,
    /// Never synced, or the last success is older than its publication frequency.
    pub stale: bool,
    pub last_error: Option<String>,
    pub consecutive_failures: i64,
    /// How the last attempt ended (ok, drift, failed, interrupted, abandoned: killed).
    pub last_outcome: Option<LastOutcome>,
    /// The source's row count at the last sync (differs from `rows` when the outcome is drift).
    pub source_rows: Option<i64>,
    /// Values kept verbatim in dobsob.uncastable because they are not of their column's type.
    pub uncastable: Option<i64>,
    /// One word for all of the above: never, failing, drift, stale, due, fresh (in that order of
    /// precedence).
    pub state: &'static str,
    /// What the last data-quality profile found worth a look (this data directory's ledger).
    pub quality: Vec<dobsob_engine::quality::Anomaly>,
}

/// Freshness of a dataset last synced `age_secs` ago (None = never): (due, stale). Due is
/// [`dobsob_engine::sync::schedule::due`] with the default grace, as `--schedule-check` decides; stale is older than
/// the period of its frequency.
pub fn freshness(frequency: Frequency, age_secs: Option<i64>) -> (bool, bool) {
    let period = frequency.period().as_secs() as i64;
    match age_secs {
        None => (true, true),
        Some(a) => {
            let now = chrono::Utc::now();
            let last = now - chrono::Duration::seconds(a);
            let due = dobsob_engine::sync::schedule::due(
                frequency,
                Some(last),
                now,
                dobsob_engine::sync::schedule::DEFAULT_GRACE_SECS,
            );
            (due.is_due(), a > period)
        }
    }
}

pub fn dataset_status(
    d: &Dataset,
    rec: Option<&DatasetRecord>,
    now: chrono::DateTime<chrono::Utc>,
) -> DatasetStatus {
    let last = rec.and_then(|r| r.last_success_at.clone());
    let age_seconds = last
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds());
    let (due, stale) = freshness(d.frequency, age_seconds);
    DatasetStatus {
        key: d.key.to_string(),
        id: d.id.to_string(),
        name: d.name.clone(),
        group: d.group.to_string(),
        frequency: d.frequency.to_string(),
        priority: d.priority(),
        next_due_at: dobsob_engine::sync::schedule::due(
            d.frequency,
            last.as_deref()
                .and_then(dobsob_engine::sync::schedule::parse_time),
            now,
            dobsob_engine::sync::schedule::DEFAULT_GRACE_SECS,
        )
        .next_due_at()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        rows: rec.and_then(|r| r.row_count),
        last_success_at: last,
        age_seconds,
        watermark: rec.and_then(|r| r.watermark.clone()),
        due,
        stale,
        last_error: rec.and_then(|r| r.last_error.clone()),
        consecutive_failures: rec.map(|r| r.consecutive_failures).unwrap_or(0),
        last_outcome: rec.and_then(|r| r.last_outcome),
        source_rows: rec.and_then(|r| r.source_count),
        uncastable: rec.and_then(|r| r.uncastable),
        state: state_of(
            rec.and_then(|r| r.last_outcome),
            age_seconds.is_some(),
            stale,
            due,
        ),
        quality: Vec::new(),
    }
}

/// The one-word state of a dataset: never synced, failing (last attempt failed), drift, stale, due, fresh.
pub fn state_of(
    outcome: Option<LastOutcome>,
    synced: bool,
    stale: bool,
    due: bool,
) -> &'static str {
    match outcome {
        Some(LastOutcome::Failed) => "failing",
        Some(LastOutcome::Drift) => "drift",
        _ if !synced => "never",
        _ if stale => "stale",
        _ if due => "due",
        _ => "fresh",
    }
}

/// The data directory's ledger for reading (`None`: nothing was ever synced; none is created just to say
/// so). A ledger of an older dobsob is migrated first, as a sync would, so that `status`, `--prometheus` and
/// the dashboard keep working on the day dobsob is upgraded.
pub fn open_ledger(settings: &Settings) -> Result<Option<Ledger>, Error> {
    let path = settings.ledger_path();
    match Ledger::open_read_only(&path) {
        Err(dobsob_engine::ledger::LedgerError::Version { found, known, .. }) if found < known => {
            Ok(Some(Ledger::open(&path)?))
        }
        other => Ok(other?),
    }
}

/// Every selected dataset's status: this data directory's ledger and, for a shared PostgreSQL warehouse,
/// every worker's state there (the newer per dataset). Blocking (it may connect to PostgreSQL).
pub fn collect(
    settings: &Settings,
    selection: &crate::cli::Selection,
    postgres: Option<&ConnInfo>,
) -> Result<Vec<DatasetStatus>, Error> {
    let selected = settings.select(selection)?;
    let ledger = open_ledger(settings)?;
    // Read only: one SELECT, no setup (a read-only role can run it, and a scrape never waits on a worker).
    let shared = match postgres {
        Some(info) => off_runtime(|| shared_records_of(info))?,
        None => Vec::new(),
    };
    let now = chrono::Utc::now();
    let mut statuses = Vec::new();
    for d in selected {
        let local = match &ledger {
            Some(l) => l.dataset(d.key.as_str())?,
            None => None,
        };
        let theirs = shared.iter().find(|r| r.key == d.key.as_str()).cloned();
        let rec = DatasetRecord::newest(local, theirs);
        let mut status = dataset_status(d, rec.as_ref(), now);
        if let Some(l) = &ledger {
            status.quality = l
                .latest_profile(d.key.as_str())?
                .map(|(_, a)| a)
                .unwrap_or_default();
        }
        statuses.push(status);
    }
    Ok(statuses)
}

pub fn run(
    settings: &Settings,
    args: &crate::cli::StatusArgs,
    printer: Printer,
) -> Result<ExitStatus, Error> {
    settings.require_data_dir()?;
    let json = args.json;
    // A shared PostgreSQL warehouse: every worker's facts, where newer than this worker's ledger.
    let postgres = args
        .warehouse
        .as_deref()
        .map(ConnInfo::from_env)
        .transpose()
        .map_err(Error::Config)?;
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
                    "{}{}quality: {}",
                    err,
                    if err.is_empty() { "" } else { "; " },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_against_frequency() {
        let day = 86_400;
        assert_eq!(freshness(Frequency::Daily, None), (true, true));
        assert_eq!(freshness(Frequency::Daily, Some(3600)), (false, false));
        assert_eq!(freshness(Frequency::Daily, Some(day - 1800)), (true, false));
        assert_eq!(freshness(Frequency::Daily, Some(day + 1)), (true, true));
        assert_eq!(freshness(Frequency::Weekly, Some(2 * day)), (false, false));
        assert_eq!(
            freshness(Frequency::Quarterly, Some(60 * day)),
            (false, false)
        );
        assert_eq!(freshness(Frequency::Monthly, Some(32 * day)), (true, true));
    }
}
