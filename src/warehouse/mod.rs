//! The DuckDB warehouse: one table per dataset (named by its key, in schema `main`), plus dobsob's own
//! tables in schema `dobsob` (sync state, uncastable values, column mapping; see `sql/warehouse/`).
//!
//! Pages arrive as CSV files on disk and are loaded with DuckDB's own CSV reader into a staging table, then
//! merged set-wise: a full load appends to a load table that is swapped in atomically at the end; an
//! incremental page replaces rows by `socrata_id` (delete + insert in one transaction; no primary key, see
//! `../shared/DUCKDB.md`). Each merge commits the dataset's sync state in the same transaction, so the
//! warehouse always knows exactly which rows it holds. The connection lives on one writer thread
//! ([`WarehouseHandle`]).

mod describe;
mod publish;
mod raw;
pub mod schema;
pub mod share;
pub mod storage;
mod writer;

use std::path::Path;

use duckdb::{params, Connection, OptionalExt};

use crate::soda::Watermark;
pub use describe::{ColumnDescription, Description};
pub use publish::{publishing_path, wal_of, Published};
use schema::decimal_shape;
pub use schema::{quote_ident, quote_literal, ColumnKind, NumberType, TableSchema};
pub use share::Sharing;
pub use storage::{Converted, StorageVersion};
pub use writer::{Pending, WarehouseHandle};

const META_SQL: &[&str] = &[
    include_str!("../../sql/warehouse/0001_meta.sql"),
    include_str!("../../sql/warehouse/0002_schema_changes.sql"),
    include_str!("../../sql/warehouse/0003_meta.sql"),
    include_str!("../../sql/warehouse/0004_datasets.sql"),
];

/// The layout of dobsob's own tables and of the dataset tables (type mapping included) that this dobsob
/// writes, recorded in `dobsob.meta`. 1: the first recorded layout (DECIMAL(38,18), TIMESTAMPTZ instants).
const WAREHOUSE_FORMAT: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("cannot open the warehouse {path}: {source}{}", open_hint(.source))]
    Open { path: String, source: duckdb::Error },
    #[error("warehouse: {context}: {source}")]
    Sql {
        context: String,
        source: duckdb::Error,
    },
    #[error("warehouse: {0}")]
    State(String),
    #[error(
        "the warehouse {path} was written by a newer dobsob (layout {found}; this one knows up to {known}): \
         upgrade dobsob, or move the file aside to load afresh"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("the warehouse writer thread has stopped")]
    WriterGone,
}

/// What to do about a warehouse that will not open: another holder, or a file that is not a warehouse.
fn open_hint(e: &duckdb::Error) -> &'static str {
    let m = e.to_string();
    if m.contains("lock") {
        " (is another dobsob, or a DuckDB client, holding it open?)"
    } else if m.contains("not a valid DuckDB database") || m.contains("Failure while replaying WAL")
    {
        " (the file is damaged or not a DuckDB warehouse: move it aside and run `dobsob sync` to load afresh)"
    } else {
        ""
    }
}

trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, WarehouseError>;
}

impl<T> Context<T> for Result<T, duckdb::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, WarehouseError> {
        self.map_err(|source| WarehouseError::Sql {
            context: context(),
            source,
        })
    }
}

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

fn read_state(conn: &Connection, key: &str) -> Result<Option<SyncState>, WarehouseError> {
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

fn table_exists(conn: &Connection, table: &str) -> Result<bool, WarehouseError> {
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
        if state
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Incremental)
            && !table_exists(&self.conn, key)?
        {
            return Ok(None);
        }
        Ok(state)
    }
}

/// A page of rows on disk, already checked by the sync engine.
#[derive(Debug, Clone)]
pub struct PageFile<'a> {
    pub path: &'a Path,
    /// The CSV header: `:id`, `:created_at`, `:updated_at`, other system fields and column fieldNames.
    pub header: &'a [String],
    /// Number columns with a value, and the most integer digits and decimals their values have: a column
    /// whose type cannot hold them is widened before the page is merged.
    pub number_shapes: &'a [(String, (u32, u32))],
    /// Number columns with a value in exponent form (read through plain notation by the careful path).
    pub exponent_numbers: &'a [String],
    /// The page check found every typed cell certain to cast and no quoted empty string: in a full load, a
    /// batch of such pages is inserted straight from the CSV ([`Warehouse::load_pages`]), without staging
    /// or looking for uncastable cells.
    pub castable: bool,
}

/// What the id set of the source says against a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdSetDiff {
    /// Ids listed, and how many of them are distinct.
    pub listed: i64,
    pub distinct: i64,
    /// Local rows whose id the source did not list.
    pub extra_local: i64,
    /// Listed ids the table lacks.
    pub missing_local: i64,
}

/// The temp table a dataset's id listing is collected in (one per dataset: datasets sync concurrently
/// through the one writer connection). Quoted.
fn ids_table(key: &str) -> String {
    quote_ident(&format!("_dobsob_ids_{key}"))
}

/// DuckDB's strict reading of a page file, every column as text named `c0`, `c1`, ... in header order. Every
/// non-null cell of a Socrata CSV is quoted and a null is an empty unquoted cell, so "" must stay an empty
/// string (allow_quoted_nulls = false). Nothing is sniffed: the columns are given.
fn read_page_sql(page: &PageFile) -> String {
    read_csv_sql(&[page.path], &vec!["VARCHAR"; page.header.len()])
}

/// DuckDB's memory cap at the start of a run unless `--memory-limit` fixes one, in MB. What a full load
/// needs pinned at once grows with the table's width (two threads each fill a row group's column segments):
/// DuckDB refused a 46-column load at 64 MB and a 60-column one at 80 MB (which the automatic cap then
/// raises). Peak resident memory of a 46-column full load: 163-189 MB at 80 MB, 187-202 MB at 96 MB, for
/// a few percent of speed; docs/performance.md has the measurements.
pub const DEFAULT_MEMORY_LIMIT_MB: u32 = 80;

/// The highest cap [`MemoryLimit::Auto`] raises DuckDB's to, in MB.
pub const MAX_AUTO_MEMORY_LIMIT_MB: u32 = 1024;

/// DuckDB's memory cap for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// Starts at `start_mb` ([`DEFAULT_MEMORY_LIMIT_MB`] from the CLI) and doubles, up to
    /// [`MAX_AUTO_MEMORY_LIMIT_MB`], each time DuckDB refuses a batch of a full load for memory (a wide
    /// dataset); a raised cap stays for the rest of the run.
    Auto { start_mb: u32 },
    /// `--memory-limit`: never raised; a batch refused for memory is loaded page by page.
    Fixed(u32),
}

impl MemoryLimit {
    /// Whether dobsob may raise the cap.
    pub fn is_auto(self) -> bool {
        matches!(self, MemoryLimit::Auto { .. })
    }

    /// The cap the run starts with, in MB.
    pub fn start_mb(self) -> u32 {
        match self {
            MemoryLimit::Auto { start_mb } | MemoryLimit::Fixed(start_mb) => start_mb,
        }
    }
}

impl Default for MemoryLimit {
    fn default() -> Self {
        MemoryLimit::Auto {
            start_mb: DEFAULT_MEMORY_LIMIT_MB,
        }
    }
}

/// The CSV reader's buffer, in bytes. DuckDB's default (16 times `max_line_size`, 32 MB) is allocated per
/// file and thread, which alone would take much of [`DEFAULT_MEMORY_LIMIT_MB`]; the reader was no slower
/// on 4 MB buffers. DuckDB's longest row (`max_line_size`, 2 MB by default) follows it, to 4 MB.
const CSV_BUFFER_BYTES: u32 = 4 << 20;

