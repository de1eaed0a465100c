//! One read-only query on the published snapshot (`<data-dir>/warehouse.duckdb`), its rows streamed into a
//! [`Sink`] (the command line's `dobsob sql` prints them as a table, CSV, JSON or Markdown). `--tables` and
//! `--describe` are two such queries of dobsob's own ([`Request`]).
//!
//! It drives DuckDB through its C API (`duckdb::ffi`), as `warehouse/raw.rs` does, for what the `duckdb`
//! crate (1.20000.1) does not offer:
//! - A streamed result. `Statement::query` runs `duckdb_execute_prepared`, which materializes the whole
//!   result before the first row is read: a million-row export would sit in memory. Here the statement runs
//!   with `duckdb_execute_prepared_streaming` and the result is read a chunk (2,048 rows) at a time
//!   (`duckdb_fetch_chunk`), so memory does not grow with the result. (The crate's `stream_arrow` streams
//!   too, but through Arrow's types and Arrow's way of printing values, not DuckDB's.)
//! - A check before anything runs. `Connection::prepare` executes every statement of a text but the last
//!   before it returns: `SELECT 1; DROP TABLE t` would drop first. Here the text is split by DuckDB's own
//!   parser (`duckdb_extract_statements`), exactly one statement is allowed, it is prepared, and its type
//!   (`duckdb_prepared_statement_type`) must be SELECT (also what DuckDB makes of WITH, FROM, VALUES,
//!   DESCRIBE, SHOW, SUMMARIZE and the PRAGMAs that only list, such as `PRAGMA table_info('t')`) or EXPLAIN.
//! - Cancelling from another thread (`duckdb_interrupt`): Ctrl-C triggers the [`Shutdown`], a watcher thread
//!   here ([`with_interrupts`]) interrupts the connection, DuckDB stops the query, and the query ends [`Error::Interrupted`].
//!
//! The type check gives a clear refusal; the guarantee is the open itself: `access_mode = READ_ONLY` (no
//! write reaches the file, whatever runs) and `enable_external_access = false` (no COPY TO, no ATTACH or
//! reading of other files, no extensions). DuckDB spills to a private directory of its own, removed at the
//! end.
//!
//! Values are DuckDB's own text: a SELECT runs as `SELECT CAST(c0 AS VARCHAR), ... FROM query('<its text>')
//! AS q(c0, ...)`, so every type (decimals, intervals, blobs, lists, structs, ...) prints exactly as DuckDB
//! prints it and only VARCHAR vectors are read here; the column types of the statement itself decide how JSON
//! shows a value. `query()` takes one plain SELECT, so an EXPLAIN, or a PRAGMA that DuckDB rewrote into a
//! SELECT, runs as it is: those return text, integers and booleans, which are read from their vectors
//! directly ([`Decode`]).

use std::ffi::{c_char, c_void, CStr, CString};
use std::io;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use duckdb::ffi;

use crate::error::Error;
use crate::sync::Shutdown;
use crate::warehouse::{quote_ident, quote_literal};

mod snapshot;

pub use snapshot::{with_interrupts, Column, Interruptible, Kind, Query, Snapshot};

/// How often the watcher thread looks for a Ctrl-C.
const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// The tables `--tables` lists: every table of `main` (the datasets'), not a full load's work table.
const TABLE_NAMES: &str = "SELECT table_name FROM duckdb_tables() \
     WHERE database_name = current_database() AND schema_name = 'main' \
     AND NOT starts_with(table_name, '_dobsob_') ORDER BY table_name";

/// `--describe`: a table's (or view's) columns; `$1` is `table` (in `main`) or `schema.table`.
const COLUMNS: &str =
    "SELECT column_name AS \"column\", data_type AS \"type\", comment AS \"description\" \
     FROM duckdb_columns() WHERE database_name = current_database() \
     AND ((schema_name = 'main' AND table_name = $1) OR schema_name || '.' || table_name = $1) \
     ORDER BY schema_name, column_index";

/// `--tables` when there are none: the same columns, no rows.
const NO_TABLES: &str =
    "SELECT CAST(NULL AS VARCHAR) AS \"table\", CAST(NULL AS BIGINT) AS \"rows\", \
     CAST(NULL AS VARCHAR) AS \"name\", CAST(NULL AS VARCHAR) AS last_synced, \
     CAST(NULL AS VARCHAR) AS \"description\" WHERE false";

