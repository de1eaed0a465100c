//! Data quality after every sync: a cheap profile of the dataset's table (one pass of aggregates in the
//! warehouse, no per-row work in Rust), kept per attempt in the ledger, and the anomalies found by comparing
//! it with the profile before. The anomalies are warnings (the report, the ledger, `status`, the dashboard,
//! the webhook); they never fail a sync: the warehouse equals the source, and the source is what it is.
//!
//! The SQL is the same for DuckDB and PostgreSQL but for the casts ([`Dialect`]); every identifier is quoted.

use serde::{Deserialize, Serialize};

use crate::warehouse::{ColumnKind, TableSchema};

/// When a profile is an anomaly: the catalog's `[quality]` table (every field optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Profile each dataset after a sync that changed it (one scan of its table).
    pub enabled: bool,
    /// Rows fell by more than this percentage since the last profile. NYC's DOB and HPD datasets grow: rows
    /// are rarely deleted, and 5% gone in one night is a publisher's bulk removal or a broken export, not
    /// housekeeping.
    pub row_drop_percent: f64,
    /// A column counts as "mostly filled" at most this share NULL (10%) ...
    pub filled_max_null: f64,
    /// ... and as "mostly NULL" from this share on (50%): a column going from one to the other in one sync is
    /// a renamed or dropped field upstream, or a broken export.
    pub emptied_min_null: f64,
    /// A date or timestamp more than this many days ahead of now (a year and a day: permit expirations and
    /// hearings are legitimately months ahead; year typos such as 2202 for 2022 are centuries ahead). Flagged
    /// when the column's latest value is new since the last profile.
    pub future_days: f64,
    /// The share of values kept in dobsob.uncastable (not of their column's type) rose by more than this
    /// many percentage points of the table's values (0.1: one value in a thousand).
    pub uncastable_rise_percent: f64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            enabled: true,
            row_drop_percent: 5.0,
            filled_max_null: 0.10,
            emptied_min_null: 0.50,
            future_days: 366.0,
            uncastable_rise_percent: 0.1,
        }
    }
}

impl Thresholds {
    /// The thresholds must mean something: percentages in 0..=100, shares in 0..=1, filled below emptied.
    pub fn validate(&self) -> Result<(), String> {
        let pct = |name: &str, v: f64| {
            if (0.0..=100.0).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "[quality] {name} = {v}: a percentage from 0 to 100"
                ))
            }
        };
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("[quality] {name} = {v}: a share from 0 to 1"))
            }
        };
        pct("row_drop_percent", self.row_drop_percent)?;
        pct("uncastable_rise_percent", self.uncastable_rise_percent)?;
        share("filled_max_null", self.filled_max_null)?;
        share("emptied_min_null", self.emptied_min_null)?;
        if self.filled_max_null >= self.emptied_min_null {
            return Err(format!(
                "[quality] filled_max_null ({}) must be below emptied_min_null ({})",
                self.filled_max_null, self.emptied_min_null
            ));
        }
        if !(self.future_days.is_finite() && self.future_days >= 0.0) {
            return Err(format!(
                "[quality] future_days = {}: a number of days, 0 or more",
                self.future_days
            ));
        }
        Ok(())
    }
}

/// One profile of a dataset's table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub rows: i64,
    pub distinct_ids: i64,
    /// Values kept in dobsob.uncastable.
    pub uncastable: i64,
    pub columns: Vec<ColumnProfile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    /// How it is stored: text, number, double, timestamp, timestamptz, boolean.
    pub kind: String,
    pub nulls: i64,
    /// Numbers, dates and timestamps: the smallest and largest value, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// Dates and timestamps: the largest value in seconds since 1970 (a floating date read as UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_epoch: Option<f64>,
}

impl ColumnProfile {
    /// The share of NULLs of `rows` rows (0 for an empty table).
    pub fn null_share(&self, rows: i64) -> f64 {
        if rows > 0 {
            self.nulls as f64 / rows as f64
        } else {
            0.0
        }
    }
}

