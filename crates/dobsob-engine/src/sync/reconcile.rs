//! After the pages: make the table hold exactly the source's rows. An `:updated_at` cursor never sees a
//! deletion, and a row that became visible late (its `:updated_at` older than rows already passed) can slip
//! behind the overlap window; both show as a count that differs. Then the source's id set is listed and
//! compared with the table: local rows the source lacks are deleted, source rows the table lacks are fetched
//! by id.
//!
//! Deleting is the one step that destroys data, so it happens only on complete evidence: the listing must
//! hold exactly as many distinct ids as the source counted both before and after it, and a deletion larger
//! than the configured limits is refused unless the user confirmed it. A dataset whose counts still differ
//! ends as `drift`, never as ok.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::page::{self, Cursor, Order};
use super::pass::{more_pages, page_record};
use super::{DatasetSync, Progress, SyncError};
use crate::catalog::Dataset;
use crate::ledger::AttemptId;
use crate::soda::PageQuery;
use crate::warehouse::{IdSetDiff, PageFile, TableSchema};

/// Rows fetched by id per request (the ids travel in the URL).
const IDS_PER_REQUEST: usize = 100;

/// A deletion of at most this many rows is never held back by the percentage limit (small tables).
pub const MASS_DELETE_FLOOR: u64 = 100;

/// Limits on what a sync may delete without confirmation.
#[derive(Debug, Clone, Copy)]
pub struct DeleteGuard {
    /// At most this many rows in one sync...
    pub max_rows: u64,
    /// ...and at most this share of the table (percent), unless the deletion is under [`MASS_DELETE_FLOOR`].
    pub max_percent: f64,
    /// `--allow-mass-delete`: the user confirmed.
    pub allow: bool,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            max_rows: 10_000,
            max_percent: 5.0,
            allow: false,
        }
    }
}

impl DeleteGuard {
    /// Why deleting `n` of a table's `rows` rows needs confirmation, if it does.
    pub fn refuses(&self, n: u64, rows: u64) -> Option<String> {
        if self.allow || n == 0 {
            return None;
        }
        let percent = 100.0 * n as f64 / rows.max(1) as f64;
        if n > self.max_rows {
            return Some(format!("more than --max-delete-rows {}", self.max_rows));
        }
        if n > MASS_DELETE_FLOOR && percent > self.max_percent {
            return Some(format!(
                "{percent:.1}% of the table, more than --max-delete-percent {}",
                self.max_percent
            ));
        }
        None
    }
}

/// The counts after reconciliation.
pub(super) struct Reconciled {
    pub local: i64,
    pub source: i64,
    /// Why the table does not equal the source, when it does not.
    pub drift: Option<String>,
}

/// Whether an id listing is complete evidence: every id distinct, as many as the source counted before and
/// after the listing.
pub(super) fn listing_complete(diff: &IdSetDiff, before: u64, after: u64) -> bool {
    diff.listed == diff.distinct && diff.listed as u64 == before && before == after
}

impl DatasetSync {
    pub(super) async fn reconcile(
        &mut self,
        ds: &Dataset,
        schema: &Arc<TableSchema>,
        attempt: AttemptId,
        progress: &mut Progress,
    ) -> Result<Reconciled, SyncError> {
        let key = ds.key.to_string();
        let id = ds.id.as_str();
        let source = self.interruptible(self.client.count(id, None)).await?;
        let k = key.clone();
        let local = self.run.warehouse.call(move |w| w.count(&k)).await?;
        if source as i64 == local {
            return Ok(Reconciled {
                local,
                source: source as i64,
                drift: None,
            });
        }
        tracing::info!(dataset = %key, source, local, "row counts differ: comparing the id sets");
        let listed = self.list_ids(ds, attempt, progress, source, None).await;
        let result = match listed {
            Ok(()) => {
                self.apply_id_diff(ds, schema, attempt, progress, source)
                    .await
            }
            Err(e) => Err(e),
        };
        let k = key.clone();
        self.run.warehouse.call(move |w| w.end_ids(&k)).await?;
        result
    }

    /// Rows that became visible late, with an `:updated_at` behind the overlap window, are invisible to the
    /// cursor, and a deletion in the same interval hides them from the count check. So the ids of rows
    /// changed since `since` (the late window behind the pass's start) are listed, ids only, and rows the
    /// table lacks are fetched by id. Nothing is deleted on this partial listing.
    pub(super) async fn catch_late_rows(
        &mut self,
        ds: &Dataset,
        schema: &Arc<TableSchema>,
        attempt: AttemptId,
        progress: &mut Progress,
        since: &str,
    ) -> Result<(), SyncError> {
        let key = ds.key.to_string();
        let first = PageQuery::id_page_since(None, Some(since), self.run.page_size);
        let expected = self
            .interruptible(
                self.client
                    .count_query(ds.id.as_str(), &PageQuery::count_like(&first)),
            )
            .await?;
        let result = async {
            self.list_ids(ds, attempt, progress, expected, Some(since))
                .await?;
            let k = key.clone();
            let missing = self.run.warehouse.call(move |w| w.missing_count(&k)).await?;
            if missing > 0 {
                tracing::info!(
                    dataset = %key, missing,
                    "rows changed since {since} that the warehouse lacks (late rows): fetching them by id"
                );
                self.fetch_missing(ds, schema, attempt, progress).await?;
            }
            Ok(())
        }
        .await;
        let k = key.clone();
        self.run.warehouse.call(move |w| w.end_ids(&k)).await?;
        result
    }

