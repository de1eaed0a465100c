//! One keyset pass over a dataset: fetch a page, check it, merge it, record it, and ask for the next, the
//! download of page N+1 overlapping the merge of page N.
//!
//! When a pass ends is the portal's most dangerous answer to misread. A page shorter than asked is not the
//! end: deployments and proxies cap `$limit` silently. A pass ends on an empty page, or on a short page once
//! the rows received reach the count the source gave for the pass. Every page must move past the cursor and
//! repeat nothing of the page before ([`page::check_step`]), and a pass that receives far more rows than the
//! source said it has stops: a portal that ignores `$where` fails the dataset instead of looping.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::Digest;

use super::page::{self, Cursor, Order, PageInfo};
use super::{Engine, Progress, SyncError};
use crate::catalog::Dataset;
use crate::ledger::{AttemptId, PageRecord};
use crate::soda::{PageQuery, Watermark};
use crate::warehouse::{PageFile, TableSchema};

/// Two page files: one being merged while the next downloads.
pub(super) const PAGE_SLOTS: [&str; 2] = ["page0", "page1"];

/// A page on disk, checked.
pub(super) struct Fetched {
    pub path: PathBuf,
    pub info: PageInfo,
    pub dl: crate::soda::Download,
    /// Seconds spent downloading (with the hash, computed on the fly) and checking the page.
    pub download_s: f64,
    pub check_s: f64,
}

/// The kinds of keyset pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// `$order=:id` into the load table.
    Full,
    /// `$order=:updated_at,:id` upserted into the live table, advancing the watermark.
    Incremental,
}

impl Pass {
    fn order(self) -> Order {
        match self {
            Pass::Full => Order::Id,
            Pass::Incremental => Order::UpdatedAt,
        }
    }

    /// The request for the page after `cursor`.
    pub fn query(self, cursor: &Cursor, limit: u64) -> PageQuery {
        match (self, cursor) {
            (Pass::Full, Cursor::After(w)) => PageQuery::full_page(Some(&w.id), limit),
            (Pass::Full, _) => PageQuery::full_page(None, limit),
            (Pass::Incremental, Cursor::After(w)) => PageQuery::incremental_page(Some(w), limit),
            (Pass::Incremental, Cursor::From(t)) => PageQuery::incremental_from(t, limit),
            (Pass::Incremental, Cursor::Start) => PageQuery::incremental_page(None, limit),
        }
    }
}

impl Progress {
    fn add_page(&mut self, f: &Fetched) {
        self.pages += 1;
        self.bytes += f.dl.bytes;
        self.rows_fetched += f.info.rows;
        self.pass_received += f.info.rows;
        self.timings.download_s += f.download_s;
        self.timings.check_s += f.check_s;
        self.digest.update(f.dl.sha256.as_bytes());
    }

    /// Counts a merged page's rows as inserted or updated (`replaced`: None for a page of a full load).
    pub(super) fn count_merged(&mut self, rows: u64, replaced: Option<u64>) {
        let replaced = replaced.unwrap_or(0).min(rows);
        self.rows_updated += replaced;
        self.rows_inserted += rows - replaced;
    }

    /// Records a warning once (the same message from every page of a pass is one warning).
    pub(super) fn warn(&mut self, dataset: &str, message: String) {
        if !self.warnings.contains(&message) {
            tracing::warn!(dataset, "{message}");
            self.warnings.push(message);
        }
    }
}

/// Whether paging goes on after a page of `rows` rows, `received` in all, when `expected` rows were
/// announced by the source's count. Once a page came back short while more were due (`capped`), only an
/// empty page ends the pass.
pub(super) fn more_pages(
    rows: u64,
    limit: u64,
    received: u64,
    expected: Option<u64>,
    capped: &mut bool,
) -> bool {
    if rows == 0 {
        return false;
    }
    if rows >= limit || *capped {
        return true;
    }
    match expected {
        Some(e) if received < e => {
            *capped = true;
            true
        }
        _ => false,
    }
}

