//! The published snapshot through DuckDB's C API: opening it read-only, checking and preparing one
//! statement, and reading its result a chunk at a time (see the module's doc in `mod.rs` for why).

use super::*;

/// The published snapshot, opened read-only through DuckDB's C API, with one connection. Used by one thread;
/// only [`Interruptible`] reaches the connection from another.
pub struct Snapshot {
    pub(crate) db: ffi::duckdb_database,
    pub(crate) conn: ffi::duckdb_connection,
}

impl Snapshot {
    /// Opens `path` read-only, DuckDB denied every other file (but its spill directory `spill`).
    pub fn open(path: &Path, spill: &Path) -> Result<Snapshot, String> {
        use std::os::unix::ffi::OsStrExt;
        // Absolute: with external access off, DuckDB allows exactly the paths it was opened with.
        let path = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let config = Config::new()?;
        config.set("access_mode", "READ_ONLY")?;
        // Before enable_external_access: DuckDB refuses to move the spill directory once that is off.
        config.set("temp_directory", &spill.to_string_lossy())?;
        config.set("enable_external_access", "false")?;
        let mut db: ffi::duckdb_database = ptr::null_mut();
        let mut c_err: *mut c_char = ptr::null_mut();
        // SAFETY: a valid C string, a created config (DuckDB copies it) and out-pointers.
        let r = unsafe { ffi::duckdb_open_ext(c_path.as_ptr(), &mut db, config.0, &mut c_err) };
        if r != ffi::DuckDBSuccess {
            // SAFETY: DuckDB hands out a NUL-terminated message (or none), freed with duckdb_free.
            let message = unsafe { text_or(c_err, "DuckDB could not open it") };
            if !c_err.is_null() {
                unsafe { ffi::duckdb_free(c_err.cast()) };
            }
            return Err(message);
        }
        let mut conn: ffi::duckdb_connection = ptr::null_mut();
        // SAFETY: `db` was just opened; closed here if no connection can be made.
        if unsafe { ffi::duckdb_connect(db, &mut conn) } != ffi::DuckDBSuccess {
            unsafe { ffi::duckdb_close(&mut db) };
            return Err("DuckDB could not connect to it".into());
        }
        Ok(Snapshot { db, conn })
    }

    pub fn interruptible(&self) -> Interruptible {
        Interruptible(self.conn)
    }

    /// The query `request` asks for, checked and prepared; [`Query::stream`] runs it.
    pub fn query(&self, request: &Request, shutdown: &Shutdown) -> Result<Query, Error> {
        match request {
            Request::Sql(sql) => self.user_query(sql),
            Request::Tables => self.tables_query(shutdown),
            Request::Describe(table) => self.describe_query(table, shutdown),
        }
    }

    /// Prepares `sql`, one statement of dobsob's making. Errors are DuckDB's messages.
    pub(crate) fn prepare(&self, sql: &str) -> Result<Statement, String> {
        let c_sql = CString::new(sql).map_err(|_| "a NUL character in SQL".to_string())?;
        let mut stmt: ffi::duckdb_prepared_statement = ptr::null_mut();
        // SAFETY: a live connection, a C string and an out-pointer; `Statement` destroys what was made,
        // also on failure (as DuckDB asks).
        let r = unsafe { ffi::duckdb_prepare(self.conn, c_sql.as_ptr(), &mut stmt) };
        let statement = Statement(stmt);
        if r != ffi::DuckDBSuccess {
            return Err(statement.error());
        }
        Ok(statement)
    }

