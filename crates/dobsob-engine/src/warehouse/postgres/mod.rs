//! The PostgreSQL warehouse target (`--warehouse postgres://...`): the same tables and the same promise as
//! the DuckDB file, on a server that many analysts query at once and several dobsob workers keep in step.
//!
//! - Where the server is: [`conninfo`] (the password never shown); the connection: [`connect`]; the
//!   tables' PostgreSQL types: [`types`]; the SQL that turns a page's text into typed values: [`cast`].
//! - [`PgWarehouse`] implements [`super::Target`]: pages are streamed with `COPY` from the page files into
//!   a temporary text table, then inserted typed (uncastable cells kept in `dobsob.uncastable`), each page
//!   and its cursor or watermark in one transaction; upserts delete by `socrata_id` (the primary key) and
//!   insert; a full load fills `_dobsob_load_<key>` and is swapped in by rename in one transaction, under a
//!   short `lock_timeout`, retried with backoff, so a long analyst query never makes new queries queue
//!   behind the swap for more than [`SWAP_LOCK_TIMEOUT`].
//! - Several workers: each dataset is claimed with a session advisory lock ([`PgWarehouse::claim`]),
//!   released by the server if the worker dies; `dobsob.datasets_state` holds what decides "due" for every
//!   worker.
//!
//! There is no publish copy: analysts read the live tables on MVCC snapshots.

pub mod cast;
pub mod connect;
pub mod conninfo;
mod target;
pub mod types;

use std::collections::HashSet;
use std::time::{Duration, Instant};

pub use conninfo::ConnInfo;
use postgres::Transaction;

use super::describe::{column_comment, due_and_stale, table_comment, Description, DueAndStale};
use super::state::live_state;
use super::{
    load_table, quote_ident, quote_literal, IdSetDiff, PageFile, Phase, SyncState, TableSchema,
    WarehouseError, WriterTimings,
};
use crate::ledger::DatasetRecord;
use crate::soda::Watermark;
use types::qualified;

const STATE_SQL: &str = include_str!("../../../../../sql/postgres/0001_state.sql");
const TRY_CAST_15: &str = include_str!("../../../../../sql/postgres/try_cast_15.sql");
const TRY_CAST_16: &str = include_str!("../../../../../sql/postgres/try_cast_16.sql");

/// The layout of dobsob's tables that this dobsob writes, recorded in `dobsob.meta` (as for DuckDB: an
/// older dobsob refuses a database a newer one laid out).
const PG_FORMAT: i64 = 1;

/// The advisory lock (two-key form, first key) under which workers create dobsob's tables; the datasets'
/// claims use [`CLAIM_CLASS`].
const SETUP_LOCK: i32 = 0x646f_6273; // "dobs"
/// The first key of a dataset's advisory lock; the second is `hashtext(key)`.
const CLAIM_CLASS: i32 = 0x646f_6263; // "dobc"

/// How long the swap of a full load waits for its lock before giving up and trying again later: every query
/// that arrives meanwhile queues behind it, so this bounds how long the swap can hold analysts up.
pub const SWAP_LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the swap keeps trying, in all, before the full load fails (its table stays, for the next run).
const SWAP_PATIENCE: Duration = Duration::from_secs(30 * 60);

/// PostgreSQL truncates identifiers to 63 bytes: a dataset's key must leave room for the load prefix and
/// the primary key's suffix.
const MAX_IDENT: usize = 63;

/// Maps the driver's error to the warehouse's, with the server's message (and detail and hint).
trait PgContext<T> {
    fn pg(self, context: impl FnOnce() -> String) -> Result<T, WarehouseError>;
}

impl<T> PgContext<T> for Result<T, postgres::Error> {
    fn pg(self, context: impl FnOnce() -> String) -> Result<T, WarehouseError> {
        self.map_err(|e| pg_error(context(), &e))
    }
}

pub(crate) fn pg_error(context: String, e: &postgres::Error) -> WarehouseError {
    let (message, code) = match e.as_db_error() {
        Some(db) => {
            let mut m = db.message().to_string();
            if let Some(d) = db.detail() {
                m.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!("; hint: {h}"));
            }
            (m, Some(db.code().code().to_string()))
        }
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                m.push_str(&format!(": {s}"));
                source = std::error::Error::source(s);
            }
            (m, None)
        }
    };
    WarehouseError::Postgres {
        context,
        message,
        code,
    }
}

/// Whether `e` is a lock that did not come within `lock_timeout` (SQLSTATE 55P03).
fn is_lock_timeout(e: &WarehouseError) -> bool {
    matches!(e, WarehouseError::Postgres { code: Some(c), .. } if c == "55P03")
}

/// This process, as other workers' reports name it: `host:pid`.
pub fn worker_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown-host".into()
    };
    format!("{host}:{}", std::process::id())
}

/// Runs `f` on a thread of its own, outside any async runtime: the synchronous driver runs its own runtime
/// for each call, which tokio forbids on a thread that is driving one (the command line's `main`). The
/// writer thread is such a thread already; this is for opening and for one-off calls.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Whether a claim on a dataset was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Granted,
    /// Another worker syncs it now: who (`host:pid`) and since when (UTC), unless it has only just taken
    /// the claim and not yet said so.
    Held {
        by_since: Option<(String, String)>,
    },
}

impl Claim {
    /// Why a dataset held by another worker is skipped, for the report.
    pub fn skip_reason(&self) -> Option<String> {
        match self {
            Claim::Granted => None,
            Claim::Held {
                by_since: Some((by, since)),
            } => Some(format!("being synced by {by} since {since}")),
            Claim::Held { by_since: None } => {
                Some("being synced by another worker, which has only just claimed it".to_string())
            }
        }
    }
}

