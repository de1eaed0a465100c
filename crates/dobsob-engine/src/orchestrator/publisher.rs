//! Publishing: the working database checkpointed and copied to the snapshot analysts open, at the end of
//! a run and every `--publish-interval` during a long one, only when something committed since.

use super::*;

/// Publishes the working database: the ledger's facts into `dobsob_datasets`, then checkpoint, copy and
/// rename (see `warehouse::publish`), on the writer thread between merges.
#[derive(Clone)]
pub(super) struct Publisher {
    pub(super) handle: WarehouseHandle,
    pub(super) ledger_path: PathBuf,
    pub(super) target: PathBuf,
    /// The ledger's change token at the last publish.
    pub(super) last: Arc<std::sync::Mutex<Option<(i64, i64)>>>,
}

impl Publisher {
    /// Publishes unless nothing was committed since the last publish (no page and no attempt finished).
    pub(super) async fn publish_if_changed(&self) -> Result<Option<Published>, Error> {
        self.publish_unless(true).await
    }

    /// Publishes what committed every `every`, until the task is aborted (`--publish-interval`); a failure
    /// is a warning, the run goes on.
    pub(super) fn spawn_periodic(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if let Err(e) = self.publish_if_changed().await {
                    tracing::warn!("publishing during the run failed (the run goes on): {e}");
                }
            }
        })
    }

    pub(super) async fn publish(&self) -> Result<Published, Error> {
        Ok(self
            .publish_unless(false)
            .await?
            .expect("an unconditional publish publishes"))
    }

    pub(super) async fn publish_unless(&self, unchanged: bool) -> Result<Option<Published>, Error> {
        let ledger = Ledger::open(&self.ledger_path)?;
        let token = ledger.change_token()?;
        if unchanged && *self.last.lock().unwrap_or_else(|p| p.into_inner()) == Some(token) {
            return Ok(None);
        }
        let mut states = Vec::new();
        for key in ledger.dataset_keys()? {
            if let Some(r) = ledger.dataset(&key)? {
                states.push(r);
            }
        }
        drop(ledger);
        let target = self.target.clone();
        let published = self
            .handle
            .call(move |w| {
                w.write_dataset_states(&states)?;
                w.publish(&target)
            })
            .await?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        Ok(Some(published))
    }
}
