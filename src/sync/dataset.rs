//! One dataset's sync: plan, full load, incremental pass, deletion check.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::Digest;

use super::page::{self, PageInfo};
use super::{Engine, Mode, Progress, SyncError};
use crate::catalog::Dataset;
use crate::ledger::DatasetRecord;
use crate::ledger::{AttemptId, AttemptSuccess, PageRecord};
use crate::soda::{PageQuery, Watermark};
use crate::warehouse::{PageFile, Phase, SyncState, TableSchema};

impl Progress {
    fn add_page(&mut self, f: &Fetched) {
        self.pages += 1;
        self.bytes += f.dl.bytes;
        self.rows_fetched += f.info.rows;
        self.digest.update(f.dl.sha256.as_bytes());
    }
}

/// A page on disk, checked.
struct Fetched {
    path: PathBuf,
    info: PageInfo,
    dl: crate::soda::Download,
}

/// What one sync of a dataset does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// The source has not changed since the last sync.
    Unchanged,
    /// Load every row into a fresh table and swap it in; `resume` continues an interrupted load.
    Full { resume: bool },
    /// Fetch the rows changed after the watermark.
    Incremental,
}

/// The two kinds of keyset pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// `$order=:id` into the load table.
    Full,
    /// `$order=:updated_at,:id` upserted into the live table.
    Incremental,
}

/// Two page files: one being merged while the next downloads.
pub(super) const PAGE_SLOTS: [&str; 2] = ["page0", "page1"];

/// A `rowsUpdatedAt` this recent (seconds) is not trusted to gate the next sync: a change in the same
/// second, after we read it, would not move it.
const GATE_MARGIN_SECS: i64 = 120;

impl Engine {
    /// Runs `fut` unless shutdown is asked for first.
    async fn interruptible<T, E>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, SyncError>
    where
        SyncError: From<E>,
    {
        tokio::select! {
            r = fut => r.map_err(SyncError::from),
            _ = self.shutdown.wait() => Err(SyncError::Interrupted),
        }
    }

    pub(super) fn page_path(&self, key: &str, what: &str) -> PathBuf {
        self.tmp_dir.join(format!("{key}.{what}.csv"))
    }

    pub(super) async fn sync_dataset(
        &mut self,
        ds: &Dataset,
        mode: Mode,
        attempt: AttemptId,
        progress: &mut Progress,
    ) -> Result<(), SyncError> {
        let key = ds.key.to_string();
        let started_epoch = chrono::Utc::now().timestamp();
        let meta = self
            .interruptible(self.client.metadata(ds.id.as_str()))
            .await?;
        let schema = Arc::new(TableSchema::from_view(&meta.columns).map_err(SyncError::Schema)?);
        // The source's identity and columns: when either changes, the table is reloaded in full.
        let fingerprint = format!("{}/{}", ds.id, schema.fingerprint());
        let state = {
            let k = key.clone();
            self.warehouse.call(move |w| w.state(&k)).await?
        };
        let record = self.ledger.dataset(&key)?;

        // The warehouse's state is the truth; a ledger behind it (crash between the two commits) is repaired.
        if let Some(s) = state.as_ref().filter(|s| s.phase == Phase::Incremental) {
            let ledger_wm = record.as_ref().and_then(|r| r.watermark.clone());
            if ledger_wm != s.watermark.as_ref().map(Into::into) {
                let k = key.clone();
                let rows = self.warehouse.call(move |w| w.count(&k)).await?;
                tracing::warn!(dataset = %key, "ledger was behind the warehouse; repaired from the warehouse");
                self.ledger
                    .repair_from_warehouse(&key, s.watermark.as_ref(), rows)?;
            }
        }

        let plan = self
            .plan(
                ds,
                mode,
                &meta,
                state.as_ref(),
                record.as_ref(),
                &fingerprint,
            )
            .await?;
        let wm = state.as_ref().and_then(|s| s.watermark.clone());
        if plan == Plan::Unchanged {
            progress.mode = Some("unchanged");
            let k = key.clone();
            let rows = self.warehouse.call(move |w| w.count(&k)).await?;
            return self.finish(
                ds,
                attempt,
                progress,
                rows,
                wm,
                fingerprint,
                meta.rows_updated_at,
            );
        }
        progress.mode = Some(if plan == Plan::Incremental {
            "incremental"
        } else {
            "full"
        });
        self.ledger
            .set_attempt_mode(attempt, progress.mode.unwrap_or("incremental"))?;
        let start = match plan {
            Plan::Incremental | Plan::Unchanged => wm,
            Plan::Full { resume } => {
                let resume = state.as_ref().filter(|_| resume);
                self.full_load(ds, &schema, attempt, progress, &fingerprint, resume)
                    .await?
            }
        };
        let watermark = self
            .pages(ds, &schema, attempt, progress, Pass::Incremental, start)
            .await?;
        let rows = self.reconcile_deletions(ds, attempt, progress).await?;
        let k = key.clone();
        let uncastable = self.warehouse.call(move |w| w.uncastable_count(&k)).await?;
        if uncastable > 0 {
            tracing::warn!(
                dataset = %key,
                "{uncastable} values did not fit their column's type; they are kept verbatim in dobsob.uncastable"
            );
        }
        progress.uncastable = Some(uncastable);
        // Only a rowsUpdatedAt safely older than this sync's start may gate the next one.
        let gate = meta
            .rows_updated_at
            .filter(|t| *t < started_epoch - GATE_MARGIN_SECS);
        self.finish(ds, attempt, progress, rows, watermark, fingerprint, gate)
    }

