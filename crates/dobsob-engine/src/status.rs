//! Where each dataset stands: its status from the ledger (and, for a shared PostgreSQL warehouse, every
//! worker's state there), the one reading behind `dobsob status` (table, `--json`, `--check`,
//! `--prometheus`) and the dashboard. Reads only.

use serde::Serialize;

use crate::catalog::{Dataset, Frequency};
use crate::error::Error;
use crate::ledger::{DatasetRecord, LastOutcome, Ledger, WatermarkRecord};
use crate::warehouse::postgres::{off_runtime, shared_records_of, ConnInfo};

#[derive(Debug, Serialize)]
pub struct DatasetStatus {
    pub key: String,
    pub id: String,
    pub name: String,
    pub group: String,
    pub frequency: String,
    pub priority: crate::catalog::Priority,
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
    pub quality: Vec<crate::quality::Anomaly>,
}

/// Freshness of a dataset last synced `age_secs` ago (None = never): (due, stale). Due is
/// [`crate::sync::schedule::due`] with the default grace, as `--schedule-check` decides; stale is older than
/// the period of its frequency.
pub fn freshness(frequency: Frequency, age_secs: Option<i64>) -> (bool, bool) {
    let period = frequency.period().as_secs() as i64;
    match age_secs {
        None => (true, true),
        Some(a) => {
            let now = chrono::Utc::now();
            let last = now - chrono::Duration::seconds(a);
            let due = crate::sync::schedule::due(
                frequency,
                Some(last),
                now,
                crate::sync::schedule::DEFAULT_GRACE_SECS,
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
        next_due_at: crate::sync::schedule::due(
            d.frequency,
            last.as_deref().and_then(crate::sync::schedule::parse_time),
            now,
            crate::sync::schedule::DEFAULT_GRACE_SECS,
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

/// Every dataset's status in `selected`: the data directory's ledger (`None`: nothing synced yet) and, for a shared PostgreSQL warehouse,
/// every worker's state there (the newer per dataset). Blocking (it may connect to PostgreSQL).
pub fn collect(
    selected: &[&Dataset],
    ledger: Option<&Ledger>,
    postgres: Option<&ConnInfo>,
) -> Result<Vec<DatasetStatus>, Error> {
    // Read only: one SELECT, no setup (a read-only role can run it, and a scrape never waits on a worker).
    let shared = match postgres {
        Some(info) => off_runtime(|| shared_records_of(info))?,
        None => Vec::new(),
    };
    let now = chrono::Utc::now();
    let mut statuses = Vec::new();
    for d in selected {
        let local = match ledger {
            Some(l) => l.dataset(d.key.as_str())?,
            None => None,
        };
        let theirs = shared.iter().find(|r| r.key == d.key.as_str()).cloned();
        let rec = DatasetRecord::newest(local, theirs);
        let mut status = dataset_status(d, rec.as_ref(), now);
        if let Some(l) = ledger {
            status.quality = l
                .latest_profile(d.key.as_str())?
                .map(|(_, a)| a)
                .unwrap_or_default();
        }
        statuses.push(status);
    }
    Ok(statuses)
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
