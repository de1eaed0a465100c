//! The warehouse explains itself: `COMMENT ON TABLE` / `COMMENT ON COLUMN` from the portal's names and
//! descriptions (so `DESCRIBE`, `duckdb_columns()`, DBeaver and the like show what `bin` or `isndevice`
//! means), and the `main.dobsob_datasets` view over `dobsob.datasets_info` (catalog and portal facts) and
//! `dobsob.datasets_state` (the ledger's `DatasetRecord`s, rewritten at each publish).
//!
//! Every name and text from the portal goes through `quote_ident` / `quote_literal` or a bound parameter.

use duckdb::params;

use crate::ledger::DatasetRecord;
use crate::sync::schedule::parse_time;

use super::{quote_ident, quote_literal, Context, Warehouse, WarehouseError};

/// A column as the portal describes it.
#[derive(Debug, Clone, Default)]
pub struct ColumnDescription {
    /// The warehouse column (the portal's `fieldName`).
    pub field_name: String,
    /// The portal's display name ("Building Identification Number").
    pub name: String,
    pub description: Option<String>,
}

/// A dataset as the catalog and the portal describe it.
#[derive(Debug, Clone, Default)]
pub struct Description {
    pub key: String,
    pub socrata_id: String,
    /// The catalog's name.
    pub name: String,
    pub portal_name: String,
    pub description: Option<String>,
    pub source_url: String,
    pub frequency: String,
    pub priority: String,
    pub columns: Vec<ColumnDescription>,
}

/// A UTC time as DuckDB's core reads a TIMESTAMP (no time zone handling without ICU).
fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// The comments dobsob's own columns get.
const SYSTEM_COMMENTS: [(&str, &str); 4] = [
    (
        "socrata_id",
        "The row's Socrata :id (stable for the row's life; the key dobsob upserts and deletes by)",
    ),
    (
        "socrata_created_at",
        "When the row was created on the portal (Socrata :created_at, UTC)",
    ),
    (
        "socrata_updated_at",
        "When the row last changed on the portal (Socrata :updated_at, UTC)",
    ),
    (
        "socrata_version",
        "The row's Socrata :version (changes with every edit)",
    ),
];

/// "Name: description", or the name alone; never longer than 2,000 characters.
fn comment(name: &str, description: Option<&str>) -> String {
    let d = description.map(str::trim).filter(|d| !d.is_empty());
    let text = match (name.trim(), d) {
        ("", Some(d)) => d.to_string(),
        (n, Some(d)) if n != d => format!("{n}: {d}"),
        (n, _) => n.to_string(),
    };
    text.chars().take(2000).collect()
}

/// The comment `column` of the dataset's table gets: dobsob's own columns', the portal's name and
/// description, or what a derived coordinate is (for both warehouse targets).
pub(super) fn column_comment(d: &Description, column: &str) -> Option<String> {
    if let Some((_, c)) = SYSTEM_COMMENTS.iter().find(|(n, _)| *n == column) {
        return Some(c.to_string());
    }
    if let Some(c) = d.columns.iter().find(|c| c.field_name == column) {
        return Some(comment(&c.name, c.description.as_deref()));
    }
    // A coordinate dobsob derives from a point or location column.
    ["_longitude", "_latitude"].iter().find_map(|suffix| {
        let base = column.strip_suffix(suffix)?;
        d.columns.iter().find(|c| c.field_name == base).map(|c| {
            format!(
                "{} of {} (derived by dobsob from the point's text)",
                &suffix[1..],
                c.field_name
            )
        })
    })
}

/// The table's comment: what it is and where it comes from.
pub(super) fn table_comment(d: &Description) -> String {
    let name = if d.portal_name.is_empty() {
        &d.name
    } else {
        &d.portal_name
    };
    let mut c = comment(name, d.description.as_deref());
    c.push_str(&format!(
        " (Socrata dataset {}, {}; synced by dobsob)",
        d.socrata_id, d.source_url
    ));
    c
}

