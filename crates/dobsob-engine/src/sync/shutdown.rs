//! Graceful shutdown: the first Ctrl-C (or SIGTERM) asks every dataset to stop at the next safe point (no page
//! half-merged, the watermark at the last committed page); the CLI exits 130.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::future::Future;

use tokio::sync::Notify;

use super::SyncError;

#[derive(Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
    /// The stop came from the run's deadline (`--max-duration`), not from a signal.
    deadline: Arc<AtomicBool>,
}

impl Shutdown {
    /// Stops the run because its deadline passed: like a signal, at the next page boundary, but reported as
    /// cut by the deadline (exit 1), not as interrupted (130).
    pub fn trigger_deadline(&self) {
        self.deadline.store(true, Ordering::SeqCst);
        self.trigger();
    }

    /// Whether the stop (if any) came from the deadline.
    pub fn by_deadline(&self) -> bool {
        self.deadline.load(Ordering::SeqCst)
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has been asked for.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

/// Runs `fut` unless `shutdown` is asked for first.
pub(crate) async fn until_shutdown<T, E>(
    shutdown: &Shutdown,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, SyncError>
where
    SyncError: From<E>,
{
    tokio::select! {
        r = fut => r.map_err(SyncError::from),
        _ = shutdown.wait() => Err(SyncError::Interrupted),
    }
}