    /// Splits the user's text with DuckDB's parser and prepares the one statement it must hold.
    pub(crate) fn prepare_one(&self, sql: &str) -> Result<Statement, Error> {
        let c_sql = CString::new(sql)
            .map_err(|_| Error::Config("the query contains a NUL character".into()))?;
        let mut extracted: ffi::duckdb_extracted_statements = ptr::null_mut();
        // SAFETY: a live connection, a C string and an out-pointer; `Extracted` destroys the result, which
        // DuckDB asks for even when nothing was extracted.
        let count =
            unsafe { ffi::duckdb_extract_statements(self.conn, c_sql.as_ptr(), &mut extracted) };
        let extracted = Extracted(extracted);
        if count == 0 {
            // SAFETY: the message belongs to `extracted`, alive here.
            let error = unsafe { ffi::duckdb_extract_statements_error(extracted.0) };
            if error.is_null() {
                return Err(Error::Config(
                    "the query is empty: nothing but blanks and comments".into(),
                ));
            }
            let message = unsafe { text_or(error, "DuckDB could not parse the query") };
            return Err(refused_by_keyword(sql).unwrap_or(Error::Query(message)));
        }
        if count > 1 {
            return Err(Error::Config(format!(
                "dobsob sql runs one statement at a time, and this text holds {count}: run them one by one"
            )));
        }
        let mut stmt: ffi::duckdb_prepared_statement = ptr::null_mut();
        // SAFETY: statement 0 exists; `Statement` destroys what was prepared, also on failure.
        let r = unsafe {
            ffi::duckdb_prepare_extracted_statement(self.conn, extracted.0, 0, &mut stmt)
        };
        let statement = Statement(stmt);
        if r != ffi::DuckDBSuccess {
            return Err(refused_by_keyword(sql).unwrap_or_else(|| Error::Query(statement.error())));
        }
        Ok(statement)
    }

    /// The user's query, checked, and run so that every value comes back as DuckDB's text of it.
    pub(crate) fn user_query(&self, sql: &str) -> Result<Query, Error> {
        let statement = self.prepare_one(sql)?;
        let kind = statement.statement_type();
        let explain = kind == ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN;
        if kind != ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT && !explain {
            return Err(refused(statement_name(kind)));
        }
        let parameters = statement.parameters();
        if parameters > 0 {
            return Err(Error::Config(format!(
                "the query has {parameters} parameter(s) ($1, ? or $name), and dobsob sql binds none: write the \
                 values into the query"
            )));
        }
        let columns = statement.columns();
        match self.prepare(&as_text(sql, columns.len())) {
            Ok(text) => Ok(Query {
                statement: text,
                columns,
                explain,
            }),
            Err(why) => {
                if let Some(c) = columns.iter().find(|c| Decode::of(c.ty).is_none()) {
                    return Err(Error::Query(format!(
                        "column {:?} is of type {}, which dobsob sql cannot show from this statement: write it \
                         as a SELECT (e.g. SELECT * FROM pragma_table_info('t')) or cast the column to VARCHAR",
                        c.name,
                        type_name(c.ty)
                    )));
                }
                tracing::debug!(
                    "query() does not take the statement ({why}): reading its own columns"
                );
                Ok(Query {
                    statement,
                    columns,
                    explain,
                })
            }
        }
    }

    /// One of dobsob's own statements with its text parameters bound, read as it is: its columns are text,
    /// integers and booleans.
    pub(crate) fn own_query(&self, sql: &str, params: &[&str]) -> Result<Query, Error> {
        let statement = self.prepare(sql).map_err(Error::Query)?;
        statement.bind(params).map_err(Error::Query)?;
        let columns = statement.columns();
        Ok(Query {
            statement,
            columns,
            explain: false,
        })
    }

    /// Every row of one of dobsob's own small queries.
    pub(crate) fn rows(
        &self,
        sql: &str,
        params: &[&str],
        shutdown: &Shutdown,
    ) -> Result<Vec<Vec<Option<String>>>, Error> {
        let query = self.own_query(sql, params)?;
        let mut rows = Collect::default();
        pump(&query.statement, &mut rows, shutdown).map_err(|stop| stop.into_error(shutdown))?;
        Ok(rows.0)
    }

    /// `--tables`: each table with its exact row count, and the catalog's and portal's facts from
    /// `dobsob_datasets`.
    pub(crate) fn tables_query(&self, shutdown: &Shutdown) -> Result<Query, Error> {
        let names: Vec<String> = self
            .rows(TABLE_NAMES, &[], shutdown)?
            .into_iter()
            .filter_map(|mut row| row.pop().flatten())
            .collect();
        let params: Vec<&str> = names.iter().map(String::as_str).collect();
        self.own_query(&tables_sql(&names), &params)
    }

