//! Which DuckDB releases can open the warehouse: the storage version its files are written in, and the
//! one-time conversion of a working database written in another.
//!
//! Why: DuckDB 2.0 writes its newest storage format by default, which every DuckDB 1.x refuses ("Trying to
//! read a database file with version number 69, ..."). Analysts open the published file from whatever they
//! have (the CLI from pip, R, DBeaver's driver, a notebook pinned a year back), mostly 1.x for months after a
//! major release. So dobsob creates its files with `storage_compatibility_version = 'v1.0.0'` unless told
//! otherwise (`--storage-version`; docs/performance.md has the measured cost of the older format).
//!
//! DuckDB applies that option only when it creates a file, and it cannot lower the version of an existing
//! one. A working database written in another version (by a dobsob from before this choice, which left no
//! `storage_version` in `dobsob.meta`, or under another `--storage-version`) is converted once: a new file
//! beside it is created in the wanted version, filled with `COPY FROM DATABASE (SCHEMA)` and a copy of each
//! table, checked table by table (row count and a hash of every row), and only then renamed over the old
//! one. A conversion that is killed leaves the old file untouched and a `.converting` file that the next
//! open removes; nothing is downloaded again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use duckdb::{params, Connection, OptionalExt};

use super::{quote_ident, quote_literal, Context, WarehouseError};

/// A DuckDB storage version: `latest`, or the oldest DuckDB release that must read the file (`v1.0.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageVersion(String);

impl StorageVersion {
    /// The default: readable by every DuckDB from 1.0 on (checked with Python duckdb 1.1.3 and the 1.5.6 CLI).
    pub const DEFAULT: &'static str = "v1.0.0";

    /// The newest format of the DuckDB dobsob carries: only DuckDB 2.0 and later read it.
    pub const LATEST: &'static str = "latest";