/// The PostgreSQL warehouse: one connection, on the writer thread.
pub struct PgWarehouse {
    client: postgres::Client,
    /// The schema of the datasets' tables (the user's choice; dobsob's own tables are in `dobsob`).
    schema: String,
    info: ConnInfo,
    worker: String,
    timings: WriterTimings,
    /// Datasets this worker holds the advisory lock of.
    claimed: HashSet<String>,
}

impl PgWarehouse {
    /// Connects to `info`, creates dobsob's schema and tables (and the datasets' schema) if they are not
    /// there, and refuses a database a newer dobsob laid out.
    pub fn open(info: &ConnInfo) -> Result<PgWarehouse, WarehouseError> {
        let mut client = connect::connect(info)?;
        let version = connect::server_version(&mut client)?;
        let schema = info.schema.clone();
        {
            let mut tx = client.transaction().pg(|| format!("{info}: BEGIN"))?;
            // Never wait long behind a reader for the setup's locks: fail, saying so.
            tx.batch_execute("SET LOCAL lock_timeout = '10s'")
                .pg(|| "setting the setup's lock timeout".into())?;
            tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&SETUP_LOCK])
                .pg(|| "waiting for another worker's setup".into())?;
            tx.batch_execute(STATE_SQL)
                .pg(|| format!("{info}: creating dobsob's tables (schema dobsob)"))?;
            let found: Option<String> = tx
                .query_opt("SELECT value FROM dobsob.meta WHERE key = 'format'", &[])
                .pg(|| "reading the warehouse's layout".into())?
                .map(|r| r.get(0));
            let found = found.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            if found > PG_FORMAT {
                return Err(WarehouseError::TooNew {
                    path: info.to_string(),
                    found,
                    known: PG_FORMAT,
                });
            }
            tx.batch_execute(if version >= 160_000 {
                TRY_CAST_16
            } else {
                TRY_CAST_15
            })
            .pg(|| "creating dobsob's cast functions".into())?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(&schema)
            ))
            .pg(|| format!("creating schema {schema}"))?;
            // The view only when it is missing: replacing it takes an exclusive lock that would wait for
            // (and then hold up) every dashboard reading it.
            let view_exists: bool = tx
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&qualified(&schema, "dobsob_datasets")],
                )
                .pg(|| "looking up the dobsob_datasets view".into())?
                .get(0);
            if !view_exists {
                tx.batch_execute(&datasets_view_sql(&schema))
                    .pg(|| "creating the dobsob_datasets view".into())?;
            }
            // One data schema per database: dobsob's state is keyed by dataset, not by schema.
            let recorded: Option<String> = tx
                .query_opt("SELECT value FROM dobsob.meta WHERE key = 'schema'", &[])
                .pg(|| "reading the warehouse's schema".into())?
                .map(|r| r.get(0));
            match recorded {
                Some(r) if r != schema => {
                    return Err(WarehouseError::State(format!(
                        "{info}: this database holds dobsob's datasets in schema {r:?}, not {schema:?}: \
                         one database keeps one schema of datasets (dobsob's state in schema dobsob is \
                         shared); use ?schema={r} or another database"
                    )))
                }
                Some(_) => {}
                None => {
                    tx.execute("INSERT INTO dobsob.meta VALUES ('schema', $1)", &[&schema])
                        .pg(|| "recording the warehouse's schema".into())?;
                }
            }
            tx.execute(
                "INSERT INTO dobsob.meta VALUES ('format', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&PG_FORMAT.to_string()],
            )
            .pg(|| "recording the warehouse's layout".into())?;
            tx.commit().pg(|| "COMMIT".into())?;
        }
        Ok(PgWarehouse {
            client,
            schema,
            info: info.clone(),
            worker: worker_name(),
            timings: WriterTimings::default(),
            claimed: HashSet::new(),
        })
    }

    /// The datasets' schema, quoted, with `table`.
    fn table(&self, table: &str) -> String {
        qualified(&self.schema, table)
    }

    fn check_key(key: &str) -> Result<(), WarehouseError> {
        if load_table(key).len() + "_pkey".len() > MAX_IDENT {
            return Err(WarehouseError::State(format!(
                "the dataset key {key:?} is too long for PostgreSQL (its tables' names would pass 63 bytes): \
                 give it a key of at most {} bytes in the catalog",
                MAX_IDENT - load_table("").len() - "_pkey".len()
            )));
        }
        Ok(())
    }

    fn table_exists(&mut self, table: &str) -> Result<bool, WarehouseError> {
        let schema = self.schema.clone();
        self.client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2)",
                &[&schema, &table],
            )
            .map(|r| r.get(0))
            .pg(|| format!("looking up table {table}"))
    }

    fn rows(&mut self, table: &str) -> Result<i64, WarehouseError> {
        if !self.table_exists(table)? {
            return Ok(0);
        }
        let t = self.table(table);
        self.client
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .map(|r| r.get(0))
            .pg(|| format!("counting {table}"))
    }

    fn read_state(&mut self, key: &str) -> Result<Option<SyncState>, WarehouseError> {
        let row = self
            .client
            .query_opt(
                "SELECT phase, cursor_id, wm_updated_at, wm_id, schema_fingerprint
                 FROM dobsob.sync_state WHERE dataset = $1",
                &[&key],
            )
            .pg(|| format!("reading the sync state of {key}"))?;
        Ok(row.map(|r| {
            let phase: String = r.get(0);
            let t: Option<String> = r.get(2);
            let id: Option<String> = r.get(3);
            SyncState {
                phase: if phase == "full" {
                    Phase::Full
                } else {
                    Phase::Incremental
                },
                cursor_id: r.get(1),
                watermark: t
                    .zip(id)
                    .map(|(updated_at, id)| Watermark { updated_at, id }),
                schema_fingerprint: r.get(4),
            }
        }))
    }

    /// The dataset's sync state; a live table dropped by hand reads as none (loaded in full next).
    pub fn state(&mut self, key: &str) -> Result<Option<SyncState>, WarehouseError> {
        let state = self.read_state(key)?;
        live_state(key, state, || self.table_exists(key), true)
    }

    /// Streams `page`'s CSV into the temporary text table `_dobsob_page` (columns `c0..cN` in header
    /// order), in `tx`. Socrata quotes every value and leaves a null unquoted, which is exactly how
    /// PostgreSQL's CSV format tells an empty string from NULL.
    fn stage(
        tx: &mut Transaction<'_>,
        page: &PageFile,
        timings: &mut WriterTimings,
    ) -> Result<(), WarehouseError> {
        let started = Instant::now();
        let columns: Vec<String> = (0..page.header.len())
            .map(|i| format!("c{i} text"))
            .collect();
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS pg_temp._dobsob_page; \
             CREATE TEMP TABLE _dobsob_page ({}) ON COMMIT DROP",
            columns.join(", ")
        ))
        .pg(|| "creating the page's staging table".into())?;
        let mut file = std::fs::File::open(page.path).map_err(|e| {
            WarehouseError::State(format!("reading page {}: {e}", page.path.display()))
        })?;
        let mut writer = tx
            .copy_in("COPY pg_temp._dobsob_page FROM STDIN WITH (FORMAT csv, HEADER true)")
            .pg(|| format!("loading page {}", page.path.display()))?;
        std::io::copy(&mut file, &mut writer).map_err(|e| {
            WarehouseError::State(format!("loading page {}: {e}", page.path.display()))
        })?;
        writer
            .finish()
            .pg(|| format!("loading page {}", page.path.display()))?;
        timings.stage_s += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn commit(tx: Transaction<'_>, timings: &mut WriterTimings) -> Result<(), WarehouseError> {
        let started = Instant::now();
        let r = tx.commit().pg(|| "COMMIT".into());
        timings.commit_s += started.elapsed().as_secs_f64();
        r
    }

    pub fn begin_full(
        &mut self,
        key: &str,
        schema: &TableSchema,
        fingerprint: &str,
        start: Option<&Watermark>,
    ) -> Result<(), WarehouseError> {
        Self::check_key(key)?;
        if let Some(long) = schema
            .columns
            .iter()
            .map(|c| &c.name)
            .chain(schema.derived.iter().map(|d| &d.name))
            .find(|n| n.len() > MAX_IDENT)
        {
            return Err(WarehouseError::State(format!(
                "{key}: the column {long:?} is longer than PostgreSQL's 63-byte names: it would be cut and \
                 could collide; the DuckDB warehouse keeps it"
            )));
        }
        let load = load_table(key);
        let (l, create) = (
            self.table(&load),
            types::create_table_sql(schema, &self.schema, &load),
        );
        let mut tx = self.client.transaction().pg(|| "BEGIN".into())?;
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {l}; {create}"))
            .pg(|| format!("creating {load}"))?;
        for table in ["dobsob.uncastable", "dobsob.schema_changes"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE table_name = $1"),
                &[&load],
            )
            .pg(|| format!("clearing {table} of {load}"))?;
        }
        tx.execute("DELETE FROM dobsob.sync_state WHERE dataset = $1", &[&key])
            .pg(|| "resetting sync state".into())?;
        tx.execute(
            "INSERT INTO dobsob.sync_state
             (dataset, phase, load_table, cursor_id, wm_updated_at, wm_id, schema_fingerprint, updated_at)
             VALUES ($1, 'full', $2, NULL, $3, $4, $5, now())",
            &[
                &key,
                &load,
                &start.map(|w| &w.updated_at),
                &start.map(|w| &w.id),
                &fingerprint,
            ],
        )
        .pg(|| "recording the full load".into())?;
        tx.commit().pg(|| "COMMIT".into())
    }

    /// Appends a batch of pages to the load table and advances the load's cursor, in one transaction.
    pub fn load_pages(
        &mut self,
        key: &str,
        schema: &TableSchema,
        pages: &[PageFile],
        cursor_ids: &[String],
    ) -> Result<(), WarehouseError> {
        let Some(last) = cursor_ids
            .last()
            .filter(|_| pages.len() == cursor_ids.len())
        else {
            return Err(WarehouseError::State(format!(
                "{} pages with {} cursors",
                pages.len(),
                cursor_ids.len()
            )));
        };
        let load = load_table(key);
        let mut timings = self.timings;
        let mut tx = self.client.transaction().pg(|| "BEGIN".into())?;
        for page in pages {
            Self::stage(&mut tx, page, &mut timings)?;
            // `self` is borrowed by the transaction: the insert's SQL needs only the schema's name.
            let this = TableNames {
                schema: &self.schema,
            };
            this.insert_staged(&mut tx, &load, schema, page, &mut timings)?;
        }
        let n = tx
            .execute(
                "UPDATE dobsob.sync_state SET cursor_id = $1, updated_at = now()
                 WHERE dataset = $2 AND phase = 'full'",
                &[last, &key],
            )
            .pg(|| "advancing the load cursor".into())?;
        if n != 1 {
            return Err(WarehouseError::State(format!(
                "{key} has no full load in progress"
            )));
        }
        Self::commit(tx, &mut timings)?;
        self.timings = timings;
        Ok(())
    }

    pub fn load_stats(&mut self, key: &str) -> Result<(i64, i64), WarehouseError> {
        let l = self.table(&load_table(key));
        self.client
            .query_one(
                &format!("SELECT count(*), count(DISTINCT socrata_id) FROM {l}"),
                &[],
            )
            .map(|r| (r.get(0), r.get(1)))
            .pg(|| format!("checking the full load of {key}"))
    }

    /// Swaps the load in for the live table: its primary key first (on the load table, which nobody
    /// reads), then, in one transaction under [`SWAP_LOCK_TIMEOUT`], drop and rename. When an analyst's
    /// transaction holds the live table, the swap gives up its place in the lock queue at once (so no query
    /// waits behind it for longer than the timeout) and tries again with backoff. Returns what the report
    /// should say (that it had to wait, and how long).
    pub fn finish_full(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<Vec<String>, WarehouseError> {
        let started = Instant::now();
        let load = load_table(key);
        let (l, pkey) = (self.table(&load), quote_ident(&format!("{load}_pkey")));
        // A duplicate id fails here, before anything is swapped (the sync checked rows = distinct ids).
        self.client
            .batch_execute(&format!(
                "ALTER TABLE {l} DROP CONSTRAINT IF EXISTS {pkey}; \
                 ALTER TABLE {l} ADD CONSTRAINT {pkey} PRIMARY KEY (socrata_id)"
            ))
            .pg(|| format!("indexing {load} by socrata_id"))?;
        let mut waited = 0u32;
        let mut delay = Duration::from_millis(500);
        let result = loop {
            match self.swap_in(key, schema) {
                Ok(()) => break Ok(()),
                Err(e) if is_lock_timeout(&e) && started.elapsed() < SWAP_PATIENCE => {
                    waited += 1;
                    tracing::info!(
                        dataset = key,
                        "the swap of the full load waits for a reader's transaction on {key} (try {waited}); \
                         readers are not held up meanwhile"
                    );
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => break Err(e),
            }
        };
        self.timings.swap_s += started.elapsed().as_secs_f64();
        result?;
        // The planner's statistics for the new table (readers would otherwise plan blind until autovacuum).
        let t = self.table(key);
        self.client
            .batch_execute(&format!("ANALYZE {t}"))
            .pg(|| format!("analyzing {key}"))?;
        Ok(if waited > 0 {
            vec![format!(
                "the swap of the full load waited {:.0} s for readers' transactions on {key} ({waited} tries \
                 of at most {} s each; no reader waited longer than that)",
                started.elapsed().as_secs_f64(),
                SWAP_LOCK_TIMEOUT.as_secs()
            )]
        } else {
            Vec::new()
        })
    }

    fn swap_in(&mut self, key: &str, schema: &TableSchema) -> Result<(), WarehouseError> {
        let load = load_table(key);
        let (t, l) = (self.table(key), self.table(&load));
        let (pkey, live_pkey) = (
            quote_ident(&format!("{load}_pkey")),
            quote_ident(&format!("{key}_pkey")),
        );
        let s = quote_ident(&self.schema);
        let mut tx = self.client.transaction().pg(|| "BEGIN".into())?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            SWAP_LOCK_TIMEOUT.as_millis()
        ))
        .pg(|| "setting the swap's lock timeout".into())?;
        // The bookkeeping first, under no lock a reader holds; the drop and rename last, so that the
        // table's exclusive lock is held only from them to the commit.
        for table in [
            "dobsob.uncastable",
            "dobsob.schema_changes",
            "dobsob.columns",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE table_name = $1"),
                &[&key],
            )
            .pg(|| format!("swapping {table}"))?;
            tx.execute(
                &format!("UPDATE {table} SET table_name = $1 WHERE table_name = $2"),
                &[&key, &load],
            )
            .pg(|| format!("swapping {table}"))?;
        }
        let mut names: Vec<String> = Vec::new();
        let mut kinds: Vec<String> = Vec::new();
        let mut types: Vec<String> = Vec::new();
        for c in &schema.columns {
            names.push(c.name.clone());
            kinds.push(c.socrata_type.clone());
            types.push(types::pg_type(c.kind).to_string());
        }
        for d in &schema.derived {
            names.push(d.name.clone());
            kinds.push(format!(
                "{} of {}",
                if d.longitude { "longitude" } else { "latitude" },
                d.source
            ));
            types.push("double precision".into());
        }
        tx.execute(
            "INSERT INTO dobsob.columns
             SELECT $1, n::int, c.name, c.kind, c.type
             FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS c(name, kind, type, n)",
            &[&key, &names, &kinds, &types],
        )
        .pg(|| "recording the column mapping".into())?;
        let n = tx
            .execute(
                "UPDATE dobsob.sync_state SET phase = 'incremental', load_table = NULL, cursor_id = NULL,
                        updated_at = now()
                 WHERE dataset = $1 AND phase = 'full'",
                &[&key],
            )
            .pg(|| "finishing the full load".into())?;
        if n != 1 {
            return Err(WarehouseError::State(format!(
                "{key} has no full load in progress"
            )));
        }
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS {t}; ALTER TABLE {l} RENAME TO {}; ALTER INDEX {s}.{pkey} RENAME TO {live_pkey}",
            quote_ident(key)
        ))
        .pg(|| format!("swapping {load} in for {key}"))?;
        Self::commit(tx, &mut self.timings)
    }

    /// Drops a load that failed its checks; the live table stays.
    pub fn abort_full(&mut self, key: &str) -> Result<(), WarehouseError> {
        let load = load_table(key);
        let l = self.table(&load);
        let mut tx = self.client.transaction().pg(|| "BEGIN".into())?;
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {l}"))
            .pg(|| format!("dropping {load}"))?;
        for table in ["dobsob.uncastable", "dobsob.schema_changes"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE table_name = $1"),
                &[&load],
            )
            .pg(|| format!("clearing {table} of {load}"))?;
        }
        tx.execute(
            "UPDATE dobsob.sync_state SET cursor_id = NULL, updated_at = now() WHERE dataset = $1 AND phase = 'full'",
            &[&key],
        )
        .pg(|| "resetting the full load".into())?;
        tx.commit().pg(|| "COMMIT".into())
    }

    /// Replaces the page's rows by id and records the watermark, in one transaction.
    pub fn upsert_page(
        &mut self,
        key: &str,
        schema: &TableSchema,
        page: &PageFile,
        watermark: Option<&Watermark>,
    ) -> Result<u64, WarehouseError> {
        let id = page
            .header
            .iter()
            .position(|h| h == ":id")
            .ok_or_else(|| WarehouseError::State("page has no :id column".into()))?;
        let t = self.table(key);
        let mut timings = self.timings;
        let names = TableNames {
            schema: &self.schema,
        };
        let mut tx = self.client.transaction().pg(|| "BEGIN".into())?;
        Self::stage(&mut tx, page, &mut timings)?;
        let replaced = tx
            .execute(
                &format!(
                    "DELETE FROM {t} WHERE socrata_id IN (SELECT c{id} FROM pg_temp._dobsob_page)"
                ),
                &[],
            )
            .pg(|| format!("replacing rows of {key}"))?;
        tx.execute(
            &format!(
                "DELETE FROM dobsob.uncastable WHERE table_name = $1 \
                 AND socrata_id IN (SELECT c{id} FROM pg_temp._dobsob_page)"
            ),
            &[&key],
        )
        .pg(|| "replacing uncastable values".into())?;
        names.insert_staged(&mut tx, key, schema, page, &mut timings)?;
        let n = match watermark {
            Some(w) => tx.execute(
                "UPDATE dobsob.sync_state SET wm_updated_at = $1, wm_id = $2, updated_at = now()
                 WHERE dataset = $3 AND phase = 'incremental'",
                &[&w.updated_at, &w.id, &key],
            ),
            None => tx.execute(
                "UPDATE dobsob.sync_state SET updated_at = now() WHERE dataset = $1 AND phase = 'incremental'",
                &[&key],
            ),
        }
        .pg(|| "advancing the watermark".into())?;
        if n != 1 {
            return Err(WarehouseError::State(format!(
                "{key} is not in its incremental phase"
            )));
        }
        Self::commit(tx, &mut timings)?;
        self.timings = timings;
        Ok(replaced)
    }

    // Id sets: a temporary table per dataset, in this session.

    fn ids_table(key: &str) -> String {
        format!("pg_temp.{}", quote_ident(&format!("_dobsob_ids_{key}")))
    }

    pub fn begin_ids(&mut self, key: &str) -> Result<(), WarehouseError> {
        let ids = Self::ids_table(key);
        self.client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {ids}; CREATE TEMP TABLE {} (id text)",
                &ids["pg_temp.".len()..]
            ))
            .pg(|| "creating the id set".into())?;
        Ok(())
    }

    pub fn append_ids(&mut self, key: &str, path: &std::path::Path) -> Result<(), WarehouseError> {
        let ids = Self::ids_table(key);
        let mut file = std::fs::File::open(path)
            .map_err(|e| WarehouseError::State(format!("reading ids {}: {e}", path.display())))?;
        let mut w = self
            .client
            .copy_in(&format!(
                "COPY {ids} FROM STDIN WITH (FORMAT csv, HEADER true)"
            ))
            .pg(|| format!("loading ids from {}", path.display()))?;
        std::io::copy(&mut file, &mut w).map_err(|e| {
            WarehouseError::State(format!("loading ids from {}: {e}", path.display()))
        })?;
        w.finish()
            .pg(|| format!("loading ids from {}", path.display()))?;
        Ok(())
    }

    pub fn diff_ids(&mut self, key: &str) -> Result<IdSetDiff, WarehouseError> {
        let (t, ids) = (self.table(key), Self::ids_table(key));
        self.client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {ids}), (SELECT count(DISTINCT id) FROM {ids}),
                            (SELECT count(*) FROM {t} d WHERE NOT EXISTS (SELECT 1 FROM {ids} i WHERE i.id = d.socrata_id)),
                            (SELECT count(*) FROM {ids} i WHERE NOT EXISTS (SELECT 1 FROM {t} d WHERE d.socrata_id = i.id))"
                ),
                &[],
            )
            .map(|r| IdSetDiff {
                listed: r.get(0),
                distinct: r.get(1),
                extra_local: r.get(2),
                missing_local: r.get(3),
            })
            .pg(|| format!("comparing the id set with {key}"))
    }

    fn missing_sql(&self, key: &str) -> String {
        let (t, ids) = (self.table(key), Self::ids_table(key));
        format!(
            "SELECT i.id FROM {ids} i WHERE NOT EXISTS (SELECT 1 FROM {t} d WHERE d.socrata_id = i.id)"
        )
    }

    pub fn missing_count(&mut self, key: &str) -> Result<i64, WarehouseError> {
        let sql = format!("SELECT count(*) FROM ({}) m", self.missing_sql(key));
        self.client
            .query_one(&sql, &[])
            .map(|r| r.get(0))
            .pg(|| format!("finding ids {key} lacks"))
    }

    pub fn missing_ids(&mut self, key: &str, limit: usize) -> Result<Vec<String>, WarehouseError> {
        let sql = format!("{} LIMIT $1", self.missing_sql(key));
        self.client
            .query(&sql, &[&(limit as i64)])
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .pg(|| format!("finding ids {key} lacks"))
    }

    pub fn delete_missing(&mut self, key: &str) -> Result<i64, WarehouseError> {
        let (t, ids) = (self.table(key), Self::ids_table(key));
        let mut tx = self.client.transaction().pg(|| "BEGIN".into())?;
        let n = tx
            .execute(
                &format!(
                    "DELETE FROM {t} d WHERE NOT EXISTS (SELECT 1 FROM {ids} i WHERE i.id = d.socrata_id)"
                ),
                &[],
            )
            .pg(|| format!("deleting rows gone from the source in {key}"))?;
        tx.execute(
            &format!(
                "DELETE FROM dobsob.uncastable u WHERE table_name = $1 \
                 AND NOT EXISTS (SELECT 1 FROM {ids} i WHERE i.id = u.socrata_id)"
            ),
            &[&key],
        )
        .pg(|| "deleting uncastable values of deleted rows".into())?;
        tx.commit().pg(|| "COMMIT".into())?;
        Ok(n as i64)
    }

    pub fn forget_ids(&mut self, key: &str, ids: &[String]) -> Result<(), WarehouseError> {
        let table = Self::ids_table(key);
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.client
            .execute(&format!("DELETE FROM {table} WHERE id = ANY($1)"), &[&ids])
            .pg(|| "updating the id set".into())?;
        Ok(())
    }

    pub fn end_ids(&mut self, key: &str) -> Result<(), WarehouseError> {
        let ids = Self::ids_table(key);
        self.client
            .batch_execute(&format!("DROP TABLE IF EXISTS {ids}"))
            .pg(|| "dropping the id set".into())?;
        Ok(())
    }

    /// Records what the catalog and the portal say of a dataset, and comments its table and columns.
    pub fn describe(&mut self, d: &Description) -> Result<(), WarehouseError> {
        let t = self.table(&d.key);
        let exists = self.table_exists(&d.key)?;
        let schema = self.schema.clone();
        let mut tx = self.client.transaction().pg(|| "BEGIN".into())?;
        tx.execute(
            "INSERT INTO dobsob.datasets_info VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
             ON CONFLICT (key) DO UPDATE SET socrata_id = excluded.socrata_id, name = excluded.name,
                 portal_name = excluded.portal_name, description = excluded.description,
                 source_url = excluded.source_url, frequency = excluded.frequency,
                 priority = excluded.priority, described_at = excluded.described_at",
            &[
                &d.key,
                &d.socrata_id,
                &d.name,
                &d.portal_name,
                &d.description,
                &d.source_url,
                &d.frequency,
                &d.priority,
            ],
        )
        .pg(|| format!("describing {}", d.key))?;
        if exists {
            // COMMENT takes no parameters: the text is a quoted literal (standard_conforming_strings is on
            // for dobsob's sessions, so quotes doubled are the only escape).
            let mut sql = format!(
                "COMMENT ON TABLE {t} IS {};\n",
                quote_literal(&table_comment(d))
            );
            let columns: Vec<String> = tx
                .query(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = $1 AND table_name = $2",
                    &[&schema, &d.key],
                )
                .pg(|| format!("reading the columns of {}", d.key))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for column in &columns {
                if let Some(w) = column_comment(d, column) {
                    sql.push_str(&format!(
                        "COMMENT ON COLUMN {t}.{} IS {};\n",
                        quote_ident(column),
                        quote_literal(&w)
                    ));
                }
            }
            tx.batch_execute(&sql)
                .pg(|| format!("commenting {}", d.key))?;
        }
        tx.commit().pg(|| "COMMIT".into())
    }

    /// Writes this worker's facts per dataset into `dobsob.datasets_state`, each only where it is newer
    /// than what is there (another worker may have synced the dataset since).
    pub fn write_dataset_states(&mut self, states: &[DatasetRecord]) -> Result<(), WarehouseError> {
        let frequencies: Vec<(String, Option<String>)> = self
            .client
            .query("SELECT key, frequency FROM dobsob.datasets_info", &[])
            .pg(|| "reading dobsob.datasets_info".into())?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let worker = self.worker.clone();
        let mut tx = self.client.transaction().pg(|| "BEGIN".into())?;
        let stmt = tx
            .prepare(
                "INSERT INTO dobsob.datasets_state AS s (key, rows, source_rows, last_success_at,
                     last_attempt_at, last_outcome, last_error, consecutive_failures, watermark_updated_at,
                     watermark_id, source_last_updated_at, due_at, stale_at, published_at, worker)
                 VALUES ($1, $2, $3, $4::text::timestamptz, $5::text::timestamptz, $6, $7, $8, $9, $10,
                         $11::text::timestamptz, $12::text::timestamptz, $13::text::timestamptz, now(), $14)
                 ON CONFLICT (key) DO UPDATE SET rows = excluded.rows, source_rows = excluded.source_rows,
                     last_success_at = greatest(s.last_success_at, excluded.last_success_at),
                     last_attempt_at = excluded.last_attempt_at, last_outcome = excluded.last_outcome,
                     last_error = excluded.last_error, consecutive_failures = excluded.consecutive_failures,
                     watermark_updated_at = excluded.watermark_updated_at, watermark_id = excluded.watermark_id,
                     source_last_updated_at = excluded.source_last_updated_at,
                     due_at = greatest(s.due_at, excluded.due_at), stale_at = greatest(s.stale_at, excluded.stale_at),
                     published_at = now(), worker = excluded.worker
                 WHERE s.last_attempt_at IS NULL OR excluded.last_attempt_at >= s.last_attempt_at",
            )
            .pg(|| "rewriting dobsob.datasets_state".into())?;
        let utc = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339();
        for s in states {
            let DueAndStale {
                success,
                due,
                stale,
            } = due_and_stale(s, &frequencies);
            tx.execute(
                &stmt,
                &[
                    &s.key,
                    &s.row_count,
                    &s.source_count,
                    &success.map(utc),
                    &s.last_attempt_at
                        .as_deref()
                        .and_then(crate::sync::schedule::parse_time)
                        .map(utc),
                    &s.last_outcome.map(|o| o.as_str()),
                    &s.last_error,
                    &s.consecutive_failures,
                    &s.watermark.as_ref().map(|w| &w.updated_at),
                    &s.watermark.as_ref().map(|w| &w.id),
                    &s.source_rows_updated_at
                        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                        .map(utc),
                    &due.map(utc),
                    &stale.map(utc),
                    &worker,
                ],
            )
            .pg(|| format!("recording the state of {}", s.key))?;
        }
        tx.commit().pg(|| "COMMIT".into())
    }

    /// Claims `key` for this worker: a session advisory lock, which the server releases if this worker's
    /// connection ends (killed, network cut). Held by another worker: who and since when.
    pub fn claim(&mut self, key: &str) -> Result<Claim, WarehouseError> {
        if self.claimed.contains(key) {
            return Ok(Claim::Granted);
        }
        let got: bool = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&CLAIM_CLASS, &key],
            )
            .pg(|| format!("claiming {key}"))?
            .get(0);
        if got {
            // Held from here: remembered at once, so `release` and `close` let it go whatever follows.
            self.claimed.insert(key.to_string());
            self.client
                .execute(
                    "INSERT INTO dobsob.claims VALUES ($1, $2, now())
                     ON CONFLICT (dataset) DO UPDATE SET worker = excluded.worker, since = excluded.since",
                    &[&key, &self.worker],
                )
                .pg(|| format!("claiming {key}"))?;
            return Ok(Claim::Granted);
        }
        let holder = self
            .client
            .query_opt(
                "SELECT worker, to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                 FROM dobsob.claims WHERE dataset = $1",
                &[&key],
            )
            .pg(|| format!("reading the claim on {key}"))?;
        Ok(Claim::Held {
            by_since: holder.map(|r| (r.get(0), r.get(1))),
        })
    }

    /// Releases this worker's claim on `key`.
    pub fn release(&mut self, key: &str) -> Result<(), WarehouseError> {
        if !self.claimed.remove(key) {
            return Ok(());
        }
        self.client
            .query_one(
                "SELECT pg_advisory_unlock($1, hashtext($2))",
                &[&CLAIM_CLASS, &key],
            )
            .pg(|| format!("releasing {key}"))?;
        Ok(())
    }

    /// The last success of `key` as every worker recorded it (`dobsob.datasets_state`), RFC 3339.
    pub fn shared_last_success(&mut self, key: &str) -> Result<Option<String>, WarehouseError> {
        let row = self
            .client
            .query_opt(
                "SELECT to_char(last_success_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
                 FROM dobsob.datasets_state WHERE key = $1",
                &[&key],
            )
            .pg(|| format!("reading the shared state of {key}"))?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Records a success of `key` at once (not only at the run's end), so that a worker that claims the
    /// dataset next sees it done.
    pub fn record_success(
        &mut self,
        key: &str,
        started: &str,
        at: &str,
    ) -> Result<(), WarehouseError> {
        // The attempt's start (taken before the ledger's own, so this worker's later publish, carrying the
        // ledger's, still writes its rows and watermark), and no older worker's facts overwrite it.
        self.client
            .execute(
                "INSERT INTO dobsob.datasets_state AS s (key, last_success_at, last_attempt_at, last_outcome,
                     consecutive_failures, worker)
                 VALUES ($1, $3::text::timestamptz, $2::text::timestamptz, 'ok', 0, $4)
                 ON CONFLICT (key) DO UPDATE SET
                     last_success_at = greatest(s.last_success_at, excluded.last_success_at),
                     last_attempt_at = greatest(s.last_attempt_at, excluded.last_attempt_at),
                     last_outcome = excluded.last_outcome, consecutive_failures = 0, worker = excluded.worker",
                &[&key, &started, &at, &self.worker],
            )
            .pg(|| format!("recording the success of {key}"))?;
        Ok(())
    }

    /// Every worker's facts per dataset (`dobsob.datasets_state`), as ledger records: what `dobsob status`
    /// shows for a shared warehouse. Times are RFC 3339.
    pub fn shared_records(&mut self) -> Result<Vec<DatasetRecord>, WarehouseError> {
        read_shared_records(&mut self.client)
    }
}