    /// Decides what this sync of a dataset does.
    async fn plan(
        &self,
        ds: &Dataset,
        mode: Mode,
        meta: &crate::soda::ViewMetadata,
        state: Option<&SyncState>,
        record: Option<&DatasetRecord>,
        fingerprint: &str,
    ) -> Result<Plan, SyncError> {
        let same_schema = state.is_some_and(|s| s.schema_fingerprint == fingerprint);
        match state {
            None => return Ok(Plan::Full { resume: false }),
            Some(s) if s.phase == Phase::Full => {
                return Ok(Plan::Full {
                    resume: same_schema,
                })
            }
            Some(_) if !same_schema => {
                tracing::warn!(dataset = %ds.key, "the dataset's columns changed on the portal: reloading it in full");
                return Ok(Plan::Full { resume: false });
            }
            Some(_) if mode == Mode::Rebuild => return Ok(Plan::Full { resume: false }),
            Some(_) => {}
        }
        // Gate: nothing changed at the source since a sync that started safely after the last change.
        if meta.rows_updated_at.is_some()
            && record.and_then(|r| r.source_rows_updated_at) == meta.rows_updated_at
        {
            return Ok(Plan::Unchanged);
        }
        // A publisher's full replace re-stamps (and often re-ids) every row: reloading into a fresh table and
        // swapping it in is cheaper than upserting every row, and readers never see a half-replaced table.
        if self.replaced_since(ds, state).await? {
            return Ok(Plan::Full { resume: false });
        }
        Ok(Plan::Incremental)
    }

    /// Whether about all of the source's rows changed after the watermark (90% or more).
    async fn replaced_since(
        &self,
        ds: &Dataset,
        state: Option<&SyncState>,
    ) -> Result<bool, SyncError> {
        let Some(wm) = state.and_then(|s| s.watermark.as_ref()) else {
            return Ok(false);
        };
        let id = ds.id.as_str();
        let changed = self.interruptible(self.client.count(id, Some(wm))).await?;
        if changed == 0 {
            return Ok(false);
        }
        let total = self.interruptible(self.client.count(id, None)).await?;
        let replaced = changed * 10 >= total * 9;
        if replaced {
            tracing::info!(
                dataset = %ds.key, changed, total,
                "about every row changed since the last sync (a full replace by the publisher): reloading in full"
            );
        }
        Ok(replaced)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        ds: &Dataset,
        attempt: AttemptId,
        progress: &mut Progress,
        rows: i64,
        watermark: Option<Watermark>,
        fingerprint: String,
        source_rows_updated_at: Option<i64>,
    ) -> Result<(), SyncError> {
        progress.rows = Some(rows);
        let digest = std::mem::take(&mut progress.digest);
        self.ledger.finish_attempt_ok(
            attempt,
            ds.key.as_str(),
            &AttemptSuccess {
                mode: progress.mode.unwrap_or("incremental"),
                rows_deleted: progress.rows_deleted as i64,
                row_count: rows,
                watermark,
                schema_fingerprint: fingerprint,
                source_rows_updated_at,
                sha256: crate::soda::client::hex(&digest.finalize()),
            },
        )?;
        Ok(())
    }

