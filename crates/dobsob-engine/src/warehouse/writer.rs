//! The single writer thread that owns the warehouse target (the DuckDB connection).
//!
//! A DuckDB `Connection` is `Send` but not `Sync`, and long DuckDB calls must not block the async runtime's
//! workers, so the connection lives on one thread and async code sends it work: a closure and a channel for
//! the answer. Work runs in the order it was sent.

use std::sync::mpsc;

use super::{Target, WarehouseError};

type Job = Box<dyn FnOnce(&mut dyn Target) + Send>;

/// A handle to the writer thread. Dropping every handle ends the thread (after the work already sent).
#[derive(Clone)]
pub struct WarehouseHandle {
    tx: mpsc::Sender<Job>,
}

impl WarehouseHandle {
    /// Starts the writer thread with `wh`.
    pub fn spawn(mut wh: Box<dyn Target>) -> (WarehouseHandle, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("duckdb-writer".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(wh.as_mut());
                }
                if let Err(e) = wh.close() {
                    tracing::warn!("{e}");
                }
            })
            .expect("spawning the DuckDB writer thread");
        (WarehouseHandle { tx }, thread)
    }

    /// Runs `f` on the writer thread and waits for its answer.
    pub async fn call<T, F>(&self, f: F) -> Result<T, WarehouseError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Target) -> Result<T, WarehouseError> + Send + 'static,
    {
        self.submit(f).await
    }

    /// Sends `f` to the writer thread now, and returns its answer to await later: the caller goes on (with
    /// the next downloads) while the writer works, without borrowing the handle.
    pub fn submit<T, F>(&self, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Target) -> Result<T, WarehouseError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.tx.send(Box::new(move |wh| {
            let _ = tx.send(f(wh));
        }));
        Pending(sent.ok().map(|_| rx))
    }
}

/// The answer of work sent with [`WarehouseHandle::submit`]: a future of the work's result.
pub struct Pending<T>(Option<tokio::sync::oneshot::Receiver<Result<T, WarehouseError>>>);

impl<T> std::future::Future for Pending<T> {
    type Output = Result<T, WarehouseError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.0.as_mut() {
            None => std::task::Poll::Ready(Err(WarehouseError::WriterGone)),
            Some(rx) => std::pin::Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(WarehouseError::WriterGone))),
        }
    }
}
