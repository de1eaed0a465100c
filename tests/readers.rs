//! Who can open the warehouse. It opens in the DuckDB releases analysts have: real old readers from the registry (Python
//! `duckdb==1.1.3` and the `duckdb-cli==1.5.6` binary, in a private virtual environment that `.ci/run`
//! installs and this test installs itself when missing) read every table of the published file and must
//! see what dobsob's own DuckDB sees, column by column. A data directory written in DuckDB 2.0's newest
//! format is converted once, without a download, and is then readable by them too. A share group's real
//! second account reads the snapshot and nothing else of the data directory.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use support::*;

/// The private environment with the old readers: `DOBSOB_OLD_READERS`, else `~/.cache/dobsob/old-readers`.
fn readers_dir() -> PathBuf {
    std::env::var_os("DOBSOB_OLD_READERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/dobsob/old-readers")
        })
}

/// The packages of the old readers (also in `.ci/run`); pytz is what duckdb 1.1 needs to return
/// TIMESTAMPTZ values to Python.
const PACKAGES: [&str; 3] = ["duckdb==1.1.3", "duckdb-cli==1.5.6", "pytz"];

struct Readers {
    python: PathBuf,
    cli: PathBuf,
}

/// The old readers, installed with pip when missing. `None` (with a loud message) only when Python or pip
/// itself is unavailable; a failed install is a failed test.
fn old_readers() -> Option<Readers> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = readers_dir();
    let r = Readers {
        python: dir.join("bin/python"),
        cli: dir.join("bin/duckdb"),
    };
    let ready = |r: &Readers| {
        r.cli.exists()
            && Command::new(&r.python)
                .args([
                    "-c",
                    "import duckdb, pytz; assert duckdb.__version__ == '1.1.3'",
                ])
                .status()
                .is_ok_and(|s| s.success())
    };
    if ready(&r) {
        return Some(r);
    }
    let pip_there = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !pip_there {
        eprintln!(
            "\n\n*** SKIPPED: no python3 with pip on this machine, so the old DuckDB readers ({}) cannot be \
             installed and the warehouse's compatibility is NOT checked. Install python3 and pip, or run \
             .ci/run. ***\n",
            PACKAGES.join(", ")
        );
        return None;
    }
    let venv = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .expect("python3 runs");
    assert!(venv.success(), "python3 -m venv {}", dir.display());
    let pip = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet"])
        .args(PACKAGES)
        .status()
        .expect("pip runs");
    assert!(
        pip.success(),
        "pip install {} into {}",
        PACKAGES.join(" "),
        dir.display()
    );
    assert!(
        ready(&r),
        "the old readers work after installing them in {}",
        dir.display()
    );
    Some(r)
}

