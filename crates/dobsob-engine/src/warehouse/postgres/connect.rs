//! A connection to the PostgreSQL warehouse, and dobsob's own schema in it. Errors name the server (never
//! the password) and what to check.

use super::conninfo::{ConnInfo, SslMode};
use crate::warehouse::WarehouseError;

/// dobsob's own tables live in this schema (sync state, uncastable values, schema changes, the
/// `dobsob_datasets` view's facts); the datasets' tables in the one the user chooses.
pub const STATE_SCHEMA: &str = "dobsob";

/// Connects to `info` as the writer does: `application_name` dobsob, a statement timeout off (loads are
/// long), UTC for every timestamp the session reads or writes.
pub fn connect(info: &ConnInfo) -> Result<postgres::Client, WarehouseError> {
    if info.ssl == SslMode::VerifyFull {
        return Err(WarehouseError::State(format!(
            "{info}: a remote PostgreSQL server needs TLS with certificate verification, which this build of \
             dobsob does not have yet; connect through a unix socket or the loopback address"
        )));
    }
    let mut config = postgres::Config::new();
    config
        .user(&info.user)
        .dbname(&info.dbname)
        .port(info.port)
        .application_name("dobsob")
        .options("-c TimeZone=UTC -c statement_timeout=0");
    if info.host.starts_with('/') {
        config.host_path(&info.host);
    } else {
        config.host(&info.host);
    }
    if let Some(p) = info.password() {
        config.password(p);
    }
    config.connect(postgres::NoTls).map_err(|e| {
        // The driver's message never holds the password; the address is ours, without it.
        WarehouseError::State(format!("cannot connect to {info}: {e}"))
    })
}

/// The server's version number (`server_version_num`, e.g. 150018), after checking it is one dobsob
/// supports (PostgreSQL 13 or newer).
pub fn server_version(client: &mut postgres::Client) -> Result<i32, WarehouseError> {
    let v: String = client
        .query_one("SHOW server_version_num", &[])
        .map_err(|e| WarehouseError::State(format!("reading the server's version: {e}")))?
        .get(0);
    let n: i32 = v.parse().map_err(|_| {
        WarehouseError::State(format!("the server's version {v:?} is not a number"))
    })?;
    if n < 130_000 {
        return Err(WarehouseError::State(format!(
            "PostgreSQL {} is too old: dobsob needs 13 or newer",
            n / 10_000
        )));
    }
    Ok(n)
}