impl Engine {
    pub(super) fn page_path(&self, key: &str, what: &str) -> PathBuf {
        self.tmp_dir.join(format!("{key}.{what}.csv"))
    }

    /// Downloads page number `page` of a pass into page file `slot` and checks it.
    pub(super) async fn fetch_rows(
        &self,
        ds: &Dataset,
        q: &PageQuery,
        schema: &Arc<TableSchema>,
        slot: usize,
        page: u64,
    ) -> Result<Fetched, SyncError> {
        let path = self.page_path(ds.key.as_str(), PAGE_SLOTS[slot]);
        let started = std::time::Instant::now();
        let dl = self
            .interruptible(self.client.download_csv(ds.id.as_str(), q, &path))
            .await
            .map_err(|e| match e {
                // An answer that is not CSV at all is a bad page too: say which.
                SyncError::Soda(crate::soda::SodaError::BadResponse { url, message }) => {
                    SyncError::Page { page, url, message }
                }
                other => other,
            })?;
        let download_s = started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        // Parsing a page is CPU work: keep it off the runtime's workers.
        let (p, s) = (path.clone(), schema.clone());
        let checked = tokio::task::spawn_blocking(move || page::inspect_rows(&p, &s))
            .await
            .unwrap_or_else(|e| Err(format!("the page check panicked: {e}")));
        let info = checked.map_err(|message| SyncError::Page {
            page,
            url: dl.url.clone(),
            message,
        })?;
        tracing::debug!(dataset = %ds.key, rows = info.rows, bytes = dl.bytes, "page fetched");
        Ok(Fetched {
            path,
            info,
            dl,
            download_s,
            check_s: started.elapsed().as_secs_f64(),
        })
    }

    /// Reports what a page says about the metadata: fields it has that the metadata lacks (not stored), and
    /// metadata columns it lacks (NULL in every row).
    pub(super) fn note_columns(ds: &Dataset, progress: &mut Progress, info: &PageInfo) {
        if !info.unknown_columns.is_empty() {
            progress.warn(
                ds.key.as_str(),
                format!(
                    "the portal sent fields its metadata does not list, not stored: {}",
                    info.unknown_columns.join(", ")
                ),
            );
        }
        if !info.missing_columns.is_empty() && info.rows > 0 {
            progress.warn(
                ds.key.as_str(),
                format!(
                    "the metadata lists columns the portal did not send, stored as NULL: {}",
                    info.missing_columns.join(", ")
                ),
            );
        }
    }