/// DuckDB's strict reading of page files with the same header, column `c{i}` read as `types[i]`: the one
/// reader both loads use (and `tests/fuzz.rs` holds to [`ColumnKind::cast_sql`]).
pub fn read_csv_sql(paths: &[&Path], types: &[&str]) -> String {
    let columns: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("'c{i}': '{t}'"))
        .collect();
    let files: Vec<String> = paths
        .iter()
        .map(|p| quote_literal(&p.display().to_string()))
        .collect();
    format!(
        "read_csv([{}], header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"', \
         allow_quoted_nulls = false, strict_mode = true, buffer_size = {CSV_BUFFER_BYTES}, columns = {{{}}})",
        files.join(", "),
        columns.join(", ")
    )
}

/// Whether a page field is one of the system timestamps (instants, like a `date` column).
fn is_system_instant(field: &str) -> bool {
    field == ":created_at" || field == ":updated_at"
}

/// Commits `tx`, counting the time in `timings.commit_s` (the WAL write, and DuckDB's automatic checkpoints).
fn commit(tx: duckdb::Transaction<'_>, timings: &mut WriterTimings) -> Result<(), WarehouseError> {
    let started = std::time::Instant::now();
    let r = tx.commit().ctx(|| "COMMIT".into());
    timings.commit_s += started.elapsed().as_secs_f64();
    r
}

/// The type column `name` has in the table now (`types`, from [`Warehouse::column_types`]); "" if it has
/// none (the insert then fails on the missing column).
fn stored_type<'t>(types: &'t std::collections::HashMap<String, String>, name: &str) -> &'t str {
    types.get(name).map(String::as_str).unwrap_or("")
}

/// Records a full load's cursor (parameters: the last :id committed, the dataset); changes one row.
const ADVANCE_LOAD_CURSOR: &str =
    "UPDATE dobsob.sync_state SET cursor_id = ?, updated_at = now() WHERE dataset = ? AND phase = 'full'";

fn no_full_load(key: &str) -> WarehouseError {
    WarehouseError::State(format!("{key} has no full load in progress"))
}

/// The table a full load fills before the swap.
pub fn load_table(key: &str) -> String {
    format!("{LOAD_PREFIX}{key}")
}

/// What [`load_table`] puts before a dataset's key.
const LOAD_PREFIX: &str = "_dobsob_load_";

/// Busy seconds of the writer's steps, for the whole run (the benchmark's breakdown).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WriterTimings {
    /// `read_csv` of a page into the staging table.
    pub stage_s: f64,
    /// The typed `INSERT ... SELECT` (and the upsert's delete).
    pub insert_s: f64,
    /// Finding uncastable cells.
    pub uncastable_s: f64,
    /// Committing pages (the WAL write, and DuckDB's automatic checkpoints).
    pub commit_s: f64,
    /// `count(*)` after pages.
    pub count_s: f64,
    /// Full loads swapped in.
    pub swap_s: f64,
    /// Checkpoints and copies of publishes.
    pub publish_s: f64,
}

pub struct Warehouse {
    pub timings: WriterTimings,
    /// A connection on `raw`'s database: it must be closed before that database is, which `Warehouse`'s
    /// `Drop` does first, whatever the order of the fields.
    conn: std::mem::ManuallyDrop<Connection>,
    /// The database under `conn`, whose own connection runs the full load's straight inserts ([`raw`]);
    /// closed when it drops, after `conn`.
    raw: raw::RawDb,
    memory: MemoryLimit,
    /// DuckDB's cap now, MB (raised from `memory`'s start when it is automatic).
    memory_limit_mb: u32,
    /// The database file (the working database; see `publish`).
    path: std::path::PathBuf,
    storage: StorageVersion,
    converted: Option<Converted>,
    /// Who reads the published snapshot ([`Warehouse::set_sharing`]).
    sharing: Sharing,
}

/// Refuses a file a newer dobsob wrote (a layout this one does not know), before anything changes it.
fn refuse_newer_layout(conn: &Connection, path: &Path) -> Result<(), WarehouseError> {
    let has_meta: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'dobsob' AND table_name = 'meta'",
            [],
            |r| r.get(0),
        )
        .ctx(|| "reading the warehouse's layout".into())?;
    if has_meta == 0 {
        return Ok(());
    }
    let found: Option<String> = conn
        .query_row(
            "SELECT value FROM dobsob.meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )
        .optional()
        .ctx(|| "reading the warehouse's layout".into())?;
    let found = found.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    if found > WAREHOUSE_FORMAT {
        return Err(WarehouseError::TooNew {
            path: path.display().to_string(),
            found,
            known: WAREHOUSE_FORMAT,
        });
    }
    Ok(())
}

impl Drop for Warehouse {
    fn drop(&mut self) {
        // SAFETY: `conn` is dropped exactly once, here, and never used after: `self` is going away. Its
        // database (`raw`) is dropped after this body, with the other fields, so the connection is closed
        // before the database it runs on, as DuckDB requires.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.conn) };
    }
}

impl Warehouse {
    /// Opens (or creates) the warehouse file and dobsob's own tables; DuckDB may hold `memory` and spills
    /// to `temp_dir` beyond it. The file is in storage version `storage` (`None`: the one it records, else
    /// [`StorageVersion::DEFAULT`]): a new file is created in it, an existing one in another is converted
    /// first ([`storage::convert_if_needed`], its progress logged).
    pub fn open(
        path: &Path,
        temp_dir: &Path,
        memory: MemoryLimit,
        storage: Option<&StorageVersion>,
    ) -> Result<Warehouse, WarehouseError> {
        let memory_limit_mb = memory.start_mb();
        let open_error = |source| WarehouseError::Open {
            path: path.display().to_string(),
            source,
        };
        storage::remove_leftovers(path)?;
        // One open in the usual case: a new file is created in the version asked for (or the default), an
        // existing one opens in its own, checked against the one it is to be in.
        let existed = path.exists();
        let create_in = storage.cloned().unwrap_or_default();
        let mut raw = raw::RawDb::open(path, create_in.as_str()).map_err(open_error)?;
        let mut conn = raw.connection().map_err(open_error)?;
        // Refuse a newer layout before writing anything, conversions included.
        refuse_newer_layout(&conn, path)?;
        let (storage, converted) = if !existed {
            (create_in, None)
        } else {
            // The version asked for, else the one the file records, else the default (a file from before
            // dobsob recorded it is in DuckDB 2.0's newest format and is converted).
            let recorded = storage::recorded(&conn)?;
            let target = match storage {
                Some(wanted) => wanted.clone(),
                None => recorded
                    .as_deref()
                    .and_then(|v| StorageVersion::parse(v).ok())
                    .unwrap_or_default(),
            };
            if recorded.as_deref() == Some(target.as_str()) {
                (target, None)
            } else {
                drop(conn);
                drop(raw);
                target
                    .check_known()
                    .map_err(|e| WarehouseError::State(format!("storage version {target}: {e}")))?;
                let converted = storage::convert_if_needed(
                    path,
                    &target,
                    temp_dir,
                    memory_limit_mb,
                    &mut |m| tracing::info!("{m}"),
                )?;
                raw = raw::RawDb::open(path, target.as_str()).map_err(open_error)?;
                conn = raw.connection().map_err(open_error)?;
                (target, converted)
            }
        };
        // DuckDB's buffer pool would otherwise grow to 80% of RAM; spill to disk instead. At the default
        // checkpoint threshold (16 MB of WAL) a checkpoint rewrites the growing load table every few pages of a
        // wide dataset; 64 MB halves the commits' cost for little memory (docs/performance.md).
        conn.execute_batch(&format!(
            "SET memory_limit = '{memory_limit_mb}MB'; SET preserve_insertion_order = false; SET checkpoint_threshold = '64MB'; \
             SET temp_directory = {};",
            quote_literal(&temp_dir.display().to_string())
        ))
        .ctx(|| "configuring DuckDB".into())?;
        for sql in META_SQL {
            conn.execute_batch(sql)
                .ctx(|| "creating dobsob's tables".into())?;
        }
        // The file is in `storage` now: created in it, converted to it, or recording it already.
        conn.execute(
            "INSERT OR REPLACE INTO dobsob.meta VALUES ('format', ?), (?, ?)",
            params![
                WAREHOUSE_FORMAT.to_string(),
                storage::META_KEY,
                storage.as_str()
            ],
        )
        .ctx(|| "recording the warehouse's layout".into())?;
        Ok(Warehouse {
            timings: WriterTimings::default(),
            conn: std::mem::ManuallyDrop::new(conn),
            raw,
            memory,
            memory_limit_mb,
            path: path.to_path_buf(),
            storage,
            converted,
            sharing: Sharing::Private,
        })
    }

