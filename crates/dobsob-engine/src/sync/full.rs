//! A full load: every row in `:id` order into a fresh load table, checked, then swapped in atomically.
//!
//! The load is swapped in only when it is whole: its ids are unique, and it holds at least the rows the
//! source has now less those that changed while it ran (which the incremental pass right after it fetches).
//! A load that fails the check is dropped; the live table stays as it was.

use std::sync::Arc;

use super::page::Cursor;
use super::pass::Pass;
use super::{DatasetSync, Progress, SyncError};
use crate::catalog::Dataset;
use crate::ledger::AttemptId;
use crate::soda::{PageQuery, Watermark};
use crate::warehouse::{SyncState, TableSchema};

/// Whether a finished load of `loaded` rows (`distinct` ids) is the whole source: `source` rows now, of
/// which `changed` changed (or appeared) since the load began. Rows that existed unchanged through the load
/// were all paged over, so at least `source - changed` of them are in it.
pub(super) fn check_load(
    loaded: i64,
    distinct: i64,
    source: u64,
    changed: u64,
) -> Result<(), String> {
    if distinct != loaded {
        return Err(format!(
            "the load received {} rows twice (the portal repeated rows across pages)",
            loaded - distinct
        ));
    }
    let floor = source.saturating_sub(changed);
    if (loaded as u64) < floor {
        return Err(format!(
            "the load holds {loaded} rows but the source has {source} ({changed} of them changed during the \
             load): rows are missing"
        ));
    }
    Ok(())
}

impl DatasetSync {
    /// Loads every row in `:id` order into a fresh load table, checks it and swaps it in. Returns the
    /// watermark the incremental pass starts from: the newest row when the load began, so rows changed
    /// during the load (behind the cursor) are caught.
    pub(super) async fn full_load(
        &mut self,
        ds: &Dataset,
        schema: &Arc<TableSchema>,
        attempt: AttemptId,
        progress: &mut Progress,
        fingerprint: &str,
        resume: Option<&SyncState>,
    ) -> Result<Option<Watermark>, SyncError> {
        let key = ds.key.to_string();
        let id = ds.id.as_str();
        let (start, cursor) = match resume {
            Some(s) => {
                tracing::info!(dataset = %key, "resuming the interrupted full load");
                (s.watermark.clone(), s.cursor_id.clone())
            }
            None => {
                let newest = self
                    .interruptible(self.client.query_json(id, &PageQuery::newest()))
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
                self.run
                    .warehouse
                    .call(move |w| w.begin_full(&k, &s, &f, st.as_ref()))
                    .await?;
                (start, None)
            }
        };
        // The rows still to come: the source's count less what a resumed load already holds.
        let source = self.interruptible(self.client.count(id, None)).await?;
        let k = key.clone();
        let loaded = self.run.warehouse.call(move |w| w.load_count(&k)).await?;
        let expected = source.saturating_sub(loaded as u64);
        // A full pass pages by :id alone; the cursor's :updated_at is not used.
        let cursor = match cursor {
            Some(id) => Cursor::After(Watermark {
                updated_at: String::new(),
                id,
            }),
            None => Cursor::Start,
        };
        self.pages(
            ds,
            schema,
            attempt,
            progress,
            Pass::Full,
            cursor,
            Some(expected),
        )
        .await?;

        let source = self.interruptible(self.client.count(id, None)).await?;
        let changed = match &start {
            Some(w) => self.interruptible(self.client.count(id, Some(w))).await?,
            None => source,
        };
        let k = key.clone();
        let (loaded, distinct) = self.run.warehouse.call(move |w| w.load_stats(&k)).await?;
        if let Err(why) = check_load(loaded, distinct, source, changed) {
            let k = key.clone();
            self.run.warehouse.call(move |w| w.abort_full(&k)).await?;
            return Err(SyncError::Incomplete(format!(
                "full load not swapped in: {why}; the live table is unchanged and the next sync loads afresh"
            )));
        }
        let (k, s) = (key.clone(), schema.clone());
        let notes = self
            .run
            .warehouse
            .call(move |w| w.finish_full(&k, &s))
            .await?;
        for note in notes {
            progress.warn(&key, note);
        }
        tracing::info!(dataset = %key, rows = loaded, "full load swapped in");
        Ok(start)
    }
}

#[cfg(test)]
mod tests {
    use super::check_load;

    #[test]
    fn a_load_is_swapped_in_only_when_whole() {
        assert!(check_load(100, 100, 100, 0).is_ok());
        // Rows added during the load are fetched by the pass after it.
        assert!(check_load(100, 100, 103, 3).is_ok());
        // Rows deleted during the load are removed by the id check after it.
        assert!(check_load(100, 100, 97, 0).is_ok());
        // A capped $limit that ended the load early.
        let e = check_load(700, 700, 2600, 0).unwrap_err();
        assert!(e.contains("700 rows but the source has 2600"), "{e}");
        let e = check_load(100, 90, 100, 0).unwrap_err();
        assert!(e.contains("10 rows twice"), "{e}");
    }
}
