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
use super::{DatasetSync, Progress, SyncError};
use crate::catalog::Dataset;
use crate::ledger::{AttemptId, PageRecord};
use crate::soda::{PageQuery, Watermark};
use crate::warehouse::{PageFile, TableSchema};

/// A full load commits pages in batches of at least this many rows (DuckDB's row group), or
/// [`MAX_BATCH_PAGES`], with pages of a size that divides it ([`full_page_size`]): each commit then hands
/// DuckDB whole row groups, compressed and written once. A commit per 50,000-row page made each commit's
/// checkpoint rewrite the table's last, growing row group; batches that are not whole row groups leave a
/// partial one per commit, which the next checkpoint merges and rewrites (docs/performance.md).
pub(super) const BATCH_ROWS: u64 = 122_880;
pub(super) const MAX_BATCH_PAGES: usize = 16;

/// Full-load pages smaller than this are neither aligned nor batched (15 of them make a row group).
const SMALLEST_BATCHED_PAGE: u64 = 8_192;

/// The `$limit` of a full load's pages for `--page-size` `page_size`: the largest size not above it that
/// divides [`BATCH_ROWS`] (or a multiple of it), so that batches are whole row groups. 50,000 gives 40,960
/// (three pages a row group), 100,000 gives 61,440. Sizes under [`SMALLEST_BATCHED_PAGE`] (8,192) are kept
/// as they are, and such pages are committed one by one ([`batch_full`]): the loads are small, and a kill
/// loses at most a page.
pub fn full_page_size(page_size: u64) -> u64 {
    if page_size < SMALLEST_BATCHED_PAGE {
        return page_size;
    }
    if page_size >= BATCH_ROWS {
        return page_size / BATCH_ROWS * BATCH_ROWS;
    }
    (1..=MAX_BATCH_PAGES as u64)
        .filter(|k| BATCH_ROWS.is_multiple_of(*k))
        .map(|k| BATCH_ROWS / k)
        .filter(|size| *size <= page_size)
        .max()
        .unwrap_or(page_size)
}

/// Whether a batch of `pages` pages and `rows` rows, asked `limit` at a time, is merged now: an
/// incremental pass merges each page, a full load whole row groups, and pages smaller than
/// [`full_page_size`] aligns (small loads) one by one.
fn batch_full(pass: Pass, limit: u64, rows: u64, pages: usize) -> bool {
    match pass {
        Pass::Incremental => true,
        Pass::Full if limit < SMALLEST_BATCHED_PAGE => true,
        Pass::Full => rows >= BATCH_ROWS || pages >= MAX_BATCH_PAGES,
    }
}

/// Whether a full load's batch of `pages` pages and `rows` rows, asked `limit` at a time, is committed now
/// (the benchmark replays a full load's batches with it).
pub fn full_batch_ready(limit: u64, rows: u64, pages: usize) -> bool {
    batch_full(Pass::Full, limit, rows, pages)
}

/// Page files (`page0` ...): a batch being merged while the pages of the next one download. On disk at
/// most two batches' worth, about two row groups of CSV (some 300 MB at 46 columns).
pub(super) const PAGE_SLOTS: usize = 2 * MAX_BATCH_PAGES;

pub(super) fn page_slot(slot: usize) -> String {
    format!("page{slot}")
}

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
        self.timings.hash_s += f.dl.hash_s;
        self.timings.check_s += f.check_s;
        self.digest.update(f.dl.sha256.as_bytes());
    }

    /// Counts a merged page's rows as inserted or updated (`replaced`: None for a page of a full load).
    pub(super) fn count_merged(&mut self, rows: u64, replaced: Option<u64>) {
        let replaced = replaced.unwrap_or(0).min(rows);
        self.rows_updated += replaced;
        self.rows_inserted += rows - replaced;
    }

    /// Takes the job's request and retry counts so far from its client ([`crate::soda::SodaClient::for_job`]).
    pub(super) fn count_requests(&mut self, client: &crate::soda::SodaClient) {
        self.requests = client.job_stats().requests();
        self.retries = client.job_stats().retries();
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

/// What a page download needs of the engine: borrowed apart from its ledger.
pub(super) struct Fetcher<'e> {
    client: &'e crate::soda::SodaClient,
    shutdown: &'e super::Shutdown,
    tmp_dir: &'e std::path::Path,
    checks: &'e tokio::sync::Semaphore,
}

