//! The warehouse's DuckDB database, opened through DuckDB's C API, and a second connection to it for the
//! full load's big statements, run without the client thread spinning.
//!
//! Why: a statement run with `duckdb_query` (all the `duckdb` crate offers) completes in DuckDB's
//! `QueryResult::CompleteInternal`, which calls `ExecuteTask` again at once when no task is available for
//! the calling thread: while DuckDB's worker runs the statement's last tasks, the client thread spins on the
//! executor's lock. On two cores that took 3-3.5 of the 14.5-15.5 CPU-seconds of the inserts of a 1M x 46
//! full load, CPU that the download, the page check and the emulator needed. Driving the statement through
//! the pending-result API, sleeping 200 us whenever DuckDB says no task is available, takes the same wall
//! time on 11-11.5 CPU-seconds (docs/performance.md; the benchmark's "writer alone" line shows it).

use std::ffi::{CStr, CString};
use std::mem::ManuallyDrop;
use std::path::Path;
use std::ptr;
use std::time::Duration;

use duckdb::ffi;

/// How long the client thread sleeps when DuckDB has no task for it (the worker is running the rest).
const IDLE_SLEEP: Duration = Duration::from_micros(200);

/// A DuckDB database opened through the C API, with two connections: one of its own for the full load's
/// big statements ([`RawDb::execute`]), and the `duckdb` crate's ([`RawDb::conn`]) for everything else.
/// It owns their order of closing: both connections before the database, in its `Drop`, whatever holds it.
pub struct RawDb {
    /// The `duckdb` crate's connection on `db`; closed first (the crate's connection does not close a
    /// database it did not open).
    pub conn: ManuallyDrop<duckdb::Connection>,
    /// The C API connection of [`RawDb::execute`].
    raw_conn: ffi::duckdb_connection,
    db: ffi::duckdb_database,
}

/// DuckDB's error from a statement: its message and its type, so that an out-of-memory refusal is told
/// by type, not by its text.
#[derive(Debug, Clone)]
pub struct RawError {
    message: String,
    kind: ffi::duckdb_error_type,
}

impl RawError {
    fn new(message: String, kind: ffi::duckdb_error_type) -> RawError {
        RawError { message, kind }
    }

