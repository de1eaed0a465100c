//! Verification (`dobsob verify`): compare each dataset in the warehouse with the source, changing nothing. Counts and the
//! newest `:updated_at` always; with `--deep`, the source's whole `(:id, :updated_at, :version)` set against
//! the table's, naming missing, extra and stale rows. It is how a user checks, on the real portal, that the
//! warehouse equals the source.
//!
//! It checks the published snapshot, `warehouse.duckdb`, what analysts see (after a run it equals the working
//! database), attached read-only to an in-memory DuckDB where the source's ids are collected: nothing is
//! written to the data directory, and it works while a sync runs (it then checks the last snapshot). A
//! PostgreSQL warehouse ([`Verifier::open_postgres`]) is read on a snapshot of its own: counts in
//! PostgreSQL, and for `--deep` the table's `(:id, :updated_at, :version)` copied out into the in-memory
//! DuckDB beside the source's.

use std::path::Path;
use std::time::Duration;

use duckdb::{params, Connection};

use crate::catalog::Dataset;
use crate::error::Error;
use crate::soda::soql::parse_timestamp_ms;
use crate::soda::{AppToken, PageQuery, RetryPolicy, SodaClient};
use crate::warehouse::postgres::{connect, off_runtime, ConnInfo};
use crate::warehouse::{quote_ident, quote_literal, WarehouseError};

/// Examples shown per kind of difference.
const EXAMPLES: usize = 5;

/// What one dataset's comparison found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub source_rows: u64,
    pub local_rows: i64,
    pub source_newest_ms: Option<i64>,
    pub local_newest_ms: Option<i64>,
    /// Deep only: (count, examples).
    pub missing: Option<(i64, Vec<String>)>,
    pub extra: Option<(i64, Vec<String>)>,
    pub stale: Option<(i64, Vec<String>)>,
}

impl Verdict {
    /// The differences, in words; empty when in step.
    pub fn differences(&self) -> Vec<String> {
        let mut d = Vec::new();
        if self.source_rows as i64 != self.local_rows {
            d.push(format!(
                "rows: source {}, warehouse {}",
                self.source_rows, self.local_rows
            ));
        }
        if self.source_newest_ms != self.local_newest_ms {
            let f = |ms: Option<i64>| {
                ms.and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .unwrap_or_else(|| "none".into())
            };
            d.push(format!(
                "newest :updated_at: source {}, warehouse {}",
                f(self.source_newest_ms),
                f(self.local_newest_ms)
            ));
        }
        for (what, v) in [
            ("missing from the warehouse", &self.missing),
            ("in the warehouse but gone from the source", &self.extra),
            (
                "stale (another :version or :updated_at than the source)",
                &self.stale,
            ),
        ] {
            if let Some((n, ex)) = v.as_ref().filter(|(n, _)| *n > 0) {
                d.push(format!("{n} rows {what}, e.g. {}", ex.join(", ")));
            }
        }
        d
    }
}

/// The published snapshot, attached read-only to an in-memory DuckDB, and a client of the portal: compares
/// datasets one by one.
pub struct Verifier {
    conn: Connection,
    client: SodaClient,
    /// Where the deep comparison's id listings are downloaded.
    tmp: tempfile::TempDir,
    /// A PostgreSQL warehouse instead of the snapshot: its connection and the datasets' schema.
    pg: Option<(tokio::sync::Mutex<postgres::Client>, String)>,
}

impl Verifier {
    /// Opens the snapshot at `warehouse` read-only (a missing one is a configuration error: nothing was
    /// synced yet) and a client of `portal` that waits `timeout` for data.
    pub fn open(
        warehouse: &Path,
        portal: &url::Url,
        token: Option<AppToken>,
        timeout: Duration,
    ) -> Result<Verifier, Error> {
        if !warehouse.exists() {
            return Err(Error::Config(format!(
                "no warehouse at {} yet: run `dobsob sync` first",
                warehouse.display()
            )));
        }
        let client = SodaClient::new(portal, token, RetryPolicy::default(), timeout)?;
        let conn = attach_read_only(warehouse)?;
        let tmp = tempfile::tempdir()
            .map_err(|e| Error::Io(format!("cannot create a temporary directory: {e}")))?;
        Ok(Verifier {
            conn,
            client,
            tmp,
            pg: None,
        })
    }

