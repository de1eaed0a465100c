//! What a dataset's table holds beyond its rows, read for the dashboard from either warehouse: its columns
//! as stored, examples of the values kept in `dobsob.uncastable`, and the changes dobsob made to its columns.
//! Read-only: the DuckDB side reads the published snapshot (never the sync's working file), the PostgreSQL
//! side the live tables.

use std::path::Path;

use super::postgres::ConnInfo;
use super::quote_literal;
use crate::query::{Collect, Request};

/// A dataset's table as the warehouse describes it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DatasetFacts {
    pub columns: Vec<StoredColumn>,
    /// The most frequent uncastable values (of a sample of at most [`SAMPLE`] rows), with their counts.
    pub uncastable: Vec<UncastableExample>,
    pub schema_changes: Vec<SchemaChange>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredColumn {
    pub name: String,
    pub socrata_type: String,
    pub stored_type: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UncastableExample {
    pub column: String,
    pub data_type: String,
    pub value: String,
    pub count: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SchemaChange {
    pub column: String,
    pub from_type: String,
    pub to_type: String,
    pub reason: String,
    pub at: String,
}

/// The uncastable values looked at for the examples: a bounded sample, whatever the table holds.
pub const SAMPLE: u32 = 10_000;

/// The three queries, with the dataset's key as a literal (a catalog key: `[a-z][a-z0-9_]*`, quoted anyway)
/// and `types` the column of `dobsob.columns` naming the stored type.
fn queries(key: &str, types: &str, text: &str) -> [String; 3] {
    let k = quote_literal(key);
    [
        format!(
            "SELECT column_name, socrata_type, {types} FROM dobsob.columns WHERE table_name = {k} \
             ORDER BY position"
        ),
        format!(
            "SELECT column_name, data_type, raw_value, {} FROM (SELECT * FROM dobsob.uncastable \
             WHERE table_name = {k} LIMIT {SAMPLE}) s GROUP BY column_name, data_type, raw_value \
             ORDER BY count(*) DESC, column_name, raw_value LIMIT 20",
            text.replace("{}", "count(*)")
        ),
        format!(
            "SELECT column_name, from_type, to_type, reason, {} FROM dobsob.schema_changes \
             WHERE table_name = {k} ORDER BY changed_at DESC LIMIT 20",
            text.replace("{}", "changed_at")
        ),
    ]
}

fn assemble(rows: [Vec<Vec<Option<String>>>; 3]) -> DatasetFacts {
    let [columns, uncastable, changes] = rows;
    let s = |r: &Vec<Option<String>>, i: usize| r.get(i).cloned().flatten().unwrap_or_default();
    DatasetFacts {
        columns: columns
            .iter()
            .map(|r| StoredColumn {
                name: s(r, 0),
                socrata_type: s(r, 1),
                stored_type: s(r, 2),
            })
            .collect(),
        uncastable: uncastable
            .iter()
            .map(|r| UncastableExample {
                column: s(r, 0),
                data_type: s(r, 1),
                value: s(r, 2),
                count: s(r, 3).parse().unwrap_or(0),
            })
            .collect(),
        schema_changes: changes
            .iter()
            .map(|r| SchemaChange {
                column: s(r, 0),
                from_type: s(r, 1),
                to_type: s(r, 2),
                reason: s(r, 3),
                at: s(r, 4),
            })
            .collect(),
    }
}

/// From the published DuckDB snapshot at `published` (DuckDB may spill under `tmp`). No snapshot yet: none.
pub fn duckdb_facts(published: &Path, tmp: &Path, key: &str) -> Result<DatasetFacts, String> {
    if !published.exists() {
        return Ok(DatasetFacts::default());
    }
    let spill = crate::query::spill_dir(tmp).map_err(|e| e.to_string())?;
    let snapshot = crate::query::Snapshot::open(published, spill.path())?;
    let shutdown = crate::sync::Shutdown::default();
    let mut out: [Vec<Vec<Option<String>>>; 3] = Default::default();
    for (i, sql) in queries(key, "duckdb_type", "CAST({} AS VARCHAR)")
        .iter()
        .enumerate()
    {
        let query = snapshot
            .query(&Request::Sql(sql.clone()), &shutdown)
            .map_err(|e| e.to_string())?;
        let mut rows = Collect::default();
        query
            .stream(&mut rows, &shutdown)
            .map_err(|e| e.into_error(&shutdown).to_string())?;
        out[i] = rows.0;
    }
    Ok(assemble(out))
}

/// From a PostgreSQL warehouse (blocking: call it off the async runtime).
pub fn postgres_facts(info: &ConnInfo, key: &str) -> Result<DatasetFacts, String> {
    let mut client = super::postgres::connect::connect(info).map_err(|e| e.to_string())?;
    let mut out: [Vec<Vec<Option<String>>>; 3] = Default::default();
    for (i, sql) in queries(key, "pg_type", "({})::text").iter().enumerate() {
        let rows = client.query(sql.as_str(), &[]).map_err(|e| e.to_string())?;
        out[i] = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|c| r.get::<_, Option<String>>(c))
                    .collect()
            })
            .collect();
    }
    Ok(assemble(out))
}
