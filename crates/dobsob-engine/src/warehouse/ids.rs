//! Id sets: the source's listing of a dataset's ids collected in a temp table and compared with the
//! table's, to find rows deleted at the source (and late rows) on complete evidence only.

use super::*;

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
pub(super) fn ids_table(key: &str) -> String {
    quote_ident(&format!("_dobsob_ids_{key}"))
}

impl Warehouse {
    /// Starts collecting the source's id set (for deletion detection).
    pub fn begin_ids(&mut self, key: &str) -> Result<(), WarehouseError> {
        self.raw
            .conn
            .execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE {} (id VARCHAR)",
                ids_table(key)
            ))
            .ctx(|| "creating the id set".into())
    }

    /// Adds a page of ids (a one-column CSV with header `:id`) to the id set.
    pub fn append_ids(&mut self, key: &str, path: &Path) -> Result<(), WarehouseError> {
        self.raw.conn
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
        self.raw.conn
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
    pub(super) fn missing_sql(table: &str) -> String {
        let t = quote_ident(table);
        let ids = ids_table(table);
        format!(
            "SELECT id FROM {ids} WHERE id NOT IN \
             (SELECT socrata_id FROM main.{t} WHERE socrata_id IN (SELECT id FROM {ids}))"
        )
    }

    /// How many listed ids `table` lacks.
    pub fn missing_count(&self, table: &str) -> Result<i64, WarehouseError> {
        self.raw
            .conn
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
            .raw
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
        let tx = self.raw.conn.transaction().ctx(|| "BEGIN".into())?;
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
            .raw
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
        self.raw
            .conn
            .execute_batch(&format!("DROP TABLE IF EXISTS {}", ids_table(key)))
            .ctx(|| "dropping the id set".into())
    }
}