    /// Checks the shape (`latest` or `vMAJOR.MINOR.PATCH`); DuckDB itself says whether it knows the version
    /// ([`StorageVersion::check_known`]).
    pub fn parse(s: &str) -> Result<StorageVersion, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case(Self::LATEST) {
            return Ok(StorageVersion(Self::LATEST.into()));
        }
        let digits = s.strip_prefix('v').unwrap_or(s);
        let parts: Vec<&str> = digits.split('.').collect();
        if parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            Ok(StorageVersion(format!("v{digits}")))
        } else {
            Err(format!(
                "{s:?} is not a storage version: give the oldest DuckDB release that must open the warehouse, \
                 such as {} (the default) or v1.2.0, or `{}` for DuckDB 2.0's newest format",
                Self::DEFAULT,
                Self::LATEST
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this DuckDB knows the version; its error lists the ones it does.
    pub fn check_known(&self) -> Result<(), String> {
        let cfg = duckdb::Config::default()
            .with("storage_compatibility_version", self.as_str())
            .map_err(|e| e.to_string())?;
        Connection::open_in_memory_with_flags(cfg)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Default for StorageVersion {
    fn default() -> Self {
        StorageVersion(Self::DEFAULT.into())
    }
}

impl std::fmt::Display for StorageVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key of `dobsob.meta` that records the storage version a warehouse file was created in.
pub const META_KEY: &str = "storage_version";

/// The file a conversion writes before the rename (beside the database, so the rename is atomic).
pub fn converting_path(path: &Path) -> PathBuf {
    super::publish::hidden_beside(path, "converting")
}

/// Removes what a killed conversion of `path` left beside it (the old file was never touched).
pub fn remove_leftovers(path: &Path) -> Result<(), WarehouseError> {
    let tmp = converting_path(path);
    for leftover in [super::wal_of(&tmp), tmp] {
        match std::fs::remove_file(&leftover) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(WarehouseError::State(format!(
                    "removing {}, left by a conversion that was stopped: {e}",
                    leftover.display()
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// What a conversion did.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The version the file was in (`None`: not recorded, a file from before dobsob recorded it).
    pub from: Option<String>,
    pub to: String,
    pub tables: usize,
    pub rows: u64,
    pub seconds: f64,
}

/// The storage version recorded in a warehouse file's `dobsob.meta`, if any.
pub fn recorded(conn: &Connection) -> Result<Option<String>, WarehouseError> {
    let has_meta: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() \
             AND schema_name = 'dobsob' AND table_name = 'meta'",
            [],
            |r| r.get(0),
        )
        .ctx(|| "reading the warehouse's storage version".into())?;
    if has_meta == 0 {
        return Ok(None);
    }
    conn.query_row(
        "SELECT value FROM dobsob.meta WHERE key = ?",
        params![META_KEY],
        |r| r.get(0),
    )
    .optional()
    .ctx(|| "reading the warehouse's storage version".into())
}

pub(super) fn open_plain(path: &Path) -> Result<Connection, WarehouseError> {
    Connection::open(path).map_err(|source| WarehouseError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// Converts the warehouse at `path` to `wanted` unless it records that version already; `progress` is
/// told of each table as it is copied. Removes the leftover of a killed conversion first. Returns what it
/// did, or `None` when nothing was needed (or there is no file yet).
pub fn convert_if_needed(
    path: &Path,
    wanted: &StorageVersion,
    temp_dir: &Path,
    memory_limit_mb: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<Converted>, WarehouseError> {
    let tmp = converting_path(path);
    let io = |what: &str, e: std::io::Error| {
        WarehouseError::State(format!(
            "converting {} to storage version {wanted}: {what}: {e}",
            path.display()
        ))
    };
    remove_leftovers(path)?;
    if !path.exists() {
        return Ok(None);
    }
    let started = Instant::now();
    let conn = open_plain(path)?;
    let from = recorded(&conn)?;
    if from.as_deref() == Some(wanted.as_str()) {
        return Ok(None);
    }
    conn.execute_batch(&format!(
        "SET memory_limit = '{memory_limit_mb}MB'; SET preserve_insertion_order = false; SET temp_directory = {};",
        quote_literal(&temp_dir.display().to_string())
    ))
    .ctx(|| "configuring DuckDB for the conversion".into())?;
    let source: String = conn
        .query_row("SELECT current_database()", [], |r| r.get(0))
        .ctx(|| "naming the warehouse being converted".into())?;
    let tables: Vec<(String, String)> = {
        let mut stmt = conn
            .prepare(
                "SELECT schema_name, table_name FROM duckdb_tables() \
                 WHERE database_name = current_database() AND NOT temporary ORDER BY schema_name, table_name",
            )
            .ctx(|| "listing the tables to convert".into())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(|| "listing the tables to convert".into())?;
        rows.collect::<Result<_, _>>()
            .ctx(|| "listing the tables to convert".into())?
    };
    progress(&format!(
        "converting the warehouse {} from storage version {} to {wanted} (readable by DuckDB {}): {} tables, \
         once; nothing is downloaded again",
        path.display(),
        from.as_deref().unwrap_or("latest (not recorded)"),
        readers(wanted),
        tables.len()
    ));
    let target = "dobsob_converting";
    conn.execute_batch(&format!(
        "ATTACH {} AS {target} (STORAGE_VERSION {}); COPY FROM DATABASE {} TO {target} (SCHEMA);",
        quote_literal(&tmp.display().to_string()),
        quote_literal(wanted.as_str()),
        quote_ident(&source),
    ))
    .ctx(|| format!("creating {} in storage version {wanted}", tmp.display()))?;
    let mut rows_total = 0u64;
    for (i, (schema, table)) in tables.iter().enumerate() {
        let name = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let from_table = format!("{}.{name}", quote_ident(&source));
        let to_table = format!("{target}.{name}");
        conn.execute_batch(&format!(
            "INSERT INTO {to_table} SELECT * FROM {from_table}"
        ))
        .ctx(|| format!("copying {schema}.{table}"))?;
        // The check: the same number of rows, and the same sum of every row's hash.
        let fingerprint = |t: &str| -> Result<(i64, String), WarehouseError> {
            conn.query_row(
                &format!(
                    "SELECT count(*), coalesce(sum(hash(x)::HUGEINT), 0)::VARCHAR FROM {t} AS x"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx(|| format!("checking the copy of {schema}.{table}"))
        };
        let (a, b) = (fingerprint(&from_table)?, fingerprint(&to_table)?);
        if a != b {
            return Err(WarehouseError::State(format!(
                "converting {}: the copy of {schema}.{table} differs from the original ({} rows, hash {} \
                 against {} rows, hash {}); the original is untouched",
                path.display(),
                a.0,
                a.1,
                b.0,
                b.1
            )));
        }
        rows_total += a.0 as u64;
        progress(&format!(
            "converted {schema}.{table} ({} of {}, {} rows, {:.1}s so far)",
            i + 1,
            tables.len(),
            a.0,
            started.elapsed().as_secs_f64()
        ));
    }
    conn.execute(
        &format!("INSERT OR REPLACE INTO {target}.dobsob.meta VALUES (?, ?)"),
        params![META_KEY, wanted.as_str()],
    )
    .ctx(|| "recording the storage version".into())?;
    conn.execute_batch(&format!("CHECKPOINT {target}; DETACH {target};"))
        .ctx(|| "closing the converted warehouse".into())?;
    drop(conn);
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing the converted file", e))?;
    if super::wal_of(&tmp).exists() {
        return Err(WarehouseError::State(format!(
            "converting {}: DuckDB left a WAL beside the converted file; the original is untouched",
            path.display()
        )));
    }
    // The old file was closed cleanly (its WAL checkpointed); a WAL left beside it would be replayed into
    // the new file by name.
    let old_wal = super::wal_of(path);
    if old_wal.exists() {
        std::fs::remove_file(&old_wal).map_err(|e| io("removing the old WAL", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io("renaming the converted file into place", e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the directory", e))?;
    }
    let done = Converted {
        from,
        to: wanted.to_string(),
        tables: tables.len(),
        rows: rows_total,
        seconds: started.elapsed().as_secs_f64(),
    };
    progress(&format!(
        "converted the warehouse to storage version {wanted}: {} tables, {} rows in {:.1}s",
        done.tables, done.rows, done.seconds
    ));
    Ok(Some(done))
}

/// What a published snapshot says of itself: its storage version and share group, from `dobsob.meta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFacts {
    /// `None`: not recorded (written before dobsob recorded it: DuckDB 2.0's newest format).
    pub storage_version: Option<String>,
    /// `None` or `none`: private.
    pub share_group: Option<String>,
}

/// Reads [`SnapshotFacts`] from a published snapshot, opened read-only (as an analyst would; a sync never
/// holds it).
pub fn snapshot_facts(path: &Path) -> Result<SnapshotFacts, WarehouseError> {
    let cfg = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .and_then(|c| c.enable_external_access(false));
    let conn = cfg
        .and_then(|c| Connection::open_with_flags(path, c))
        .map_err(|source| WarehouseError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let storage_version = recorded(&conn)?;
    // recorded() found a dobsob.meta when it found a version; a snapshot without one has no share either.
    let share_group = match storage_version {
        None => None,
        Some(_) => conn
            .query_row(
                "SELECT value FROM dobsob.meta WHERE key = ?",
                params![super::share::META_KEY],
                |r| r.get(0),
            )
            .optional()
            .ctx(|| "reading the snapshot's dobsob.meta".into())?,
    };
    Ok(SnapshotFacts {
        storage_version,
        share_group,
    })
}

/// Which DuckDB releases read a storage version, in words.
pub fn readers(v: &StorageVersion) -> String {
    if v.as_str() == StorageVersion::LATEST {
        "2.0 and later".into()
    } else {
        format!("{} and later", v.as_str().trim_start_matches('v'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_versions_parse_and_bad_ones_say_what_to_give() {
        assert_eq!(StorageVersion::parse("v1.0.0").unwrap().as_str(), "v1.0.0");
        assert_eq!(StorageVersion::parse("1.2.0").unwrap().as_str(), "v1.2.0");
        assert_eq!(
            StorageVersion::parse(" LATEST ").unwrap().as_str(),
            "latest"
        );
        assert_eq!(StorageVersion::default().as_str(), "v1.0.0");
        for bad in [
            "",
            "v1",
            "v1.0",
            "v1.0.0.0",
            "newest",
            "v1.x.0",
            "v1.0.0; DROP TABLE t",
        ] {
            let e = StorageVersion::parse(bad).unwrap_err();
            assert!(e.contains("v1.0.0") && e.contains("latest"), "{bad}: {e}");
        }
    }

    #[test]
    fn duckdb_knows_the_default_and_latest_and_names_an_unknown_version() {
        StorageVersion::default().check_known().unwrap();
        StorageVersion::parse("latest")
            .unwrap()
            .check_known()
            .unwrap();
        let e = StorageVersion::parse("v9.9.9")
            .unwrap()
            .check_known()
            .unwrap_err();
        assert!(e.contains("v9.9.9"), "{e}");
    }

    #[test]
    fn a_file_in_another_version_is_converted_whole_and_checked_and_a_leftover_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.duckdb");
        {
            let cfg = duckdb::Config::default()
                .with("storage_compatibility_version", "latest")
                .unwrap();
            let c = Connection::open_with_flags(&path, cfg).unwrap();
            c.execute_batch(
                "CREATE SCHEMA dobsob; CREATE TABLE dobsob.meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
                 INSERT INTO dobsob.meta VALUES ('format', '1');
                 CREATE TABLE \"odd \"\"name\" (socrata_id VARCHAR, n DECIMAL(38,18), t TIMESTAMPTZ);
                 INSERT INTO \"odd \"\"name\" SELECT 'row-' || i, i / 8, CAST(TIMESTAMP '2024-01-01 00:00:00' + to_seconds(i) AS TIMESTAMPTZ) FROM range(5000) r(i);
                 COMMENT ON TABLE \"odd \"\"name\" IS 'kept';
                 CREATE VIEW v AS SELECT count(*) AS n FROM \"odd \"\"name\";",
            )
            .unwrap();
        }
        let sum_sql = "SELECT sum(n)::VARCHAR || '/' || max(t)::VARCHAR FROM \"odd \"\"name\"";
        let before: String = Connection::open(&path)
            .unwrap()
            .query_row(sum_sql, [], |r| r.get(0))
            .unwrap();
        // A killed conversion's leftover.
        std::fs::write(converting_path(&path), b"half a file").unwrap();
        let mut said = Vec::new();
        let done = convert_if_needed(
            &path,
            &StorageVersion::default(),
            dir.path(),
            80,
            &mut |m| said.push(m.to_string()),
        )
        .unwrap()
        .expect("converted");
        assert_eq!(done.from, None);
        assert_eq!(done.to, "v1.0.0");
        assert_eq!((done.tables, done.rows), (2, 5001));
        assert!(said.iter().any(|m| m.contains("odd \"name")), "{said:?}");
        assert!(!converting_path(&path).exists());
        let c = Connection::open(&path).unwrap();
        assert_eq!(recorded(&c).unwrap().as_deref(), Some("v1.0.0"));
        let (n, comment): (i64, String) = c
            .query_row(
                "SELECT (SELECT n FROM v), \
                 (SELECT comment FROM duckdb_tables() WHERE table_name = 'odd \"name')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (n, comment.as_str()),
            (5000, "kept"),
            "views and comments come along"
        );
        let after: String = c.query_row(sum_sql, [], |r| r.get(0)).unwrap();
        assert_eq!(after, before, "the values are the original's");
        drop(c);
        // Recorded now: a second call does nothing.
        assert_eq!(
            convert_if_needed(
                &path,
                &StorageVersion::default(),
                dir.path(),
                80,
                &mut |_| {}
            )
            .unwrap(),
            None
        );
    }
}
