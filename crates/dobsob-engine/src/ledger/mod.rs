//! The SQLite ledger: per dataset its watermark, counts, schema fingerprint, successes and failures; per run,
//! per attempt and per page what was fetched. Schema in `sql/ledger/`, applied as forward migrations.
//!
//! The ledger mirrors the warehouse: it is written after the warehouse commits, never before, so it is never
//! ahead of the data. If a crash falls between the two, the next sync repairs the ledger from the warehouse's
//! own state (see `docs/architecture.md`). Every write is one transaction; the file is in WAL mode.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::quality::{Anomaly, Profile};
use crate::soda::Watermark;

/// The migrations, in order. `PRAGMA user_version` holds how many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../../sql/ledger/0001_init.sql"),
    include_str!("../../../../sql/ledger/0002_outcomes.sql"),
    include_str!("../../../../sql/ledger/0003_skips.sql"),
    include_str!("../../../../sql/ledger/0004_quality.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}{}", sqlite_hint(.source))]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "ledger {path} has schema version {found}, newer than this dobsob knows ({known}): upgrade dobsob"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "ledger {path} has schema version {found}, this dobsob's is {known}: a plan cannot be read from it \
         without migrating it (run a sync first, or upgrade dobsob)"
    )]
    Version {
        path: String,
        found: i64,
        known: i64,
    },
}

/// The way out of a ledger that is not one.
fn sqlite_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            " (the file is damaged or not a dobsob ledger: move it aside; the next sync starts a new ledger \
             from the warehouse's own state, without the old run history)"
        }
        _ => "",
    }
}

pub type RunId = i64;
pub type AttemptId = i64;

/// How a dataset's last attempt ended, as the ledger's `datasets.last_outcome` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LastOutcome {
    Ok,
    /// Synced, but the table still differed from the source.
    Drift,
    Failed,
    /// Stopped by Ctrl-C or SIGTERM at a page boundary.
    Interrupted,
    /// Its process was killed; the next run marked it.
    Abandoned,
}

