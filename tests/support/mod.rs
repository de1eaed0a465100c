//! Shared test support: a temp data dir, an in-process emulator serving the fixtures, a runner for the real
//! `dobsob` binary, and whole-table comparison of the warehouse with the source.

#![allow(dead_code)]

pub mod http;
pub mod pg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use socrata_emulator::{Emulator, Fault, FaultKind, State};

pub const DOB_VIOLATIONS: &str = "3h2n-5cm9";
pub const ECB_VIOLATIONS: &str = "6bgk-3dad";
pub const HPD_VIOLATIONS: &str = "wvxf-dwi5";
pub const DOB_COMPLAINTS: &str = "eabe-havv";
pub const EVERY_TYPE: &str = "test-typs";

/// The fixture datasets: (catalog key, Socrata id).
pub const FIXTURES: [(&str, &str); 5] = [
    ("dob_violations", DOB_VIOLATIONS),
    ("ecb_violations", ECB_VIOLATIONS),
    ("hpd_violations", HPD_VIOLATIONS),
    ("dob_complaints", DOB_COMPLAINTS),
    ("every_type", EVERY_TYPE),
];

/// The standalone emulator's binary (crates/socrata-emulator), built by the same `cargo test`: a binary of
/// another package of the workspace has no `CARGO_BIN_EXE_` variable here, so it is found beside `dobsob`'s.
pub fn emulator_bin() -> PathBuf {
    let dobsob = PathBuf::from(env!("CARGO_BIN_EXE_dobsob"));
    let path = dobsob.with_file_name(format!("socrata-emulator{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with plain `cargo test` at the repository's root (the workspace's \
         default members build it), or `cargo build -p socrata-emulator` first",
        path.display()
    );
    path
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub emu: Emulator,
    /// A PostgreSQL warehouse every command of this env is pointed at (`DOBSOB_WAREHOUSE`), if set.
    pub warehouse_url: std::cell::RefCell<Option<String>>,
}

impl TestEnv {
    /// A fresh data dir and an emulator serving `fixtures/`.
    pub fn new() -> TestEnv {
        let state = State::from_fixtures(&repo().join("fixtures")).expect("fixtures load");
        TestEnv {
            dir: tempfile::tempdir().expect("temp dir"),
            emu: Emulator::start(state, 0).expect("emulator starts"),
            warehouse_url: Default::default(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Serves a generated dataset `id` of `rows` rows (`socrata_emulator::synthetic`) and writes a catalog
    /// of it alone, keyed `key`; returns the catalog's path, for `DOBSOB_CATALOG`.
    pub fn generated_catalog(&self, key: &str, id: &str, rows: u64) -> PathBuf {
        self.emu
            .state()
            .add_dataset(socrata_emulator::synthetic(id, rows));
        let catalog = self.dir.path().join(format!("{key}.toml"));
        std::fs::write(
            &catalog,
            format!(
                "[[dataset]]\nkey = \"{key}\"\nid = \"{id}\"\nname = \"{key}\"\ngroup = \"primary\"\n\
                 frequency = \"daily\"\nsize_mb = 10\n"
            ),
        )
        .unwrap();
        catalog
    }

    /// The `dobsob` command, pointed at this env's data dir, the fixtures catalog and the emulator.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dobsob"));
        c.env_remove("SOCRATA_APP_TOKEN")
            .env_remove("RUST_LOG")
            .env("DOBSOB_DATA_DIR", self.data_dir())
            .env("DOBSOB_CATALOG", repo().join("fixtures/catalog.toml"))
            .env("DOBSOB_PORTAL", self.emu.url())
            .env_remove("DOBSOB_WAREHOUSE")
            .args(args);
        if let Some(url) = self.warehouse_url.borrow().as_deref() {
            c.env("DOBSOB_WAREHOUSE", url);
        }
        c
    }

    /// `ARGS` with, for sync and rebuild (after global options), quick retries, no pause between dataset
    /// starts and a generous request budget: the tests of those limits set them themselves.
    fn quick<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let mut all: Vec<&str> = args.to_vec();
        if args.iter().any(|a| matches!(*a, "sync" | "rebuild")) {
            all.extend(["--retry-base-ms", "10"]);
            if !args.contains(&"--throttle") {
                all.extend(["--throttle", "0"]);
            }
            if !args.contains(&"--max-requests-per-second") {
                all.extend(["--max-requests-per-second", "1000"]);
            }
        }
        all
    }

    /// Runs `dobsob ARGS` (sync and rebuild get quick retries, see [`TestEnv::quick`]) and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(&Self::quick(args)).output().expect("dobsob runs")
    }

    /// Starts `dobsob ARGS` in the background, with the same quick defaults as [`TestEnv::run`].
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd(&Self::quick(args)).spawn().expect("dobsob starts")
    }

    /// Runs and asserts the exit code, showing the output if it differs.
    /// Inserts `n` new rows into dob_violations at the source, their ids and streets marked by `tag`.
    pub fn insert_dob_violations(&self, n: usize, tag: &str) {
        self.emu.state().edit(DOB_VIOLATIONS, |e| {
            for i in 0..n {
                let mut r = serde_json::Map::new();
                r.insert(
                    "isn_dob_bis_viol".into(),
                    serde_json::json!(format!("{tag}{i:05}")),
                );
                r.insert(
                    "street".into(),
                    serde_json::json!(format!("{tag} STREET {i}")),
                );
                e.insert(r);
            }
        });
    }

    /// A sync of dob_violations that takes seconds: `new_rows` new rows, pages of 5 served 400 ms apart, a
    /// publish every second. For what analysts do while a sync runs.
    pub fn spawn_slow_sync(&self, new_rows: usize) -> std::process::Child {
        self.insert_dob_violations(new_rows, "77");
        self.emu.state().faults.push(
            Fault::on(
                &format!("/resource/{DOB_VIOLATIONS}.csv"),
                FaultKind::DelayMs(400),
            )
            .times(10_000),
        );
        self.spawn(&[
            "sync",
            "--datasets",
            "dob_violations",
            "--page-size",
            "5",
            "--publish-interval",
            "1",
            "--overlap",
            "0",
            "-q",
        ])
    }

    pub fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_exit(&out, 0);
        out
    }

    /// Rows served with `$select=:*,*` (full rows) since the emulator started, for a dataset.
    pub fn full_rows_served(&self, id: &str) -> usize {
        let path = format!("/resource/{id}.csv");
        self.emu
            .state()
            .log
            .iter()
            .filter(|s| s.path == path && s.select.as_deref() == Some(":*,*") && s.status == 200)
            .map(|s| s.rows)
            .sum()
    }

    /// Waits (at most a minute) until the emulator has served `n` full rows of dataset `id`.
    pub fn wait_for_rows_served(&self, id: &str, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.full_rows_served(id) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the sync never got going"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Runs `dobsob sync --datasets KEY --page-size N`, stalls its row request number `stall_at` (0-based),
    /// and SIGKILLs it once the pages before that were served and had time to commit: a crash mid-run.
    pub fn kill_sync_mid_run(&self, key: &str, id: &str, page_size: usize, stall_at: u32) {
        self.kill_mid_run("sync", key, id, page_size, stall_at, 300);
    }

    /// Like [`TestEnv::kill_sync_mid_run`] for `command` (sync or rebuild), killing `settle_ms` after the
    /// pages before the stall were served.
    pub fn kill_mid_run(
        &self,
        command: &str,
        key: &str,
        id: &str,
        page_size: usize,
        stall_at: u32,
        settle_ms: u64,
    ) {
        let base = self.full_rows_served(id);
        self.emu.state().faults.push(
            Fault::on(&format!("/resource/{id}.csv"), FaultKind::DelayMs(30_000)).skip(stall_at),
        );
        let mut child = self
            .cmd(&[
                command,
                "--datasets",
                key,
                "--page-size",
                &page_size.to_string(),
                "-q",
            ])
            .spawn()
            .expect("dobsob starts");
        self.wait_for_rows_served(id, base + page_size * stall_at as usize);
        std::thread::sleep(std::time::Duration::from_millis(settle_ms));
        child.kill().expect("SIGKILL"); // no cleanup of any kind
        child.wait().expect("the killed process is reaped");
        self.emu.state().faults.clear();
    }

    /// The newest run report: the report file with the highest `run_id`.
    pub fn last_report(&self) -> serde_json::Value {
        files_under(&self.data_dir().join("reports"))
            .into_iter()
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                v
            })
            .max_by_key(|v| v["run_id"].as_i64().expect("a report has a run_id"))
            .expect("a run report")
    }

    /// Requests answered for dataset `id` whose `$select` was `select` (any status).
    pub fn requests_with_select(&self, id: &str, select: &str) -> usize {
        self.emu
            .state()
            .log
            .iter()
            .filter(|s| s.path.contains(id) && s.select.as_deref() == Some(select))
            .count()
    }

    /// Every request answered so far for dataset `id`.
    pub fn requests_for(&self, id: &str) -> usize {
        self.emu
            .state()
            .log
            .iter()
            .filter(|s| s.path.contains(id))
            .count()
    }

    /// A table's rows as text (every column cast to VARCHAR), ordered by id: to show that a failed sync
    /// changed nothing.
    pub fn table_dump(&self, key: &str) -> Vec<Vec<Option<String>>> {
        let conn = self.warehouse();
        let cols: Vec<String> = conn
            .prepare("SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = ? ORDER BY column_index")
            .unwrap()
            .query_map([key], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let select: Vec<String> = cols
            .iter()
            .map(|c| format!("CAST(\"{}\" AS VARCHAR)", c.replace('"', "\"\"")))
            .collect();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM main.\"{key}\" ORDER BY socrata_id",
                select.join(", ")
            ))
            .unwrap();
        let n = cols.len();
        let mut rows = stmt.query([]).unwrap();
        let mut out = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            out.push((0..n).map(|i| r.get(i).unwrap()).collect());
        }
        out
    }

    /// The private working database the sync writes (`work/warehouse.duckdb`), read-only.
    pub fn working(&self) -> duckdb::Connection {
        let cfg = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap();
        duckdb::Connection::open_with_flags(self.working_path(), cfg)
            .expect("the working database opens")
    }

    pub fn working_path(&self) -> PathBuf {
        self.data_dir().join("work").join("warehouse.duckdb")
    }

    /// The published warehouse analysts open (`warehouse.duckdb`), read-only.
    pub fn warehouse(&self) -> duckdb::Connection {
        let cfg = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap();
        duckdb::Connection::open_with_flags(self.data_dir().join("warehouse.duckdb"), cfg)
            .expect("warehouse opens")
    }

    pub fn ledger(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data_dir().join("ledger.sqlite")).expect("ledger opens")
    }

    /// Asserts that table `key` holds exactly the emulator's rows of dataset `id`: same ids, every cell equal
    /// (typed columns compared by value; uncastable cells found verbatim in dobsob.uncastable).
    pub fn assert_equal_to_source(&self, key: &str, id: &str) {
        let (cols, _) = self.source_of(id);
        let conn = self.warehouse();
        // Instants are TIMESTAMPTZ: read back as UTC wall time (this DuckDB build has no ICU).
        let mut select = vec![
            "socrata_id".to_string(),
            "strftime(CAST(socrata_created_at AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%gZ')".to_string(),
            "strftime(CAST(socrata_updated_at AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%gZ')".to_string(),
            "socrata_version".to_string(),
        ];
        for (name, t) in &cols {
            let q = format!("\"{}\"", name.replace('"', "\"\""));
            select.push(match t.as_str() {
                "calendar_date" | "date" => {
                    format!("strftime(CAST({q} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%g')")
                }
                // Doubles as their exact bits, printed in full.
                "double" => format!("CAST({q} AS VARCHAR)"),
                _ => format!("CAST({q} AS VARCHAR)"),
            });
        }
        let sql = format!("SELECT {} FROM main.\"{key}\"", select.join(", "));
        let mut stmt = conn.prepare(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = select.len();
        let mut local: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        let mut rs = stmt.query([]).unwrap();
        while let Some(r) = rs.next().unwrap() {
            let vals: Vec<Option<String>> = (0..n).map(|i| r.get(i).unwrap()).collect();
            let id = vals[0].clone().expect("socrata_id is never null");
            assert!(
                local.insert(id.clone(), vals).is_none(),
                "{key}: duplicate row {id}"
            );
        }
        let mut uncastable: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut stmt = conn
            .prepare("SELECT socrata_id, column_name, raw_value FROM dobsob.uncastable WHERE table_name = ?")
            .unwrap();
        let mut rs = stmt.query([key]).unwrap();
        while let Some(r) = rs.next().unwrap() {
            uncastable.insert((r.get(0).unwrap(), r.get(1).unwrap()), r.get(2).unwrap());
        }
        self.compare_with_source(key, id, &local, &uncastable);
    }

    /// The source's columns (field name, type) and rows of `id`.
    pub fn source_of(&self, id: &str) -> (Vec<(String, String)>, Vec<socrata_emulator::SourceRow>) {
        let st = self.emu.state();
        let ds = &st.datasets[id];
        let cols: Vec<(String, String)> = ds
            .columns
            .iter()
            .map(|c| (c.field_name.clone(), c.data_type_name.clone()))
            .collect();
        (cols, ds.snapshot())
    }

    /// Compares a warehouse table read as text (`local`: by id, the system columns then the source's
    /// columns in order; instants as `YYYY-MM-DDTHH:MM:SS.mmmZ`, dates without `Z`) and its kept
    /// uncastable values with the source, value for value.
    pub fn compare_with_source(
        &self,
        key: &str,
        id: &str,
        local: &BTreeMap<String, Vec<Option<String>>>,
        uncastable: &BTreeMap<(String, String), String>,
    ) {
        let (cols, rows) = self.source_of(id);
        let source_ids: Vec<&String> = rows.iter().map(|r| &r.id).collect();
        let mut local_ids: Vec<&String> = local.keys().collect();
        let mut sorted_source = source_ids.clone();
        sorted_source.sort();
        local_ids.sort();
        assert_eq!(
            local_ids, sorted_source,
            "{key}: the warehouse's ids differ from the source's"
        );
        for src in &rows {
            let l = &local[&src.id];
            assert_eq!(
                l[1].as_deref(),
                Some(src.created_at.as_str()),
                "{key} {}: :created_at",
                src.id
            );
            assert_eq!(
                l[2].as_deref(),
                Some(src.updated_at.as_str()),
                "{key} {}: :updated_at",
                src.id
            );
            assert_eq!(
                l[3].as_deref(),
                Some(src.version.as_str()),
                "{key} {}: :version",
                src.id
            );
            for (i, (name, t)) in cols.iter().enumerate() {
                let want = &src.cells[i];
                let got = &l[4 + i];
                let ok = match (want, got) {
                    (None, None) => true,
                    (Some(w), None) => uncastable.get(&(src.id.clone(), name.clone())) == Some(w),
                    (Some(w), Some(g)) => normalize(t, w) == normalize(t, g),
                    (None, Some(_)) => false,
                };
                assert!(
                    ok,
                    "{key} {} column {name} ({t}): source {want:?}, warehouse {got:?}",
                    src.id
                );
            }
        }
    }

    /// The ledger never claims a page the warehouse lacks: the last row of every page recorded for the
    /// dataset's latest attempt is in the live table or in the load table.
    pub fn assert_ledger_not_ahead(&self, key: &str) {
        let last_ids: Vec<String> = self
            .ledger()
            .prepare(
                "SELECT last_id FROM pages WHERE last_id IS NOT NULL AND attempt_id =
                 (SELECT max(id) FROM attempts WHERE dataset_key = ?1)",
            )
            .unwrap()
            .query_map([key], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let conn = self.working();
        let tables: Vec<String> = conn
            .prepare("SELECT table_name FROM duckdb_tables() WHERE table_name IN (?, ?)")
            .unwrap()
            .query_map([key.to_string(), format!("_dobsob_load_{key}")], |r| {
                r.get(0)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for id in last_ids {
            let found = tables.iter().any(|t| {
                conn.query_row(
                    &format!("SELECT count(*) FROM main.\"{t}\" WHERE socrata_id = ?"),
                    [&id],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                    > 0
            });
            assert!(
                found,
                "{key}: the ledger records a page ending at {id} that the warehouse lacks"
            );
        }
    }

    pub fn assert_all_equal_to_source(&self) {
        for (key, id) in FIXTURES {
            self.assert_equal_to_source(key, id);
        }
    }
}

/// Text of a typed value in a comparable form: decimals in plain notation without redundant zeros, doubles
/// by value, timestamps without `Z`. Written apart from dobsob's own number code on purpose.
fn normalize(t: &str, s: &str) -> String {
    match t {
        "number" | "money" | "percent" => plain_decimal(s).unwrap_or_else(|| s.to_string()),
        "double" => s
            .parse::<f64>()
            .map(|v| format!("{v:e}"))
            .unwrap_or_else(|_| s.to_string()),
        "calendar_date" | "date" => s.trim_end_matches('Z').to_string(),
        _ => s.to_string(),
    }
}

/// `-1.50E+2` as `-150`, `0.00100` as `0.001`, `+7` as `7`; None if not a decimal literal.
pub fn plain_decimal(s: &str) -> Option<String> {
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut digits: Vec<char> = int.chars().chain(frac.chars()).collect();
    let mut point = int.len() as i64 + exp;
    while digits.first() == Some(&'0') {
        digits.remove(0);
        point -= 1;
    }
    while digits.last() == Some(&'0') {
        digits.pop();
    }
    if digits.is_empty() {
        return Some("0".into());
    }
    let d: String = digits.iter().collect();
    let n = d.len() as i64;
    let body = if point <= 0 {
        format!("0.{}{d}", "0".repeat((-point) as usize))
    } else if point >= n {
        format!("{d}{}", "0".repeat((point - n) as usize))
    } else {
        format!("{}.{}", &d[..point as usize], &d[point as usize..])
    };
    Some(if neg { format!("-{body}") } else { body })
}

pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A report's `job_order`: every dataset's key in start order.
pub fn job_order(r: &serde_json::Value) -> Vec<String> {
    r["job_order"]
        .as_array()
        .expect("a job_order")
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// A report's datasets in start order (its `job_order`), each with its `key` and the list it is in
/// (`bucket`: completed_jobs, failed_jobs, interrupted_jobs or skipped_jobs). Each dataset is in exactly
/// one list.
pub fn jobs(r: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for k in &job_order(r) {
        let k = k.as_str();
        let found: Vec<(&str, &serde_json::Value)> = [
            "completed_jobs",
            "failed_jobs",
            "interrupted_jobs",
            "skipped_jobs",
        ]
        .into_iter()
        .filter_map(|b| r[b].get(k).map(|v| (b, v)))
        .collect();
        assert_eq!(found.len(), 1, "{k} must be in exactly one list: {r}");
        let (bucket, v) = found[0];
        let mut v = v.clone();
        v["key"] = serde_json::json!(k);
        v["bucket"] = serde_json::json!(bucket);
        out.push(v);
    }
    out
}