/// A profile's finding worth a person's look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// rows_fell, duplicate_ids, column_emptied, future_dates, uncastable_rise.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub message: String,
}

/// The kind label of a stored column.
pub fn kind_label(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Text => "text",
        ColumnKind::Number => "number",
        ColumnKind::Double => "double",
        ColumnKind::Timestamp => "timestamp",
        ColumnKind::Instant => "timestamptz",
        ColumnKind::Boolean => "boolean",
    }
}

/// Which database the profile's SQL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    DuckDb,
    Postgres,
}

fn has_range(kind: ColumnKind) -> bool {
    matches!(
        kind,
        ColumnKind::Number | ColumnKind::Double | ColumnKind::Timestamp | ColumnKind::Instant
    )
}

fn is_time(kind: ColumnKind) -> bool {
    matches!(kind, ColumnKind::Timestamp | ColumnKind::Instant)
}

/// The one query of a profile: `count(*)`, distinct ids, then per column its non-NULL count and, for
/// numbers and times, min and max as text and (times) max in epoch seconds. `table` is already quoted and
/// qualified; `quote` quotes a column name. Read back with [`read_profile`].
pub fn profile_sql(
    table: &str,
    schema: &TableSchema,
    dialect: Dialect,
    quote: impl Fn(&str) -> String,
) -> String {
    let text = |e: String| match dialect {
        Dialect::DuckDb => format!("CAST({e} AS VARCHAR)"),
        Dialect::Postgres => format!("({e})::text"),
    };
    let epoch = |e: String| match dialect {
        // DuckDB's core (no ICU) reads a TIMESTAMPTZ cast to TIMESTAMP as UTC, its instant; a floating
        // TIMESTAMP as if it were UTC.
        Dialect::DuckDb => format!("CAST(epoch(CAST({e} AS TIMESTAMP)) AS DOUBLE)"),
        Dialect::Postgres => format!("extract(epoch FROM {e})::double precision"),
    };
    let mut items = vec![
        "count(*)".to_string(),
        format!("count(DISTINCT {})", quote("socrata_id")),
    ];
    for c in &schema.columns {
        let q = quote(&c.name);
        items.push(format!("count({q})"));
        if has_range(c.kind) {
            items.push(text(format!("min({q})")));
            items.push(text(format!("max({q})")));
        }
        if is_time(c.kind) {
            items.push(epoch(format!("max({q})")));
        }
    }
    format!("SELECT {} FROM {table}", items.join(", "))
}

/// One value of the profile's row, as the driver reads it.
pub enum Cell {
    Int(i64),
    Text(Option<String>),
    Float(Option<f64>),
}

/// The profile out of the row [`profile_sql`] selected; `get(i, want)` reads column `i` as the kind of
/// [`Cell`] `want` names (0: integer, 1: text, 2: float).
pub fn read_profile<E>(
    schema: &TableSchema,
    uncastable: i64,
    mut get: impl FnMut(usize, u8) -> Result<Cell, E>,
) -> Result<Profile, E> {
    let int = |c: Cell| if let Cell::Int(v) = c { v } else { 0 };
    let text = |c: Cell| if let Cell::Text(v) = c { v } else { None };
    let float = |c: Cell| if let Cell::Float(v) = c { v } else { None };
    let rows = int(get(0, 0)?);
    let distinct_ids = int(get(1, 0)?);
    let mut i = 2;
    let mut columns = Vec::with_capacity(schema.columns.len());
    for c in &schema.columns {
        let filled = int(get(i, 0)?);
        i += 1;
        let (mut min, mut max, mut max_epoch) = (None, None, None);
        if has_range(c.kind) {
            min = text(get(i, 1)?);
            max = text(get(i + 1, 1)?);
            i += 2;
        }
        if is_time(c.kind) {
            max_epoch = float(get(i, 2)?);
            i += 1;
        }
        columns.push(ColumnProfile {
            name: c.name.clone(),
            kind: kind_label(c.kind).to_string(),
            nulls: rows - filled,
            min,
            max,
            max_epoch,
        });
    }
    Ok(Profile {
        rows,
        distinct_ids,
        uncastable,
        columns,
    })
}

