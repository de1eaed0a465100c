//! The errors a command ends with, and the exit codes they map to.

/// Exit codes: 0 all requested datasets succeeded, 1 some failed, 2 usage or configuration error,
/// 75 another run holds the data directory (EX_TEMPFAIL: try again later), 130 interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    /// Another `sync` or `rebuild` holds the data directory's lock.
    Locked = 75,
    Interrupted = 130,
}

/// Why a command could not run at all (as opposed to some datasets failing).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag, catalog or setting: exit 2.
    #[error("{0}")]
    Config(String),
    /// Something failed while running (data directory, ledger, warehouse): exit 1.
    #[error("{0}")]
    Runtime(String),
    /// Another run holds the data directory: exit 75, so that cron wrappers tell it from a failure.
    #[error("{0}")]
    Locked(String),
    /// Ctrl-C or SIGTERM stopped the command before it finished: exit 130.
    #[error("{0}")]
    Interrupted(String),
}

impl Error {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::Config(_) => ExitStatus::Usage,
            Error::Runtime(_) => ExitStatus::Failed,
            Error::Locked(_) => ExitStatus::Locked,
            Error::Interrupted(_) => ExitStatus::Interrupted,
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
            crate::lock::LockError::Io { .. } => Error::Runtime(e.to_string()),
        }
    }
}

impl From<crate::ledger::LedgerError> for Error {
    fn from(e: crate::ledger::LedgerError) -> Self {
        Error::Runtime(e.to_string())
    }
}

impl From<crate::warehouse::WarehouseError> for Error {
    fn from(e: crate::warehouse::WarehouseError) -> Self {
        Error::Runtime(e.to_string())
    }
}