/// First keywords of statements that are not queries: they name what was refused when DuckDB could not even
/// prepare the statement (a COPY to a file it may not open, say). The statement's type decides otherwise.
const NOT_QUERIES: &[&str] = &[
    "ABORT",
    "ALTER",
    "ANALYZE",
    "ATTACH",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "COMMENT",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DELETE",
    "DETACH",
    "DROP",
    "END",
    "EXECUTE",
    "EXPORT",
    "FORCE",
    "IMPORT",
    "INSERT",
    "INSTALL",
    "LOAD",
    "MERGE",
    "PREPARE",
    "RESET",
    "ROLLBACK",
    "SET",
    "START",
    "TRUNCATE",
    "UPDATE",
    "USE",
    "VACUUM",
];

/// What to run: the user's text, or one of dobsob's own listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// One statement of the user's: a query (SELECT, WITH, ..., EXPLAIN), refused otherwise.
    Sql(String),
    /// Every dataset's table with its exact row count and the catalog's and portal's facts.
    Tables,
    /// A table's (or view's) columns, types and descriptions.
    Describe(String),
}

/// One result row as text, borrowed for a call; `None` is NULL.
pub struct Row<'a> {
    pub texts: &'a [String],
    pub nulls: &'a [bool],
}

impl Row<'_> {
    pub fn get(&self, i: usize) -> Option<&str> {
        (!self.nulls[i]).then(|| self.texts[i].as_str())
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// Where rows go, in order: a format's writer, or a list for dobsob's own small queries.
pub trait Sink {
    /// Once the query runs, before the first row.
    fn start(&mut self) -> io::Result<()>;
    fn row(&mut self, row: &Row<'_>) -> io::Result<()>;
    /// After the last of `rows` rows.
    fn finish(&mut self, rows: u64) -> io::Result<()>;
}

/// The rows of dobsob's own small queries, kept.
#[derive(Default)]
pub(crate) struct Collect(pub(crate) Vec<Vec<Option<String>>>);

impl Sink for Collect {
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        self.0.push(
            (0..row.len())
                .map(|i| row.get(i).map(str::to_string))
                .collect(),
        );
        Ok(())
    }

    fn finish(&mut self, _rows: u64) -> io::Result<()> {
        Ok(())
    }
}

/// Why a result stopped before its end.
#[derive(Debug)]
pub enum Stop {
    /// DuckDB's error (an interrupted query's, too).
    Query(String),
    Interrupted,
    /// The sink could not write (a closed pipe, a full disk).
    Output(io::Error),
}

impl Stop {
    pub fn into_error(self, shutdown: &Shutdown) -> Error {
        match self {
            _ if shutdown.is_triggered() => Error::Interrupted("the query was cancelled".into()),
            Stop::Interrupted => Error::Interrupted("the query was cancelled".into()),
            Stop::Query(message) => Error::Query(message),
            Stop::Output(e) => Error::Io(format!("cannot write the result: {e}")),
        }
    }
}

/// A private directory for DuckDB's spill files. Under `tmp` (the data directory's `tmp/`) when it can be
/// used (not the directory itself: the sync's DuckDB spills there, and DuckDB names its spill files the same
/// in every process), else under the system's temporary directory (an analyst of the share group cannot
/// write the private tmp/).
pub fn spill_dir(tmp: &Path) -> Result<tempfile::TempDir, Error> {
    std::fs::canonicalize(tmp)
        .and_then(|base| tempfile::Builder::new().prefix("sql-").tempdir_in(base))
        .or_else(|_| tempfile::Builder::new().prefix("dobsob-sql-").tempdir())
        .map_err(|e| {
            Error::Io(format!(
                "cannot create a directory for DuckDB's spill files: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::snapshot::{as_text, first_keyword, refused_by_keyword};

    #[test]
    fn the_first_keyword_is_found_past_comments() {
        assert_eq!(first_keyword("  insert into t values (1)"), "INSERT");
        assert_eq!(
            first_keyword("-- why\n/* what */ (COPY t TO 'x.csv')"),
            "COPY"
        );
        assert_eq!(first_keyword("SELECT 1"), "SELECT");
        assert_eq!(first_keyword("-- only a comment"), "");
        assert!(refused_by_keyword("attach 'x.db'").is_some());
        assert!(refused_by_keyword("SELEC 1").is_none());
    }

    #[test]
    fn a_select_becomes_a_query_of_text_by_position() {
        assert_eq!(
            as_text("SELECT 'it''s' AS a, 2 AS a;", 2),
            "SELECT CAST(c0 AS VARCHAR), CAST(c1 AS VARCHAR) FROM query('SELECT ''it''''s'' AS a, 2 AS a;') \
             AS q(c0, c1)"
        );
    }
}
