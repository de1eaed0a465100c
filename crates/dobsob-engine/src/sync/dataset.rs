//! One dataset's sync: read the metadata, repair the ledger from the warehouse, plan, run the passes,
//! reconcile, and record the outcome.

use std::future::Future;
use std::sync::Arc;

use super::page::Cursor;
use super::pass::Pass;
use super::{DatasetSync, Mode, Progress, SyncError};
use crate::catalog::Dataset;
use crate::ledger::DatasetRecord;
use crate::ledger::{AttemptId, AttemptSuccess};
use crate::soda::{PageQuery, Watermark};
use crate::warehouse::{ColumnDescription, Description, Phase, SyncState, TableSchema};

use super::decide::{decide, Decision, Facts};

/// How many seconds the portal's clock must be past `rowsUpdatedAt` before that value may gate the next sync:
/// `rowsUpdatedAt` has one-second resolution, so a change in the same second, after the metadata was read,
/// would not move it. Both times are the portal's (its `Date` header), never ours: clock skew between us and
/// the portal cannot skip a change.
const GATE_MARGIN_SECS: i64 = 2;

/// A dataset's fingerprint as the warehouse and the ledger record it: the source's identity, its columns and
/// dobsob's type mapping. When it changes, the table is reloaded.
/// The table a dataset's metadata gives, with the catalog's column types: one function for the sync and its
/// dry run, so that both compute the same fingerprint.
pub fn schema_of(ds: &Dataset, columns: &[crate::soda::ViewColumn]) -> Result<TableSchema, String> {
    TableSchema::with_types(columns, &ds.column_types)
}

pub fn fingerprint(ds: &Dataset, schema: &TableSchema) -> String {
    format!("{}/{}", ds.id, schema.fingerprint())
}

/// Whether the change gate lets a dataset be skipped: the source's `rowsUpdatedAt` is the one recorded at a
/// sync that may gate (see [`gate_value`]).
pub fn gate_holds(rows_updated_at: Option<i64>, recorded: Option<i64>) -> bool {
    rows_updated_at.is_some() && recorded == rows_updated_at
}

/// The reason a gated dataset gives: "source unchanged since T".
pub fn unchanged_reason(rows_updated_at: Option<i64>) -> Option<String> {
    let t = chrono::DateTime::from_timestamp(rows_updated_at?, 0)?;
    Some(format!(
        "source unchanged since {}",
        t.format("%Y-%m-%d %H:%M:%S UTC")
    ))
}

/// The `rowsUpdatedAt` a sync may record for the next one's change gate, if any.
fn gate_value(rows_updated_at: Option<i64>, portal_date: Option<i64>) -> Option<i64> {
    let (r, d) = (rows_updated_at?, portal_date?);
    (d >= r + GATE_MARGIN_SECS).then_some(r)
}

impl DatasetSync {
    /// Runs `fut` unless shutdown is asked for first.
    pub(super) async fn interruptible<T, E>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, SyncError>
    where
        SyncError: From<E>,
    {
        super::shutdown::until_shutdown(&self.run.shutdown, fut).await
    }

    /// The dataset as the catalog and the portal's metadata describe it.
    fn description(&self, ds: &Dataset, meta: &crate::soda::ViewMetadata) -> Description {
        Description {
            key: ds.key.to_string(),
            socrata_id: ds.id.to_string(),
            name: ds.name.clone(),
            portal_name: meta.name.clone(),
            description: meta.description.clone(),
            source_url: format!("{}d/{}", self.client.portal(), ds.id),
            frequency: ds.frequency.to_string(),
            priority: ds.priority().to_string(),
            columns: meta
                .columns
                .iter()
                .filter(|c| !c.field_name.starts_with(':'))
                .map(|c| ColumnDescription {
                    field_name: c.field_name.clone(),
                    name: c.name.clone(),
                    description: c.description.clone(),
                })
                .collect(),
        }
    }

