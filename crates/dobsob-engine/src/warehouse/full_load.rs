//! Full loads: a fresh load table filled batch by batch (straight from the CSV when the page check found
//! every cell castable, else the careful way), its cursor committed with each batch, and swapped in for the
//! live table in one transaction only when whole.

use super::*;

/// Records a full load's cursor (parameters: the last :id committed, the dataset); changes one row.
pub(super) const ADVANCE_LOAD_CURSOR: &str =
    "UPDATE dobsob.sync_state SET cursor_id = ?, updated_at = now() WHERE dataset = ? AND phase = 'full'";

pub(super) fn no_full_load(key: &str) -> WarehouseError {
    WarehouseError::State(format!("{key} has no full load in progress"))
}

/// The table a full load fills before the swap.
pub fn load_table(key: &str) -> String {
    format!("{LOAD_PREFIX}{key}")
}

/// What [`load_table`] puts before a dataset's key.
pub(super) const LOAD_PREFIX: &str = "_dobsob_load_";

impl Warehouse {
    /// Drops a load table with what dobsob recorded about it (kept values, schema changes), in the caller's
    /// transaction: a load started afresh or given up must not leave them to be swapped in later.
    pub(super) fn drop_load(conn: &Connection, key: &str) -> Result<(), WarehouseError> {
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
        let tx = self.raw.conn.transaction().ctx(|| "BEGIN".into())?;
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
                        let out_of_memory = matches!(e, WarehouseError::OutOfMemory { .. });
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
    pub(super) fn load_straight(
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
            let tx = self.raw.conn.transaction().ctx(|| "BEGIN".into())?;
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
            raw.execute_with(sql, params).map_err(|e| {
                if e.is_out_of_memory() {
                    WarehouseError::OutOfMemory {
                        context: what.to_string(),
                        message: e.to_string(),
                    }
                } else {
                    WarehouseError::State(format!("{what}: {e}"))
                }
            })
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
    pub(super) fn load_page(
        &mut self,
        key: &str,
        schema: &TableSchema,
        page: &PageFile,
        cursor_id: &str,
    ) -> Result<(), WarehouseError> {
        let load = load_table(key);
        self.stage(page)?;
        let tx = self.raw.conn.transaction().ctx(|| "BEGIN".into())?;
        let types = Self::widen_numbers(&tx, &load, &[page])?;
        Self::insert_page(&tx, &load, schema, page, &types, &mut self.timings)?;
        Self::advance_load_cursor(&tx, key, cursor_id)?;
        commit(tx, &mut self.timings)
    }

    pub(super) fn advance_load_cursor(
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

    /// Swaps a finished full load in for the live table, atomically: a reader sees the old table or the new
    /// one. The watermark becomes the one recorded when the load started.
    pub fn finish_full(&mut self, key: &str, schema: &TableSchema) -> Result<(), WarehouseError> {
        let started = std::time::Instant::now();
        let r = self.swap_in(key, schema);
        self.timings.swap_s += started.elapsed().as_secs_f64();
        r
    }

    pub(super) fn swap_in(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<(), WarehouseError> {
        let load = load_table(key);
        let tx = self.raw.conn.transaction().ctx(|| "BEGIN".into())?;
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

    /// Rows and distinct ids of a full load's table (checked before it is swapped in).
    pub fn load_stats(&self, key: &str) -> Result<(i64, i64), WarehouseError> {
        let l = quote_ident(&load_table(key));
        self.raw
            .conn
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
        let tx = self.raw.conn.transaction().ctx(|| "BEGIN".into())?;
        Self::drop_load(&tx, key)?;
        tx.execute(
            "UPDATE dobsob.sync_state SET cursor_id = NULL, updated_at = now() WHERE dataset = ? AND phase = 'full'",
            params![key],
        )
        .ctx(|| "resetting the full load".into())?;
        tx.commit().ctx(|| "COMMIT".into())
    }
}
