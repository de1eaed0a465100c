//! The seam between the sync and a warehouse: [`Target`], what `sync/` and the orchestrator ask of the
//! warehouse, by operation, and nothing else. The DuckDB file ([`Warehouse`]) implements it; a second target
//! (PostgreSQL) plugs in behind it without touching `sync/`. Every method runs on the one writer thread
//! ([`super::WarehouseHandle`]), so a target need not be `Sync`.

use std::path::Path;

pub use super::postgres::Claim;
use super::*;
use crate::ledger::DatasetRecord;

/// A warehouse the sync writes to. Each method's contract is the one the consistency rules rest on
/// (docs/architecture.md): a page's rows and the dataset's sync state commit together; a full load is
/// invisible until [`Target::finish_full`] swaps it in whole; deletions come only from a complete id
/// listing.
pub trait Target: Send {
    // The committed state.

    /// The dataset's sync state as committed with its rows (`None`: never loaded).
    fn state(&mut self, key: &str) -> Result<Option<SyncState>, WarehouseError>;
    /// Rows in the dataset's table.
    fn count(&mut self, key: &str) -> Result<i64, WarehouseError>;
    /// Rows in the dataset's full load so far (not yet swapped in).
    fn load_count(&mut self, key: &str) -> Result<i64, WarehouseError>;
    /// Values of the dataset's table kept verbatim because they did not fit their column's type.
    fn uncastable_count(&mut self, key: &str) -> Result<i64, WarehouseError>;
    /// The data-quality profile of the dataset's table ([`crate::quality`]): one pass of aggregates.
    fn profile(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<crate::quality::Profile, WarehouseError>;

    // Full loads.

    /// Starts a full load into a fresh, empty load table; `start` is where the incremental pass begins once
    /// the load is swapped in.
    fn begin_full(
        &mut self,
        key: &str,
        schema: &TableSchema,
        fingerprint: &str,
        start: Option<&Watermark>,
    ) -> Result<(), WarehouseError>;
    /// Appends a batch of checked pages to the load table and records `cursor_ids`' last as the load's
    /// cursor, together.
    fn load_pages(
        &mut self,
        key: &str,
        schema: &TableSchema,
        pages: &[PageFile],
        cursor_ids: &[String],
    ) -> Result<(), WarehouseError>;
    /// The load table's rows and distinct ids.
    fn load_stats(&mut self, key: &str) -> Result<(i64, i64), WarehouseError>;
    /// Swaps the whole load in for the live table, in one transaction; returns what the dataset's report
    /// should say of it (e.g. that the swap waited for readers).
    fn finish_full(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<Vec<String>, WarehouseError>;
    /// Drops a load that failed its checks; the live table stays.
    fn abort_full(&mut self, key: &str) -> Result<(), WarehouseError>;

    // Incremental pages.

    /// Replaces the page's rows by id and records `watermark`, together; returns the rows it replaced.
    fn upsert_page(
        &mut self,
        key: &str,
        schema: &TableSchema,
        page: &PageFile,
        watermark: Option<&Watermark>,
    ) -> Result<u64, WarehouseError>;

    // Id sets.

    /// Starts collecting the source's id listing for the dataset.
    fn begin_ids(&mut self, key: &str) -> Result<(), WarehouseError>;
    /// Adds a page of the listing (a CSV of ids on disk).
    fn append_ids(&mut self, key: &str, path: &Path) -> Result<(), WarehouseError>;
    /// The listing against the table.
    fn diff_ids(&mut self, key: &str) -> Result<IdSetDiff, WarehouseError>;
    /// Listed ids the table lacks: how many, and some of them.
    fn missing_count(&mut self, key: &str) -> Result<i64, WarehouseError>;
    fn missing_ids(&mut self, key: &str, limit: usize) -> Result<Vec<String>, WarehouseError>;
    /// Deletes the table's rows the listing lacks; returns how many.
    fn delete_missing(&mut self, key: &str) -> Result<i64, WarehouseError>;
    /// Takes ids out of the listing (rows fetched since, or gone).
    fn forget_ids(&mut self, key: &str, ids: &[String]) -> Result<(), WarehouseError>;
    /// Drops the listing.
    fn end_ids(&mut self, key: &str) -> Result<(), WarehouseError>;

    // What analysts see.

    /// The dataset's description: table and column comments, its row of `dobsob_datasets`.
    fn describe(&mut self, d: &Description) -> Result<(), WarehouseError>;
    /// The ledger's facts per dataset, for `dobsob_datasets`.
    fn write_dataset_states(&mut self, states: &[DatasetRecord]) -> Result<(), WarehouseError>;
    /// Makes what committed visible to analysts at `target` (the DuckDB file: a snapshot copied there).
    fn publish(&mut self, target: &Path) -> Result<Published, WarehouseError>;

    // Several workers (a shared warehouse); a warehouse only one process writes grants every claim.

    /// Claims `key` for this process until [`Target::release`]: another worker holding it is a
    /// [`Claim::Held`], and the dataset is skipped.
    fn claim(&mut self, _key: &str) -> Result<Claim, WarehouseError> {
        Ok(Claim::Granted)
    }
    fn release(&mut self, _key: &str) -> Result<(), WarehouseError> {
        Ok(())
    }
    /// The dataset's last success as every worker recorded it (RFC 3339), for `--schedule-check`.
    fn shared_last_success(&mut self, _key: &str) -> Result<Option<String>, WarehouseError> {
        Ok(None)
    }
    /// Records a success of `key`, whose attempt started at `started`, at `at` (RFC 3339) where other
    /// workers see it at once.
    fn record_success(
        &mut self,
        _key: &str,
        _started: &str,
        _at: &str,
    ) -> Result<(), WarehouseError> {
        Ok(())
    }

    // The run.

    /// Busy seconds of the writer's steps so far.
    fn timings(&self) -> WriterTimings;
    /// Called once when the writer ends: make everything durable (DuckDB: a checkpoint).
    fn close(&mut self) -> Result<(), WarehouseError>;
}

impl Target for Warehouse {
    fn state(&mut self, key: &str) -> Result<Option<SyncState>, WarehouseError> {
        Warehouse::state(self, key)
    }
    fn count(&mut self, key: &str) -> Result<i64, WarehouseError> {
        Warehouse::count(self, key)
    }
    fn load_count(&mut self, key: &str) -> Result<i64, WarehouseError> {
        Warehouse::count(self, &load_table(key))
    }
    fn uncastable_count(&mut self, key: &str) -> Result<i64, WarehouseError> {
        Warehouse::uncastable_count(self, key)
    }
    fn profile(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<crate::quality::Profile, WarehouseError> {
        Warehouse::profile(self, key, schema)
    }
    fn begin_full(
        &mut self,
        key: &str,
        schema: &TableSchema,
        fingerprint: &str,
        start: Option<&Watermark>,
    ) -> Result<(), WarehouseError> {
        Warehouse::begin_full(self, key, schema, fingerprint, start)
    }
    fn load_pages(
        &mut self,
        key: &str,
        schema: &TableSchema,
        pages: &[PageFile],
        cursor_ids: &[String],
    ) -> Result<(), WarehouseError> {
        Warehouse::load_pages(self, key, schema, pages, cursor_ids)
    }
    fn load_stats(&mut self, key: &str) -> Result<(i64, i64), WarehouseError> {
        Warehouse::load_stats(self, key)
    }
    fn finish_full(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<Vec<String>, WarehouseError> {
        Warehouse::finish_full(self, key, schema).map(|()| Vec::new())
    }
    fn abort_full(&mut self, key: &str) -> Result<(), WarehouseError> {
        Warehouse::abort_full(self, key)
    }
    fn upsert_page(
        &mut self,
        key: &str,
        schema: &TableSchema,
        page: &PageFile,
        watermark: Option<&Watermark>,
    ) -> Result<u64, WarehouseError> {
        Warehouse::upsert_page(self, key, schema, page, watermark)
    }
    fn begin_ids(&mut self, key: &str) -> Result<(), WarehouseError> {
        Warehouse::begin_ids(self, key)
    }
    fn append_ids(&mut self, key: &str, path: &Path) -> Result<(), WarehouseError> {
        Warehouse::append_ids(self, key, path)
    }
    fn diff_ids(&mut self, key: &str) -> Result<IdSetDiff, WarehouseError> {
        Warehouse::diff_ids(self, key)
    }
    fn missing_count(&mut self, key: &str) -> Result<i64, WarehouseError> {
        Warehouse::missing_count(self, key)
    }
    fn missing_ids(&mut self, key: &str, limit: usize) -> Result<Vec<String>, WarehouseError> {
        Warehouse::missing_ids(self, key, limit)
    }
    fn delete_missing(&mut self, key: &str) -> Result<i64, WarehouseError> {
        Warehouse::delete_missing(self, key)
    }
    fn forget_ids(&mut self, key: &str, ids: &[String]) -> Result<(), WarehouseError> {
        Warehouse::forget_ids(self, key, ids)
    }
    fn end_ids(&mut self, key: &str) -> Result<(), WarehouseError> {
        Warehouse::end_ids(self, key)
    }
    fn describe(&mut self, d: &Description) -> Result<(), WarehouseError> {
        Warehouse::describe(self, d)
    }
    fn write_dataset_states(&mut self, states: &[DatasetRecord]) -> Result<(), WarehouseError> {
        Warehouse::write_dataset_states(self, states)
    }
    fn publish(&mut self, target: &Path) -> Result<Published, WarehouseError> {
        Warehouse::publish(self, target)
    }
    fn timings(&self) -> WriterTimings {
        self.timings
    }
    fn close(&mut self) -> Result<(), WarehouseError> {
        self.checkpoint()
    }
}