/// One query that summarizes every column of every table of a warehouse in text that any DuckDB from 1.0
/// on prints alike: `(table, column, statistic, value)` rows. Counts catch a value read as NULL; sums of
/// exact numbers, instants as epoch microseconds, doubles to 15 significant digits, text extremes and
/// lengths catch a value read differently. Comments of tables and columns too, and the analysts' view.
fn summary_sql(conn: &duckdb::Connection) -> String {
    let mut stmt = conn
        .prepare(
            "SELECT c.schema_name, c.table_name, c.column_name, c.data_type FROM duckdb_columns() c \
             JOIN duckdb_tables() t USING (database_name, schema_name, table_name) \
             WHERE c.database_name = current_database() AND NOT t.temporary \
             ORDER BY c.schema_name, c.table_name, c.column_index",
        )
        .unwrap();
    let cols: Vec<(String, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(cols.len() > 40, "a warehouse with tables: {cols:?}");
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut parts = Vec::new();
    let mut tables = std::collections::BTreeSet::new();
    for (schema, table, column, ty) in &cols {
        let t = format!("{}.{}", ident(schema), ident(table));
        let name = format!("{schema}.{table}");
        if tables.insert(t.clone()) {
            parts.push(format!(
                "SELECT {}, '', 'rows', CAST(count(*) AS VARCHAR) FROM {t}",
                lit(&name)
            ));
        }
        let c = ident(column);
        let mut stats = vec![("count", format!("count({c})"))];
        let ty = ty.to_ascii_uppercase();
        if ty.starts_with("DECIMAL") || ty.contains("INT") {
            stats.push(("sum", format!("sum({c})")));
        } else if ty.starts_with("TIMESTAMP") {
            stats.push(("min_us", format!("epoch_us(min({c}))")));
            stats.push(("max_us", format!("epoch_us(max({c}))")));
        } else if ty == "DOUBLE" {
            stats.push(("min", format!("printf('%.15g', min({c}))")));
            stats.push(("max", format!("printf('%.15g', max({c}))")));
        } else if ty == "VARCHAR" {
            stats.push(("min", format!("min({c})")));
            stats.push(("max", format!("max({c})")));
            stats.push(("length", format!("sum(length({c}))")));
        } else if ty == "BOOLEAN" {
            stats.push(("true", format!("count_if({c})")));
        }
        for (stat, expr) in stats {
            parts.push(format!(
                "SELECT {}, {}, '{stat}', CAST({expr} AS VARCHAR) FROM {t}",
                lit(&name),
                lit(column)
            ));
        }
    }
    parts.push(
        "SELECT schema_name || '.' || table_name, column_name, 'comment', comment FROM duckdb_columns() \
         WHERE database_name = current_database() AND comment IS NOT NULL"
            .into(),
    );
    parts.push(
        "SELECT schema_name || '.' || table_name, '', 'comment', comment FROM duckdb_tables() \
         WHERE database_name = current_database() AND comment IS NOT NULL"
            .into(),
    );
    parts.push(
        "SELECT 'dobsob_datasets', '', 'rows', CAST(count(*) AS VARCHAR) FROM dobsob_datasets"
            .into(),
    );
    format!(
        "SELECT * FROM ({}) AS s(t, c, stat, v) ORDER BY t, c, stat",
        parts.join(" UNION ALL ")
    )
}

type Summary = Vec<[Option<String>; 4]>;

fn own_summary(path: &Path, sql: &str) -> Summary {
    let conn = read_only(path);
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn read_only(path: &Path) -> duckdb::Connection {
    let cfg = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap();
    duckdb::Connection::open_with_flags(path, cfg).unwrap()
}

/// The summary as Python duckdb 1.1.3 reads it; `Err` with its message when it cannot open the file.
fn python_summary(r: &Readers, path: &Path, sql: &str) -> Result<Summary, String> {
    let out = Command::new(&r.python)
        .args([
            "-c",
            "import duckdb, json, sys\n\
             con = duckdb.connect(sys.argv[1], read_only=True)\n\
             print(json.dumps(con.execute(sys.argv[2]).fetchall()))",
        ])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("the script prints JSON"))
}

/// The summary as the DuckDB 1.5.6 CLI reads it (`-json` output).
fn cli_summary(r: &Readers, path: &Path, sql: &str) -> Result<Summary, String> {
    let out = Command::new(&r.cli)
        .arg("-readonly")
        .arg("-json")
        .arg(path)
        .arg("-c")
        .arg(sql)
        .output()
        .unwrap();
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&out.stdout).expect("the CLI prints JSON");
    Ok(rows
        .into_iter()
        .map(|m| {
            ["t", "c", "stat", "v"].map(|k| m.get(k).and_then(|v| v.as_str()).map(String::from))
        })
        .collect())
}

fn assert_same(what: &str, theirs: &Summary, ours: &Summary) {
    assert_eq!(
        theirs.len(),
        ours.len(),
        "{what}: as many statistics as dobsob's DuckDB"
    );
    for (a, b) in theirs.iter().zip(ours) {
        assert_eq!(
            a, b,
            "{what} reads a value differently from dobsob's DuckDB"
        );
    }
}

#[test]
fn every_table_of_the_published_file_reads_the_same_in_duckdb_1_1_and_the_1_5_cli() {
    let Some(readers) = old_readers() else { return };
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let published = env.data_dir().join("warehouse.duckdb");
    let sql = summary_sql(&read_only(&published));
    let ours = own_summary(&published, &sql);
    // The values the issue names, among the statistics: a 15-decimal number, an instant, a point's
    // coordinates, a column comment.
    let has = |t: &str, c: &str, stat: &str| {
        ours.iter().any(|r| {
            r[0].as_deref() == Some(t)
                && r[1].as_deref() == Some(c)
                && r[2].as_deref() == Some(stat)
        })
    };
    assert!(has("main.every_type", "latitude", "sum"), "{ours:?}");
    assert!(has("main.every_type", "stamped", "max_us"));
    assert!(has("main.every_type", "the_geom_longitude", "min"));
    assert!(ours
        .iter()
        .any(|r| r[2].as_deref() == Some("comment") && !r[1].as_deref().unwrap_or("").is_empty()));
    let python = python_summary(&readers, &published, &sql)
        .unwrap_or_else(|e| panic!("Python duckdb 1.1.3 opens the published warehouse: {e}"));
    assert_same("Python duckdb 1.1.3", &python, &ours);
    let cli = cli_summary(&readers, &published, &sql)
        .unwrap_or_else(|e| panic!("the DuckDB 1.5.6 CLI opens the published warehouse: {e}"));
    assert_same("the DuckDB 1.5.6 CLI", &cli, &ours);
    let status = env.run_ok(&["status"]);
    assert!(
        stdout(&status).contains("storage version v1.0.0 (opens in DuckDB 1.0.0 and later)"),
        "status says which DuckDB opens the warehouse: {}",
        stdout(&status)
    );
}

