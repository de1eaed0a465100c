//! Incremental pages: each replaces the rows it carries by `socrata_id` (delete and insert in one
//! transaction, with the watermark), no primary key needed (see `../shared/DUCKDB.md`).

use super::*;

impl Warehouse {
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
        let tx = self.raw.conn.transaction().ctx(|| "BEGIN".into())?;
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
}