impl Warehouse {
    /// Records what the catalog and the portal say of a dataset, and comments its table and columns (when
    /// the table exists). Only comments that changed are written.
    pub fn describe(&mut self, d: &Description) -> Result<(), WarehouseError> {
        let tx = self.raw.conn.transaction().ctx(|| "BEGIN".into())?;
        tx.execute(
            "INSERT OR REPLACE INTO dobsob.datasets_info VALUES (?, ?, ?, ?, ?, ?, ?, ?, now())",
            params![
                d.key,
                d.socrata_id,
                d.name,
                d.portal_name,
                d.description,
                d.source_url,
                d.frequency,
                d.priority
            ],
        )
        .ctx(|| format!("describing {}", d.key))?;
        let table: Option<Option<String>> = tx
            .query_row(
                "SELECT comment FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
                params![d.key],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                duckdb::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .ctx(|| format!("reading the comments of {}", d.key))?;
        if let Some(current) = table {
            let t = quote_ident(&d.key);
            let wanted = table_comment(d);
            if current.as_deref() != Some(wanted.as_str()) {
                tx.execute_batch(&format!(
                    "COMMENT ON TABLE main.{t} IS {}",
                    quote_literal(&wanted)
                ))
                .ctx(|| format!("commenting {}", d.key))?;
            }
            let mut stmt = tx
                .prepare(
                    "SELECT column_name, comment FROM duckdb_columns()
                     WHERE schema_name = 'main' AND table_name = ?",
                )
                .ctx(|| format!("reading the columns of {}", d.key))?;
            let existing: Vec<(String, Option<String>)> = stmt
                .query_map(params![d.key], |r| Ok((r.get(0)?, r.get(1)?)))
                .ctx(|| format!("reading the columns of {}", d.key))?
                .collect::<Result<_, _>>()
                .ctx(|| format!("reading the columns of {}", d.key))?;
            drop(stmt);
            let mut sql = String::new();
            for (column, current) in &existing {
                if let Some(w) =
                    column_comment(d, column).filter(|w| current.as_deref() != Some(w.as_str()))
                {
                    sql.push_str(&format!(
                        "COMMENT ON COLUMN main.{t}.{} IS {};\n",
                        quote_ident(column),
                        quote_literal(&w)
                    ));
                }
            }
            if !sql.is_empty() {
                tx.execute_batch(&sql)
                    .ctx(|| format!("commenting the columns of {}", d.key))?;
            }
        }
        tx.commit().ctx(|| "COMMIT".into())
    }

    /// Rewrites the ledger's facts behind `dobsob_datasets` (in one transaction). `due_at` is when
    /// `sync --schedule-check` syncs the dataset again ([`crate::sync::schedule::due`] with the default
    /// grace, as `status` says); `stale_at` the last success plus the period of the frequency recorded by
    /// [`Warehouse::describe`].
    pub fn write_dataset_states(&mut self, states: &[DatasetRecord]) -> Result<(), WarehouseError> {
        let tx = self.raw.conn.transaction().ctx(|| "BEGIN".into())?;
        let frequencies: Vec<(String, Option<String>)> = {
            let mut stmt = tx
                .prepare("SELECT key, frequency FROM dobsob.datasets_info")
                .ctx(|| "reading dobsob.datasets_info".into())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .ctx(|| "reading dobsob.datasets_info".into())?
                .collect::<Result<_, _>>()
                .ctx(|| "reading dobsob.datasets_info".into())?;
            rows
        };
        tx.execute_batch("DELETE FROM dobsob.datasets_state")
            .ctx(|| "rewriting dobsob.datasets_state".into())?;
        {
            let ts = "CAST(CAST(? AS TIMESTAMP) AS TIMESTAMPTZ)";
            let mut stmt = tx
                .prepare(&format!(
                    "INSERT INTO dobsob.datasets_state (key, rows, source_rows, last_success_at, last_attempt_at,
                         last_outcome, last_error, consecutive_failures, watermark_updated_at, watermark_id,
                         source_last_updated_at, due_at, stale_at, published_at)
                     VALUES (?, ?, ?, {ts}, {ts}, ?, ?, ?, ?, ?, {ts}, {ts}, {ts}, now())"
                ))
                .ctx(|| "rewriting dobsob.datasets_state".into())?;
            for s in states {
                let DueAndStale {
                    success,
                    due,
                    stale,
                } = due_and_stale(s, &frequencies);
                stmt.execute(params![
                    s.key,
                    s.row_count,
                    s.source_count,
                    success.map(utc),
                    s.last_attempt_at.as_deref().and_then(parse_time).map(utc),
                    s.last_outcome.map(|o| o.as_str()),
                    s.last_error,
                    s.consecutive_failures,
                    s.watermark.as_ref().map(|w| &w.updated_at),
                    s.watermark.as_ref().map(|w| &w.id),
                    s.source_rows_updated_at
                        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                        .map(utc),
                    due.map(utc),
                    stale.map(utc)
                ])
                .ctx(|| format!("recording the state of {}", s.key))?;
            }
        }
        tx.commit().ctx(|| "COMMIT".into())
    }
}

/// A dataset's last success, when `sync --schedule-check` syncs it again (with the default grace, as
/// `status` says) and when its copy goes stale (the last success plus its frequency's period), from its
/// ledger record and the frequencies [`Warehouse::describe`] recorded (`(key, frequency)`).
pub(super) struct DueAndStale {
    pub success: Option<chrono::DateTime<chrono::Utc>>,
    pub due: Option<chrono::DateTime<chrono::Utc>>,
    pub stale: Option<chrono::DateTime<chrono::Utc>>,
}

pub(super) fn due_and_stale(
    s: &DatasetRecord,
    frequencies: &[(String, Option<String>)],
) -> DueAndStale {
    let success = s.last_success_at.as_deref().and_then(parse_time);
    let frequency = frequencies
        .iter()
        .find(|(k, _)| *k == s.key)
        .and_then(|(_, f)| f.as_deref())
        .and_then(crate::catalog::Frequency::parse);
    let due = frequency.and_then(|f| {
        crate::sync::schedule::due(
            f,
            success,
            chrono::Utc::now(),
            crate::sync::schedule::DEFAULT_GRACE_SECS,
        )
        .next_due_at()
    });
    let stale = success
        .zip(frequency)
        .and_then(|(t, f)| chrono::Duration::from_std(f.period()).ok().map(|p| t + p));
    DueAndStale {
        success,
        due,
        stale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_read_well_and_stay_bounded() {
        assert_eq!(
            comment("BIN", Some("Building number")),
            "BIN: Building number"
        );
        assert_eq!(comment("BIN", Some("  ")), "BIN");
        assert_eq!(comment("BIN", None), "BIN");
        assert_eq!(comment("", Some("Only text")), "Only text");
        assert_eq!(comment("Same", Some("Same")), "Same");
        assert_eq!(comment("x", Some(&"y".repeat(5000))).chars().count(), 2000);
    }
}
