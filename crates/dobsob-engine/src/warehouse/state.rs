//! What the warehouse knows it holds: each dataset's sync state, committed with its rows ([`SyncState`]),
//! read by the sync (and, read-only, by the dry run: [`StateReader`]), and the tables' counts.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A full load is filling the load table; the live table (if any) is untouched.
    Full,
    /// The live table is complete up to the watermark.
    Incremental,
}

/// A dataset's sync state as committed with its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub phase: Phase,
    /// Full load: the last `:id` loaded.
    pub cursor_id: Option<String>,
    /// Full load: where the incremental pass starts after the swap. Incremental: the watermark.
    pub watermark: Option<Watermark>,
    pub schema_fingerprint: String,
}

pub(super) fn read_state(
    conn: &Connection,
    key: &str,
) -> Result<Option<SyncState>, WarehouseError> {
    conn.query_row(
        "SELECT phase, cursor_id, wm_updated_at, wm_id, schema_fingerprint
         FROM dobsob.sync_state WHERE dataset = ?",
        params![key],
        |r| {
            let phase: String = r.get(0)?;
            let t: Option<String> = r.get(2)?;
            let id: Option<String> = r.get(3)?;
            Ok(SyncState {
                phase: if phase == "full" {
                    Phase::Full
                } else {
                    Phase::Incremental
                },
                cursor_id: r.get(1)?,
                watermark: t
                    .zip(id)
                    .map(|(updated_at, id)| Watermark { updated_at, id }),
                schema_fingerprint: r.get(4)?,
            })
        },
    )
    .optional()
    .ctx(|| format!("reading the sync state of {key}"))
}

/// `state`, unless it says the live table is complete and the table is gone (dropped by hand): there is
/// nothing to be incremental on, which reads as no state, so the next sync loads the dataset in full (said
/// once, when `warn`: the sync's read, not the dry run's). Both warehouse targets read their states so.
pub(super) fn live_state(
    key: &str,
    state: Option<SyncState>,
    table_exists: impl FnOnce() -> Result<bool, WarehouseError>,
    warn: bool,
) -> Result<Option<SyncState>, WarehouseError> {
    if state
        .as_ref()
        .is_some_and(|s| s.phase == Phase::Incremental)
        && !table_exists()?
    {
        if warn {
            tracing::warn!(
                dataset = key,
                "table {key} is missing from the warehouse: loading it in full"
            );
        }
        return Ok(None);
    }
    Ok(state)
}

pub(super) fn table_exists(conn: &Connection, table: &str) -> Result<bool, WarehouseError> {
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
            params![table],
            |r| r.get(0),
        )
        .ctx(|| format!("looking up table {table}"))?;
    Ok(n > 0)
}

/// The datasets' committed sync states of a warehouse file, opened read-only: what a dry run decides from,
/// as the sync would (see [`Warehouse::state`]).
pub struct StateReader {
    conn: Connection,
}

impl StateReader {
    pub fn open(path: &Path) -> Result<StateReader, WarehouseError> {
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .ctx(|| "configuring a read-only open".into())?;
        let conn = Connection::open_with_flags(path, config)
            .ctx(|| format!("opening {} read-only", path.display()))?;
        Ok(StateReader { conn })
    }

    /// The dataset's state, `None` when it was never loaded or its table is gone (the sync then loads it
    /// in full). A warehouse older than the state table has none.
    pub fn state(&self, key: &str) -> Result<Option<SyncState>, WarehouseError> {
        let has_state: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'dobsob' AND table_name = 'sync_state'",
                [],
                |r| r.get(0),
            )
            .ctx(|| "looking up dobsob.sync_state".into())?;
        if has_state == 0 {
            return Ok(None);
        }
        let state = read_state(&self.conn, key)?;
        live_state(key, state, || table_exists(&self.conn, key), false)
    }
}

impl Warehouse {
    /// The dataset's sync state. A live table dropped by hand means there is nothing to be incremental on:
    /// that reads as no state, so the next sync loads the dataset in full.
    pub fn state(&self, key: &str) -> Result<Option<SyncState>, WarehouseError> {
        let state = self.read_state(key)?;
        live_state(key, state, || self.table_exists(key), true)
    }

    pub(super) fn read_state(&self, key: &str) -> Result<Option<SyncState>, WarehouseError> {
        read_state(&self.raw.conn, key)
    }

    pub(super) fn table_exists(&self, table: &str) -> Result<bool, WarehouseError> {
        table_exists(&self.raw.conn, table)
    }

    /// Rows in a table of schema `main` (0 if it does not exist).
    pub fn count(&mut self, table: &str) -> Result<i64, WarehouseError> {
        let started = std::time::Instant::now();
        let r = self.count_rows(table);
        self.timings.count_s += started.elapsed().as_secs_f64();
        r
    }

    pub(super) fn count_rows(&self, table: &str) -> Result<i64, WarehouseError> {
        if !self.table_exists(table)? {
            return Ok(0);
        }
        self.raw
            .conn
            .query_row(
                &format!("SELECT count(*) FROM main.{}", quote_ident(table)),
                [],
                |r| r.get(0),
            )
            .ctx(|| format!("counting {table}"))
    }

    /// The data-quality profile of the dataset's table: one scan of aggregates ([`crate::quality`]).
    pub fn profile(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<crate::quality::Profile, WarehouseError> {
        use crate::quality::{profile_sql, read_profile, Cell, Dialect};
        let started = std::time::Instant::now();
        let uncastable = self.uncastable_count(key)?;
        let sql = profile_sql(
            &format!("main.{}", quote_ident(key)),
            schema,
            Dialect::DuckDb,
            quote_ident,
        );
        let r = self
            .raw
            .conn
            .query_row(&sql, [], |r| {
                read_profile(schema, uncastable, |i, want| {
                    Ok(match want {
                        0 => Cell::Int(r.get(i)?),
                        1 => Cell::Text(r.get(i)?),
                        _ => Cell::Float(r.get(i)?),
                    })
                })
            })
            .ctx(|| format!("profiling {key}"));
        self.timings.count_s += started.elapsed().as_secs_f64();
        r
    }

    /// How many values of `table` did not fit their column's type (kept in `dobsob.uncastable`).
    pub fn uncastable_count(&self, table: &str) -> Result<i64, WarehouseError> {
        self.raw
            .conn
            .query_row(
                "SELECT count(*) FROM dobsob.uncastable WHERE table_name = ?",
                params![table],
                |r| r.get(0),
            )
            .ctx(|| format!("counting uncastable values of {table}"))
    }
}
