//! How a command ends: the engine's [`Error`] and the exit codes its kinds map to.

pub use dobsob_engine::error::{Error, ErrorKind};

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

/// The exit code of a command that ended with `e`.
pub fn exit_status(e: &Error) -> ExitStatus {
    match e.kind() {
        ErrorKind::Config => ExitStatus::Usage,
        ErrorKind::Locked => ExitStatus::Locked,
        ErrorKind::Interrupted => ExitStatus::Interrupted,
        ErrorKind::Portal
        | ErrorKind::Ledger
        | ErrorKind::Warehouse
        | ErrorKind::Query
        | ErrorKind::Io => ExitStatus::Failed,
    }
}