    /// Pages through a pass from `cursor`, merging each page. `expected` is the number of rows the source
    /// counted for the pass (None: unknown). A page is recorded in the ledger only after its merge
    /// committed. Returns the last row committed (None if the pass was empty).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn pages(
        &mut self,
        ds: &Dataset,
        schema: &Arc<TableSchema>,
        attempt: AttemptId,
        progress: &mut Progress,
        pass: Pass,
        mut cursor: Cursor,
        expected: Option<u64>,
    ) -> Result<Option<Watermark>, SyncError> {
        let key = ds.key.to_string();
        let limit = self.page_size;
        // A pass that receives this many rows is not converging (rows do change during a pass and come back,
        // but not without end).
        let runaway = expected.map(|e| e.saturating_mul(3) + 10 * limit);
        let (mut received, mut capped, mut seq) = (0u64, false, 0u64);
        let mut prev: HashMap<String, String> = HashMap::new();
        let mut last_committed = None;
        let mut slot = 0;
        progress.pass_expected = expected;
        progress.pass_received = 0;
        let mut fetched = self
            .fetch_rows(ds, &pass.query(&cursor, limit), schema, slot, 1)
            .await?;
        loop {
            seq += 1;
            page::check_step(pass.order(), &cursor, &fetched.info, &prev)
                .map_err(|message| SyncError::Paging { page: seq, message })?;
            progress.add_page(&fetched);
            Self::note_columns(ds, progress, &fetched.info);
            let Some(last) = fetched.info.last.clone() else {
                break;
            };
            received += fetched.info.rows;
            if runaway.is_some_and(|r| received > r) {
                return Err(SyncError::Paging {
                    page: seq,
                    message: format!(
                        "{received} rows received where the source counted {}: the portal keeps returning rows \
                         (is it ignoring $where?)",
                        expected.unwrap_or(0)
                    ),
                });
            }
            let was_capped = capped;
            let more = more_pages(fetched.info.rows, limit, received, expected, &mut capped);
            if capped && !was_capped {
                progress.warn(
                    &key,
                    format!(
                        "the portal returned {} rows where {limit} were asked and more are due ({received} of {}): \
                         it caps $limit; paging on until an empty page",
                        fetched.info.rows,
                        expected.unwrap_or(0)
                    ),
                );
            }
            let (k, s, p, h, w, l) = (
                key.clone(),
                schema.clone(),
                fetched.path.clone(),
                fetched.info.header.clone(),
                fetched.info.wide_decimals.clone(),
                last.clone(),
            );
            let castable = fetched.info.castable;
            let merge = self.warehouse.call(move |wh| {
                let started = std::time::Instant::now();
                let page = PageFile {
                    path: &p,
                    header: &h,
                    wide_decimals: &w,
                    castable,
                };
                let (replaced, rows) = match pass {
                    Pass::Full => {
                        wh.load_page(&k, &s, &page, &l.id)?;
                        (None, wh.count(&crate::warehouse::load_table(&k))?)
                    }
                    Pass::Incremental => {
                        let replaced = wh.upsert_page(&k, &s, &page, Some(&l))?;
                        (Some(replaced), wh.count(&k)?)
                    }
                };
                Ok((replaced, rows, started.elapsed().as_secs_f64()))
            });
            let next_cursor = Cursor::After(last.clone());
            let next_q = pass.query(&next_cursor, limit);
            let next = async {
                if more && !self.shutdown.is_triggered() {
                    Some(
                        self.fetch_rows(ds, &next_q, schema, 1 - slot, seq + 1)
                            .await,
                    )
                } else {
                    None
                }
            };
            let (merged, next) = tokio::join!(merge, next);
            let (replaced, rows, merge_s) = merged?;
            progress.timings.merge_s += merge_s;
            progress.count_merged(fetched.info.rows, replaced);
            let wm = (pass == Pass::Incremental).then_some(&last);
            self.ledger.record_page(
                attempt,
                &key,
                &page_record(progress.pages, &fetched),
                wm,
                rows,
            )?;
            last_committed = Some(last);
            self.observe(ds, progress);
            cursor = next_cursor;
            match next {
                Some(n) => {
                    prev = std::mem::take(&mut fetched.info.keys);
                    fetched = n?;
                }
                None if self.shutdown.is_triggered() => return Err(SyncError::Interrupted),
                None => break,
            }
            slot = 1 - slot;
        }
        Ok(last_committed)
    }
}

pub(super) fn page_record(seq: u64, f: &Fetched) -> PageRecord {
    PageRecord {
        seq: seq as i64,
        rows: f.info.rows as i64,
        bytes: f.dl.bytes as i64,
        sha256: f.dl.sha256.clone(),
        first: f.info.first.clone(),
        last: f.info.last.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_page_ends_a_pass_only_when_the_count_is_reached() {
        let mut capped = false;
        // Full pages go on; an empty page ends.
        assert!(more_pages(10, 10, 10, Some(25), &mut capped));
        assert!(!more_pages(0, 10, 10, Some(25), &mut capped));
        // Short with the count reached: the end.
        assert!(!more_pages(5, 10, 25, Some(25), &mut capped));
        assert!(!capped);
        // Short while more are due: a capped $limit; from then on only an empty page ends.
        assert!(more_pages(7, 10, 7, Some(25), &mut capped));
        assert!(capped);
        assert!(more_pages(7, 10, 28, Some(25), &mut capped));
        assert!(!more_pages(0, 10, 28, Some(25), &mut capped));
        // No count: a short page ends.
        let mut c = false;
        assert!(!more_pages(3, 10, 3, None, &mut c));
    }
}