    /// Downloads one page of rows into page file `slot` and checks it.
    async fn fetch_rows(
        &self,
        ds: &Dataset,
        q: &PageQuery,
        schema: &Arc<TableSchema>,
        slot: usize,
    ) -> Result<Fetched, SyncError> {
        let path = self.page_path(ds.key.as_str(), PAGE_SLOTS[slot]);
        let dl = self
            .interruptible(self.client.download_csv(ds.id.as_str(), q, &path))
            .await?;
        // Parsing a page is CPU work: keep it off the runtime's workers.
        let (p, s) = (path.clone(), schema.clone());
        let checked = tokio::task::spawn_blocking(move || page::inspect_rows(&p, &s))
            .await
            .unwrap_or_else(|e| Err(format!("the page check panicked: {e}")));
        let info = checked.map_err(|message| SyncError::Page {
            url: dl.url.clone(),
            message,
        })?;
        tracing::debug!(dataset = %ds.key, rows = info.rows, bytes = dl.bytes, "page fetched");
        Ok(Fetched { path, info, dl })
    }

    /// Loads every row in `:id` order into a fresh load table and swaps it in. Returns the watermark the
    /// incremental pass starts from: the newest row when the load began, so rows changed during the load
    /// (behind the cursor) are caught.
    async fn full_load(
        &mut self,
        ds: &Dataset,
        schema: &Arc<TableSchema>,
        attempt: AttemptId,
        progress: &mut Progress,
        fingerprint: &str,
        resume: Option<&SyncState>,
    ) -> Result<Option<Watermark>, SyncError> {
        let key = ds.key.to_string();
        let (start, cursor) = match resume {
            Some(s) => {
                tracing::info!(dataset = %key, "resuming the interrupted full load");
                (s.watermark.clone(), s.cursor_id.clone())
            }
            None => {
                let newest = self
                    .interruptible(self.client.query_json(ds.id.as_str(), &PageQuery::newest()))
                    .await?;
                let start = newest.first().and_then(|r| {
                    Some(Watermark {
                        updated_at: r.get(":updated_at")?.as_str()?.to_string(),
                        id: r.get(":id")?.as_str()?.to_string(),
                    })
                });
                let (k, s, f, st) = (
                    key.clone(),
                    schema.clone(),
                    fingerprint.to_string(),
                    start.clone(),
                );
                self.warehouse
                    .call(move |w| w.begin_full(&k, &s, &f, st.as_ref()))
                    .await?;
                (start, None)
            }
        };
        // A full pass pages by :id alone; the cursor's :updated_at is not used.
        let cursor = cursor.map(|id| Watermark {
            updated_at: String::new(),
            id,
        });
        self.pages(ds, schema, attempt, progress, Pass::Full, cursor)
            .await?;
        let (k, s) = (key.clone(), schema.clone());
        self.warehouse.call(move |w| w.finish_full(&k, &s)).await?;
        tracing::info!(dataset = %key, "full load swapped in");
        Ok(start)
    }