impl LastOutcome {
    /// The ledger's text of it (unknown text reads as no outcome).
    pub fn parse(s: &str) -> Option<LastOutcome> {
        Some(match s {
            "ok" => LastOutcome::Ok,
            "drift" => LastOutcome::Drift,
            "failed" => LastOutcome::Failed,
            "interrupted" => LastOutcome::Interrupted,
            "abandoned" => LastOutcome::Abandoned,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LastOutcome::Ok => "ok",
            LastOutcome::Drift => "drift",
            LastOutcome::Failed => "failed",
            LastOutcome::Interrupted => "interrupted",
            LastOutcome::Abandoned => "abandoned",
        }
    }

    /// Failed or drifted: someone should look.
    pub fn is_failing(self) -> bool {
        matches!(self, LastOutcome::Failed | LastOutcome::Drift)
    }

    /// Stopped before its end (interrupted or killed): the next run resumes it.
    pub fn was_stopped(self) -> bool {
        matches!(self, LastOutcome::Interrupted | LastOutcome::Abandoned)
    }
}

impl std::fmt::Display for LastOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the ledger knows of one dataset.
#[derive(Debug, Clone, Default)]
pub struct DatasetRecord {
    pub key: String,
    pub socrata_id: String,
    pub watermark: Option<WatermarkRecord>,
    pub row_count: Option<i64>,
    pub schema_fingerprint: Option<String>,
    pub source_rows_updated_at: Option<i64>,
    pub last_success_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: i64,
    /// How the last attempt ended.
    pub last_outcome: Option<LastOutcome>,
    pub source_count: Option<i64>,
    pub uncastable: Option<i64>,
}

impl DatasetRecord {
    /// Of this worker's record and another's (a shared warehouse's `dobsob.datasets_state`), the one whose
    /// last attempt is newer; this worker's on a tie.
    pub fn newest(
        local: Option<DatasetRecord>,
        shared: Option<DatasetRecord>,
    ) -> Option<DatasetRecord> {
        match (local, shared) {
            (Some(l), Some(s)) if s.last_attempt_at > l.last_attempt_at => Some(s),
            (Some(l), _) => Some(l),
            (None, s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WatermarkRecord {
    pub updated_at: String,
    pub id: String,
}

impl From<&Watermark> for WatermarkRecord {
    fn from(w: &Watermark) -> Self {
        WatermarkRecord {
            updated_at: w.updated_at.clone(),
            id: w.id.clone(),
        }
    }
}

/// One committed page, as recorded.
#[derive(Debug, Clone)]
pub struct PageRecord {
    pub seq: i64,
    pub rows: i64,
    pub bytes: i64,
    pub sha256: String,
    pub first: Option<Watermark>,
    pub last: Option<Watermark>,
}

/// The end of a successful attempt.
#[derive(Debug, Clone)]
pub struct AttemptSuccess {
    pub mode: &'static str,
    pub rows_deleted: i64,
    pub row_count: i64,
    pub source_count: Option<i64>,
    pub uncastable: Option<i64>,
    /// Set when the counts still differ: the attempt ends as `drift`, not ok.
    pub drift: Option<String>,
    pub watermark: Option<Watermark>,
    pub schema_fingerprint: String,
    pub source_rows_updated_at: Option<i64>,
    pub sha256: String,
    pub warnings: Vec<String>,
    /// Why the attempt fetched nothing, e.g. "source unchanged since ...".
    pub reason: Option<String>,
    /// The data-quality profile of the table after the attempt, and its anomalies.
    pub profile: Option<(Profile, Vec<Anomaly>)>,
    /// The portal's columns: field name, display name, description.
    pub columns: Option<Vec<(String, String, Option<String>)>>,
}

/// One profile of a dataset, as the ledger keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProfileEntry {
    pub attempt_id: i64,
    pub run_id: i64,
    pub at: String,
    pub rows: i64,
    pub anomalies: Vec<Anomaly>,
}

/// A column of a dataset as the portal describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ColumnInfo {
    pub field_name: String,
    pub name: String,
    pub description: Option<String>,
}

/// An attempt on a dataset, with its run, for a dataset's history.
#[derive(Debug, serde::Serialize)]
pub struct DatasetAttempt {
    pub run_id: i64,
    #[serde(flatten)]
    pub attempt: AttemptView,
}

/// A warning an attempt recorded.
#[derive(Debug, serde::Serialize)]
pub struct WarningRecord {
    pub run_id: i64,
    pub at: String,
    pub message: String,
}

/// One run as the ledger recorded it.
#[derive(Debug, serde::Serialize)]
pub struct RunView {
    pub run_id: i64,
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
    pub datasets_ok: i64,
    pub datasets_failed: i64,
    /// The datasets by how they ended, counted from the attempts (also while the run is running).
    pub counts: OutcomeCounts,
    pub attempts: Vec<AttemptView>,
}

/// A run's datasets by outcome: synced (ok, something fetched or checked), unchanged (ok, the source had not
/// changed), skipped (not due, or a full load refused), failed (failed or drift), interrupted, abandoned
/// (the process was killed), running.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutcomeCounts {
    pub synced: i64,
    pub unchanged: i64,
    pub skipped: i64,
    pub failed: i64,
    pub interrupted: i64,
    pub abandoned: i64,
    pub running: i64,
}

impl OutcomeCounts {
    fn add(&mut self, outcome: &str, mode: &str) {
        match (outcome, mode) {
            ("ok", "unchanged") => self.unchanged += 1,
            ("ok", _) => self.synced += 1,
            ("skipped", _) => self.skipped += 1,
            ("failed" | "drift", _) => self.failed += 1,
            ("interrupted", _) => self.interrupted += 1,
            ("abandoned", _) => self.abandoned += 1,
            _ => self.running += 1,
        }
    }