#[test]
fn a_warehouse_in_duckdb_2_format_is_converted_once_without_a_download_and_old_readers_open_it() {
    let Some(readers) = old_readers() else { return };
    let env = TestEnv::new();
    // A user who has only new readers chooses the newest format...
    env.run_ok(&["sync", "--storage-version", "latest"]);
    let published = env.data_dir().join("warehouse.duckdb");
    let refused = python_summary(&readers, &published, "SELECT 1").unwrap_err();
    assert!(
        refused.contains("version number"),
        "DuckDB 1.1 refuses the newest format: {refused}"
    );
    // ... and it is remembered: a plain sync keeps it.
    let out = env.run_ok(&["sync"]);
    assert!(!stderr(&out).contains("converting"), "{}", stderr(&out));
    assert!(python_summary(&readers, &published, "SELECT 1").is_err());
    assert!(stdout(&env.run_ok(&["status"])).contains("storage version latest"));
    // A data directory from before dobsob recorded the version: written in DuckDB 2.0's newest format.
    {
        let w = duckdb::Connection::open(env.working_path()).unwrap();
        w.execute_batch("DELETE FROM dobsob.meta WHERE key = 'storage_version'")
            .unwrap();
    }
    let before = std::fs::metadata(&published).unwrap().modified().unwrap();
    let served = env.full_rows_served(DOB_VIOLATIONS);
    let requests = env.requests_for(DOB_VIOLATIONS);
    let out = env.run_ok(&["sync"]);
    let err = stderr(&out);
    assert!(
        err.contains("converting the warehouse") && err.contains("to v1.0.0"),
        "the conversion shows its progress: {err}"
    );
    assert!(
        err.contains("converted main.dob_violations"),
        "table by table: {err}"
    );
    assert!(
        env.full_rows_served(DOB_VIOLATIONS) == served,
        "no rows downloaded again: {err}"
    );
    assert!(
        env.requests_for(DOB_VIOLATIONS) - requests <= 3,
        "only the change check: {}",
        env.requests_for(DOB_VIOLATIONS) - requests
    );
    assert!(
        jobs(&env.last_report()).iter().all(|d| d["mode"] != "full"),
        "nothing reloaded"
    );
    assert!(std::fs::metadata(&published).unwrap().modified().unwrap() > before);
    env.assert_all_equal_to_source();
    let sql = summary_sql(&read_only(&published));
    let ours = own_summary(&published, &sql);
    assert_same(
        "Python duckdb 1.1.3 after the conversion",
        &python_summary(&readers, &published, &sql).expect("readable after the conversion"),
        &ours,
    );
    assert!(!env
        .data_dir()
        .join("work/.warehouse.duckdb.converting")
        .exists());
    // Once: the next sync converts nothing.
    let out = env.run_ok(&["sync"]);
    assert!(!stderr(&out).contains("converting"), "{}", stderr(&out));
}

#[test]
fn an_unknown_storage_version_is_a_usage_error_before_anything_is_written() {
    let env = TestEnv::new();
    for (bad, says) in [("v9.9.9", "v9.9.9"), ("newest", "latest")] {
        let out = env.run(&["sync", "--storage-version", bad]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(says), "{bad}: {}", stderr(&out));
    }
    assert!(!env.data_dir().exists(), "nothing written");
}

/// A group and an account of the machine made for one test, removed when it ends.
struct Account {
    user: String,
    group: String,
}