    /// Who reads the published snapshot from now on: `choice` (`--share-group`), recorded in `dobsob.meta`
    /// for the next runs, or, when `None`, what an earlier run recorded (private if nothing). Ending a
    /// share closes `data_dir` (where the snapshot is published) again.
    pub fn set_sharing(
        &mut self,
        choice: Option<Sharing>,
        data_dir: &Path,
    ) -> Result<&Sharing, WarehouseError> {
        let recorded: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM dobsob.meta WHERE key = ?",
                params![share::META_KEY],
                |r| r.get(0),
            )
            .optional()
            .ctx(|| "reading the warehouse's share group".into())?;
        let was_shared = recorded.as_deref().is_some_and(|g| g != share::PRIVATE);
        let sharing = match choice {
            Some(s) => s,
            None => match recorded.as_deref() {
                None => Sharing::Private,
                Some(g) => Sharing::parse(g).map_err(|e| {
                    WarehouseError::State(format!(
                        "this data directory is shared with the group {g:?} (an earlier --share-group), but {e}; \
                         give --share-group with another group, or `--share-group {}` to keep it private",
                        share::PRIVATE
                    ))
                })?,
            },
        };
        if recorded.as_deref() != Some(sharing.recorded()) {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO dobsob.meta VALUES (?, ?)",
                    params![share::META_KEY, sharing.recorded()],
                )
                .ctx(|| "recording the warehouse's share group".into())?;
        }
        if was_shared && sharing == Sharing::Private {
            sharing.apply_to_data_dir(data_dir).map_err(|e| {
                WarehouseError::State(format!(
                    "closing {} to the group again: {e}",
                    data_dir.display()
                ))
            })?;
        }
        self.sharing = sharing;
        Ok(&self.sharing)
    }

    /// Who reads the published snapshot.
    pub fn sharing(&self) -> &Sharing {
        &self.sharing
    }

    /// The storage version the file is in.
    pub fn storage_version(&self) -> &StorageVersion {
        &self.storage
    }

    /// What opening converted, if anything (the published snapshot is then due at once).
    pub fn converted(&self) -> Option<&Converted> {
        self.converted.as_ref()
    }

    /// DuckDB's memory cap now, MB.
    pub fn memory_limit_mb(&self) -> u32 {
        self.memory_limit_mb
    }

    /// Doubles DuckDB's memory cap after it refused a batch of `key` for memory, when the cap is dobsob's to
    /// choose and below [`MAX_AUTO_MEMORY_LIMIT_MB`]; whether it did.
    fn raise_memory_limit(&mut self, key: &str) -> Result<bool, WarehouseError> {
        if !self.memory.is_auto() || self.memory_limit_mb >= MAX_AUTO_MEMORY_LIMIT_MB {
            return Ok(false);
        }
        let raised = self
            .memory_limit_mb
            .saturating_mul(2)
            .min(MAX_AUTO_MEMORY_LIMIT_MB);
        self.conn
            .execute_batch(&format!("SET memory_limit = '{raised}MB'"))
            .ctx(|| "raising DuckDB's memory cap".into())?;
        tracing::info!(
            dataset = key,
            "DuckDB needed more than {} MB to load a batch of pages of this dataset; its memory cap is {raised} MB \
             for the rest of the run (--memory-limit fixes a cap)",
            self.memory_limit_mb
        );
        self.memory_limit_mb = raised;
        Ok(true)
    }

    /// The dataset's sync state. A live table dropped by hand means there is nothing to be incremental on:
    /// that reads as no state, so the next sync loads the dataset in full.
    pub fn state(&self, key: &str) -> Result<Option<SyncState>, WarehouseError> {
        let state = self.read_state(key)?;
        if state
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Incremental)
            && !self.table_exists(key)?
        {
            tracing::warn!(
                dataset = key,
                "table {key} is missing from the warehouse: loading it in full"
            );
            return Ok(None);
        }
        Ok(state)
    }

    fn read_state(&self, key: &str) -> Result<Option<SyncState>, WarehouseError> {
        read_state(&self.conn, key)
    }

    fn table_exists(&self, table: &str) -> Result<bool, WarehouseError> {
        table_exists(&self.conn, table)
    }

    /// Rows in a table of schema `main` (0 if it does not exist).
    pub fn count(&mut self, table: &str) -> Result<i64, WarehouseError> {
        let started = std::time::Instant::now();
        let r = self.count_rows(table);
        self.timings.count_s += started.elapsed().as_secs_f64();
        r
    }

    fn count_rows(&self, table: &str) -> Result<i64, WarehouseError> {
        if !self.table_exists(table)? {
            return Ok(0);
        }
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM main.{}", quote_ident(table)),
                [],
                |r| r.get(0),
            )
            .ctx(|| format!("counting {table}"))
    }

    /// How many values of `table` did not fit their column's type (kept in `dobsob.uncastable`).
    pub fn uncastable_count(&self, table: &str) -> Result<i64, WarehouseError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM dobsob.uncastable WHERE table_name = ?",
                params![table],
                |r| r.get(0),
            )
            .ctx(|| format!("counting uncastable values of {table}"))
    }

    /// Drops a load table with what dobsob recorded about it (kept values, schema changes), in the caller's
    /// transaction: a load started afresh or given up must not leave them to be swapped in later.
    fn drop_load(conn: &Connection, key: &str) -> Result<(), WarehouseError> {
        let load = load_table(key);
        conn.execute_batch(&format!("DROP TABLE IF EXISTS main.{}", quote_ident(&load)))
            .ctx(|| format!("dropping {load}"))?;
        for table in ["dobsob.uncastable", "dobsob.schema_changes"] {
            conn.execute(
                &format!("DELETE FROM {table} WHERE table_name = ?"),
                params![load],
            )
            .ctx(|| format!("clearing {table} of {load}"))?;
        }
        Ok(())
    }

    /// Starts a full load: a fresh, empty load table. `start` is the newest row of the source now, where the
    /// incremental pass will begin once the load is swapped in.
    pub fn begin_full(
        &mut self,
        key: &str,
        schema: &TableSchema,
        fingerprint: &str,
        start: Option<&Watermark>,
    ) -> Result<(), WarehouseError> {
        let load = load_table(key);
        let tx = self.conn.transaction().ctx(|| "BEGIN".into())?;
        Self::drop_load(&tx, key)?;
        tx.execute_batch(&schema.create_table_sql(&load))
            .ctx(|| format!("creating {load}"))?;
        tx.execute(
            "DELETE FROM dobsob.sync_state WHERE dataset = ?",
            params![key],
        )
        .ctx(|| "resetting sync state".into())?;
        tx.execute(
            "INSERT INTO dobsob.sync_state
             (dataset, phase, load_table, cursor_id, wm_updated_at, wm_id, schema_fingerprint, updated_at)
             VALUES (?, 'full', ?, NULL, ?, ?, ?, now())",
            params![
                key,
                load,
                start.map(|w| &w.updated_at),
                start.map(|w| &w.id),
                fingerprint
            ],
        )
        .ctx(|| "recording the full load".into())?;
        tx.commit().ctx(|| "COMMIT".into())
    }

    /// Stages a page's CSV as text columns `c0..cN` (header order) in the temp table `_dobsob_page`.
    fn stage(&mut self, page: &PageFile) -> Result<(), WarehouseError> {
        let started = std::time::Instant::now();
        let r = self.stage_page(page);
        self.timings.stage_s += started.elapsed().as_secs_f64();
        r
    }

    fn stage_page(&self, page: &PageFile) -> Result<(), WarehouseError> {
        let sql = format!(
            "CREATE OR REPLACE TEMP TABLE _dobsob_page AS SELECT * FROM {}",
            read_page_sql(page)
        );
        self.conn
            .execute_batch(&sql)
            .ctx(|| format!("loading page {}", page.path.display()))
    }

    /// Each column of `table` (schema `main`) and its DuckDB type as the table has it now.
    fn column_types(
        conn: &Connection,
        table: &str,
    ) -> Result<std::collections::HashMap<String, String>, WarehouseError> {
        let mut stmt = conn
            .prepare(
                "SELECT column_name, data_type FROM duckdb_columns()
                 WHERE schema_name = 'main' AND table_name = ?",
            )
            .ctx(|| format!("reading the columns of {table}"))?;
        let rows = stmt
            .query_map(params![table], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(|| format!("reading the columns of {table}"))?;
        rows.collect::<Result<_, _>>()
            .ctx(|| format!("reading the columns of {table}"))
    }

    /// Widens the number columns of `table` whose type cannot hold every value of `pages` exactly, in the
    /// caller's transaction, each to the narrowest type that holds both its values and the pages' (see
    /// [`NumberType::widened`]), recorded in `dobsob.schema_changes`. A column no number type can hold
    /// becomes VARCHAR with the exact text of every value (trailing zeros of decimals dropped), and values
    /// kept aside as uncastable come back into it.
    /// Returns the table's column types as they are after it (what the insert that follows casts to).
    fn widen_numbers(
        conn: &Connection,
        table: &str,
        pages: &[&PageFile],
    ) -> Result<std::collections::HashMap<String, String>, WarehouseError> {
        let mut types = Self::column_types(conn, table)?;
        let mut needed: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
        for (name, (i, d)) in pages.iter().flat_map(|p| p.number_shapes) {
            let e = needed.entry(name.as_str()).or_insert((0, 0));
            *e = (e.0.max(*i), e.1.max(*d));
        }
        let t = quote_ident(table);
        for (name, shape) in needed {
            let Some(from) = types.get(name).cloned() else {
                continue;
            };
            let Some(current) = NumberType::parse(&from) else {
                continue;
            };
            // Cheap checks first: only when the type's capacity is short is the column's largest value read.
            if current.holds_shape(shape) {
                continue;
            }
            let c = quote_ident(name);
            let largest: Option<String> = conn
                .query_row(
                    &format!("SELECT CAST(max(abs({c})) AS VARCHAR) FROM main.{t}"),
                    [],
                    |r| r.get(0),
                )
                .ctx(|| format!("reading the largest value of {table}.{name}"))?;
            let held = largest
                .as_deref()
                .and_then(decimal_shape)
                .map_or(0, |(i, _)| i);
            let to = current.widened(held, shape);
            if to == current {
                continue;
            }
            // No USING expression: DuckDB logs it in the WAL, and this build cannot replay a WAL whose
            // expressions need functions from its core_functions extension (found when a checkpoint failed
            // for a full disk). The plain cast; for text, an UPDATE (logged as data) dropping trailing zeros.
            conn.execute_batch(&format!(
                "ALTER TABLE main.{t} ALTER COLUMN {c} SET DATA TYPE {}",
                to.sql()
            ))
            .ctx(|| format!("widening {table}.{name} to {}", to.sql()))?;
            let reason = if to == NumberType::Text {
                if matches!(current, NumberType::Decimal { .. }) {
                    conn.execute_batch(&format!(
                        "UPDATE main.{t} SET {c} = rtrim(rtrim({c}, '0'), '.') WHERE contains({c}, '.');"
                    ))
                    .ctx(|| format!("widening {table}.{name} to VARCHAR"))?;
                }
                conn.execute(
                    &format!(
                        "UPDATE main.{t} AS d SET {c} = u.raw_value FROM dobsob.uncastable u
                         WHERE u.table_name = ? AND u.column_name = ? AND u.socrata_id = d.socrata_id"
                    ),
                    params![table, name],
                )
                .ctx(|| format!("restoring kept values of {table}.{name}"))?;
                conn.execute(
                    "DELETE FROM dobsob.uncastable WHERE table_name = ? AND column_name = ?",
                    params![table, name],
                )
                .ctx(|| format!("restoring kept values of {table}.{name}"))?;
                tracing::warn!(
                    dataset = table.trim_start_matches(LOAD_PREFIX),
                    column = name,
                    "a value ({} integer digits, {} decimals) fits no number type exactly: the column is \
                     now VARCHAR holding the exact text (recorded in dobsob.schema_changes)",
                    shape.0,
                    shape.1
                );
                format!(
                    "a value needs {} integer digits and {} decimals, more than any number type holds \
                     exactly; kept as exact text",
                    shape.0, shape.1
                )
            } else {
                tracing::debug!(
                    dataset = table.trim_start_matches(LOAD_PREFIX),
                    column = name,
                    "widened from {from} to {}",
                    to.sql()
                );
                format!(
                    "values need {} integer digits and {} decimals",
                    held.max(shape.0),
                    current.scale().max(shape.1)
                )
            };
            // A column of a full load in progress simply has its type when the table arrives; a live table
            // that changes type under the analysts' queries, and a number column that became text, say why.
            if to == NumberType::Text || !table.starts_with(LOAD_PREFIX) {
                conn.execute(
                    "INSERT INTO dobsob.schema_changes VALUES (?, ?, ?, ?, ?, now())",
                    params![table, name, from, to.sql(), reason],
                )
                .ctx(|| "recording the schema change".into())?;
            }
            conn.execute(
                "UPDATE dobsob.columns SET duckdb_type = ? WHERE table_name = ? AND column_name = ?",
                params![to.sql(), table, name],
            )
            .ctx(|| "recording the column mapping".into())?;
            types.insert(name.to_string(), to.sql());
        }
        Ok(types)
    }

    /// Inserts the staged page into `table` with typed columns and keeps its uncastable cells, in the
    /// caller's transaction; `types` are the table's column types (as [`Self::widen_numbers`] left them).
    fn insert_page(
        conn: &Connection,
        table: &str,
        schema: &TableSchema,
        page: &PageFile,
        types: &std::collections::HashMap<String, String>,
        timings: &mut WriterTimings,
    ) -> Result<(), WarehouseError> {
        let started = std::time::Instant::now();
        conn.execute_batch(&Self::insert_sql(
            table,
            schema,
            page.header,
            types,
            "_dobsob_page",
            false,
            page.exponent_numbers,
        )?)
        .ctx(|| format!("inserting into {table}"))?;
        let inserted = std::time::Instant::now();
        timings.insert_s += (inserted - started).as_secs_f64();
        let r = Self::keep_uncastable(conn, table, schema, page, types);
        timings.uncastable_s += inserted.elapsed().as_secs_f64();
        r
    }

    /// The `INSERT INTO table SELECT ... FROM source` of a page with typed columns, `source` being the
    /// staged page (`_dobsob_page`, every column text) or, `typed`, page files read with
    /// [`Self::read_types`].
    fn insert_sql(
        table: &str,
        schema: &TableSchema,
        header: &[String],
        types: &std::collections::HashMap<String, String>,
        source: &str,
        typed: bool,
        exponents: &[String],
    ) -> Result<String, WarehouseError> {
        let pos = |name: &str| header.iter().position(|h| h == name);
        let sys = |name: &str| {
            pos(name)
                .map(|i| format!("c{i}"))
                .ok_or_else(|| WarehouseError::State(format!("page has no {name} column")))
        };
        // The system timestamps are instants, stored as TIMESTAMPTZ.
        let instant_type = ColumnKind::Instant.duckdb_type();
        let instant = |raw: String| {
            if typed {
                ColumnKind::Instant.from_read_sql(&raw, instant_type)
            } else {
                ColumnKind::Instant.cast_sql(&raw, instant_type, false)
            }
        };
        let mut select = vec![
            sys(":id")?,
            instant(sys(":created_at")?),
            instant(sys(":updated_at")?),
            // `:version` changes with every change of the row: `verify --deep` compares it.
            pos(":version")
                .map(|i| format!("c{i}"))
                .unwrap_or_else(|| "NULL".into()),
        ];
        for c in &schema.columns {
            let stored = stored_type(types, &c.name);
            // A column the page does not carry is null in every row of it (reported by the page check).
            select.push(match pos(&c.name) {
                Some(i) if typed => c.kind.from_read_sql(&format!("c{i}"), stored),
                Some(i) => c.kind.cast_sql(
                    &format!("c{i}"),
                    stored,
                    exponents.iter().any(|e| e == &c.name),
                ),
                None => "NULL".into(),
            });
        }
        for d in &schema.derived {
            select.push(match pos(&d.source) {
                Some(i) => d.sql(&format!("c{i}")),
                None => "NULL".into(),
            });
        }
        Ok(format!(
            "INSERT INTO main.{} SELECT {} FROM {source}",
            quote_ident(table),
            select.join(", ")
        ))
    }

    /// The types the straight load reads a page's fields as: the system timestamps as TIMESTAMP, typed
    /// columns as [`ColumnKind::read_type`], everything else (ids, text, points, fields the metadata does
    /// not list) as text.
    fn read_types<'t>(
        schema: &TableSchema,
        header: &[String],
        types: &'t std::collections::HashMap<String, String>,
    ) -> Vec<&'t str> {
        header
            .iter()
            .map(|h| {
                if is_system_instant(h) {
                    return ColumnKind::Instant.read_type(ColumnKind::Instant.duckdb_type());
                }
                match schema.columns.iter().find(|c| &c.name == h) {
                    Some(c) => c.kind.read_type(stored_type(types, &c.name)),
                    None => "VARCHAR",
                }
            })
            .collect()
    }

    /// Keeps the staged page's uncastable cells in `dobsob.uncastable` under `table`.
    fn keep_uncastable(
        conn: &Connection,
        table: &str,
        schema: &TableSchema,
        page: &PageFile,
        types: &std::collections::HashMap<String, String>,
    ) -> Result<(), WarehouseError> {
        let id = page.header.iter().position(|h| h == ":id").unwrap_or(0);
        for c in &schema.columns {
            let Some(i) = page.header.iter().position(|h| h == &c.name) else {
                continue;
            };
            let raw = format!("c{i}");
            let stored = stored_type(types, &c.name);
            let exponents = page.exponent_numbers.iter().any(|e| e == &c.name);
            if let Some(pred) = c.uncastable_sql(&raw, stored, exponents) {
                conn.execute(
                    &format!("INSERT INTO dobsob.uncastable SELECT ?, c{id}, ?, ?, {raw} FROM _dobsob_page WHERE {pred}"),
                    params![table, c.name, c.socrata_type],
                )
                .ctx(|| format!("keeping uncastable values of {}", c.name))?;
            }
        }
        Ok(())
    }

    /// Appends consecutive pages of a full load to the load table and records `cursor_ids` (each page's last
    /// id), keeping what was recorded in step with what committed. When every page was found certain to
    /// cast (and they share a header): number columns the pages need widened first, then in one transaction
    /// one `INSERT ... SELECT` from all their CSV files, read with typed columns by DuckDB's strict reader
    /// ([`Self::read_types`]), and the cursor. A batch of a row
    /// group or more is then compressed and written once, where a commit per page rewrote the table's last,
    /// growing row group each time. Otherwise, or if DuckDB refuses a cell the page check called certain
    /// (nothing is lost: the transaction rolls back), page by page: each staged, typed with `TRY_CAST` and
    /// its uncastable cells kept, in its own transaction.
    pub fn load_pages(
        &mut self,
        key: &str,
        schema: &TableSchema,
        pages: &[PageFile],
        cursor_ids: &[String],
    ) -> Result<(), WarehouseError> {
        if pages.is_empty() || pages.len() != cursor_ids.len() {
            return Err(WarehouseError::State(format!(
                "{} pages with {} cursors",
                pages.len(),
                cursor_ids.len()
            )));
        }
        let same_header = pages.windows(2).all(|w| w[0].header == w[1].header);
        if same_header && pages.iter().all(|p| p.castable) {
            loop {
                // A refused batch rolled back whole: it may be tried again.
                match self.load_straight(key, schema, pages, &cursor_ids[cursor_ids.len() - 1]) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        let out_of_memory = e.to_string().contains("Out of Memory");
                        if out_of_memory && self.raise_memory_limit(key)? {
                            continue;
                        }
                        let hint = if out_of_memory {
                            format!(
                                " (DuckDB's memory cap is {} MB; --memory-limit sets it)",
                                self.memory_limit_mb
                            )
                        } else {
                            String::new()
                        };
                        tracing::warn!(
                            dataset = key,
                            "DuckDB refused the straight load of {} page(s) the page check found certain to \
                             cast ({e}){hint}; loading them one by one, keeping uncastable cells",
                            pages.len()
                        );
                        break;
                    }
                }
            }
        }
        for (page, id) in pages.iter().zip(cursor_ids) {
            self.load_page(key, schema, page, id)?;
        }
        Ok(())
    }

    /// The straight load of [`Self::load_pages`], in one transaction.
    fn load_straight(
        &mut self,
        key: &str,
        schema: &TableSchema,
        pages: &[PageFile],
        cursor_id: &str,
    ) -> Result<(), WarehouseError> {
        let load = load_table(key);
        let started = std::time::Instant::now();
        // Number columns too narrow for the batch are widened first, in their own transaction: the pages
        // hold those values whichever way they are loaded.
        let types = {
            let tx = self.conn.transaction().ctx(|| "BEGIN".into())?;
            let types = Self::widen_numbers(&tx, &load, &pages.iter().collect::<Vec<_>>())?;
            tx.commit().ctx(|| "COMMIT".into())?;
            types
        };
        let header = pages[0].header;
        let paths: Vec<&Path> = pages.iter().map(|p| p.path).collect();
        let source = read_csv_sql(&paths, &Self::read_types(schema, header, &types));
        // A straight batch has no exponent forms: the page check sends those the careful way.
        let sql = Self::insert_sql(&load, schema, header, &types, &source, true, &[])?;
        // The insert, the cursor and the commit on the raw connection: one transaction, with no client thread
        // spinning while DuckDB's worker runs ([`raw`]).
        let raw = &self.raw;
        let in_tx = |what: &str, sql: &str, params: &[&str]| {
            raw.execute_with(sql, params)
                .map_err(|e| WarehouseError::State(format!("{what}: {e}")))
        };
        in_tx("BEGIN", "BEGIN TRANSACTION", &[])?;
        let r = (|| {
            in_tx(&format!("inserting into {load}"), &sql, &[])?;
            self.timings.insert_s += started.elapsed().as_secs_f64();
            let advanced = in_tx(
                "advancing the load cursor",
                ADVANCE_LOAD_CURSOR,
                &[cursor_id, key],
            )?;
            if advanced != 1 {
                return Err(no_full_load(key));
            }
            let committing = std::time::Instant::now();
            let c = in_tx("COMMIT", "COMMIT", &[]);
            self.timings.commit_s += committing.elapsed().as_secs_f64();
            c.map(|_| ())
        })();
        if r.is_err() {
            // Leaves the connection out of the failed transaction (DuckDB has already ended it after some
            // errors, so the rollback's own error says nothing).
            let _ = raw.execute("ROLLBACK");
        }
        r
    }

    /// Appends one page of a full load to the load table the careful way (staged, typed with `TRY_CAST`,
    /// uncastable cells kept) and records `cursor_id`, in one transaction.
    fn load_page(
        &mut self,
        key: &str,
        schema: &TableSchema,
        page: &PageFile,
        cursor_id: &str,
    ) -> Result<(), WarehouseError> {
        let load = load_table(key);
        self.stage(page)?;
        let tx = self.conn.transaction().ctx(|| "BEGIN".into())?;
        let types = Self::widen_numbers(&tx, &load, &[page])?;
        Self::insert_page(&tx, &load, schema, page, &types, &mut self.timings)?;
        Self::advance_load_cursor(&tx, key, cursor_id)?;
        commit(tx, &mut self.timings)
    }

    fn advance_load_cursor(
        conn: &Connection,
        key: &str,
        cursor_id: &str,
    ) -> Result<(), WarehouseError> {
        let n = conn
            .execute(ADVANCE_LOAD_CURSOR, params![cursor_id, key])
            .ctx(|| "advancing the load cursor".into())?;
        if n != 1 {
            return Err(no_full_load(key));
        }
        Ok(())
    }

    /// Replaces the rows of a page in the live table (delete by `socrata_id`, insert) and, for a page of an
    /// incremental pass, advances the watermark, in one transaction. Rows fetched by id (late rows found by
    /// the id check) leave the watermark where it is. Returns how many of the page's rows replaced a row the
    /// table had (the rest are new).
    pub fn upsert_page(
        &mut self,
        key: &str,
        schema: &TableSchema,
        page: &PageFile,
        watermark: Option<&Watermark>,
    ) -> Result<u64, WarehouseError> {
        self.stage(page)?;
        let id = page.header.iter().position(|h| h == ":id").unwrap_or(0);
        let t = quote_ident(key);
        let tx = self.conn.transaction().ctx(|| "BEGIN".into())?;
        let types = Self::widen_numbers(&tx, key, &[page])?;
        let replaced = tx
            .execute(
                &format!(
                    "DELETE FROM main.{t} WHERE socrata_id IN (SELECT c{id} FROM _dobsob_page)"
                ),
                [],
            )
            .ctx(|| format!("replacing rows of {key}"))?;
        tx.execute(
            &format!("DELETE FROM dobsob.uncastable WHERE table_name = ? AND socrata_id IN (SELECT c{id} FROM _dobsob_page)"),
            params![key],
        )
        .ctx(|| "replacing uncastable values".into())?;
        Self::insert_page(&tx, key, schema, page, &types, &mut self.timings)?;
        let n = match watermark {
            Some(w) => tx.execute(
                "UPDATE dobsob.sync_state SET wm_updated_at = ?, wm_id = ?, updated_at = now()
                 WHERE dataset = ? AND phase = 'incremental'",
                params![w.updated_at, w.id, key],
            ),
            None => tx.execute(
                "UPDATE dobsob.sync_state SET updated_at = now() WHERE dataset = ? AND phase = 'incremental'",
                params![key],
            ),
        }
        .ctx(|| "advancing the watermark".into())?;
        if n != 1 {
            return Err(WarehouseError::State(format!(
                "{key} is not in its incremental phase"
            )));
        }
        commit(tx, &mut self.timings)?;
        Ok(replaced as u64)
    }

    /// Swaps a finished full load in for the live table, atomically: a reader sees the old table or the new
    /// one. The watermark becomes the one recorded when the load started.
    pub fn finish_full(&mut self, key: &str, schema: &TableSchema) -> Result<(), WarehouseError> {
        let started = std::time::Instant::now();
        let r = self.swap_in(key, schema);
        self.timings.swap_s += started.elapsed().as_secs_f64();
        r
    }

    fn swap_in(&mut self, key: &str, schema: &TableSchema) -> Result<(), WarehouseError> {
        let load = load_table(key);
        let tx = self.conn.transaction().ctx(|| "BEGIN".into())?;
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS main.{t}; ALTER TABLE main.{l} RENAME TO {t};",
            t = quote_ident(key),
            l = quote_ident(&load)
        ))
        .ctx(|| format!("swapping {load} in for {key}"))?;
        tx.execute(
            "DELETE FROM dobsob.uncastable WHERE table_name = ?",
            params![key],
        )
        .ctx(|| "swapping uncastable values".into())?;
        tx.execute(
            "UPDATE dobsob.uncastable SET table_name = ? WHERE table_name = ?",
            params![key, load],
        )
        .ctx(|| "swapping uncastable values".into())?;
        tx.execute(
            "DELETE FROM dobsob.columns WHERE table_name = ?",
            params![key],
        )
        .ctx(|| "recording the column mapping".into())?;
        let types = Self::column_types(&tx, key)?;
        for (i, c) in schema.columns.iter().enumerate() {
            let ty = types
                .get(&c.name)
                .cloned()
                .unwrap_or_else(|| c.kind.duckdb_type().to_string());
            tx.execute(
                "INSERT INTO dobsob.columns VALUES (?, ?, ?, ?, ?)",
                params![key, i as i64 + 1, c.name, c.socrata_type, ty],
            )
            .ctx(|| "recording the column mapping".into())?;
        }
        for (i, d) in schema.derived.iter().enumerate() {
            let what = format!(
                "{} of {}",
                if d.longitude { "longitude" } else { "latitude" },
                d.source
            );
            tx.execute(
                "INSERT INTO dobsob.columns VALUES (?, ?, ?, ?, 'DOUBLE')",
                params![key, (schema.columns.len() + i) as i64 + 1, d.name, what],
            )
            .ctx(|| "recording the column mapping".into())?;
        }
        // The old table's changes went with it; the load's are the new table's.
        tx.execute(
            "DELETE FROM dobsob.schema_changes WHERE table_name = ?",
            params![key],
        )
        .ctx(|| "recording the column mapping".into())?;
        tx.execute(
            "UPDATE dobsob.schema_changes SET table_name = ? WHERE table_name = ?",
            params![key, load],
        )
        .ctx(|| "recording the column mapping".into())?;
        let n = tx
            .execute(
                "UPDATE dobsob.sync_state SET phase = 'incremental', load_table = NULL, cursor_id = NULL,
                        updated_at = now()
                 WHERE dataset = ? AND phase = 'full'",
                params![key],
            )
            .ctx(|| "finishing the full load".into())?;
        if n != 1 {
            return Err(WarehouseError::State(format!(
                "{key} has no full load in progress"
            )));
        }
        commit(tx, &mut self.timings)
    }

    /// Starts collecting the source's id set (for deletion detection).
    pub fn begin_ids(&mut self, key: &str) -> Result<(), WarehouseError> {
        self.conn
            .execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE {} (id VARCHAR)",
                ids_table(key)
            ))
            .ctx(|| "creating the id set".into())
    }

    /// Adds a page of ids (a one-column CSV with header `:id`) to the id set.
    pub fn append_ids(&mut self, key: &str, path: &Path) -> Result<(), WarehouseError> {
        self.conn
            .execute_batch(&format!(
                "INSERT INTO {} SELECT c0 FROM read_csv({}, header = true, auto_detect = false, \
                 delim = ',', quote = '\"', escape = '\"', strict_mode = true, columns = {{'c0': 'VARCHAR'}})",
                ids_table(key),
                quote_literal(&path.display().to_string())
            ))
            .ctx(|| format!("loading ids from {}", path.display()))
    }

    /// Compares the collected id set with `table`.
    pub fn diff_ids(&self, table: &str) -> Result<IdSetDiff, WarehouseError> {
        let t = quote_ident(table);
        let ids = ids_table(table);
        self.conn
            .query_row(
                &format!(
                    "SELECT (SELECT count(*) FROM {ids}), (SELECT count(DISTINCT id) FROM {ids}),
                            (SELECT count(*) FROM main.{t} WHERE socrata_id NOT IN (SELECT id FROM {ids})),
                            (SELECT count(*) FROM {ids} WHERE id NOT IN (SELECT socrata_id FROM main.{t}))"
                ),
                [],
                |r| {
                    Ok(IdSetDiff {
                        listed: r.get(0)?,
                        distinct: r.get(1)?,
                        extra_local: r.get(2)?,
                        missing_local: r.get(3)?,
                    })
                },
            )
            .ctx(|| format!("comparing the id set with {table}"))
    }

    /// The listed ids `table` lacks, as SQL. The table's ids are first narrowed to the listed ones (a semi
    /// join that hashes the listing, not the table), so a short listing against a large table stays small.
    fn missing_sql(table: &str) -> String {
        let t = quote_ident(table);
        let ids = ids_table(table);
        format!(
            "SELECT id FROM {ids} WHERE id NOT IN \
             (SELECT socrata_id FROM main.{t} WHERE socrata_id IN (SELECT id FROM {ids}))"
        )
    }

    /// How many listed ids `table` lacks.
    pub fn missing_count(&self, table: &str) -> Result<i64, WarehouseError> {
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM ({})", Self::missing_sql(table)),
                [],
                |r| r.get(0),
            )
            .ctx(|| format!("finding ids {table} lacks"))
    }

    /// Up to `limit` listed ids that `table` lacks.
    pub fn missing_ids(&self, table: &str, limit: usize) -> Result<Vec<String>, WarehouseError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{} LIMIT ?", Self::missing_sql(table)))
            .ctx(|| format!("finding ids {table} lacks"))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| r.get(0))
            .ctx(|| format!("finding ids {table} lacks"))?;
        rows.collect::<Result<_, _>>()
            .ctx(|| format!("finding ids {table} lacks"))
    }

    /// Deletes the rows whose id the source no longer has; returns how many.
    pub fn delete_missing(&mut self, key: &str) -> Result<i64, WarehouseError> {
        let t = quote_ident(key);
        let ids = ids_table(key);
        let tx = self.conn.transaction().ctx(|| "BEGIN".into())?;
        let n = tx
            .execute(
                &format!("DELETE FROM main.{t} WHERE socrata_id NOT IN (SELECT id FROM {ids})"),
                [],
            )
            .ctx(|| format!("deleting rows gone from the source in {key}"))?;
        tx.execute(
            &format!(
                "DELETE FROM dobsob.uncastable WHERE table_name = ? AND socrata_id NOT IN (SELECT id FROM {ids})"
            ),
            params![key],
        )
        .ctx(|| "deleting uncastable values of deleted rows".into())?;
        tx.commit().ctx(|| "COMMIT".into())?;
        Ok(n as i64)
    }

    /// Removes ids from the collected id set (rows the source no longer returns when asked by id).
    pub fn forget_ids(&mut self, key: &str, ids: &[String]) -> Result<(), WarehouseError> {
        let mut stmt = self
            .conn
            .prepare(&format!("DELETE FROM {} WHERE id = ?", ids_table(key)))
            .ctx(|| "updating the id set".into())?;
        for id in ids {
            stmt.execute(params![id])
                .ctx(|| "updating the id set".into())?;
        }
        Ok(())
    }

    /// Drops the collected id set.
    pub fn end_ids(&mut self, key: &str) -> Result<(), WarehouseError> {
        self.conn
            .execute_batch(&format!("DROP TABLE IF EXISTS {}", ids_table(key)))
            .ctx(|| "dropping the id set".into())
    }

    /// Rows and distinct ids of a full load's table (checked before it is swapped in).
    pub fn load_stats(&self, key: &str) -> Result<(i64, i64), WarehouseError> {
        let l = quote_ident(&load_table(key));
        self.conn
            .query_row(
                &format!("SELECT count(*), count(DISTINCT socrata_id) FROM main.{l}"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx(|| format!("checking the full load of {key}"))
    }

    /// Gives up a full load that failed its checks: drops the load table and its kept values, and leaves the
    /// sync state in phase `full` with no cursor, so the next sync starts the load afresh. The live table,
    /// if any, is untouched.
    pub fn abort_full(&mut self, key: &str) -> Result<(), WarehouseError> {
        let tx = self.conn.transaction().ctx(|| "BEGIN".into())?;
        Self::drop_load(&tx, key)?;
        tx.execute(
            "UPDATE dobsob.sync_state SET cursor_id = NULL, updated_at = now() WHERE dataset = ? AND phase = 'full'",
            params![key],
        )
        .ctx(|| "resetting the full load".into())?;
        tx.commit().ctx(|| "COMMIT".into())
    }

    /// Writes everything to the main file (DuckDB would otherwise leave it in the WAL until close).
    pub fn checkpoint(&self) -> Result<(), WarehouseError> {
        self.conn
            .execute_batch("CHECKPOINT")
            .ctx(|| "CHECKPOINT".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soda::ViewColumn;

    /// DuckDB's memory cap as DuckDB shows it (`95.3 MiB` for 100 MB).
    fn duckdb_cap(wh: &Warehouse) -> String {
        wh.conn
            .query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0))
            .unwrap()
    }

    /// `--memory-limit` is DuckDB's cap (100 MB is 95.3 MiB in DuckDB's units).
    #[test]
    fn the_memory_limit_reaches_duckdb() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(
            &dir.path().join("w.duckdb"),
            dir.path(),
            MemoryLimit::Fixed(100),
            None,
        )
        .unwrap();
        assert_eq!(duckdb_cap(&wh), "95.3 MiB");
    }

    /// Three page files of `width` text columns, 4,000 rows each, certain to cast: the schema, the header
    /// and the files' paths.
    fn wide_pages(dir: &Path, width: usize) -> (TableSchema, Vec<String>, Vec<std::path::PathBuf>) {
        let columns: Vec<ViewColumn> = (0..width)
            .map(|i| ViewColumn::new(&format!("t{i}"), "text"))
            .collect();
        let schema = TableSchema::from_view(&columns).unwrap();
        let mut header: Vec<String> = [":id", ":created_at", ":updated_at"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        header.extend((0..width).map(|i| format!("t{i}")));
        let ts = "\"2024-01-01T00:00:00.000Z\"";
        let paths = (0..3)
            .map(|p| {
                let mut body = header
                    .iter()
                    .map(|h| format!("\"{h}\""))
                    .collect::<Vec<_>>()
                    .join(",");
                body.push('\n');
                for r in 0..4_000 {
                    body.push_str(&format!("\"r{p}-{r:05}\",{ts},{ts}"));
                    for c in 0..width {
                        body.push_str(&format!(",\"cell {c} of row {r} on page {p}, some text\""));
                    }
                    body.push('\n');
                }
                let path = dir.join(format!("p{p}.csv"));
                std::fs::write(&path, body).unwrap();
                path
            })
            .collect();
        (schema, header, paths)
    }

    /// A batch DuckDB refuses for memory under an automatic cap raises the cap and still loads straight
    /// (typed, nothing staged); a fixed cap is never raised: the batch goes page by page, and when that is
    /// refused too the error says so and nothing of the batch is committed.
    #[test]
    fn a_batch_refused_for_memory_raises_an_automatic_cap_not_a_fixed_one() {
        const START: u32 = 8;
        for memory in [
            MemoryLimit::Auto { start_mb: START },
            MemoryLimit::Fixed(START),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut wh =
                Warehouse::open(&dir.path().join("w.duckdb"), dir.path(), memory, None).unwrap();
            let (schema, header, paths) = wide_pages(dir.path(), 40);
            wh.begin_full("k", &schema, "fp", None).unwrap();
            let pages: Vec<PageFile> = paths
                .iter()
                .map(|path| PageFile {
                    path,
                    header: &header,
                    number_shapes: &[],
                    exponent_numbers: &[],
                    castable: true,
                })
                .collect();
            let cursors: Vec<String> = (0..3).map(|p| format!("r{p}-03999")).collect();
            let loaded = wh.load_pages("k", &schema, &pages, &cursors);
            let cap = duckdb_cap(&wh);
            match memory {
                MemoryLimit::Auto { .. } => {
                    loaded.unwrap();
                    assert!(wh.memory_limit_mb() > START, "{cap}");
                    assert_ne!(cap, "7.6 MiB");
                    assert_eq!(wh.timings.stage_s, 0.0, "loaded straight, nothing staged");
                    let n: i64 = wh
                        .conn
                        .query_row(
                            &format!(
                                "SELECT count(DISTINCT socrata_id) FROM {}",
                                quote_ident(&load_table("k"))
                            ),
                            [],
                            |r| r.get(0),
                        )
                        .unwrap();
                    assert_eq!(n, 12_000);
                }
                MemoryLimit::Fixed(_) => {
                    assert_eq!(wh.memory_limit_mb(), START);
                    assert_eq!(cap, "7.6 MiB");
                    // Refused straight, tried page by page (staged), refused again at 8 MB: the error is
                    // DuckDB's, and nothing of the batch committed.
                    let e = loaded.unwrap_err().to_string();
                    assert!(e.contains("Out of Memory"), "{e}");
                    assert!(wh.timings.stage_s > 0.0, "went the careful way");
                    let (rows, cursor): (i64, Option<String>) = wh
                        .conn
                        .query_row(
                            &format!(
                                "SELECT (SELECT count(*) FROM {}),                                  (SELECT cursor_id FROM dobsob.sync_state WHERE dataset = 'k')",
                                quote_ident(&load_table("k"))
                            ),
                            [],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .unwrap();
                    assert_eq!((rows, cursor), (0, None));
                }
            }
        }
    }

    /// A page the page check wrongly called certain to cast still loads whole: DuckDB's typed reader
    /// refuses it, the transaction rolls back, and the pages go the careful way, the bad cell kept as
    /// uncastable and every other value typed.
    #[test]
    fn a_batch_duckdb_refuses_loads_the_careful_way_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut wh = Warehouse::open(
            &dir.path().join("w.duckdb"),
            dir.path(),
            MemoryLimit::default(),
            None,
        )
        .unwrap();
        let schema =
            TableSchema::from_view(&[ViewColumn::new("n", "number"), ViewColumn::new("t", "text")])
                .unwrap();
        wh.begin_full("k", &schema, "fp", None).unwrap();
        let header: Vec<String> = [":id", ":created_at", ":updated_at", "n", "t"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ts = "\"2024-01-01T00:00:00.000Z\"";
        let write = |name: &str, rows: &[(&str, &str)]| {
            let path = dir.path().join(name);
            let mut body = "\":id\",\":created_at\",\":updated_at\",\"n\",\"t\"\n".to_string();
            for (id, n) in rows {
                body.push_str(&format!("\"{id}\",{ts},{ts},\"{n}\",\"x, \"\"y\"\"\"\n"));
            }
            std::fs::write(&path, body).unwrap();
            path
        };
        let a = write("a.csv", &[("r1", "1.5"), ("r2", "-073.8600")]);
        let b = write("b.csv", &[("r3", "12abc"), ("r4", "7")]);
        // The numbers' sizes as the page check finds them; "certain to cast" wrongly claimed.
        let shapes = |path: &Path| {
            crate::sync::page::inspect_rows(path, &schema)
                .unwrap()
                .number_shapes
        };
        let (shapes_a, shapes_b) = (shapes(&a), shapes(&b));
        let page = |path, number_shapes| PageFile {
            path,
            header: &header,
            number_shapes,
            exponent_numbers: &[],
            castable: true,
        };
        wh.load_pages(
            "k",
            &schema,
            &[page(&a, &shapes_a), page(&b, &shapes_b)],
            &["r2".into(), "r4".into()],
        )
        .unwrap();
        let load = load_table("k");
        let rows: Vec<(String, Option<String>, String)> = wh
            .conn
            .prepare(&format!(
                "SELECT socrata_id, CAST(n AS VARCHAR), t FROM {} ORDER BY socrata_id",
                quote_ident(&load)
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let n = |v: &str| Some(v.to_string());
        let t = "x, \"y\"".to_string();
        assert_eq!(
            rows,
            [
                ("r1".into(), n("1.50"), t.clone()),
                ("r2".into(), n("-73.86"), t.clone()),
                ("r3".into(), None, t.clone()),
                ("r4".into(), n("7.00"), t.clone()),
            ]
        );
        assert_eq!(wh.uncastable_count(&load).unwrap(), 1);
        let cursor: String = wh
            .conn
            .query_row(
                "SELECT cursor_id FROM dobsob.sync_state WHERE dataset = 'k'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(cursor, "r4");
    }
}