fn percent(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.1 {
        format!("{v:.2}%")
    } else {
        format!("{v:.1}%")
    }
}

/// What `current` shows that deserves a look, given the profile before it (`None`: the first) and `now` in
/// epoch seconds.
pub fn anomalies(
    previous: Option<&Profile>,
    current: &Profile,
    t: &Thresholds,
    now: f64,
) -> Vec<Anomaly> {
    let mut found = Vec::new();
    let mut flag = |kind: &str, column: Option<&str>, message: String| {
        found.push(Anomaly {
            kind: kind.into(),
            column: column.map(str::to_string),
            message,
        })
    };
    if current.distinct_ids != current.rows {
        flag(
            "duplicate_ids",
            None,
            format!(
                "{} rows but {} distinct ids: some rows are duplicated",
                current.rows, current.distinct_ids
            ),
        );
    }
    if let Some(p) = previous.filter(|p| p.rows > 0) {
        let fell = (p.rows - current.rows) as f64 / p.rows as f64 * 100.0;
        if fell > t.row_drop_percent {
            flag(
                "rows_fell",
                None,
                format!(
                    "rows fell by {} since the last profile ({} -> {}; threshold {})",
                    percent(fell),
                    p.rows,
                    current.rows,
                    percent(t.row_drop_percent)
                ),
            );
        }
        for c in &current.columns {
            let Some(before) = p.columns.iter().find(|b| b.name == c.name) else {
                continue;
            };
            let (was, now_share) = (before.null_share(p.rows), c.null_share(current.rows));
            if current.rows > 0 && was <= t.filled_max_null && now_share >= t.emptied_min_null {
                flag(
                    "column_emptied",
                    Some(&c.name),
                    format!(
                        "column {:?} is now {} NULL (was {})",
                        c.name,
                        percent(now_share * 100.0),
                        percent(was * 100.0)
                    ),
                );
            }
        }
    }
    let horizon = now + t.future_days * 86_400.0;
    for c in &current.columns {
        let Some(max) = c.max_epoch.filter(|m| *m > horizon) else {
            continue;
        };
        let before = previous
            .and_then(|p| p.columns.iter().find(|b| b.name == c.name))
            .and_then(|b| b.max_epoch);
        if before == Some(max) {
            continue;
        }
        flag(
            "future_dates",
            Some(&c.name),
            format!(
                "column {:?} has values up to {}, more than {} days ahead",
                c.name,
                c.max.as_deref().unwrap_or("?"),
                t.future_days
            ),
        );
    }
    let share = |p: &Profile| {
        let cells = p.rows.saturating_mul(p.columns.len().max(1) as i64);
        if cells > 0 {
            p.uncastable as f64 / cells as f64 * 100.0
        } else {
            0.0
        }
    };
    // A rise needs a profile before it: a first profile (a new dataset, or the first sync after an
    // upgrade) says nothing about change.
    if let Some(p) = previous {
        let (was, now_share) = (share(p), share(current));
        if now_share - was > t.uncastable_rise_percent {
            flag(
            "uncastable_rise",
            None,
            format!(
                "{} values are not of their column's type ({} of the values, was {}): see dobsob.uncastable",
                    current.uncastable,
                    percent(now_share),
                    percent(was)
                ),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: &str, nulls: i64, max_epoch: Option<f64>) -> ColumnProfile {
        ColumnProfile {
            name: name.into(),
            kind: kind.into(),
            nulls,
            min: None,
            max: max_epoch.map(|e| format!("epoch {e}")),
            max_epoch,
        }
    }

    fn profile(rows: i64, columns: Vec<ColumnProfile>) -> Profile {
        Profile {
            rows,
            distinct_ids: rows,
            uncastable: 0,
            columns,
        }
    }

    const NOW: f64 = 1_796_000_000.0;
    const DAY: f64 = 86_400.0;

    fn kinds(a: &[Anomaly]) -> Vec<&str> {
        a.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn a_steady_table_has_no_anomalies() {
        let t = Thresholds::default();
        let p = profile(1000, vec![col("a", "text", 5, None)]);
        assert!(anomalies(None, &p, &t, NOW).is_empty());
        assert!(anomalies(Some(&p), &p, &t, NOW).is_empty());
        let grown = profile(1100, vec![col("a", "text", 9, None)]);
        assert!(anomalies(Some(&p), &grown, &t, NOW).is_empty());
    }

    #[test]
    fn rows_falling_past_the_threshold_is_flagged_and_not_below_it() {
        let t = Thresholds::default();
        let before = profile(1000, vec![]);
        assert!(anomalies(Some(&before), &profile(951, vec![]), &t, NOW).is_empty());
        let a = anomalies(Some(&before), &profile(940, vec![]), &t, NOW);
        assert_eq!(kinds(&a), ["rows_fell"]);
        assert!(a[0].message.contains("6.0%"), "{}", a[0].message);
        let strict = Thresholds {
            row_drop_percent: 1.0,
            ..t
        };
        assert_eq!(
            kinds(&anomalies(
                Some(&before),
                &profile(980, vec![]),
                &strict,
                NOW
            )),
            ["rows_fell"]
        );
    }

    #[test]
    fn a_filled_column_gone_mostly_null_is_flagged() {
        let t = Thresholds::default();
        let before = profile(1000, vec![col("a", "text", 50, None)]);
        let half = profile(1000, vec![col("a", "text", 600, None)]);
        let a = anomalies(Some(&before), &half, &t, NOW);
        assert_eq!(kinds(&a), ["column_emptied"]);
        assert_eq!(a[0].column.as_deref(), Some("a"));
        // Was already sparse: not news.
        let sparse = profile(1000, vec![col("a", "text", 300, None)]);
        assert!(anomalies(Some(&sparse), &half, &t, NOW).is_empty());
    }

    #[test]
    fn far_future_dates_are_flagged_once_when_new() {
        let t = Thresholds::default();
        let ok = profile(10, vec![col("d", "timestamp", 0, Some(NOW + 200.0 * DAY))]);
        assert!(anomalies(None, &ok, &t, NOW).is_empty());
        let typo = profile(
            10,
            vec![col("d", "timestamp", 0, Some(NOW + 180.0 * 365.0 * DAY))],
        );
        assert_eq!(
            kinds(&anomalies(Some(&ok), &typo, &t, NOW)),
            ["future_dates"]
        );
        assert_eq!(kinds(&anomalies(None, &typo, &t, NOW)), ["future_dates"]);
        // The same far value the night after: already said.
        assert!(anomalies(Some(&typo), &typo, &t, NOW).is_empty());
    }

    #[test]
    fn duplicate_ids_and_a_rise_of_uncastable_values_are_flagged() {
        let t = Thresholds::default();
        let mut dup = profile(10, vec![col("a", "number", 0, None)]);
        dup.distinct_ids = 9;
        assert_eq!(kinds(&anomalies(None, &dup, &t, NOW)), ["duplicate_ids"]);
        let clean = profile(1000, vec![col("a", "number", 0, None)]);
        let mut dirty = clean.clone();
        dirty.uncastable = 1;
        assert!(anomalies(Some(&clean), &dirty, &t, NOW).is_empty());
        dirty.uncastable = 20;
        assert_eq!(
            kinds(&anomalies(Some(&clean), &dirty, &t, NOW)),
            ["uncastable_rise"]
        );
        // A first profile has nothing to have risen from.
        assert!(anomalies(None, &dirty, &t, NOW).is_empty());
        // The same share as before: not a rise.
        assert!(anomalies(Some(&dirty), &dirty, &t, NOW).is_empty());
    }

    #[test]
    fn thresholds_are_validated() {
        assert!(Thresholds::default().validate().is_ok());
        let bad = Thresholds {
            row_drop_percent: 150.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("row_drop_percent"));
        let crossed = Thresholds {
            filled_max_null: 0.6,
            ..Default::default()
        };
        assert!(crossed.validate().unwrap_err().contains("below"));
    }
}