/// What the insert's SQL needs of the warehouse while a transaction borrows its client.
struct TableNames<'a> {
    schema: &'a str,
}

impl TableNames<'_> {
    /// Inserts the staged page into `table` typed, in `tx`. A page the page check found certain to cast is
    /// inserted with PostgreSQL's own casts under a savepoint; should one raise after all, the savepoint is
    /// rolled back and the page goes the careful way: casts that never raise, and its uncastable cells kept.
    fn insert_staged(
        &self,
        tx: &mut Transaction<'_>,
        table: &str,
        schema: &TableSchema,
        page: &PageFile,
        timings: &mut WriterTimings,
    ) -> Result<(), WarehouseError> {
        let started = Instant::now();
        let target = qualified(self.schema, table);
        if page.castable {
            let sql = cast::insert_sql(&target, schema, page.header, true)?;
            let mut sp = tx.savepoint("straight").pg(|| "SAVEPOINT".into())?;
            match sp.batch_execute(&sql) {
                Ok(()) => {
                    sp.commit().pg(|| "RELEASE SAVEPOINT".into())?;
                    timings.insert_s += started.elapsed().as_secs_f64();
                    return Ok(());
                }
                Err(e) => {
                    sp.rollback().pg(|| "ROLLBACK TO SAVEPOINT".into())?;
                    tracing::debug!(
                        table,
                        "a page certain to cast raised ({}); loading it the careful way",
                        pg_error(String::new(), &e)
                    );
                }
            }
        }
        let sql = cast::insert_sql(&target, schema, page.header, false)?;
        tx.batch_execute(&sql)
            .pg(|| format!("inserting into {table}"))?;
        let inserted = Instant::now();
        timings.insert_s += (inserted - started).as_secs_f64();
        for (sql, column, socrata_type) in cast::uncastable_sql(schema, page.header)? {
            tx.execute(&sql, &[&table, &column, &socrata_type])
                .pg(|| format!("keeping uncastable values of {column}"))?;
        }
        timings.uncastable_s += inserted.elapsed().as_secs_f64();
        Ok(())
    }
}

