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
    let mut config = postgres::Config::new();
    config
        .user(&info.user)
        .dbname(&info.dbname)
        .port(info.port)
        .application_name("dobsob")
        .connect_timeout(std::time::Duration::from_secs(30))
        .options(
            "-c TimeZone=UTC -c statement_timeout=0 -c standard_conforming_strings=on \
             -c idle_in_transaction_session_timeout=0",
        );
    if info.host.starts_with('/') {
        config.host_path(&info.host);
    } else {
        config.host(&info.host);
    }
    if let Some(p) = info.password() {
        config.password(p);
    }
    // The driver's message never holds the password; the address is ours, without it.
    let failed = |e: postgres::Error| super::pg_error(format!("cannot connect to {info}"), &e);
    match info.ssl {
        SslMode::Disable => config.connect(postgres::NoTls).map_err(failed),
        SslMode::VerifyFull => {
            config.ssl_mode(postgres::config::SslMode::Require);
            let tls = tls_connector(info)?;
            config.connect(tls).map_err(failed)
        }
    }
}

/// TLS that checks the server's certificate against the trusted roots (`sslrootcert`, else the system's and
/// the Mozilla roots) and its name against the host: libpq's `verify-full`.
fn tls_connector(
    info: &ConnInfo,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, WarehouseError> {
    let mut roots = rustls::RootCertStore::empty();
    match &info.sslrootcert {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                WarehouseError::State(format!(
                    "{info}: reading sslrootcert {}: {e}",
                    path.display()
                ))
            })?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    WarehouseError::State(format!("{info}: sslrootcert {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    WarehouseError::State(format!("{info}: sslrootcert {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(WarehouseError::State(format!(
                    "{info}: sslrootcert {} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| WarehouseError::State(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
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