    /// Pages through a pass from `cursor` (the last row already committed), merging each page. The download
    /// of page N+1 overlaps the merge of page N (the cursor for N+1 is known once N is checked); a page is
    /// recorded in the ledger only after its merge committed. Returns the last row committed.
    async fn pages(
        &mut self,
        ds: &Dataset,
        schema: &Arc<TableSchema>,
        attempt: AttemptId,
        progress: &mut Progress,
        pass: Pass,
        mut cursor: Option<Watermark>,
    ) -> Result<Option<Watermark>, SyncError> {
        let key = ds.key.to_string();
        let query = |cursor: Option<&Watermark>, limit| match pass {
            Pass::Full => PageQuery::full_page(cursor.map(|w| w.id.as_str()), limit),
            Pass::Incremental => PageQuery::incremental_page(cursor, limit),
        };
        let mut slot = 0;
        let mut fetched = self
            .fetch_rows(ds, &query(cursor.as_ref(), self.page_size), schema, slot)
            .await?;
        loop {
            progress.add_page(&fetched);
            let Some(last) = fetched.info.last.clone() else {
                break;
            };
            let more = fetched.info.rows >= self.page_size;
            let (k, s, p, h, l) = (
                key.clone(),
                schema.clone(),
                fetched.path.clone(),
                fetched.info.header.clone(),
                last.clone(),
            );
            let merge = self.warehouse.call(move |w| {
                let page = PageFile {
                    path: &p,
                    header: &h,
                };
                match pass {
                    Pass::Full => {
                        w.load_page(&k, &s, &page, &l.id)?;
                        w.count(&crate::warehouse::load_table(&k))
                    }
                    Pass::Incremental => {
                        w.upsert_page(&k, &s, &page, &l)?;
                        w.count(&k)
                    }
                }
            });
            let next_q = query(Some(&last), self.page_size);
            let next = async {
                if more && !self.shutdown.is_triggered() {
                    Some(self.fetch_rows(ds, &next_q, schema, 1 - slot).await)
                } else {
                    None
                }
            };
            let (merged, next) = tokio::join!(merge, next);
            let rows = merged?;
            let wm = (pass == Pass::Incremental).then_some(&last);
            self.ledger.record_page(
                attempt,
                &key,
                &Self::page_record(progress.pages, &fetched),
                wm,
                rows,
            )?;
            cursor = Some(last);
            match next {
                Some(n) => fetched = n?,
                None if self.shutdown.is_triggered() => return Err(SyncError::Interrupted),
                None => break,
            }
            slot = 1 - slot;
        }
        Ok(cursor)
    }

    fn page_record(seq: u64, f: &Fetched) -> PageRecord {
        PageRecord {
            seq: seq as i64,
            rows: f.info.rows as i64,
            bytes: f.dl.bytes as i64,
            sha256: f.dl.sha256.clone(),
            first: f.info.first.clone(),
            last: f.info.last.clone(),
        }
    }

    /// An `:updated_at` cursor never sees deletions: compare counts, and if they differ, fetch the source's id
    /// set (ids only, in `:id` order) and delete the local rows it lacks. Returns the local row count.
    async fn reconcile_deletions(
        &mut self,
        ds: &Dataset,
        attempt: AttemptId,
        progress: &mut Progress,
    ) -> Result<i64, SyncError> {
        let key = ds.key.to_string();
        let source = self
            .interruptible(self.client.count(ds.id.as_str(), None))
            .await? as i64;
        let k = key.clone();
        let local = self.warehouse.call(move |w| w.count(&k)).await?;
        if source == local {
            return Ok(local);
        }
        tracing::info!(dataset = %key, source, local, "row counts differ: checking the id set for deletions");
        self.warehouse.call(|w| w.begin_ids()).await?;
        let path = self.page_path(&key, "ids");
        let mut cursor: Option<String> = None;
        loop {
            if self.shutdown.is_triggered() {
                return Err(SyncError::Interrupted);
            }
            let q = PageQuery::id_page(cursor.as_deref(), self.page_size);
            let dl = self
                .interruptible(self.client.download_csv(ds.id.as_str(), &q, &path))
                .await?;
            let (n, last) = page::inspect_ids(&path).map_err(|message| SyncError::Page {
                url: dl.url.clone(),
                message,
            })?;
            progress.bytes += dl.bytes;
            self.ledger.add_bytes(attempt, dl.bytes as i64)?;
            if n > 0 {
                let p = path.clone();
                self.warehouse.call(move |w| w.append_ids(&p)).await?;
            }
            match last {
                Some(l) if n >= self.page_size => cursor = Some(l),
                _ => break,
            }
        }
        let k = key.clone();
        let deleted = self.warehouse.call(move |w| w.delete_missing(&k)).await?;
        progress.rows_deleted += deleted as u64;
        let k = key.clone();
        let local = self.warehouse.call(move |w| w.count(&k)).await?;
        if local != source {
            tracing::warn!(
                dataset = %key, source, local,
                "row counts still differ after the id check: the source changed during the sync; the next sync catches up"
            );
        }
        Ok(local)
    }
}
