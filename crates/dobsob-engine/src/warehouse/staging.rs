//! Pages into typed rows: DuckDB's strict CSV reading of a page file ([`read_csv_sql`]), the staging table,
//! number columns widened for the values that came, the typed insert, and the cells that do not fit their
//! column's type kept in `dobsob.uncastable` (never NULL without a trace).

use super::*;

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

/// DuckDB's strict reading of a page file, every column as text named `c0`, `c1`, ... in header order. Every
/// non-null cell of a Socrata CSV is quoted and a null is an empty unquoted cell, so "" must stay an empty
/// string (allow_quoted_nulls = false). Nothing is sniffed: the columns are given.
pub(super) fn read_page_sql(page: &PageFile) -> String {
    read_csv_sql(&[page.path], &vec!["VARCHAR"; page.header.len()])
}

/// The CSV reader's buffer, in bytes. DuckDB's default (16 times `max_line_size`, 32 MB) is allocated per
/// file and thread, which alone would take much of [`DEFAULT_MEMORY_LIMIT_MB`]; the reader was no slower
/// on 4 MB buffers. DuckDB's longest row (`max_line_size`, 2 MB by default) follows it, to 4 MB.
pub(super) const CSV_BUFFER_BYTES: u32 = 4 << 20;

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
pub(super) fn is_system_instant(field: &str) -> bool {
    field == ":created_at" || field == ":updated_at"
}

/// The type column `name` has in the table now (`types`, from [`Warehouse::column_types`]); "" if it has
/// none (the insert then fails on the missing column).
pub(super) fn stored_type<'t>(
    types: &'t std::collections::HashMap<String, String>,
    name: &str,
) -> &'t str {
    types.get(name).map(String::as_str).unwrap_or("")
}

impl Warehouse {
    /// Stages a page's CSV as text columns `c0..cN` (header order) in the temp table `_dobsob_page`.
    pub(super) fn stage(&mut self, page: &PageFile) -> Result<(), WarehouseError> {
        let started = std::time::Instant::now();
        let r = self.stage_page(page);
        self.timings.stage_s += started.elapsed().as_secs_f64();
        r
    }

    pub(super) fn stage_page(&self, page: &PageFile) -> Result<(), WarehouseError> {
        let sql = format!(
            "CREATE OR REPLACE TEMP TABLE _dobsob_page AS SELECT * FROM {}",
            read_page_sql(page)
        );
        self.raw
            .conn
            .execute_batch(&sql)
            .ctx(|| format!("loading page {}", page.path.display()))
    }

    /// Each column of `table` (schema `main`) and its DuckDB type as the table has it now.
    pub(super) fn column_types(
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
    pub(super) fn widen_numbers(
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
    pub(super) fn insert_page(
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
    pub(super) fn insert_sql(
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
    pub(super) fn read_types<'t>(
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
    pub(super) fn keep_uncastable(
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
}
