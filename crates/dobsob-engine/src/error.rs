//! The error the engine's facade ends with when a run (or a command's work) cannot go on at all, as opposed
//! to some datasets failing (those are in the [`crate::RunReport`]). Typed by where it came from, so that a
//! caller (the command line's exit codes, a scheduler, a server) decides by kind, not by text.

use crate::ledger::LedgerError;
use crate::soda::SodaError;
use crate::warehouse::WarehouseError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag, catalog, setting or request: nothing was changed.
    #[error("{0}")]
    Config(String),
    /// Another run holds the data directory (its holder named): try again later.
    #[error("{0}")]
    Locked(String),
    /// Ctrl-C or SIGTERM stopped the work before it finished; what committed stays, the next run resumes.
    #[error("{0}")]
    Interrupted(String),
    /// The portal refused, or failed after the retries.
    #[error("{0}")]
    Portal(#[from] SodaError),
    /// The portal could not be reached at all (the message says which, and what to check).
    #[error("{0}")]
    Unreachable(String),
    /// The ledger (SQLite) could not be opened, read or written.
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    /// The warehouse (DuckDB) could not be opened, read or written.
    #[error("{0}")]
    Warehouse(#[from] WarehouseError),
    /// A read-only query of the published snapshot failed in DuckDB or was refused (`dobsob sql`).
    #[error("{0}")]
    Query(String),
    /// A file or directory of the data directory (or the system's) could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// [`Error`]'s kind, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Config,
    Locked,
    Interrupted,
    Portal,
    Ledger,
    Warehouse,
    Query,
    Io,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Config,
            Error::Locked(_) => ErrorKind::Locked,
            Error::Interrupted(_) => ErrorKind::Interrupted,
            Error::Portal(_) | Error::Unreachable(_) => ErrorKind::Portal,
            Error::Ledger(_) => ErrorKind::Ledger,
            Error::Warehouse(_) => ErrorKind::Warehouse,
            Error::Query(_) => ErrorKind::Query,
            Error::Io(_) => ErrorKind::Io,
        }
    }

    /// Whether the same call may succeed later without anyone changing anything: another run's lock, an
    /// interruption (the next run resumes), a portal error that is worth a retry (429, 5xx, a cut
    /// connection). A bad setting, a refused query or a damaged file will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Locked(_) | Error::Interrupted(_) | Error::Unreachable(_) => true,
            Error::Portal(e) => e.is_retryable() || e.is_unreachable(),
            Error::Config(_)
            | Error::Ledger(_)
            | Error::Warehouse(_)
            | Error::Query(_)
            | Error::Io(_) => false,
        }
    }
}

impl From<crate::catalog::CatalogError> for Error {
    fn from(e: crate::catalog::CatalogError) -> Self {
        Error::Config(e.to_string())
    }
}

impl From<crate::lock::LockError> for Error {
    fn from(e: crate::lock::LockError) -> Self {
        match e {
            crate::lock::LockError::Held { .. } => Error::Locked(e.to_string()),
            crate::lock::LockError::Io { .. } => Error::Io(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_retries_follow_the_source_of_the_error() {
        let locked = Error::from(crate::lock::LockError::Held {
            path: "/d/.lock".into(),
            holder: "pid 1".into(),
        });
        assert_eq!(locked.kind(), ErrorKind::Locked);
        assert!(locked.is_retryable());
        let config = Error::Config("bad flag".into());
        assert!(!config.is_retryable());
        assert_eq!(Error::Query("x".into()).kind(), ErrorKind::Query);
    }
}