    /// DuckDB ran out of the memory its cap allows (`DUCKDB_ERROR_OUT_OF_MEMORY`).
    pub fn is_out_of_memory(&self) -> bool {
        self.kind == ffi::duckdb_error_type_DUCKDB_ERROR_OUT_OF_MEMORY
    }
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

// The handles are used from the writer thread only; moving them to it is sound (DuckDB's database and
// connection objects are not tied to the thread that made them).
unsafe impl Send for RawDb {}

impl RawDb {
    /// Opens (or creates) the database at `path`, with DuckDB's default configuration but for the storage
    /// version a new file is created in (`storage_compatibility_version`: DuckDB applies it only when it
    /// creates a file; see `storage.rs`).
    pub fn open(path: &Path, storage_version: &str) -> Result<RawDb, duckdb::Error> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))?;
        let c_version = CString::new(storage_version)
            .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))?;
        let failure = |msg: String| {
            duckdb::Error::DuckDBFailure(ffi::Error::new(ffi::DuckDBError), Some(msg))
        };
        let mut config: ffi::duckdb_config = ptr::null_mut();
        // SAFETY: an out-pointer; the config is destroyed below whatever happens.
        if unsafe { ffi::duckdb_create_config(&mut config) } != ffi::DuckDBSuccess {
            unsafe { ffi::duckdb_destroy_config(&mut config) };
            return Err(failure("cannot create a DuckDB configuration".into()));
        }
        // SAFETY: valid NUL-terminated strings and a created config.
        let set = unsafe {
            ffi::duckdb_set_config(
                config,
                c"storage_compatibility_version".as_ptr(),
                c_version.as_ptr(),
            )
        };
        if set != ffi::DuckDBSuccess {
            unsafe { ffi::duckdb_destroy_config(&mut config) };
            return Err(failure(format!(
                "DuckDB does not know the storage version {storage_version:?}"
            )));
        }
        let mut db: ffi::duckdb_database = ptr::null_mut();
        let mut c_err: *mut std::os::raw::c_char = ptr::null_mut();
        // SAFETY: a valid C string, a created config and out-pointers; DuckDB copies the config.
        let r = unsafe { ffi::duckdb_open_ext(c_path.as_ptr(), &mut db, config, &mut c_err) };
        unsafe { ffi::duckdb_destroy_config(&mut config) };
        if r != ffi::DuckDBSuccess {
            let msg = (!c_err.is_null()).then(|| {
                // SAFETY: DuckDB hands out a NUL-terminated message, freed with duckdb_free.
                let m = unsafe { CStr::from_ptr(c_err) }
                    .to_string_lossy()
                    .into_owned();
                unsafe { ffi::duckdb_free(c_err.cast()) };
                m
            });
            return Err(duckdb::Error::DuckDBFailure(ffi::Error::new(r), msg));
        }
        let mut conn: ffi::duckdb_connection = ptr::null_mut();
        // SAFETY: `db` was just opened.
        if unsafe { ffi::duckdb_connect(db, &mut conn) } != ffi::DuckDBSuccess {
            unsafe { ffi::duckdb_close(&mut db) };
            return Err(duckdb::Error::DuckDBFailure(
                ffi::Error::new(ffi::DuckDBError),
                Some("cannot connect to the warehouse".into()),
            ));
        }
        // SAFETY: the database stays open until this `RawDb` is dropped, whose `Drop` closes this
        // connection first.
        let crate_conn = match unsafe { duckdb::Connection::open_from_raw(db) } {
            Ok(c) => c,
            Err(e) => {
                unsafe {
                    ffi::duckdb_disconnect(&mut conn);
                    ffi::duckdb_close(&mut db);
                }
                return Err(e);
            }
        };
        Ok(RawDb {
            conn: ManuallyDrop::new(crate_conn),
            raw_conn: conn,
            db,
        })
    }

    /// Runs one statement on this connection, the client thread sleeping while DuckDB has no task for it.
    /// Returns the rows it changed. Errors are DuckDB's messages.
    pub fn execute(&self, sql: &str) -> Result<u64, RawError> {
        self.execute_with(sql, &[])
    }

    /// [`Self::execute`] with text parameters bound in order (`?` or `$1`, `$2`, ...).
    pub fn execute_with(&self, sql: &str, params: &[&str]) -> Result<u64, RawError> {
        let invalid = ffi::duckdb_error_type_DUCKDB_ERROR_INVALID;
        let c_sql = CString::new(sql).map_err(|e| RawError::new(e.to_string(), invalid))?;
        let mut stmt: ffi::duckdb_prepared_statement = ptr::null_mut();
        let mut pending: ffi::duckdb_pending_result = ptr::null_mut();
        let mut result: ffi::duckdb_result = unsafe { std::mem::zeroed() };
        let message = |p: *const std::os::raw::c_char| {
            if p.is_null() {
                "unknown DuckDB error".to_string()
            } else {
                // SAFETY: DuckDB's error strings are NUL-terminated and live as long as their object.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        // SAFETY: every handle is created here, checked, and destroyed before returning.
        let r = unsafe {
            let bind = |stmt: ffi::duckdb_prepared_statement| {
                params.iter().enumerate().all(|(i, p)| {
                    ffi::duckdb_bind_varchar_length(
                        stmt,
                        i as u64 + 1,
                        p.as_ptr().cast(),
                        p.len() as u64,
                    ) == ffi::DuckDBSuccess
                })
            };
            if ffi::duckdb_prepare(self.raw_conn, c_sql.as_ptr(), &mut stmt) != ffi::DuckDBSuccess {
                Err(RawError::new(
                    message(ffi::duckdb_prepare_error(stmt)),
                    invalid,
                ))
            } else if !bind(stmt) {
                Err(RawError::new(
                    format!("cannot bind the {} parameters of {sql:?}", params.len()),
                    invalid,
                ))
            } else if ffi::duckdb_pending_prepared(stmt, &mut pending) != ffi::DuckDBSuccess {
                Err(RawError::new(
                    message(ffi::duckdb_pending_error(pending)),
                    invalid,
                ))
            } else {
                let mut state;
                loop {
                    state = ffi::duckdb_pending_execute_task(pending);
                    match state {
                        ffi::duckdb_pending_state_DUCKDB_PENDING_RESULT_NOT_READY => {}
                        ffi::duckdb_pending_state_DUCKDB_PENDING_NO_TASKS_AVAILABLE => {
                            std::thread::sleep(IDLE_SLEEP)
                        }
                        _ => break,
                    }
                }
                if state == ffi::duckdb_pending_state_DUCKDB_PENDING_ERROR {
                    let m = message(ffi::duckdb_pending_error(pending));
                    // The pending result hands its error, typed, to the result it executes into.
                    ffi::duckdb_execute_pending(pending, &mut result);
                    Err(RawError::new(m, ffi::duckdb_result_error_type(&mut result)))
                } else if ffi::duckdb_execute_pending(pending, &mut result) != ffi::DuckDBSuccess {
                    let m = message(ffi::duckdb_result_error(&mut result));
                    Err(RawError::new(m, ffi::duckdb_result_error_type(&mut result)))
                } else {
                    Ok(ffi::duckdb_rows_changed(&mut result))
                }
            }
        };
        // SAFETY: destroying null or created handles is allowed; each is destroyed once.
        unsafe {
            ffi::duckdb_destroy_result(&mut result);
            if !pending.is_null() {
                ffi::duckdb_destroy_pending(&mut pending);
            }
            ffi::duckdb_destroy_prepare(&mut stmt);
        }
        r
    }
}

impl Drop for RawDb {
    fn drop(&mut self) {
        // SAFETY: opened in `open`; the crate's connection is dropped exactly once, here, and never used
        // after (`self` is going away); then this connection, then the database under both.
        unsafe {
            ManuallyDrop::drop(&mut self.conn);
            ffi::duckdb_disconnect(&mut self.raw_conn);
            ffi::duckdb_close(&mut self.db);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_runs_in_the_connections_transaction_and_errors_carry_duckdbs_message() {
        let dir = tempfile::tempdir().unwrap();
        let raw = RawDb::open(&dir.path().join("w.duckdb"), "v1.0.0").unwrap();
        let conn = &raw.conn;
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        raw.execute("BEGIN TRANSACTION").unwrap();
        assert_eq!(
            raw.execute("INSERT INTO t SELECT * FROM range(1000)")
                .unwrap(),
            1000
        );
        // Not committed: the other connection does not see it yet.
        let seen = |c: &duckdb::Connection| {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        assert_eq!(seen(conn), 0);
        raw.execute("ROLLBACK").unwrap();
        raw.execute("INSERT INTO t SELECT * FROM range(10)")
            .unwrap();
        assert_eq!(seen(conn), 10);
        // Parameters are bound, not pasted: quotes, SQL and non-ASCII text arrive as they are.
        conn.execute_batch(
            "CREATE TABLE s (k VARCHAR, v VARCHAR); INSERT INTO s VALUES ('a''b', NULL)",
        )
        .unwrap();
        let odd = "row-'; DROP TABLE s; --\u{e9}";
        assert_eq!(
            raw.execute_with("UPDATE s SET v = $1 WHERE k = $2", &[odd, "a'b"])
                .unwrap(),
            1
        );
        let v: String = conn.query_row("SELECT v FROM s", [], |r| r.get(0)).unwrap();
        assert_eq!(v, odd);
        let e = raw.execute("INSERT INTO nope VALUES (1)").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(!e.is_out_of_memory());
    }
}