    /// `--describe TABLE`: its columns, types and comments (the portal's descriptions). The name is a bound
    /// value, never SQL.
    pub(crate) fn describe_query(&self, table: &str, shutdown: &Shutdown) -> Result<Query, Error> {
        let found = self.rows(
            &format!("SELECT count(*) FROM ({COLUMNS})"),
            &[table],
            shutdown,
        )?;
        let columns: i64 = found
            .first()
            .and_then(|row| row.first())
            .and_then(|cell| cell.as_deref())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if columns == 0 {
            return Err(Error::Config(format!(
                "no table {table:?} in the warehouse: dobsob sql --tables lists them"
            )));
        }
        self.own_query(COLUMNS, &[table])
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // SAFETY: opened in `open`; every statement and result made on the connection is gone by now (they
        // borrow the snapshot).
        unsafe {
            ffi::duckdb_disconnect(&mut self.conn);
            ffi::duckdb_close(&mut self.db);
        }
    }
}

/// The listing of `--tables` for these tables (each name a bound parameter, in order; quoted as an identifier
/// where it names the table to count).
pub(crate) fn tables_sql(names: &[String]) -> String {
    if names.is_empty() {
        return NO_TABLES.to_string();
    }
    let counts: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                "SELECT CAST(? AS VARCHAR) AS name, (SELECT count(*) FROM main.{}) AS row_count",
                quote_ident(n)
            )
        })
        .collect();
    format!(
        "WITH counts AS ({}) \
         SELECT c.name AS \"table\", c.row_count AS \"rows\", d.name AS \"name\", \
         strftime(CAST(d.last_success_at AS TIMESTAMP), '%Y-%m-%dT%H:%M:%SZ') AS last_synced, \
         d.description AS \"description\" \
         FROM counts c LEFT JOIN main.dobsob_datasets d ON d.key = c.name ORDER BY c.name",
        counts.join(" UNION ALL ")
    )
}

/// `sql` (one SELECT) as a query of DuckDB's text of every value: `query()` runs it as a subquery, its
/// columns renamed by position, so any names (even duplicates) work and the order of its rows is kept.
pub(crate) fn as_text(sql: &str, columns: usize) -> String {
    let names: Vec<String> = (0..columns).map(|i| format!("c{i}")).collect();
    let casts: Vec<String> = names
        .iter()
        .map(|n| format!("CAST({n} AS VARCHAR)"))
        .collect();
    format!(
        "SELECT {} FROM query({}) AS q({})",
        casts.join(", "),
        quote_literal(sql),
        names.join(", ")
    )
}

/// A query ready to stream, and the columns of the statement it answers (names and DuckDB types).
pub struct Query {
    pub(crate) statement: Statement,
    pub columns: Vec<Column>,
    /// An EXPLAIN: on a terminal, its plan is printed as DuckDB drew it.
    pub explain: bool,
}

pub struct Column {
    pub name: String,
    pub(crate) ty: ffi::duckdb_type,
}

impl Query {
    /// Runs the query and streams its rows into `sink` (see [`pump`]).
    pub fn stream(&self, sink: &mut dyn Sink, shutdown: &Shutdown) -> Result<u64, Stop> {
        pump(&self.statement, sink, shutdown)
    }
}

impl Column {
    /// What the column's type means for printing.
    pub fn kind(&self) -> Kind {
        Kind::of(self.ty)
    }
}

/// A prepared statement, destroyed when dropped.
pub(crate) struct Statement(pub(crate) ffi::duckdb_prepared_statement);

impl Statement {
    /// DuckDB's message for a failed prepare (with "LINE 1: ..." and a caret when it has a position).
    pub(crate) fn error(&self) -> String {
        // SAFETY: the message lives as long as the statement; a null statement gives none.
        unsafe {
            text_or(
                ffi::duckdb_prepare_error(self.0),
                "DuckDB could not prepare the statement",
            )
        }
    }

    pub(crate) fn statement_type(&self) -> ffi::duckdb_statement_type {
        // SAFETY: a prepared statement.
        unsafe { ffi::duckdb_prepared_statement_type(self.0) }
    }

    pub(crate) fn parameters(&self) -> u64 {
        // SAFETY: a prepared statement.
        unsafe { ffi::duckdb_nparams(self.0) }
    }

    pub(crate) fn columns(&self) -> Vec<Column> {
        // SAFETY: a prepared statement; column names are DuckDB's copies, freed here with duckdb_free.
        let count = unsafe { ffi::duckdb_prepared_statement_column_count(self.0) };
        (0..count)
            .map(|i| unsafe {
                let p = ffi::duckdb_prepared_statement_column_name(self.0, i);
                let name = text_or(p, &format!("column{i}"));
                if !p.is_null() {
                    ffi::duckdb_free(p as *mut c_void);
                }
                Column {
                    name,
                    ty: ffi::duckdb_prepared_statement_column_type(self.0, i),
                }
            })
            .collect()
    }