impl Fetcher<'_> {
    async fn interruptible<T, E>(
        &self,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, SyncError>
    where
        SyncError: From<E>,
    {
        super::shutdown::until_shutdown(self.shutdown, fut).await
    }

    /// Downloads page number `page` of a pass into page file `slot` and checks it.
    /// Borrows only the client, the shutdown and the page directory, so that the ledger can record a
    /// finished merge while a download is under way.
    pub(super) async fn fetch_rows(
        &self,
        ds: &Dataset,
        q: &PageQuery,
        schema: &Arc<TableSchema>,
        slot: usize,
        page: u64,
    ) -> Result<Fetched, SyncError> {
        let path = page_path(self.tmp_dir, ds.key.as_str(), &page_slot(slot));
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
        // Parsing a page is CPU work: keep it off the runtime's workers, at most --cpu-threads at once.
        let (p, s) = (path.clone(), schema.clone());
        let permit = self
            .interruptible(async {
                self.checks
                    .acquire()
                    .await
                    .map_err(|_| SyncError::Interrupted)
            })
            .await?;
        let checked = tokio::task::spawn_blocking(move || page::inspect_rows(&p, &s))
            .await
            .unwrap_or_else(|e| Err(format!("the page check panicked: {e}")));
        drop(permit);
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
}

pub(super) fn page_path(tmp_dir: &std::path::Path, key: &str, what: &str) -> PathBuf {
    tmp_dir.join(format!("{key}.{what}.csv"))
}

impl DatasetSync {
    pub(super) fn page_path(&self, key: &str, what: &str) -> PathBuf {
        page_path(&self.run.tmp_dir, key, what)
    }

    /// The page downloader, borrowing the client, the shutdown and the page directory.
    pub(super) fn fetcher(&self) -> Fetcher<'_> {
        Fetcher {
            client: &self.client,
            shutdown: &self.run.shutdown,
            tmp_dir: &self.run.tmp_dir,
            checks: &self.run.checks,
        }
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

    /// Pages through a pass from `cursor`, merging the pages as they come: one by one for an incremental
    /// pass, in batches of [`BATCH_ROWS`] for a full load, each batch merging on the writer while the pages
    /// of the next one download. `expected` is the number of rows the source counted for the pass (None:
    /// unknown). A page is recorded in the ledger only after its merge committed, and every merge that
    /// committed is recorded, whatever error ends the pass. Returns the last row committed (None if the
    /// pass was empty).
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
        let limit = match pass {
            Pass::Full => full_page_size(self.run.page_size),
            Pass::Incremental => self.run.page_size,
        };
        // A pass that receives this many rows is not converging (rows do change during a pass and come back,
        // but not without end).
        let runaway = expected.map(|e| e.saturating_mul(3) + 10 * limit);
        let (mut received, mut capped, mut seq) = (0u64, false, 0u64);
        let mut prev: HashMap<String, String> = HashMap::new();
        progress.pass_expected = expected;
        progress.pass_received = 0;
        // Checked pages not yet sent to the writer, and the batch the writer is merging.
        let mut batch: Vec<Batched> = Vec::new();
        let mut in_flight: Option<InFlight> = None;
        let mut failure: Option<SyncError> = None;
        let mut stopped = false;
        // Records what the writer merged as it commits; borrows the ledger apart from the client and the
        // page directory, which the download borrows meanwhile.
        let mut recorder = Recorder {
            ledger: &mut self.ledger,
            client: &self.client,
            observer: &*self.run.observer,
            ds,
            attempt,
            last_committed: None,
        };
        let fetcher = Fetcher {
            client: &self.client,
            shutdown: &self.run.shutdown,
            tmp_dir: &self.run.tmp_dir,
            checks: &self.run.checks,
        };
        let mut next = Some(
            fetcher
                .fetch_rows(ds, &pass.query(&cursor, limit), schema, 0, 1)
                .await,
        );
        while let Some(result) = next.take() {
            let mut fetched = match result {
                Ok(f) => f,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            seq += 1;
            if let Err(message) = page::check_step(pass.order(), &cursor, &fetched.info, &prev) {
                failure = Some(SyncError::Paging { page: seq, message });
                break;
            }
            progress.add_page(&fetched);
            Self::note_columns(ds, progress, &fetched.info);
            let Some(last) = fetched.info.last.clone() else {
                break;
            };
            received += fetched.info.rows;
            if runaway.is_some_and(|r| received > r) {
                failure = Some(SyncError::Paging {
                    page: seq,
                    message: format!(
                        "{received} rows received where the source counted {}: the portal keeps returning rows \
                         (is it ignoring $where?)",
                        expected.unwrap_or(0)
                    ),
                });
                break;
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
            cursor = Cursor::After(last.clone());
            prev = std::mem::take(&mut fetched.info.keys);
            batch.push(Batched {
                ledger_seq: progress.pages,
                fetched,
                last,
            });
            stopped = more && self.run.shutdown.is_triggered();
            let end = !more || stopped;
            let rows: u64 = batch.iter().map(|b| b.fetched.info.rows).sum();
            let full = batch_full(pass, limit, rows, batch.len());
            if end || full {
                if let Err(e) = recorder.settle(&mut in_flight, progress).await {
                    failure = Some(e);
                    break;
                }
                in_flight = Some(submit_merge(
                    &self.run.warehouse,
                    &key,
                    schema,
                    pass,
                    std::mem::take(&mut batch),
                ));
            }
            if end {
                break;
            }
            // The next download; the merge in flight is recorded in the ledger as soon as it commits.
            let slot = (seq as usize) % PAGE_SLOTS;
            let q = pass.query(&cursor, limit);
            let fetch = fetcher.fetch_rows(ds, &q, schema, slot, seq + 1);
            tokio::pin!(fetch);
            let fetched = loop {
                let Some(m) = in_flight.as_mut() else {
                    break Some(fetch.as_mut().await);
                };
                tokio::select! {
                    r = fetch.as_mut() => break Some(r),
                    answer = &mut m.answer => {
                        let Some(m) = in_flight.take() else { unreachable!() };
                        let r = recorder.record(progress, m.batch, m.pass, answer);
                        if let Err(e) = r {
                            failure = Some(e);
                            break None;
                        }
                    }
                }
            };
            match fetched {
                Some(r) => next = Some(r),
                None => break,
            }
        }
        // The pass ended on an empty page with checked pages not yet merged.
        if failure.is_none() && !batch.is_empty() {
            match recorder.settle(&mut in_flight, progress).await {
                Ok(()) => {
                    in_flight = Some(submit_merge(
                        &self.run.warehouse,
                        &key,
                        schema,
                        pass,
                        std::mem::take(&mut batch),
                    ))
                }
                Err(e) => failure = Some(e),
            }
        }
        // Whatever ended the pass, what the writer is merging is waited for and recorded.
        match recorder.settle(&mut in_flight, progress).await {
            Err(e) if failure.is_none() => failure = Some(e),
            Err(e) => tracing::warn!(dataset = %key, "{e}"),
            Ok(()) => {}
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if stopped {
            return Err(SyncError::Interrupted);
        }
        Ok(recorder.last_committed)
    }
}

/// Sends a batch of checked pages to the writer: a full load's batch is loaded with
/// [`crate::warehouse::Warehouse::load_pages`], an incremental page upserted. The writer answers with
/// the rows the upsert replaced, the table's count after it, and its busy seconds.
fn submit_merge(
    warehouse: &crate::warehouse::WarehouseHandle,
    key: &str,
    schema: &Arc<TableSchema>,
    pass: Pass,
    batch: Vec<Batched>,
) -> InFlight {
    let files: Vec<OnDisk> = batch
        .iter()
        .map(|b| OnDisk {
            path: b.fetched.path.clone(),
            header: b.fetched.info.header.clone(),
            number_shapes: b.fetched.info.number_shapes.clone(),
            exponent_numbers: b.fetched.info.exponent_numbers.clone(),
            castable: b.fetched.info.castable,
            last: b.last.clone(),
        })
        .collect();
    let (k, s) = (key.to_string(), schema.clone());
    let answer = warehouse.submit(move |wh| {
        let started = std::time::Instant::now();
        let pages: Vec<PageFile> = files
            .iter()
            .map(|f| PageFile {
                path: &f.path,
                header: &f.header,
                number_shapes: &f.number_shapes,
                exponent_numbers: &f.exponent_numbers,
                castable: f.castable,
            })
            .collect();
        let (replaced, rows) = match pass {
            Pass::Full => {
                let ids: Vec<String> = files.iter().map(|f| f.last.id.clone()).collect();
                wh.load_pages(&k, &s, &pages, &ids)?;
                (None, wh.load_count(&k)?)
            }
            Pass::Incremental => {
                let mut replaced = 0;
                for (page, f) in pages.iter().zip(&files) {
                    replaced += wh.upsert_page(&k, &s, page, Some(&f.last))?;
                }
                (Some(replaced), wh.count(&k)?)
            }
        };
        Ok((replaced, rows, started.elapsed().as_secs_f64()))
    });
    InFlight {
        batch,
        answer,
        pass,
    }
}

/// Records the pages of a merge sent with [`submit_merge`] in the ledger, once it committed. Holds only the
/// ledger, the client (for its request counts) and the observer: a download may be under way meanwhile.
struct Recorder<'a> {
    ledger: &'a mut crate::ledger::Ledger,
    client: &'a crate::soda::SodaClient,
    observer: &'a dyn super::Observer,
    ds: &'a Dataset,
    attempt: AttemptId,
    /// The last row committed (None while nothing has).
    last_committed: Option<Watermark>,
}

impl Recorder<'_> {
    /// Records a merge of `batch` whose writer answered `answer`.
    fn record(
        &mut self,
        progress: &mut Progress,
        batch: Vec<Batched>,
        pass: Pass,
        answer: Result<(Option<u64>, i64, f64), crate::warehouse::WarehouseError>,
    ) -> Result<(), SyncError> {
        let (replaced, rows, merge_s) = answer?;
        progress.timings.merge_s += merge_s;
        let merged: u64 = batch.iter().map(|b| b.fetched.info.rows).sum();
        progress.count_merged(merged, replaced);
        for b in &batch {
            let wm = (pass == Pass::Incremental).then_some(&b.last);
            self.ledger.record_page(
                self.attempt,
                self.ds.key.as_str(),
                &page_record(b.ledger_seq, &b.fetched),
                wm,
                rows,
            )?;
            self.last_committed = Some(b.last.clone());
        }
        progress.count_requests(self.client);
        self.observer.progress(self.ds.key.as_str(), progress);
        Ok(())
    }

    /// Waits for the merge in flight, if any, and records it: Ok(()) when there was none.
    async fn settle(
        &mut self,
        in_flight: &mut Option<InFlight>,
        progress: &mut Progress,
    ) -> Result<(), SyncError> {
        match in_flight.take() {
            Some(m) => {
                let answer = m.answer.await;
                self.record(progress, m.batch, m.pass, answer)
            }
            None => Ok(()),
        }
    }
}

/// What the writer needs of a checked page.
struct OnDisk {
    path: PathBuf,
    header: Vec<String>,
    number_shapes: Vec<(String, (u32, u32))>,
    exponent_numbers: Vec<String>,
    castable: bool,
    last: Watermark,
}

/// A checked page waiting for its merge: its sequence number in the ledger and its last row.
pub(super) struct Batched {
    ledger_seq: u64,
    fetched: Fetched,
    last: Watermark,
}

/// A batch the writer is merging.
pub(super) struct InFlight {
    batch: Vec<Batched>,
    answer: crate::warehouse::Pending<(Option<u64>, i64, f64)>,
    pass: Pass,
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
    fn a_full_load_pages_in_sizes_that_make_whole_row_groups() {
        assert_eq!(full_page_size(50_000), 40_960);
        assert_eq!(full_page_size(40_960), 40_960);
        assert_eq!(full_page_size(100_000), 61_440);
        assert_eq!(full_page_size(122_880), 122_880);
        assert_eq!(full_page_size(300_000), 245_760);
        assert_eq!(full_page_size(20_000), 15_360);
        assert_eq!(full_page_size(9_000), 8_192);
        // Small pages stay as asked.
        assert_eq!(full_page_size(20), 20);
        assert_eq!(full_page_size(8_191), 8_191);
        for size in [
            8_192, 10_000, 20_000, 30_000, 50_000, 70_000, 122_880, 500_000,
        ] {
            let full = full_page_size(size);
            assert!(full <= size && full * 2 > size, "{size} -> {full}");
            // Whole row groups in at most MAX_BATCH_PAGES pages.
            let per_group = BATCH_ROWS.div_ceil(full);
            assert!(
                full >= BATCH_ROWS || BATCH_ROWS.is_multiple_of(full),
                "{size} -> {full}"
            );
            assert!(per_group <= MAX_BATCH_PAGES as u64, "{size} -> {full}");
        }
    }

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