    /// "3 synced, 1 failed, 13 unchanged": the non-zero counts, synced and failed always.
    pub fn summary(&self) -> String {
        let mut parts = vec![
            format!("{} synced", self.synced),
            format!("{} failed", self.failed),
        ];
        for (n, what) in [
            (self.interrupted, "interrupted"),
            (self.abandoned, "abandoned"),
            (self.unchanged, "unchanged"),
            (self.skipped, "skipped"),
            (self.running, "running"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(", ")
    }
}

/// One line of `report --list`.
#[derive(Debug, serde::Serialize)]
pub struct RunLine {
    pub run_id: i64,
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
    pub counts: OutcomeCounts,
    /// Over the run's attempts: rows downloaded, bytes, requests sent.
    pub rows_fetched: i64,
    pub bytes: i64,
    pub requests: i64,
}

/// One dataset of a run.
#[derive(Debug, serde::Serialize)]
pub struct AttemptView {
    pub dataset: String,
    pub mode: String,
    pub outcome: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub rows_fetched: i64,
    pub rows_deleted: i64,
    pub bytes: i64,
    pub pages: i64,
    pub requests: i64,
    pub source_count: Option<i64>,
    pub error: Option<String>,
    pub reason: Option<String>,
}

/// The `attempts` columns an [`AttemptView`] is read from, in [`AttemptView::from_row`]'s order.
const ATTEMPT_COLUMNS: &str = "dataset_key, mode, outcome, started_at, finished_at, rows_fetched, \
     rows_deleted, bytes, pages, source_count, error, reason, requests";

impl AttemptView {
    /// Reads [`ATTEMPT_COLUMNS`] from `r`, starting at column `at`.
    fn from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<AttemptView> {
        Ok(AttemptView {
            dataset: r.get(at)?,
            mode: r.get(at + 1)?,
            outcome: r.get(at + 2)?,
            started_at: r.get(at + 3)?,
            finished_at: r.get(at + 4)?,
            rows_fetched: r.get(at + 5)?,
            rows_deleted: r.get(at + 6)?,
            bytes: r.get(at + 7)?,
            pages: r.get(at + 8)?,
            source_count: r.get(at + 9)?,
            error: r.get(at + 10)?,
            reason: r.get(at + 11)?,
            requests: r.get(at + 12)?,
        })
    }
}

pub struct Ledger {
    /// Behind a mutex only so that an engine holding a ledger can be shared by reference across awaits
    /// (`Sync`); each job has its own ledger, so the lock is never contended.
    conn: std::sync::Mutex<Connection>,
    path: String,
}

/// Now, as the ledger and the run reports write times: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Ledger {
    /// Opens (creating if needed, private to the user) and migrates the ledger at `path`.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let p = path.display().to_string();
        let err = |source| LedgerError::Sqlite {
            path: p.clone(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(LedgerError::TooNew {
                path: p,
                found: version,
                known,
            });
        }
        if version < known {
            let tx = conn.transaction().map_err(err)?;
            for sql in &MIGRATIONS[version as usize..] {
                tx.execute_batch(sql).map_err(err)?;
            }
            tx.pragma_update(None, "user_version", known).map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(Ledger {
            conn: std::sync::Mutex::new(conn),
            path: p,
        })
    }

    /// Opens an existing ledger read-only, without migrating it (for plans that must change nothing).
    /// `None` if there is no ledger yet.
    pub fn open_read_only(path: &Path) -> Result<Option<Ledger>, LedgerError> {
        if !path.exists() {
            return Ok(None);
        }
        let p = path.display().to_string();
        let err = |source| LedgerError::Sqlite {
            path: p.clone(),
            source,
        };
        // While a run has the ledger open, its -wal holds the newest commits (the run in progress): a plain
        // read-only open sees them. Without a -wal (no run), `immutable`: a read-only open of a WAL-mode
        // database would create the -wal and -shm files, and a read-only command writes nothing.
        let invalid = || err(rusqlite::Error::InvalidPath(path.to_path_buf()));
        let absolute = std::path::absolute(path).map_err(|_| invalid())?;
        let uri = url::Url::from_file_path(&absolute).map_err(|_| invalid())?;
        let wal = absolute.with_file_name(format!(
            "{}-wal",
            absolute.file_name().unwrap_or_default().to_string_lossy()
        ));
        let open = |query: &str| -> rusqlite::Result<(Connection, i64)> {
            let mut uri = uri.clone();
            uri.set_query(Some(query));
            let conn = Connection::open_with_flags(
                uri.as_str(),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )?;
            let version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            Ok((conn, version))
        };
        // The run may end (and remove its -wal and -shm) between the look and the open: then as at rest.
        let (conn, version) = if wal.exists() {
            open("mode=ro").or_else(|_| open("immutable=1"))
        } else {
            open("immutable=1")
        }
        .map_err(err)?;
        let known = MIGRATIONS.len() as i64;
        if version != known {
            return Err(LedgerError::Version {
                path: p,
                found: version,
                known,
            });
        }
        Ok(Some(Ledger {
            conn: std::sync::Mutex::new(conn),
            path: p,
        }))
    }

    /// The ledger for a reader (`status`, the dashboard): read-only, and `None` when nothing was ever synced
    /// (none is created just to say so). A ledger of an older dobsob is migrated first, as a sync would, so
    /// that readers keep working on the day dobsob is upgraded.
    pub fn open_for_reading(path: &Path) -> Result<Option<Ledger>, LedgerError> {
        match Ledger::open_read_only(path) {
            Err(LedgerError::Version { found, known, .. }) if found < known => {
                Ledger::open(path).map(Some)
            }
            other => other,
        }
    }

    fn c(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `id` (the newest when `None`) with its attempts, in start order.
    pub fn run_view(&self, id: Option<i64>) -> Result<Option<RunView>, LedgerError> {
        let c = self.c();
        let run = c
            .query_row(
                "SELECT id, command, started_at, finished_at, outcome, datasets_ok, datasets_failed
                 FROM runs WHERE id = coalesce(?1, (SELECT max(id) FROM runs))",
                params![id],
                |r| {
                    Ok(RunView {
                        run_id: r.get(0)?,
                        command: r.get(1)?,
                        started_at: r.get(2)?,
                        finished_at: r.get(3)?,
                        outcome: r.get(4)?,
                        datasets_ok: r.get(5)?,
                        datasets_failed: r.get(6)?,
                        counts: OutcomeCounts::default(),
                        attempts: Vec::new(),
                    })
                },
            )
            .optional()
            .map_err(self.err())?;
        let Some(mut run) = run else {
            return Ok(None);
        };
        let mut stmt = c
            .prepare(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ?1 ORDER BY id"
            ))
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![run.run_id], |r| AttemptView::from_row(r, 0))
            .map_err(self.err())?;
        run.attempts = rows.collect::<Result<_, _>>().map_err(self.err())?;
        for a in &run.attempts {
            run.counts.add(&a.outcome, &a.mode);
        }
        Ok(Some(run))
    }

    /// The newest `limit` runs, newest first, with their datasets counted by outcome.
    pub fn runs(&self, limit: u32) -> Result<Vec<RunLine>, LedgerError> {
        let c = self.c();
        let mut stmt = c
            .prepare(
                "SELECT r.id, r.command, r.started_at, r.finished_at, r.outcome,
                        coalesce(sum(a.rows_fetched), 0), coalesce(sum(a.bytes), 0),
                        coalesce(sum(a.requests), 0)
                 FROM runs r LEFT JOIN attempts a ON a.run_id = r.id
                 GROUP BY r.id ORDER BY r.id DESC LIMIT ?1",
            )
            .map_err(self.err())?;
        let mut runs = stmt
            .query_map(params![limit], |r| {
                Ok(RunLine {
                    run_id: r.get(0)?,
                    command: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    outcome: r.get(4)?,
                    counts: OutcomeCounts::default(),
                    rows_fetched: r.get(5)?,
                    bytes: r.get(6)?,
                    requests: r.get(7)?,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let mut stmt = c
            .prepare("SELECT outcome, mode FROM attempts WHERE run_id = ?1")
            .map_err(self.err())?;
        for run in &mut runs {
            let rows = stmt
                .query_map(params![run.run_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(self.err())?;
            for row in rows {
                let (outcome, mode) = row.map_err(self.err())?;
                run.counts.add(&outcome, &mode);
            }
        }
        Ok(runs)
    }

    /// Runs `f` in one transaction.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let path = &self.path;
        let wrap = |source| LedgerError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = self.c();
        let tx = conn.transaction().map_err(wrap)?;
        let v = f(&tx).map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(v)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> LedgerError + '_ {
        move |source| LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Changes whenever a page is recorded or an attempt ends: a cheap "has anything committed since?".
    pub fn change_token(&self) -> Result<(i64, i64), LedgerError> {
        self.c()
            .query_row(
                "SELECT (SELECT count(*) FROM pages),
                        (SELECT count(*) FROM attempts WHERE finished_at IS NOT NULL)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.err())
    }

    /// Every dataset the ledger knows, by key.
    pub fn dataset_keys(&self) -> Result<Vec<String>, LedgerError> {
        let c = self.c();
        let mut stmt = c
            .prepare("SELECT key FROM datasets ORDER BY key")
            .map_err(self.err())?;
        let keys = stmt
            .query_map([], |r| r.get(0))
            .map_err(self.err())?
            .collect::<Result<Vec<String>, _>>()
            .map_err(self.err())?;
        Ok(keys)
    }

    /// The bytes downloaded by the last successful full load of `key`, if any: a better size estimate than
    /// the catalog's. A load that was interrupted and resumed spans several attempts: the bytes of the full
    /// attempts since the success before it all count, not only the resumed part's.
    pub fn last_full_load_bytes(&self, key: &str) -> Result<Option<i64>, LedgerError> {
        self.c()
            .query_row(
                "WITH done AS (
                     SELECT max(id) AS id FROM attempts
                     WHERE dataset_key = ?1 AND mode = 'full' AND outcome IN ('ok', 'drift')),
                 began AS (
                     SELECT coalesce(max(id), 0) AS id FROM attempts
                     WHERE dataset_key = ?1 AND outcome IN ('ok', 'drift') AND id < (SELECT id FROM done))
                 SELECT sum(bytes) FROM attempts
                 WHERE dataset_key = ?1 AND mode = 'full'
                   AND id > (SELECT id FROM began) AND id <= (SELECT id FROM done)",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(self.err())
    }

    pub fn dataset(&self, key: &str) -> Result<Option<DatasetRecord>, LedgerError> {
        self.c()
            .query_row(
                "SELECT key, socrata_id, wm_updated_at, wm_id, row_count, schema_fingerprint,
                        source_rows_updated_at, last_success_at, last_attempt_at, last_error,
                        consecutive_failures, last_outcome, source_count, uncastable
                 FROM datasets WHERE key = ?1",
                [key],
                |r| {
                    let wm_t: Option<String> = r.get(2)?;
                    let wm_id: Option<String> = r.get(3)?;
                    Ok(DatasetRecord {
                        key: r.get(0)?,
                        socrata_id: r.get(1)?,
                        watermark: wm_t
                            .zip(wm_id)
                            .map(|(updated_at, id)| WatermarkRecord { updated_at, id }),
                        row_count: r.get(4)?,
                        schema_fingerprint: r.get(5)?,
                        source_rows_updated_at: r.get(6)?,
                        last_success_at: r.get(7)?,
                        last_attempt_at: r.get(8)?,
                        last_error: r.get(9)?,
                        consecutive_failures: r.get(10)?,
                        last_outcome: r
                            .get::<_, Option<String>>(11)?
                            .as_deref()
                            .and_then(LastOutcome::parse),
                        source_count: r.get(12)?,
                        uncastable: r.get(13)?,
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }

    /// The dataset's newest data-quality profile.
    pub fn last_profile(&self, key: &str) -> Result<Option<Profile>, LedgerError> {
        self.latest_profile(key).map(|p| p.map(|(p, _)| p))
    }

    /// The dataset's newest profile and its anomalies.
    pub fn latest_profile(
        &self,
        key: &str,
    ) -> Result<Option<(Profile, Vec<Anomaly>)>, LedgerError> {
        let row: Option<(String, String)> = self
            .c()
            .query_row(
                "SELECT profile, anomalies FROM profiles WHERE dataset_key = ?1
                 ORDER BY attempt_id DESC LIMIT 1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        // A profile this dobsob cannot read (written by another version) is no profile, not an error.
        Ok(row.and_then(|(p, a)| {
            Some((
                serde_json::from_str(&p).ok()?,
                serde_json::from_str(&a).unwrap_or_default(),
            ))
        }))
    }

    /// The dataset's newest `limit` profiles, oldest first (for a row-count chart).
    pub fn profile_history(&self, key: &str, limit: u32) -> Result<Vec<ProfileEntry>, LedgerError> {
        let c = self.c();
        let mut stmt = c
            .prepare(
                "SELECT p.attempt_id, a.run_id, p.at, p.rows, p.anomalies
                 FROM profiles p JOIN attempts a ON a.id = p.attempt_id
                 WHERE p.dataset_key = ?1 ORDER BY p.attempt_id DESC LIMIT ?2",
            )
            .map_err(self.err())?;
        let mut v = stmt
            .query_map(params![key, limit], |r| {
                let anomalies: String = r.get(4)?;
                Ok(ProfileEntry {
                    attempt_id: r.get(0)?,
                    run_id: r.get(1)?,
                    at: r.get(2)?,
                    rows: r.get(3)?,
                    anomalies: serde_json::from_str(&anomalies).unwrap_or_default(),
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        v.reverse();
        Ok(v)
    }

    /// The dataset's columns as the portal described them at its last success, in order.
    pub fn columns(&self, key: &str) -> Result<Vec<ColumnInfo>, LedgerError> {
        let c = self.c();
        let mut stmt = c
            .prepare(
                "SELECT field_name, name, description FROM columns WHERE dataset_key = ?1
                 ORDER BY position",
            )
            .map_err(self.err())?;
        let v = stmt
            .query_map([key], |r| {
                Ok(ColumnInfo {
                    field_name: r.get(0)?,
                    name: r.get(1)?,
                    description: r.get(2)?,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(v)
    }

    /// The dataset's newest `limit` attempts (skips included), newest first.
    pub fn dataset_attempts(
        &self,
        key: &str,
        limit: u32,
    ) -> Result<Vec<DatasetAttempt>, LedgerError> {
        let c = self.c();
        let mut stmt = c
            .prepare(&format!(
                "SELECT run_id, {ATTEMPT_COLUMNS} FROM attempts WHERE dataset_key = ?1
                 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(self.err())?;
        let v = stmt
            .query_map(params![key, limit], |r| {
                Ok(DatasetAttempt {
                    run_id: r.get(0)?,
                    attempt: AttemptView::from_row(r, 1)?,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(v)
    }

    /// The dataset's newest `limit` warnings, newest first.
    pub fn dataset_warnings(
        &self,
        key: &str,
        limit: u32,
    ) -> Result<Vec<WarningRecord>, LedgerError> {
        let c = self.c();
        let mut stmt = c
            .prepare(
                "SELECT a.run_id, w.at, w.message FROM warnings w JOIN attempts a ON a.id = w.attempt_id
                 WHERE w.dataset_key = ?1 ORDER BY w.rowid DESC LIMIT ?2",
            )
            .map_err(self.err())?;
        let v = stmt
            .query_map(params![key, limit], |r| {
                Ok(WarningRecord {
                    run_id: r.get(0)?,
                    at: r.get(1)?,
                    message: r.get(2)?,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(v)
    }

    /// Marks runs and attempts still recorded as running as `abandoned`    /// Marks runs and attempts still recorded as running as `abandoned` (their process died: the caller holds
    /// the run lock, so nothing else is running). Returns how many runs.
    pub fn mark_abandoned(&mut self) -> Result<usize, LedgerError> {
        let t = now();
        self.write(|tx| {
            tx.execute(
                "UPDATE datasets SET last_outcome = 'abandoned'
                 WHERE key IN (SELECT dataset_key FROM attempts WHERE outcome = 'running')",
                [],
            )?;
            tx.execute(
                "UPDATE attempts SET outcome = 'abandoned', finished_at = ?1 WHERE outcome = 'running'",
                params![t],
            )?;
            tx.execute(
                "UPDATE runs SET outcome = 'abandoned', finished_at = ?1 WHERE outcome = 'running'",
                params![t],
            )
        })
    }

    pub fn start_run(&mut self, command: &str) -> Result<RunId, LedgerError> {
        self.c()
            .execute(
                "INSERT INTO runs (command, started_at) VALUES (?1, ?2)",
                params![command, now()],
            )
            .map_err(self.err())?;
        let id = self.c().last_insert_rowid();
        Ok(id)
    }

    pub fn finish_run(
        &mut self,
        run: RunId,
        outcome: &str,
        ok: i64,
        failed: i64,
    ) -> Result<(), LedgerError> {
        self.c()
            .execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3, datasets_ok = ?4, datasets_failed = ?5
                 WHERE id = ?1",
                params![run, now(), outcome, ok, failed],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records the start of an attempt on a dataset (and the dataset itself on its first attempt).
    pub fn start_attempt(
        &mut self,
        run: RunId,
        key: &str,
        socrata_id: &str,
        mode: &str,
    ) -> Result<AttemptId, LedgerError> {
        let t = now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO datasets (key, socrata_id, last_attempt_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET socrata_id = excluded.socrata_id,
                                                last_attempt_at = excluded.last_attempt_at",
                params![key, socrata_id, t],
            )?;
            tx.execute(
                "INSERT INTO attempts (run_id, dataset_key, mode, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![run, key, mode, t],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Sets the mode of an attempt once the plan is known (full, incremental or unchanged).
    pub fn set_attempt_mode(&mut self, attempt: AttemptId, mode: &str) -> Result<(), LedgerError> {
        self.c()
            .execute(
                "UPDATE attempts SET mode = ?2 WHERE id = ?1",
                params![attempt, mode],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records a page the warehouse has committed, and the watermark it committed with it.
    pub fn record_page(
        &mut self,
        attempt: AttemptId,
        key: &str,
        page: &PageRecord,
        watermark: Option<&Watermark>,
        row_count: i64,
    ) -> Result<(), LedgerError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO pages (attempt_id, seq, rows, bytes, sha256, first_updated_at, first_id,
                                    last_updated_at, last_id, committed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    attempt,
                    page.seq,
                    page.rows,
                    page.bytes,
                    page.sha256,
                    page.first.as_ref().map(|w| &w.updated_at),
                    page.first.as_ref().map(|w| &w.id),
                    page.last.as_ref().map(|w| &w.updated_at),
                    page.last.as_ref().map(|w| &w.id),
                    now()
                ],
            )?;
            tx.execute(
                "UPDATE attempts SET rows_fetched = rows_fetched + ?2, rows_upserted = rows_upserted + ?2,
                                     bytes = bytes + ?3, pages = pages + 1
                 WHERE id = ?1",
                params![attempt, page.rows, page.bytes],
            )?;
            if let Some(w) = watermark {
                tx.execute(
                    "UPDATE datasets SET wm_updated_at = ?2, wm_id = ?3, row_count = ?4 WHERE key = ?1",
                    params![key, w.updated_at, w.id, row_count],
                )?;
            }
            Ok(())
        })
    }

    /// The requests an attempt sent to the portal.
    pub fn set_attempt_requests(
        &mut self,
        attempt: AttemptId,
        requests: i64,
    ) -> Result<(), LedgerError> {
        self.c()
            .execute(
                "UPDATE attempts SET requests = ?2 WHERE id = ?1",
                params![attempt, requests],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Bytes of non-row requests (id listings) count toward the attempt too.
    pub fn add_bytes(&mut self, attempt: AttemptId, bytes: i64) -> Result<(), LedgerError> {
        self.c()
            .execute(
                "UPDATE attempts SET bytes = bytes + ?2 WHERE id = ?1",
                params![attempt, bytes],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records an attempt that ran to its end: `ok`, or `drift` when the counts still differ (then the
    /// watermark and count are recorded, being true, but not as a success).
    pub fn finish_attempt_ok(
        &mut self,
        attempt: AttemptId,
        key: &str,
        s: &AttemptSuccess,
    ) -> Result<(), LedgerError> {
        let t = now();
        let outcome = if s.drift.is_some() { "drift" } else { "ok" };
        self.write(|tx| {
            tx.execute(
                "UPDATE attempts SET finished_at = ?2, outcome = ?3, mode = ?4, rows_deleted = ?5, sha256 = ?6,
                                     source_count = ?7, error = ?8, reason = ?9
                 WHERE id = ?1",
                params![
                    attempt,
                    t,
                    outcome,
                    s.mode,
                    s.rows_deleted,
                    s.sha256,
                    s.source_count,
                    s.drift,
                    s.reason
                ],
            )?;
            tx.execute(
                "UPDATE datasets SET wm_updated_at = ?2, wm_id = ?3, row_count = ?4, schema_fingerprint = ?5,
                        source_rows_updated_at = ?6, source_count = ?7, last_outcome = ?8,
                        uncastable = coalesce(?9, uncastable)
                 WHERE key = ?1",
                params![
                    key,
                    s.watermark.as_ref().map(|w| &w.updated_at),
                    s.watermark.as_ref().map(|w| &w.id),
                    s.row_count,
                    s.schema_fingerprint,
                    s.source_rows_updated_at,
                    s.source_count,
                    outcome,
                    s.uncastable
                ],
            )?;
            match &s.drift {
                None => tx.execute(
                    "UPDATE datasets SET last_success_at = ?2, last_error = NULL, consecutive_failures = 0
                     WHERE key = ?1",
                    params![key, t],
                )?,
                Some(why) => tx.execute(
                    "UPDATE datasets SET last_error = ?2, consecutive_failures = consecutive_failures + 1
                     WHERE key = ?1",
                    params![key, format!("drift: {why}")],
                )?,
            };
            for w in &s.warnings {
                tx.execute(
                    "INSERT INTO warnings (attempt_id, dataset_key, message, at) VALUES (?1, ?2, ?3, ?4)",
                    params![attempt, key, w, t],
                )?;
            }
            if let Some((profile, anomalies)) = &s.profile {
                tx.execute(
                    "INSERT INTO profiles (attempt_id, dataset_key, at, rows, profile, anomalies)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        attempt,
                        key,
                        t,
                        profile.rows,
                        serde_json::to_string(profile).expect("a profile serializes"),
                        serde_json::to_string(anomalies).expect("anomalies serialize")
                    ],
                )?;
            }
            if let Some(columns) = &s.columns {
                tx.execute("DELETE FROM columns WHERE dataset_key = ?1", params![key])?;
                for (i, (field, name, description)) in columns.iter().enumerate() {
                    tx.execute(
                        "INSERT INTO columns (dataset_key, position, field_name, name, description)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![key, i as i64, field, name, description],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Records a dataset a run skipped without starting it (not due), with the reason.
    pub fn record_skip(&mut self, run: RunId, key: &str, reason: &str) -> Result<(), LedgerError> {
        let t = now();
        self.c()
            .execute(
                "INSERT INTO attempts (run_id, dataset_key, mode, started_at, finished_at, outcome, reason)
                 VALUES (?1, ?2, 'skip', ?3, ?3, 'skipped', ?4)",
                params![run, key, t, reason],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Ends a started attempt as skipped (it found it had nothing it was allowed to do).
    pub fn finish_attempt_skipped(
        &mut self,
        attempt: AttemptId,
        reason: &str,
    ) -> Result<(), LedgerError> {
        self.c()
            .execute(
                "UPDATE attempts SET finished_at = ?2, outcome = 'skipped', mode = 'skip', reason = ?3
                 WHERE id = ?1",
                params![attempt, now(), reason],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records a failed (or interrupted) attempt; the watermark and counts stay as they were.
    pub fn finish_attempt_failed(
        &mut self,
        attempt: AttemptId,
        key: &str,
        error: &str,
        interrupted: bool,
    ) -> Result<(), LedgerError> {
        let t = now();
        let outcome = if interrupted { "interrupted" } else { "failed" };
        self.write(|tx| {
            tx.execute(
                "UPDATE attempts SET finished_at = ?2, outcome = ?3, error = ?4 WHERE id = ?1",
                params![attempt, t, outcome, error],
            )?;
            if interrupted {
                // Not a failure (no error, no count), but the last attempt did not finish.
                tx.execute(
                    "UPDATE datasets SET last_outcome = 'interrupted' WHERE key = ?1",
                    params![key],
                )?;
            } else {
                tx.execute(
                    "UPDATE datasets SET last_error = ?2, consecutive_failures = consecutive_failures + 1,
                                         last_outcome = 'failed'
                     WHERE key = ?1",
                    params![key, error],
                )?;
            }
            Ok(())
        })
    }

    /// Puts the warehouse's committed watermark and count into the ledger (after a crash between the two).
    pub fn repair_from_warehouse(
        &mut self,
        key: &str,
        watermark: Option<&Watermark>,
        row_count: i64,
    ) -> Result<(), LedgerError> {
        self.c()
            .execute(
                "UPDATE datasets SET wm_updated_at = ?2, wm_id = ?3, row_count = ?4 WHERE key = ?1",
                params![
                    key,
                    watermark.map(|w| &w.updated_at),
                    watermark.map(|w| &w.id),
                    row_count
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    /// The newer attempt wins; this worker's on a tie or when the other has none.
    #[test]
    fn the_newest_record_is_the_one_with_the_later_attempt() {
        let rec = |who: &str, at: Option<&str>| DatasetRecord {
            key: who.into(),
            last_attempt_at: at.map(str::to_string),
            ..Default::default()
        };
        let key = |r: Option<DatasetRecord>| r.map(|r| r.key);
        let (old, new) = (
            Some("2026-12-06T02:00:00.000Z"),
            Some("2026-12-07T02:00:00.000Z"),
        );
        assert_eq!(
            key(DatasetRecord::newest(
                Some(rec("l", old)),
                Some(rec("s", new))
            ))
            .as_deref(),
            Some("s")
        );
        assert_eq!(
            key(DatasetRecord::newest(
                Some(rec("l", new)),
                Some(rec("s", old))
            ))
            .as_deref(),
            Some("l")
        );
        assert_eq!(
            key(DatasetRecord::newest(
                Some(rec("l", new)),
                Some(rec("s", new))
            ))
            .as_deref(),
            Some("l")
        );
        assert_eq!(
            key(DatasetRecord::newest(None, Some(rec("s", None)))).as_deref(),
            Some("s")
        );
        assert_eq!(
            key(DatasetRecord::newest(Some(rec("l", None)), None)).as_deref(),
            Some("l")
        );
    }
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.sqlite");
        drop(Ledger::open(&p).unwrap());
        let mut l = Ledger::open(&p).unwrap();
        let run = l.start_run("sync").unwrap();
        let a = l.start_attempt(run, "k", "aaaa-bbbb", "full").unwrap();
        let wm = Watermark {
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            id: "row-x".into(),
        };
        let page = PageRecord {
            seq: 1,
            rows: 3,
            bytes: 10,
            sha256: "ab".into(),
            first: None,
            last: Some(wm.clone()),
        };
        l.record_page(a, "k", &page, Some(&wm), 3).unwrap();
        l.finish_attempt_failed(a, "k", "boom", false).unwrap();
        let d = l.dataset("k").unwrap().unwrap();
        assert_eq!(d.watermark, Some(WatermarkRecord::from(&wm)));
        assert_eq!(d.row_count, Some(3));
        assert_eq!(d.last_error.as_deref(), Some("boom"));
        assert_eq!(d.consecutive_failures, 1);
        drop(l);
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = Ledger::open(&p).err().unwrap().to_string();
        assert!(e.contains("newer than this dobsob knows"), "{e}");
    }
}
