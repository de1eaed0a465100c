//! [`PgWarehouse`] as a [`Target`]: the sync's operations, and the claims of several workers.

use std::path::Path;

use super::*;
use crate::warehouse::{Published, Target};

impl Target for PgWarehouse {
    fn state(&mut self, key: &str) -> Result<Option<SyncState>, WarehouseError> {
        PgWarehouse::state(self, key)
    }
    fn count(&mut self, key: &str) -> Result<i64, WarehouseError> {
        let started = Instant::now();
        let r = self.rows(key);
        self.timings.count_s += started.elapsed().as_secs_f64();
        r
    }
    fn load_count(&mut self, key: &str) -> Result<i64, WarehouseError> {
        self.rows(&load_table(key))
    }
    fn uncastable_count(&mut self, key: &str) -> Result<i64, WarehouseError> {
        self.client
            .query_one(
                "SELECT count(*) FROM dobsob.uncastable WHERE table_name = $1",
                &[&key],
            )
            .map(|r| r.get(0))
            .pg(|| format!("counting uncastable values of {key}"))
    }
    fn profile(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<crate::quality::Profile, WarehouseError> {
        use crate::quality::{profile_sql, read_profile, Cell, Dialect};
        let started = Instant::now();
        let uncastable = Target::uncastable_count(self, key)?;
        let sql = profile_sql(&self.table(key), schema, Dialect::Postgres, quote_ident);
        let row = self
            .client
            .query_one(&sql, &[])
            .pg(|| format!("profiling {key}"))?;
        let r = read_profile(schema, uncastable, |i, want| {
            Ok::<_, postgres::Error>(match want {
                0 => Cell::Int(row.try_get(i)?),
                1 => Cell::Text(row.try_get(i)?),
                _ => Cell::Float(row.try_get(i)?),
            })
        })
        .pg(|| format!("reading the profile of {key}"));
        self.timings.count_s += started.elapsed().as_secs_f64();
        r
    }
    fn begin_full(
        &mut self,
        key: &str,
        schema: &TableSchema,
        fingerprint: &str,
        start: Option<&Watermark>,
    ) -> Result<(), WarehouseError> {
        PgWarehouse::begin_full(self, key, schema, fingerprint, start)
    }
    fn load_pages(
        &mut self,
        key: &str,
        schema: &TableSchema,
        pages: &[PageFile],
        cursor_ids: &[String],
    ) -> Result<(), WarehouseError> {
        PgWarehouse::load_pages(self, key, schema, pages, cursor_ids)
    }
    fn load_stats(&mut self, key: &str) -> Result<(i64, i64), WarehouseError> {
        PgWarehouse::load_stats(self, key)
    }
    fn finish_full(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<Vec<String>, WarehouseError> {
        PgWarehouse::finish_full(self, key, schema)
    }
    fn abort_full(&mut self, key: &str) -> Result<(), WarehouseError> {
        PgWarehouse::abort_full(self, key)
    }
    fn upsert_page(
        &mut self,
        key: &str,
        schema: &TableSchema,
        page: &PageFile,
        watermark: Option<&Watermark>,
    ) -> Result<u64, WarehouseError> {
        PgWarehouse::upsert_page(self, key, schema, page, watermark)
    }
    fn begin_ids(&mut self, key: &str) -> Result<(), WarehouseError> {
        PgWarehouse::begin_ids(self, key)
    }
    fn append_ids(&mut self, key: &str, path: &Path) -> Result<(), WarehouseError> {
        PgWarehouse::append_ids(self, key, path)
    }
    fn diff_ids(&mut self, key: &str) -> Result<IdSetDiff, WarehouseError> {
        PgWarehouse::diff_ids(self, key)
    }
    fn missing_count(&mut self, key: &str) -> Result<i64, WarehouseError> {
        PgWarehouse::missing_count(self, key)
    }
    fn missing_ids(&mut self, key: &str, limit: usize) -> Result<Vec<String>, WarehouseError> {
        PgWarehouse::missing_ids(self, key, limit)
    }
    fn delete_missing(&mut self, key: &str) -> Result<i64, WarehouseError> {
        PgWarehouse::delete_missing(self, key)
    }
    fn forget_ids(&mut self, key: &str, ids: &[String]) -> Result<(), WarehouseError> {
        PgWarehouse::forget_ids(self, key, ids)
    }
    fn end_ids(&mut self, key: &str) -> Result<(), WarehouseError> {
        PgWarehouse::end_ids(self, key)
    }
    fn describe(&mut self, d: &Description) -> Result<(), WarehouseError> {
        PgWarehouse::describe(self, d)
    }
    fn write_dataset_states(&mut self, states: &[DatasetRecord]) -> Result<(), WarehouseError> {
        PgWarehouse::write_dataset_states(self, states)
    }
    /// Nothing to copy: analysts read the live tables on MVCC snapshots. What committed is visible.
    fn publish(&mut self, _target: &Path) -> Result<Published, WarehouseError> {
        Ok(Published {
            bytes: 0,
            seconds: 0.0,
            reflink: false,
        })
    }
    fn claim(&mut self, key: &str) -> Result<Claim, WarehouseError> {
        PgWarehouse::claim(self, key)
    }
    fn release(&mut self, key: &str) -> Result<(), WarehouseError> {
        PgWarehouse::release(self, key)
    }
    fn shared_last_success(&mut self, key: &str) -> Result<Option<String>, WarehouseError> {
        PgWarehouse::shared_last_success(self, key)
    }
    fn record_success(&mut self, key: &str, started: &str, at: &str) -> Result<(), WarehouseError> {
        PgWarehouse::record_success(self, key, started, at)
    }
    fn timings(&self) -> WriterTimings {
        self.timings
    }
    /// Every page committed with its own transaction; the claims end with the connection.
    fn close(&mut self) -> Result<(), WarehouseError> {
        let keys: Vec<String> = self.claimed.iter().cloned().collect();
        for k in keys {
            self.release(&k)?;
        }
        Ok(())
    }
}