/// `dobsob_datasets` in the datasets' schema: what the warehouse holds, for analysts.
fn datasets_view_sql(schema: &str) -> String {
    format!(
        "CREATE OR REPLACE VIEW {} AS
         SELECT i.key, i.socrata_id, i.name, i.portal_name, i.description, i.source_url, i.frequency, i.priority,
                s.rows, s.source_rows, s.last_success_at, s.source_last_updated_at,
                s.watermark_updated_at, s.watermark_id,
                s.due_at, s.stale_at, (s.last_success_at IS NULL OR now() > s.stale_at) AS stale,
                s.last_outcome, s.last_error, s.consecutive_failures, s.last_attempt_at, s.published_at,
                s.worker
         FROM dobsob.datasets_info i LEFT JOIN dobsob.datasets_state s USING (key)
         ORDER BY i.key",
        qualified(schema, "dobsob_datasets")
    )
}

/// The SQL that grants `role` read access to the datasets, `dobsob_datasets` and dobsob's state, now and
/// for every table dobsob creates later (default privileges of `owner`, the role dobsob connects as, so
/// that a DBA may run it as themselves).
pub fn grant_read_sql(schema: &str, role: &str, owner: &str) -> String {
    let (s, r, o) = (quote_ident(schema), quote_ident(role), quote_ident(owner));
    format!(
        "GRANT USAGE ON SCHEMA {s} TO {r};\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r};\n\
         ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA {s} GRANT SELECT ON TABLES TO {r};\n\
         GRANT USAGE ON SCHEMA dobsob TO {r};\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA dobsob TO {r};\n\
         ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA dobsob GRANT SELECT ON TABLES TO {r};\n"
    )
}

