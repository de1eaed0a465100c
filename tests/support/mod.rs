//! Shared test support: a temp data dir, an in-process emulator serving the fixtures, a runner for the real
//! `dobsob` binary, and whole-table comparison of the warehouse with the source.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dobsob::emulator::{Emulator, Fault, FaultKind, State};

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

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub emu: Emulator,
}

impl TestEnv {
    /// A fresh data dir and an emulator serving `fixtures/`.
    pub fn new() -> TestEnv {
        let state = State::from_fixtures(&repo().join("fixtures")).expect("fixtures load");
        TestEnv {
            dir: tempfile::tempdir().expect("temp dir"),
            emu: Emulator::start(state, 0).expect("emulator starts"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The `dobsob` command, pointed at this env's data dir, the fixtures catalog and the emulator.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dobsob"));
        c.env_remove("SOCRATA_APP_TOKEN")
            .env_remove("RUST_LOG")
            .env("DOBSOB_DATA_DIR", self.data_dir())
            .env("DOBSOB_CATALOG", repo().join("fixtures/catalog.toml"))
            .env("DOBSOB_PORTAL", self.emu.url())
            .args(args);
        c
    }

    /// Runs `dobsob ARGS` (sync and rebuild get quick retries) and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        if matches!(args.first(), Some(&"sync") | Some(&"rebuild")) {
            all.extend(["--retry-base-ms", "10"]);
        }
        self.cmd(&all).output().expect("dobsob runs")
    }

    /// Runs and asserts the exit code, showing the output if it differs.
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
        let base = self.full_rows_served(id);
        self.emu.state().faults.push(
            Fault::on(&format!("/resource/{id}.csv"), FaultKind::DelayMs(30_000)).skip(stall_at),
        );
        let mut child = self
            .cmd(&[
                "sync",
                "--datasets",
                key,
                "--page-size",
                &page_size.to_string(),
                "-q",
            ])
            .spawn()
            .expect("dobsob starts");
        self.wait_for_rows_served(id, base + page_size * stall_at as usize);
        std::thread::sleep(std::time::Duration::from_millis(300));
        child.kill().expect("SIGKILL"); // no cleanup of any kind
        child.wait().expect("the killed process is reaped");
        self.emu.state().faults.clear();
    }

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
        let source = {
            let st = self.emu.state();
            let ds = &st.datasets[id];
            let cols: Vec<(String, String)> = ds
                .columns
                .iter()
                .map(|c| (c.field_name.clone(), c.data_type_name.clone()))
                .collect();
            (cols, ds.snapshot())
        };
        let (cols, rows) = source;
        let conn = self.warehouse();
        let mut select = vec![
            "socrata_id".to_string(),
            "strftime(socrata_created_at, '%Y-%m-%dT%H:%M:%S.%gZ')".to_string(),
            "strftime(socrata_updated_at, '%Y-%m-%dT%H:%M:%S.%gZ')".to_string(),
        ];
        for (name, t) in &cols {
            let q = format!("\"{}\"", name.replace('"', "\"\""));
            select.push(match t.as_str() {
                "calendar_date" | "date" => format!("strftime({q}, '%Y-%m-%dT%H:%M:%S.%g')"),
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
            for (i, (name, t)) in cols.iter().enumerate() {
                let want = &src.cells[i];
                let got = &l[3 + i];
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

    pub fn assert_all_equal_to_source(&self) {
        for (key, id) in FIXTURES {
            self.assert_equal_to_source(key, id);
        }
    }
}

/// Text of a typed value in a comparable form: numbers without trailing zeros, timestamps without `Z`.
fn normalize(t: &str, s: &str) -> String {
    match t {
        "number" | "money" | "percent" | "double" => {
            let s = s.trim_start_matches('+');
            if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s.to_string()
            }
        }
        "calendar_date" | "date" => s.trim_end_matches('Z').to_string(),
        _ => s.to_string(),
    }
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