    /// Binds text parameters in order (`?`, or `$1`, `$2`, ...).
    pub(crate) fn bind(&self, params: &[&str]) -> Result<(), String> {
        for (i, p) in params.iter().enumerate() {
            // SAFETY: a prepared statement; DuckDB copies the value.
            let r = unsafe {
                ffi::duckdb_bind_varchar_length(
                    self.0,
                    i as u64 + 1,
                    p.as_ptr().cast(),
                    p.len() as u64,
                )
            };
            if r != ffi::DuckDBSuccess {
                return Err(format!("cannot bind parameter {} ({p:?})", i + 1));
            }
        }
        Ok(())
    }

    /// Runs the statement; its rows are then fetched chunk by chunk, as they are made.
    pub(crate) fn stream(&self) -> Result<QueryResult, String> {
        // SAFETY: a zeroed result is what DuckDB fills in, and destroying it is allowed whatever happened.
        let mut result = QueryResult(unsafe { std::mem::zeroed() });
        let r = unsafe { ffi::duckdb_execute_prepared_streaming(self.0, &mut result.0) };
        if r != ffi::DuckDBSuccess {
            return Err(result
                .error()
                .unwrap_or_else(|| "DuckDB could not run the statement".into()));
        }
        Ok(result)
    }
}

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: destroying a prepared (or null) statement once.
        unsafe { ffi::duckdb_destroy_prepare(&mut self.0) }
    }
}

/// The statements DuckDB extracted from a text, destroyed when dropped.
pub(crate) struct Extracted(pub(crate) ffi::duckdb_extracted_statements);

impl Drop for Extracted {
    fn drop(&mut self) {
        // SAFETY: destroying the extraction (empty or not) once.
        unsafe { ffi::duckdb_destroy_extracted(&mut self.0) }
    }
}

/// A DuckDB configuration, destroyed when dropped (DuckDB copies it when it opens a database).
pub(crate) struct Config(pub(crate) ffi::duckdb_config);

impl Config {
    pub(crate) fn new() -> Result<Config, String> {
        let mut config: ffi::duckdb_config = ptr::null_mut();
        // SAFETY: an out-pointer; destroyed at once if DuckDB could not make it.
        if unsafe { ffi::duckdb_create_config(&mut config) } != ffi::DuckDBSuccess {
            unsafe { ffi::duckdb_destroy_config(&mut config) };
            return Err("cannot create a DuckDB configuration".into());
        }
        Ok(Config(config))
    }

    pub(crate) fn set(&self, name: &str, value: &str) -> Result<(), String> {
        let c_name = CString::new(name).map_err(|e| e.to_string())?;
        let c_value = CString::new(value).map_err(|e| e.to_string())?;
        // SAFETY: a created config and two C strings, copied by DuckDB.
        if unsafe { ffi::duckdb_set_config(self.0, c_name.as_ptr(), c_value.as_ptr()) }
            != ffi::DuckDBSuccess
        {
            return Err(format!("DuckDB refused the setting {name} = {value}"));
        }
        Ok(())
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe { ffi::duckdb_destroy_config(&mut self.0) }
    }
}

/// A (streaming) result, destroyed when dropped: that also ends a query that has not run to its end.
pub struct QueryResult(pub(crate) ffi::duckdb_result);

impl QueryResult {
    pub(crate) fn error(&mut self) -> Option<String> {
        // SAFETY: the message lives as long as the result.
        let p = unsafe { ffi::duckdb_result_error(&mut self.0) };
        (!p.is_null()).then(|| unsafe { text_or(p, "") })
    }

    pub(crate) fn column_types(&mut self) -> Vec<ffi::duckdb_type> {
        // SAFETY: a result DuckDB made.
        let count = unsafe { ffi::duckdb_column_count(&mut self.0) };
        (0..count)
            .map(|i| unsafe { ffi::duckdb_column_type(&mut self.0, i) })
            .collect()
    }