    /// Compares a PostgreSQL warehouse (`--warehouse`) with the source, reading only.
    pub fn open_postgres(
        info: &ConnInfo,
        portal: &url::Url,
        token: Option<AppToken>,
        timeout: Duration,
    ) -> Result<Verifier, Error> {
        let client = SodaClient::new(portal, token, RetryPolicy::default(), timeout)?;
        let pg = off_runtime(|| connect::connect(info))?;
        let conn = Connection::open_in_memory().map_err(|source| WarehouseError::Sql {
            context: "starting an in-memory DuckDB".into(),
            source,
        })?;
        let tmp = tempfile::tempdir()
            .map_err(|e| Error::Io(format!("cannot create a temporary directory: {e}")))?;
        Ok(Verifier {
            conn,
            client,
            tmp,
            pg: Some((tokio::sync::Mutex::new(pg), info.schema.clone())),
        })
    }

    /// Compares `ds`: counts and the newest `:updated_at`; with `deep`, every row's `(:id, :updated_at,
    /// :version)`, listed `page_size` ids per request.
    pub async fn dataset(
        &self,
        ds: &Dataset,
        deep: bool,
        page_size: u64,
    ) -> Result<Verdict, Failure> {
        if let Some((pg, schema)) = &self.pg {
            let mut pg = pg.lock().await;
            return verify_postgres(self, &mut pg, schema, ds, deep, page_size).await;
        }
        verify_one(
            &self.conn,
            &self.client,
            ds,
            deep,
            page_size,
            self.tmp.path(),
        )
        .await
    }
}

impl Drop for Verifier {
    /// The PostgreSQL connection ends off the async runtime (the driver's close blocks on a runtime of its
    /// own, which tokio forbids inside the command line's).
    fn drop(&mut self) {
        if let Some((pg, _)) = self.pg.take() {
            let pg = pg.into_inner();
            off_runtime(move || drop(pg));
        }
    }
}

fn attach_read_only(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_in_memory().map_err(|source| WarehouseError::Sql {
        context: "starting an in-memory DuckDB".into(),
        source,
    })?;
    conn.execute_batch(&format!(
        "ATTACH {} AS wh (READ_ONLY)",
        quote_literal(&path.display().to_string())
    ))
    .map_err(|source| WarehouseError::Open {
        path: format!("{} (read-only)", path.display()),
        source,
    })?;
    Ok(conn)
}