impl PgWarehouse {
    /// Grants `role` read access (see [`grant_read_sql`]), in one transaction.
    pub fn grant_read(&mut self, role: &str) -> Result<(), WarehouseError> {
        let sql = grant_read_sql(&self.schema, role, &self.info.user);
        let mut tx = self.client.transaction().pg(|| "BEGIN".into())?;
        tx.batch_execute(&sql)
            .pg(|| format!("granting {role} read access"))?;
        tx.commit().pg(|| "COMMIT".into())
    }
}

/// Every worker's dataset states, read by a reader (`status`, the dashboard): a plain connection and one
/// SELECT, no setup, no lock, no DDL, so a read-only role can run it. A database dobsob never set up has none.
pub fn shared_records_of(info: &ConnInfo) -> Result<Vec<DatasetRecord>, WarehouseError> {
    let mut client = connect::connect(info)?;
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('dobsob.datasets_state') IS NOT NULL AND to_regclass('dobsob.datasets_info') IS NOT NULL",
            &[],
        )
        .map(|r| r.get(0))
        .pg(|| "looking for dobsob.datasets_state".into())?;
    if !exists {
        return Ok(Vec::new());
    }
    read_shared_records(&mut client)
}

fn read_shared_records(
    client: &mut postgres::Client,
) -> Result<Vec<DatasetRecord>, WarehouseError> {
    let t =
        |c: &str| format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    let sql = format!(
        "SELECT s.key, coalesce(i.socrata_id, ''), s.rows, s.source_rows, {}, {}, s.last_outcome,
                s.last_error, coalesce(s.consecutive_failures, 0), s.watermark_updated_at, s.watermark_id,
                extract(epoch FROM s.source_last_updated_at)::bigint,
                (SELECT count(*) FROM dobsob.uncastable u WHERE u.table_name = s.key)
         FROM dobsob.datasets_state s LEFT JOIN dobsob.datasets_info i USING (key)",
        t("s.last_success_at"),
        t("s.last_attempt_at")
    );
    let rows = client
        .query(&sql, &[])
        .pg(|| "reading dobsob.datasets_state".into())?;
    Ok(rows
        .iter()
        .map(|r| {
            let wm: (Option<String>, Option<String>) = (r.get(9), r.get(10));
            DatasetRecord {
                key: r.get(0),
                socrata_id: r.get(1),
                watermark: match wm {
                    (Some(updated_at), Some(id)) => {
                        Some(crate::ledger::WatermarkRecord { updated_at, id })
                    }
                    _ => None,
                },
                row_count: r.get(2),
                schema_fingerprint: None,
                source_rows_updated_at: r.get(11),
                last_success_at: r.get(4),
                last_attempt_at: r.get(5),
                last_error: r.get(7),
                consecutive_failures: r.get(8),
                last_outcome: r
                    .get::<_, Option<String>>(6)
                    .as_deref()
                    .and_then(crate::ledger::LastOutcome::parse),
                source_count: r.get(3),
                uncastable: Some(r.get(12)),
            }
        })
        .collect())
}