    /// The next chunk; None at the end, or on an error (then in [`QueryResult::error`]).
    pub(crate) fn next_chunk(&mut self) -> Option<Chunk> {
        // SAFETY: a result DuckDB made; the chunk is destroyed by `Chunk`.
        let chunk = unsafe { ffi::duckdb_fetch_chunk(self.0) };
        (!chunk.is_null()).then(|| Chunk(chunk))
    }
}

impl Drop for QueryResult {
    fn drop(&mut self) {
        // SAFETY: destroying a filled-in or zeroed result once.
        unsafe { ffi::duckdb_destroy_result(&mut self.0) }
    }
}

/// A chunk of a result (flat vectors, as DuckDB hands them to the C API), destroyed when dropped.
pub(crate) struct Chunk(pub(crate) ffi::duckdb_data_chunk);

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: a fetched chunk, destroyed once.
        unsafe { ffi::duckdb_destroy_data_chunk(&mut self.0) }
    }
}

/// The connection, for the watcher thread to interrupt.
#[derive(Clone, Copy)]
pub struct Interruptible(pub(crate) ffi::duckdb_connection);

// SAFETY: `duckdb_interrupt` only sets an atomic flag of the connection's client context, which DuckDB
// made to be set from another thread; the connection outlives the watcher (a scoped thread, ended before
// the connection closes).
unsafe impl Send for Interruptible {}
unsafe impl Sync for Interruptible {}

impl Interruptible {
    pub(crate) fn interrupt(&self) {
        // SAFETY: see above.
        unsafe { ffi::duckdb_interrupt(self.0) }
    }
}

/// Runs `f` while a watcher thread interrupts DuckDB once `shutdown` is triggered (Ctrl-C, SIGTERM). It
/// interrupts again every few milliseconds until `f` returns: DuckDB clears the flag when a statement starts,
/// and the signal may come just before one does.
pub fn with_interrupts<T>(target: Interruptible, shutdown: &Shutdown, f: impl FnOnce() -> T) -> T {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if shutdown.is_triggered() {
                    target.interrupt();
                }
                std::thread::sleep(WATCH_INTERVAL);
            }
        });
        // Set when `f` returns or panics, so that the scope can join the watcher.
        let _stop_watching = SetOnDrop(&done);
        f()
    })
}

/// Sets its flag when dropped, also while unwinding.
pub(crate) struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// DuckDB's text at `p`, or `fallback` when `p` is null.
///
/// # Safety
/// `p` is null or a NUL-terminated string alive during the call.
unsafe fn text_or(p: *const c_char, fallback: &str) -> String {
    if p.is_null() {
        fallback.to_string()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

// Reading a result.

/// Streams `statement`'s result into `sink`. One chunk (2,048 rows) at a time is read here, whatever the size
/// of the result; the sink decides what it keeps.
pub(crate) fn pump(
    statement: &Statement,
    sink: &mut dyn Sink,
    shutdown: &Shutdown,
) -> Result<u64, Stop> {
    if shutdown.is_triggered() {
        return Err(Stop::Interrupted);
    }
    let mut result = statement.stream().map_err(Stop::Query)?;
    let decoders = result
        .column_types()
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Decode::of(t).ok_or_else(|| {
                Stop::Query(format!(
                    "result column {} is of type {}, which dobsob sql cannot read",
                    i + 1,
                    type_name(t)
                ))
            })
        })
        .collect::<Result<Vec<Decode>, Stop>>()?;
    sink.start().map_err(Stop::Output)?;
    let width = decoders.len();
    let mut texts = vec![String::new(); width];
    let mut nulls = vec![false; width];
    let mut rows = 0u64;
    loop {
        if shutdown.is_triggered() {
            return Err(Stop::Interrupted);
        }
        let Some(chunk) = result.next_chunk() else {
            if let Some(message) = result.error() {
                return Err(Stop::Query(message));
            }
            break;
        };
        // SAFETY: a live chunk with the result's columns; its vectors are flat and live as long as it does.
        let size = unsafe { ffi::duckdb_data_chunk_get_size(chunk.0) } as usize;
        let present = unsafe { ffi::duckdb_data_chunk_get_column_count(chunk.0) } as usize;
        if present != width {
            return Err(Stop::Query(format!(
                "DuckDB returned {present} columns where {width} were announced"
            )));
        }
        let vectors: Vec<(Decode, *mut c_void, *mut u64)> = decoders
            .iter()
            .enumerate()
            .map(|(j, d)| unsafe {
                let v = ffi::duckdb_data_chunk_get_vector(chunk.0, j as u64);
                (
                    *d,
                    ffi::duckdb_vector_get_data(v),
                    ffi::duckdb_vector_get_validity(v),
                )
            })
            .collect();
        for row in 0..size {
            for (j, (decode, data, validity)) in vectors.iter().enumerate() {
                // A null validity mask: every value is valid. Else one bit per row, 64 rows a word.
                let valid = validity.is_null()
                    || unsafe { ((*validity.add(row / 64) >> (row % 64)) & 1) == 1 };
                nulls[j] = !valid;
                if valid {
                    // SAFETY: a flat vector of the decoder's type with `size` rows.
                    unsafe { decode.read(*data, row, &mut texts[j]) };
                }
            }
            sink.row(&Row {
                texts: &texts,
                nulls: &nulls,
            })
            .map_err(Stop::Output)?;
        }
        rows += size as u64;
    }
    sink.finish(rows).map_err(Stop::Output)?;
    Ok(rows)
}