    /// Lists the source's ids (`$select=:id`, keyset by `:id`; only rows changed since `since` if given)
    /// into the writer's temp table `_dobsob_ids_<key>`. `source` is the number of ids the source counted.
    async fn list_ids(
        &mut self,
        ds: &Dataset,
        attempt: AttemptId,
        progress: &mut Progress,
        source: u64,
        since: Option<&str>,
    ) -> Result<(), SyncError> {
        let key = ds.key.to_string();
        let k = key.clone();
        self.run.warehouse.call(move |w| w.begin_ids(&k)).await?;
        let path = self.page_path(&key, "ids");
        let limit = self.run.page_size;
        let mut cursor: Option<String> = None;
        let mut prev: HashMap<String, String> = HashMap::new();
        let (mut listed, mut capped, mut seq) = (0u64, false, 0u64);
        loop {
            if self.run.shutdown.is_triggered() {
                return Err(SyncError::Interrupted);
            }
            seq += 1;
            let q = PageQuery::id_page_since(cursor.as_deref(), since, limit);
            let dl = self
                .interruptible(self.client.download_csv(ds.id.as_str(), &q, &path))
                .await?;
            progress.bytes += dl.bytes;
            self.ledger.add_bytes(attempt, dl.bytes as i64)?;
            let ids = page::inspect_ids(&path).map_err(|message| SyncError::Page {
                page: seq,
                url: dl.url.clone(),
                message,
            })?;
            // The same checks as a row page: past the cursor, nothing of the page before.
            let info = page::PageInfo {
                rows: ids.rows,
                first: ids.first.clone().map(|id| crate::soda::Watermark {
                    updated_at: String::new(),
                    id,
                }),
                keys: ids.ids.iter().map(|i| (i.clone(), String::new())).collect(),
                ..page::PageInfo::default()
            };
            let c = match &cursor {
                Some(id) => Cursor::After(crate::soda::Watermark {
                    updated_at: String::new(),
                    id: id.clone(),
                }),
                None => Cursor::Start,
            };
            page::check_step(Order::Id, &c, &info, &prev).map_err(|message| SyncError::Paging {
                page: seq,
                message: format!("id listing: {message}"),
            })?;
            if ids.rows > 0 {
                let (k, p) = (key.clone(), path.clone());
                self.run
                    .warehouse
                    .call(move |w| w.append_ids(&k, &p))
                    .await?;
            }
            listed += ids.rows;
            if listed > source.saturating_mul(3) + 10 * limit {
                return Err(SyncError::Paging {
                    page: seq,
                    message: format!(
                        "id listing: {listed} ids received where the source counted {source} (is the portal \
                         ignoring $where?)"
                    ),
                });
            }
            let was_capped = capped;
            if !more_pages(ids.rows, limit, listed, Some(source), &mut capped) {
                break;
            }
            if capped && !was_capped {
                progress.warn(
                    &key,
                    format!(
                        "the portal returned {} ids where {limit} were asked and more are due: it caps $limit; \
                         listing on until an empty page",
                        ids.rows
                    ),
                );
            }
            prev = info.keys;
            cursor = ids.last;
        }
        Ok(())
    }

    /// With the id set listed: delete what the source lacks (on complete evidence, within the limits),
    /// fetch what the table lacks, and say whether the table now equals the source.
    async fn apply_id_diff(
        &mut self,
        ds: &Dataset,
        schema: &Arc<TableSchema>,
        attempt: AttemptId,
        progress: &mut Progress,
        before: u64,
    ) -> Result<Reconciled, SyncError> {
        let key = ds.key.to_string();
        let after = self
            .interruptible(self.client.count(ds.id.as_str(), None))
            .await?;
        let k = key.clone();
        let diff = self.run.warehouse.call(move |w| w.diff_ids(&k)).await?;
        let k = key.clone();
        let rows = self.run.warehouse.call(move |w| w.count(&k)).await? as u64;
        if !listing_complete(&diff, before, after) {
            let why = format!(
                "the id listing is not complete evidence ({} ids listed, {} distinct; the source counted {before} \
                 before and {after} after): nothing deleted",
                diff.listed, diff.distinct
            );
            progress.warn(&key, why.clone());
            let k = key.clone();
            let local = self.run.warehouse.call(move |w| w.count(&k)).await?;
            return Ok(Reconciled {
                local,
                source: after as i64,
                drift: Some(why),
            });
        }
        let extra = diff.extra_local.max(0) as u64;
        if let Some(why) = self.run.deletes.refuses(extra, rows) {
            return Err(SyncError::MassDelete {
                would_delete: extra,
                rows,
                why,
            });
        }
        if extra > 0 {
            let k = key.clone();
            let deleted = self
                .run
                .warehouse
                .call(move |w| w.delete_missing(&k))
                .await?;
            progress.rows_deleted += deleted as u64;
            tracing::info!(dataset = %key, deleted, "deleted rows the source no longer has");
        }
        if diff.missing_local > 0 {
            tracing::info!(
                dataset = %key, missing = diff.missing_local,
                "the source has rows the warehouse lacks (late rows): fetching them by id"
            );
            self.fetch_missing(ds, schema, attempt, progress).await?;
        }
        let k = key.clone();
        let local = self.run.warehouse.call(move |w| w.count(&k)).await?;
        let drift = (local != after as i64).then(|| {
            format!(
                "the warehouse has {local} rows, the source {after}, after the id check (the source changed \
                 during the sync?)"
            )
        });
        Ok(Reconciled {
            local,
            source: after as i64,
            drift,
        })
    }