fn sql_err(what: &str) -> impl Fn(duckdb::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Why a dataset could not be compared.
#[derive(Debug)]
pub enum Failure {
    /// The portal cannot be reached at all.
    Unreachable(String),
    Other(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Other(s)
    }
}

impl From<crate::soda::SodaError> for Failure {
    fn from(e: crate::soda::SodaError) -> Self {
        if e.is_unreachable() {
            Failure::Unreachable(e.to_string())
        } else {
            Failure::Other(e.to_string())
        }
    }
}

async fn verify_one(
    conn: &Connection,
    client: &SodaClient,
    ds: &Dataset,
    deep_check: bool,
    page_size: u64,
    tmp: &Path,
) -> Result<Verdict, Failure> {
    let id = ds.id.as_str();
    let table = format!("wh.main.{}", quote_ident(ds.key.as_str()));
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'wh' AND schema_name = 'main' AND table_name = ?",
            params![ds.key.as_str()],
            |r| r.get(0),
        )
        .map_err(sql_err("looking up the table"))?;
    if exists == 0 {
        return Err(Failure::Other("not in the warehouse (never synced)".into()));
    }
    let mut v = Verdict {
        source_rows: client.count(id, None).await?,
        ..Verdict::default()
    };
    let newest = client.query_json(id, &PageQuery::newest()).await?;
    v.source_newest_ms = newest
        .first()
        .and_then(|r| r.get(":updated_at")?.as_str().and_then(parse_timestamp_ms));
    (v.local_rows, v.local_newest_ms) = conn
        .query_row(
            &format!(
                "SELECT count(*), epoch_ms(max(CAST(socrata_updated_at AS TIMESTAMP))) FROM {table}"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql_err("counting the table"))?;
    if deep_check {
        deep(conn, client, ds, &table, page_size, tmp, &mut v).await?;
    }
    Ok(v)
}

/// [`verify_one`] for a PostgreSQL warehouse: the counts from PostgreSQL; for `deep`, the table's ids,
/// `:updated_at` and `:version` copied out (streamed to a file, then into the in-memory DuckDB as `local`)
/// and compared there with the source's, as for DuckDB.
async fn verify_postgres(
    v: &Verifier,
    pg: &mut postgres::Client,
    schema: &str,
    ds: &Dataset,
    deep_check: bool,
    page_size: u64,
) -> Result<Verdict, Failure> {
    let pg_err = |what: &str, e: postgres::Error| -> Failure {
        crate::warehouse::postgres::pg_error(what.to_string(), &e)
            .to_string()
            .into()
    };
    let table = format!("{}.{}", quote_ident(schema), quote_ident(ds.key.as_str()));
    let (exists, local_rows, local_newest_ms) = off_runtime(|| {
        let exists: bool = pg
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .map_err(|e| pg_err("looking up the table", e))?
            .get(0);
        if !exists {
            return Ok::<_, Failure>((false, 0, None));
        }
        let r = pg
            .query_one(
                &format!(
                    "SELECT count(*), floor(extract(epoch FROM max(socrata_updated_at)) * 1000)::bigint FROM {table}"
                ),
                &[],
            )
            .map_err(|e| pg_err("counting the table", e))?;
        Ok((true, r.get(0), r.get(1)))
    })?;
    if !exists {
        return Err(Failure::Other("not in the warehouse (never synced)".into()));
    }
    let id = ds.id.as_str();
    let mut verdict = Verdict {
        source_rows: v.client.count(id, None).await?,
        local_rows,
        local_newest_ms,
        ..Verdict::default()
    };
    let newest = v.client.query_json(id, &PageQuery::newest()).await?;
    verdict.source_newest_ms = newest
        .first()
        .and_then(|r| r.get(":updated_at")?.as_str().and_then(parse_timestamp_ms));
    if deep_check {
        let path = v.tmp.path().join(format!("{}.local.csv", ds.key));
        off_runtime(|| {
            let mut out = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            let mut reader = pg
                .copy_out(&format!(
                    "COPY (SELECT socrata_id, to_char(socrata_updated_at AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD HH24:MI:SS.MS'), socrata_version FROM {table}) TO STDOUT (FORMAT csv)"
                ))
                .map_err(|e| pg_err("reading the table's ids", e))?;
            std::io::copy(&mut reader, &mut out)
                .map_err(|e| format!("reading the table's ids: {e}"))?;
            Ok::<_, Failure>(())
        })?;
        v.conn
            .execute_batch(&format!(
                "CREATE OR REPLACE TABLE local AS SELECT * FROM read_csv({}, header = false, auto_detect = false, \
                 delim = ',', quote = '\"', escape = '\"', columns = {{'socrata_id': 'VARCHAR', \
                 'socrata_updated_at': 'TIMESTAMP', 'socrata_version': 'VARCHAR'}})",
                quote_literal(&path.display().to_string())
            ))
            .map_err(sql_err("loading the table's ids"))?;
        let _ = std::fs::remove_file(&path);
        deep(
            &v.conn,
            &v.client,
            ds,
            "local",
            page_size,
            v.tmp.path(),
            &mut verdict,
        )
        .await?;
    }
    Ok(verdict)
}

/// Lists the source's `(:id, :updated_at, :version)` into an in-memory table and compares it with the
/// warehouse's.
async fn deep(
    conn: &Connection,
    client: &SodaClient,
    ds: &Dataset,
    table: &str,
    limit: u64,
    tmp: &Path,
    v: &mut Verdict,
) -> Result<(), String> {
    conn.execute_batch(
        "CREATE OR REPLACE TABLE src (id VARCHAR, updated_ms BIGINT, version VARCHAR)",
    )
    .map_err(sql_err("creating the id table"))?;
    let path = tmp.join(format!("{}.verify.csv", ds.key));
    let mut cursor: Option<String> = None;
    let mut listed = 0u64;
    loop {
        let mut q = PageQuery::id_page(cursor.as_deref(), limit);
        q.select = ":id,:updated_at,:version".into();
        client
            .download_csv(ds.id.as_str(), &q, &path)
            .await
            .map_err(|e| e.to_string())?;
        let mut rdr = csv::Reader::from_path(&path).map_err(|e| e.to_string())?;
        let header = rdr.headers().map_err(|e| e.to_string())?.clone();
        if header.len() != 3
            || &header[0] != ":id"
            || &header[1] != ":updated_at"
            || &header[2] != ":version"
        {
            return Err(format!(
                "the id listing has header {header:?}, not :id,:updated_at,:version"
            ));
        }
        let mut app = conn.appender("src").map_err(sql_err("appending ids"))?;
        let (mut n, mut last) = (0u64, None);
        for rec in rdr.records() {
            let rec = rec.map_err(|e| format!("the id listing: {e}"))?;
            let ms = parse_timestamp_ms(&rec[1])
                .ok_or_else(|| format!("the id listing has :updated_at {:?}", &rec[1]))?;
            let version = (!rec[2].is_empty()).then(|| rec[2].to_string());
            app.append_row(params![&rec[0], ms, version])
                .map_err(sql_err("appending ids"))?;
            n += 1;
            last = Some(rec[0].to_string());
        }
        app.flush().map_err(sql_err("appending ids"))?;
        listed += n;
        if n == 0 || last.is_none() || last == cursor {
            break;
        }
        cursor = last;
    }
    let _ = std::fs::remove_file(&path);
    let count = |sql: &str| -> Result<(i64, Vec<String>), String> {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM ({sql})"), [], |r| r.get(0))
            .map_err(sql_err("comparing"))?;
        let mut stmt = conn
            .prepare(&format!("{sql} ORDER BY 1 LIMIT {EXAMPLES}"))
            .map_err(sql_err("comparing"))?;
        let ex = stmt
            .query_map([], |r| r.get(0))
            .map_err(sql_err("comparing"))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(sql_err("comparing"))?;
        Ok((n, ex))
    };
    v.missing = Some(count(&format!(
        "SELECT id FROM src WHERE id NOT IN (SELECT socrata_id FROM {table})"
    ))?);
    v.extra = Some(count(&format!(
        "SELECT socrata_id FROM {table} WHERE socrata_id NOT IN (SELECT id FROM src)"
    ))?);
    v.stale = Some(count(&format!(
        "SELECT s.id FROM src s JOIN {table} t ON t.socrata_id = s.id \
         WHERE epoch_ms(CAST(t.socrata_updated_at AS TIMESTAMP)) <> s.updated_ms \
            OR t.socrata_version IS DISTINCT FROM s.version"
    ))?);
    let dup: i64 = conn
        .query_row("SELECT count(*) - count(DISTINCT id) FROM src", [], |r| {
            r.get(0)
        })
        .map_err(sql_err("comparing"))?;
    if dup > 0 || listed != v.source_rows {
        return Err(format!(
            "the source's id listing is inconsistent ({listed} ids, {dup} repeated, count {}): try again",
            v.source_rows
        ));
    }
    Ok(())
}