/// How a result column's vector is read as text. A SELECT's result is all VARCHAR ([`as_text`]); the others
/// are statements whose columns are text, integers, doubles or booleans.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decode {
    Text,
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
}

impl Decode {
    pub(crate) fn of(t: ffi::duckdb_type) -> Option<Decode> {
        Some(match t {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => Decode::Text,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => Decode::Bool,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT => Decode::I8,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => Decode::I16,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => Decode::I32,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => Decode::I64,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => Decode::U8,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => Decode::U16,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => Decode::U32,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => Decode::U64,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => Decode::F32,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => Decode::F64,
            _ => return None,
        })
    }

    /// Writes the value at `row` into `out` (cleared first).
    ///
    /// # Safety
    /// `data` is a flat vector of this decoder's type holding more than `row` values, valid at `row`.
    unsafe fn read(self, data: *mut c_void, row: usize, out: &mut String) {
        use std::fmt::Write as _;
        out.clear();
        match self {
            Decode::Text => {
                // Pointing into the vector (not a copy): an inlined string's bytes are inside the element.
                let s = data.cast::<ffi::duckdb_string_t>().add(row);
                let len = ffi::duckdb_string_t_length(*s) as usize;
                let bytes =
                    std::slice::from_raw_parts(ffi::duckdb_string_t_data(s).cast::<u8>(), len);
                match std::str::from_utf8(bytes) {
                    Ok(text) => out.push_str(text),
                    Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
                }
            }
            Decode::Bool => out.push_str(if *data.cast::<u8>().add(row) != 0 {
                "true"
            } else {
                "false"
            }),
            Decode::I8 => {
                let _ = write!(out, "{}", *data.cast::<i8>().add(row));
            }
            Decode::I16 => {
                let _ = write!(out, "{}", *data.cast::<i16>().add(row));
            }
            Decode::I32 => {
                let _ = write!(out, "{}", *data.cast::<i32>().add(row));
            }
            Decode::I64 => {
                let _ = write!(out, "{}", *data.cast::<i64>().add(row));
            }
            Decode::U8 => {
                let _ = write!(out, "{}", *data.cast::<u8>().add(row));
            }
            Decode::U16 => {
                let _ = write!(out, "{}", *data.cast::<u16>().add(row));
            }
            Decode::U32 => {
                let _ = write!(out, "{}", *data.cast::<u32>().add(row));
            }
            Decode::U64 => {
                let _ = write!(out, "{}", *data.cast::<u64>().add(row));
            }
            Decode::F32 => {
                let v = *data.cast::<f32>().add(row);
                push_float(out, f64::from(v), &v);
            }
            Decode::F64 => {
                let v = *data.cast::<f64>().add(row);
                push_float(out, v, &v);
            }
        }
    }
}

/// A float as DuckDB writes one: `inf`, `-inf`, `nan`, else the shortest text that reads back the same.
pub(crate) fn push_float(out: &mut String, value: f64, shown: &dyn std::fmt::Display) {
    use std::fmt::Write as _;
    if value.is_nan() {
        out.push_str("nan");
    } else if value.is_infinite() {
        out.push_str(if value < 0.0 { "-inf" } else { "inf" });
    } else {
        let _ = write!(out, "{shown}");
    }
}