    /// Fetches, by id, the listed rows the table lacks, and upserts them without moving the watermark.
    async fn fetch_missing(
        &mut self,
        ds: &Dataset,
        schema: &Arc<TableSchema>,
        attempt: AttemptId,
        progress: &mut Progress,
    ) -> Result<(), SyncError> {
        let key = ds.key.to_string();
        loop {
            if self.run.shutdown.is_triggered() {
                return Err(SyncError::Interrupted);
            }
            let k = key.clone();
            let ids = self
                .run
                .warehouse
                .call(move |w| w.missing_ids(&k, IDS_PER_REQUEST))
                .await?;
            if ids.is_empty() {
                return Ok(());
            }
            let wanted: HashSet<&String> = ids.iter().collect();
            let fetched = self
                .fetcher()
                .fetch_rows(
                    ds,
                    &PageQuery::rows_with_ids(&ids),
                    schema,
                    0,
                    progress.pages + 1,
                )
                .await?;
            if let Some(stray) = fetched.info.keys.keys().find(|id| !wanted.contains(id)) {
                return Err(SyncError::Paging {
                    page: progress.pages + 1,
                    message: format!(
                        "asked for rows by id, the portal sent :id {stray} that was not asked for"
                    ),
                });
            }
            progress.rows_fetched += fetched.info.rows;
            progress.pages += 1;
            progress.bytes += fetched.dl.bytes;
            Self::note_columns(ds, progress, &fetched.info);
            // Ids the source no longer returns (deleted since the listing) leave the id set, so the loop ends.
            let gone: Vec<String> = ids
                .iter()
                .filter(|id| !fetched.info.keys.contains_key(*id))
                .cloned()
                .collect();
            let rows_in_page = fetched.info.rows;
            let (k, s, p, h, w, x) = (
                key.clone(),
                schema.clone(),
                fetched.path.clone(),
                fetched.info.header.clone(),
                fetched.info.number_shapes.clone(),
                fetched.info.exponent_numbers.clone(),
            );
            let rows = self
                .run
                .warehouse
                .call(move |wh| {
                    if !gone.is_empty() {
                        wh.forget_ids(&k, &gone)?;
                    }
                    let replaced = if rows_in_page > 0 {
                        let page = PageFile {
                            path: &p,
                            header: &h,
                            number_shapes: &w,
                            exponent_numbers: &x,
                            castable: false,
                        };
                        wh.upsert_page(&k, &s, &page, None)?
                    } else {
                        0
                    };
                    Ok((replaced, wh.count(&k)?))
                })
                .await?;
            let (replaced, rows) = rows;
            progress.count_merged(rows_in_page, Some(replaced));
            self.ledger.record_page(
                attempt,
                &key,
                &page_record(progress.pages, &fetched),
                None,
                rows,
            )?;
            self.observe(ds, progress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mass_deletes_need_confirmation() {
        let g = DeleteGuard::default();
        assert_eq!(g.refuses(0, 1000), None);
        // Small deletions from small tables pass whatever their share.
        assert_eq!(g.refuses(30, 40), None);
        // Past the floor, the share counts.
        assert!(g.refuses(101, 1000).unwrap().contains("10.1%"));
        assert_eq!(g.refuses(101, 1_000_000), None);
        assert!(g
            .refuses(10_001, 100_000_000)
            .unwrap()
            .contains("--max-delete-rows"));
        let allow = DeleteGuard { allow: true, ..g };
        assert_eq!(allow.refuses(1_000_000, 1_000_000), None);
    }

    #[test]
    fn only_a_whole_listing_is_evidence() {
        let d = |listed, distinct| IdSetDiff {
            listed,
            distinct,
            extra_local: 0,
            missing_local: 0,
        };
        assert!(listing_complete(&d(10, 10), 10, 10));
        // Short (capped, cut) listings, repeated ids, a count that moved or lags.
        assert!(!listing_complete(&d(7, 7), 10, 10));
        assert!(!listing_complete(&d(10, 9), 10, 10));
        assert!(!listing_complete(&d(10, 10), 10, 11));
        assert!(!listing_complete(&d(10, 10), 9, 9));
    }
}