impl Account {
    /// `None` (with a loud message) unless this runs as root with the shadow utilities.
    fn create() -> Option<Account> {
        let root = unsafe { libc::geteuid() } == 0;
        let tools = ["groupadd", "useradd", "runuser"].iter().all(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !root || !tools {
            eprintln!(
                "\n\n*** SKIPPED: sharing with a group is checked with a real second account, which needs root \
                 and groupadd/useradd/runuser (root: {root}) ***\n"
            );
            return None;
        }
        let n = std::process::id();
        let a = Account {
            user: format!("dobsobu{n}"),
            group: format!("dobsobg{n}"),
        };
        let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
        assert!(ok(Command::new("groupadd").arg(&a.group)), "groupadd");
        assert!(
            ok(Command::new("useradd")
                .args(["-M", "-N", "-g", &a.group, "-s", "/bin/sh"])
                .arg(&a.user)),
            "useradd"
        );
        Some(a)
    }

    /// Runs `program args` as this account; its exit status and output.
    fn run(&self, program: &Path, args: &[&str]) -> std::process::Output {
        Command::new("runuser")
            .args(["-u", &self.user, "--"])
            .arg(program)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.user).status();
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

fn mode_and_group(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    (m.mode() & 0o777, m.gid())
}

#[test]
fn a_share_group_reads_the_snapshot_and_nothing_else_until_sharing_ends() {
    let Some(account) = Account::create() else {
        return;
    };
    let env = TestEnv::new();
    // The directories above the data directory are the user's to open; the temp dir is private.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The account reads with a real DuckDB when the old readers are there (the CLI's binary, copied where
    // the account can run it), else with head.
    let reader: Option<PathBuf> = old_readers().and_then(|_| {
        let lib = readers_dir().join("lib");
        let found = std::fs::read_dir(&lib).ok()?.flatten().find_map(|d| {
            let p = d.path().join("site-packages/duckdb_cli/duckdb");
            p.exists().then_some(p)
        })?;
        let copy = env.dir.path().join("duckdb");
        std::fs::copy(found, &copy).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(copy)
    });
    let data = env.data_dir();
    let published = data.join("warehouse.duckdb");
    let published_str = published.to_str().unwrap().to_string();
    let can_read_snapshot = || match &reader {
        Some(duckdb) => {
            let out = account.run(
                duckdb,
                &[
                    "-readonly",
                    &published_str,
                    "-csv",
                    "-noheader",
                    "-c",
                    "SELECT count(*) FROM dob_violations",
                ],
            );
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<u64>()
                    .is_ok_and(|n| n > 0)
        }
        None => account
            .run(Path::new("/usr/bin/head"), &["-c", "16", &published_str])
            .status
            .success(),
    };
    let can_read = |p: &Path| {
        account
            .run(
                Path::new("/usr/bin/head"),
                &["-c", "1", p.to_str().unwrap()],
            )
            .status
            .success()
    };
    let can_list = |p: &Path| {
        account
            .run(Path::new("/bin/ls"), &[p.to_str().unwrap()])
            .status
            .success()
    };

    env.run_ok(&["sync", "--share-group", &account.group]);
    let gid = mode_and_group(&published).1;
    assert_ne!(gid, 0, "the snapshot belongs to the share group");
    assert_eq!(mode_and_group(&published), (0o440, gid));
    assert_eq!(mode_and_group(&data), (0o750, gid));
    assert!(
        can_read_snapshot(),
        "the group's account reads the snapshot"
    );
    for private in ["ledger.sqlite", "work/warehouse.duckdb"] {
        assert!(!can_read(&data.join(private)), "{private} stays private");
    }
    for private in ["work", "tmp", "reports", "logs"] {
        assert!(!can_list(&data.join(private)), "{private}/ stays private");
    }
    // Remembered: the next publish keeps it shared, also after a chmod by hand.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    env.run_ok(&["sync"]);
    assert_eq!(mode_and_group(&published), (0o440, gid));
    assert_eq!(mode_and_group(&data).0, 0o750);
    assert!(can_read_snapshot());
    assert!(stdout(&env.run_ok(&["status"]))
        .contains(&format!("readable by the group {}", account.group)));
    // Ended: private again, and remembered so.
    env.run_ok(&["sync", "--share-group", "none"]);
    assert_eq!(mode_and_group(&published).0, 0o400);
    assert_eq!(mode_and_group(&data).0, 0o700);
    assert!(!can_read_snapshot(), "no longer shared");
    env.run_ok(&["sync"]);
    assert_eq!(mode_and_group(&published).0, 0o400);
}

#[test]
fn a_share_group_that_does_not_exist_is_a_usage_error_before_anything_is_written() {
    let env = TestEnv::new();
    let out = env.run(&["sync", "--share-group", "no-such-group-dobsob"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("no group \"no-such-group-dobsob\""),
        "{}",
        stderr(&out)
    );
    assert!(!env.data_dir().exists(), "nothing written");
}