    pub(super) async fn sync_dataset(
        &mut self,
        ds: &Dataset,
        mode: Mode,
        attempt: AttemptId,
        progress: &mut Progress,
    ) -> Result<(), SyncError> {
        let key = ds.key.to_string();
        let meta = self
            .interruptible(self.client.metadata(ds.id.as_str()))
            .await?;
        progress.description = Some(self.description(ds, &meta));
        let schema = Arc::new(schema_of(ds, &meta.columns).map_err(SyncError::Schema)?);
        let own: std::collections::BTreeMap<String, String> = ds
            .column_types
            .iter()
            .filter(|(k, _)| ds.own_column_types.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for missing in schema.overrides_missing(&own) {
            tracing::warn!(
                dataset = %ds.key,
                "the catalog gives column {missing:?} a type, but the portal's metadata has no such column"
            );
        }
        // The source's identity, columns and dobsob's type mapping: when any changes, the table is reloaded.
        let fingerprint = fingerprint(ds, &schema);
        let state = {
            let k = key.clone();
            self.run.warehouse.call(move |w| w.state(&k)).await?
        };
        let record = self.ledger.dataset(&key)?;
        self.repair_ledger(&key, state.as_ref(), record.as_ref())
            .await?;

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
        if let (Decision::Full { why, .. }, true) = (plan, self.options.incremental_only) {
            return Err(SyncError::Skipped(format!(
                "a full load is needed ({why}) and --incremental-only is set"
            )));
        }
        if plan == Decision::Unchanged {
            progress.mode = Some(super::SyncMode::Unchanged);
            progress.reason = unchanged_reason(meta.rows_updated_at);
            let k = key.clone();
            let rows = self.run.warehouse.call(move |w| w.count(&k)).await?;
            progress.source_rows = record.as_ref().and_then(|r| r.source_count);
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
        // Downloads start --throttle apart; a dataset that stops at the change gate never waits.
        self.interruptible(async {
            self.run.throttle.wait().await;
            Ok::<(), SyncError>(())
        })
        .await?;
        progress.mode = Some(if plan == Decision::Incremental {
            super::SyncMode::Incremental
        } else {
            super::SyncMode::Full
        });
        self.ledger
            .set_attempt_mode(attempt, progress.mode.map_or("incremental", |m| m.as_str()))?;
        let start = match plan {
            Decision::Incremental | Decision::Unchanged | Decision::CheckReplace => wm,
            Decision::Full { resume, .. } => {
                let resume = state.as_ref().filter(|s| resume && s.cursor_id.is_some());
                self.full_load(ds, &schema, attempt, progress, &fingerprint, resume)
                    .await?
            }
        };
        // Re-read an overlap window behind the watermark: a row committed late with an older :updated_at
        // is caught here (the upsert makes re-reading harmless).
        let cursor = match &start {
            None => Cursor::Start,
            Some(w) if self.run.overlap_ms > 0 => {
                match crate::soda::soql::shift_timestamp(&w.updated_at, -self.run.overlap_ms) {
                    Some(t) => Cursor::From(t),
                    None => Cursor::After(w.clone()),
                }
            }
            Some(w) => Cursor::After(w.clone()),
        };
        let first = Pass::Incremental.query(&cursor, self.run.page_size);
        let expected = self
            .interruptible(
                self.client
                    .count_query(ds.id.as_str(), &PageQuery::count_like(&first)),
            )
            .await?;
        let last = self
            .pages(
                ds,
                &schema,
                attempt,
                progress,
                Pass::Incremental,
                cursor,
                Some(expected),
            )
            .await?;
        // Late rows further behind than the overlap: their ids, within the late window.
        if let Some(w) = &start {
            if self.run.late_window_ms > 0 {
                if let Some(since) =
                    crate::soda::soql::shift_timestamp(&w.updated_at, -self.run.late_window_ms)
                {
                    self.catch_late_rows(ds, &schema, attempt, progress, &since)
                        .await?;
                }
            }
        }
        // An empty pass keeps the watermark it started from.
        let watermark = last.or(start);
        let rec = self.reconcile(ds, &schema, attempt, progress).await?;
        let k = key.clone();
        let uncastable = self
            .run
            .warehouse
            .call(move |w| w.uncastable_count(&k))
            .await?;
        if uncastable > 0 {
            tracing::warn!(
                dataset = %key,
                "{uncastable} values are not of their column's type (text in a number column, ...); they are \
                 kept verbatim in dobsob.uncastable"
            );
        }
        progress.uncastable = Some(uncastable);
        progress.source_rows = Some(rec.source);
        self.profile(ds, &schema, progress).await;
        // A drifting dataset records no gate value: the next sync looks again, whatever rowsUpdatedAt says.
        let gate =
            gate_value(meta.rows_updated_at, meta.portal_date).filter(|_| rec.drift.is_none());
        progress.drift = rec.drift.clone();
        self.finish(
            ds,
            attempt,
            progress,
            rec.local,
            watermark,
            fingerprint,
            gate,
        )
    }

    /// The warehouse's state is the truth; a ledger behind it (a crash between the two commits) is repaired:
    /// its watermark and its row count.
    async fn repair_ledger(
        &mut self,
        key: &str,
        state: Option<&SyncState>,
        record: Option<&DatasetRecord>,
    ) -> Result<(), SyncError> {
        let Some(s) = state.filter(|s| s.phase == Phase::Incremental) else {
            return Ok(());
        };
        let k = key.to_string();
        let rows = self.run.warehouse.call(move |w| w.count(&k)).await?;
        let ledger_wm = record.and_then(|r| r.watermark.clone());
        let ledger_rows = record.and_then(|r| r.row_count);
        if ledger_wm != s.watermark.as_ref().map(Into::into) || ledger_rows != Some(rows) {
            tracing::warn!(dataset = %key, "ledger was behind the warehouse; repaired from the warehouse");
            self.ledger
                .repair_from_warehouse(key, s.watermark.as_ref(), rows)?;
        }
        Ok(())
    }

    /// Decides what this sync of a dataset does ([`decide`], with the replace check's two counts when it
    /// asks for them).
    async fn plan(
        &self,
        ds: &Dataset,
        mode: Mode,
        meta: &crate::soda::ViewMetadata,
        state: Option<&SyncState>,
        record: Option<&DatasetRecord>,
        fingerprint: &str,
    ) -> Result<Decision, SyncError> {
        // The gate: nothing changed at the source since a sync that read a rowsUpdatedAt the portal's own
        // clock had safely passed. --force looks anyway.
        let mut facts = Facts {
            mode,
            state,
            fingerprint,
            force: self.options.force,
            gate: gate_holds(
                meta.rows_updated_at,
                record.and_then(|r| r.source_rows_updated_at),
            ),
            replaced: None,
        };
        let mut decision = decide(&facts);
        if decision == Decision::CheckReplace {
            // A publisher's full replace re-stamps (and often re-ids) every row: reloading into a fresh
            // table and swapping it in is cheaper than upserting every row, and readers never see a
            // half-replaced table.
            facts.replaced = Some(self.replaced_since(ds, state).await?);
            decision = decide(&facts);
        }
        if let Decision::Full { why, .. } = decision {
            if why != "never loaded" && why != "rebuild" {
                tracing::warn!(dataset = %ds.key, "reloading in full: {why}");
            }
        }
        Ok(decision)
    }

    /// The data-quality profile of the synced table, and what it shows against the last one: anomalies
    /// become warnings. A profile that cannot be made is a warning too, never a failed sync.
    async fn profile(&self, ds: &Dataset, schema: &Arc<TableSchema>, progress: &mut Progress) {
        let thresholds = self.options.quality;
        if !thresholds.enabled {
            return;
        }
        let (k, s) = (ds.key.to_string(), schema.clone());
        let profile = match self.run.warehouse.call(move |w| w.profile(&k, &s)).await {
            Ok(p) => p,
            Err(e) => {
                let e = e.to_string();
                tracing::warn!(dataset = %ds.key, "no data-quality profile: {e}");
                progress
                    .warnings
                    .push(format!("no data-quality profile: {e}"));
                return;
            }
        };
        let previous = match self.ledger.last_profile(ds.key.as_str()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(dataset = %ds.key, "the last data-quality profile is unreadable: {e}");
                None
            }
        };
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let found = crate::quality::anomalies(previous.as_ref(), &profile, &thresholds, now);
        for a in &found {
            tracing::warn!(dataset = %ds.key, "data quality: {}", a.message);
            progress
                .warnings
                .push(format!("data quality: {}", a.message));
        }
        progress.quality = found;
        progress.profile = Some(profile);
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
        let replaced = super::decide::is_replace(changed, total);
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
        use sha2::Digest;
        progress.rows = Some(rows);
        let digest = std::mem::take(&mut progress.digest);
        self.ledger.finish_attempt_ok(
            attempt,
            ds.key.as_str(),
            &AttemptSuccess {
                mode: progress.mode.map_or("incremental", |m| m.as_str()),
                rows_deleted: progress.rows_deleted as i64,
                row_count: rows,
                source_count: progress.source_rows,
                uncastable: progress.uncastable,
                drift: progress.drift.clone(),
                watermark,
                schema_fingerprint: fingerprint,
                source_rows_updated_at,
                sha256: crate::soda::client::hex(&digest.finalize()),
                warnings: progress.warnings.clone(),
                reason: progress.reason.clone(),
                profile: progress
                    .profile
                    .take()
                    .map(|p| (p, progress.quality.clone())),
                columns: progress.description.as_ref().map(|d| {
                    d.columns
                        .iter()
                        .map(|c| (c.field_name.clone(), c.name.clone(), c.description.clone()))
                        .collect()
                }),
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::gate_value;

    #[test]
    fn the_gate_compares_the_portals_clocks_only() {
        // The portal answered well after its last change: safe to gate on.
        assert_eq!(gate_value(Some(1000), Some(1005)), Some(1000));
        // In the same second (or nearly): a later change could keep the same rowsUpdatedAt.
        assert_eq!(gate_value(Some(1000), Some(1000)), None);
        assert_eq!(gate_value(Some(1000), Some(1001)), None);
        // The portal's clock behind its own stamp (replicas): not safe.
        assert_eq!(gate_value(Some(1000), Some(990)), None);
        assert_eq!(gate_value(Some(1000), None), None);
        assert_eq!(gate_value(None, Some(1000)), None);
    }
}
