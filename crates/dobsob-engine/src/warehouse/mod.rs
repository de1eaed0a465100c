//! The DuckDB warehouse: one table per dataset (named by its key, in schema `main`), plus dobsob's own
//! tables in schema `dobsob` (sync state, uncastable values, column mapping; see `sql/warehouse/`).
//!
//! Pages arrive as CSV files on disk and are loaded with DuckDB's own CSV reader into a staging table, then
//! merged set-wise: a full load appends to a load table that is swapped in atomically at the end; an
//! incremental page replaces rows by `socrata_id` (delete + insert in one transaction; no primary key, see
//! `../shared/DUCKDB.md`). Each merge commits the dataset's sync state in the same transaction, so the
//! warehouse always knows exactly which rows it holds. The connection lives on one writer thread
//! ([`WarehouseHandle`]).
//!
//! The surface the sync calls (through the writer, `WarehouseHandle::call`), by operation, and nothing
//! else, is the trait [`Target`] (`target.rs`), which [`Warehouse`] implements; a second warehouse target
//! implements it too:
//! - state: [`Warehouse::state`], [`Warehouse::count`], [`Warehouse::uncastable_count`] (`state.rs`);
//! - full loads: [`Warehouse::begin_full`], [`Warehouse::load_pages`], [`Warehouse::load_stats`],
//!   [`Warehouse::finish_full`], [`Warehouse::abort_full`] (`full_load.rs`);
//! - incremental pages: [`Warehouse::upsert_page`] (`upsert.rs`);
//! - id sets: [`Warehouse::begin_ids`], [`Warehouse::append_ids`], [`Warehouse::diff_ids`],
//!   [`Warehouse::missing_count`], [`Warehouse::missing_ids`], [`Warehouse::delete_missing`],
//!   [`Warehouse::forget_ids`], [`Warehouse::end_ids`] (`ids.rs`);
//! - the dataset's description: [`Warehouse::describe`] (`describe.rs`);
//! - and, for the orchestrator, opening ([`Warehouse::open`]), sharing, the ledger's facts for the
//!   snapshot (`write_dataset_states`) and publishing (`publish.rs`).

mod describe;
pub mod facts;
mod full_load;
mod ids;
mod memory;
pub mod postgres;
mod publish;
mod raw;
pub mod schema;
pub mod share;
mod staging;
mod state;
pub mod storage;
mod target;
mod upsert;
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
pub use target::{Claim, Target};
pub use writer::{Pending, WarehouseHandle};

pub use full_load::*;
pub use ids::*;
pub use memory::*;
pub use staging::*;
pub use state::*;

const META_SQL: &[&str] = &[
    include_str!("../../../../sql/warehouse/0001_meta.sql"),
    include_str!("../../../../sql/warehouse/0002_schema_changes.sql"),
    include_str!("../../../../sql/warehouse/0003_meta.sql"),
    include_str!("../../../../sql/warehouse/0004_datasets.sql"),
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
    /// DuckDB refused a statement for memory (told by DuckDB's error type): a batch that may succeed under
    /// a higher cap, or page by page.
    #[error("warehouse: {context}: {message}")]
    OutOfMemory { context: String, message: String },
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
    /// A PostgreSQL warehouse refused a statement: the server's message, and its SQLSTATE code (a lock
    /// timeout, `55P03`, is retried by the swap).
    #[error("warehouse: {context}: {message}")]
    Postgres {
        context: String,
        message: String,
        code: Option<String>,
    },
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

/// Commits `tx`, counting the time in `timings.commit_s` (the WAL write, and DuckDB's automatic checkpoints).
fn commit(tx: duckdb::Transaction<'_>, timings: &mut WriterTimings) -> Result<(), WarehouseError> {
    let started = std::time::Instant::now();
    let r = tx.commit().ctx(|| "COMMIT".into());
    timings.commit_s += started.elapsed().as_secs_f64();
    r
}

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
    /// The database, its `duckdb` crate connection (`raw.conn`, for most statements) and its C API
    /// connection (the full load's straight inserts, [`raw`]); it closes them in the order DuckDB requires.
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
        // Refuse a newer layout before writing anything, conversions included.
        refuse_newer_layout(&raw.conn, path)?;
        let (storage, converted) = if !existed {
            (create_in, None)
        } else {
            // The version asked for, else the one the file records, else the default (a file from before
            // dobsob recorded it is in DuckDB 2.0's newest format and is converted).
            let recorded = storage::recorded(&raw.conn)?;
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
                (target, converted)
            }
        };
        // DuckDB's buffer pool would otherwise grow to 80% of RAM; spill to disk instead. At the default
        // checkpoint threshold (16 MB of WAL) a checkpoint rewrites the growing load table every few pages of a
        // wide dataset; 64 MB halves the commits' cost for little memory (docs/performance.md).
        let conn = &raw.conn;
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
            .raw
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
            self.raw
                .conn
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

    /// Writes everything to the main file (DuckDB would otherwise leave it in the WAL until close).
    pub fn checkpoint(&self) -> Result<(), WarehouseError> {
        self.raw
            .conn
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
        wh.raw
            .conn
            .query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0))
            .unwrap()
    }

    /// `--cpu-threads` is DuckDB's worker threads.
    #[test]
    fn cpu_threads_reach_duckdb() {
        let dir = tempfile::tempdir().unwrap();
        let mut wh = Warehouse::open(
            &dir.path().join("w.duckdb"),
            dir.path(),
            MemoryLimit::Fixed(100),
            None,
        )
        .unwrap();
        wh.set_threads(1).unwrap();
        let threads: i64 = wh
            .raw
            .conn
            .query_row("SELECT current_setting('threads')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(threads, 1);
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
                        .raw
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
                        .raw.conn
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
            .raw
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
            .raw
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