/// What a column's DuckDB type means for printing: JSON's value types, and the table's alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    Integer,
    Float,
    /// DECIMAL, HUGEINT, UHUGEINT, BIGNUM: strings in JSON, to stay exact.
    Exact,
    Timestamp,
    TimestampTz,
    Other,
}

impl Kind {
    pub(crate) fn of(t: ffi::duckdb_type) -> Kind {
        match t {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => Kind::Boolean,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => Kind::Integer,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT | ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => Kind::Float,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_HUGEINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UHUGEINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGNUM => Kind::Exact,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_S
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_MS
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_NS => Kind::Timestamp,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ_NS => Kind::TimestampTz,
            _ => Kind::Other,
        }
    }

    /// Right-aligned in a table.
    pub fn is_number(self) -> bool {
        matches!(self, Kind::Integer | Kind::Float | Kind::Exact)
    }
}

/// DuckDB's name of a type, for messages.
pub(crate) fn type_name(t: ffi::duckdb_type) -> String {
    let name = match t {
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE => "DATE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME_NS => "TIME",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME_TZ => "TIME WITH TIME ZONE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_S
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_MS
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_NS => "TIMESTAMP",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ_NS => "TIMESTAMP WITH TIME ZONE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTERVAL => "INTERVAL",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL => "DECIMAL",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_HUGEINT => "HUGEINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UHUGEINT => "UHUGEINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGNUM => "BIGNUM",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB => "BLOB",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIT => "BIT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UUID => "UUID",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_ENUM => "ENUM",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_LIST => "LIST",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_ARRAY => "ARRAY",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_STRUCT => "STRUCT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_MAP => "MAP",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UNION => "UNION",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_GEOMETRY => "GEOMETRY",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARIANT => "VARIANT",
        _ => return format!("#{t}"),
    };
    name.to_string()
}

/// The statement type's name, for the refusal.
pub(crate) fn statement_name(t: ffi::duckdb_statement_type) -> &'static str {
    match t {
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_INSERT => "INSERT",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE => "UPDATE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DELETE => "DELETE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PREPARE => "PREPARE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE => "CREATE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXECUTE => "EXECUTE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ALTER => "ALTER",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_TRANSACTION => {
            "transaction (BEGIN, COMMIT, ...)"
        }
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY => "COPY",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ANALYZE => "ANALYZE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VARIABLE_SET
        | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SET => "SET",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE_FUNC => "CREATE FUNCTION",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DROP => "DROP",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPORT => "EXPORT",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PRAGMA => "PRAGMA",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VACUUM => "VACUUM",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CALL => "CALL",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOAD => "LOAD",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ATTACH => "ATTACH",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DETACH => "DETACH",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MULTI => "multi-statement",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY_DATABASE => "COPY DATABASE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE_EXTENSIONS => "UPDATE EXTENSIONS",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MERGE_INTO => "MERGE INTO",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_RELATION
        | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOGICAL_PLAN
        | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXTENSION => "non-query",
        _ => "unknown",
    }
}

/// The refusal of a statement that is not a query (exit 1).
pub(crate) fn refused(kind: &str) -> Error {
    let hint = match kind {
        "CALL" => " (for CALL f(...), write SELECT * FROM f(...))",
        "COPY" | "EXPORT" => {
            " (to export a result, use --format csv or json and redirect the output to a file)"
        }
        _ => "",
    };
    Error::Query(format!(
        "dobsob sql is read-only: {kind} statements are refused{hint}. It runs one query: SELECT, WITH, FROM, \
         VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, or a PRAGMA that lists (PRAGMA table_info('t'))"
    ))
}

/// The refusal, when the text starts with the keyword of a statement that is not a query.
pub(crate) fn refused_by_keyword(sql: &str) -> Option<Error> {
    let word = first_keyword(sql);
    NOT_QUERIES.contains(&word.as_str()).then(|| refused(&word))
}

/// The first word of `sql`, upper-cased, past blanks, comments and opening parentheses.
pub(crate) fn first_keyword(sql: &str) -> String {
    let mut rest = sql;
    loop {
        let t = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(comment) = t.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = t.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return t
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect::<String>()
                .to_ascii_uppercase();
        }
    }
}
