//! Integration tests for the warehouse analysts open: a published snapshot that a sync never blocks and that
//! never blocks a sync, replaced atomically (also when dobsob is killed mid-publish), adopted from an old data
//! directory without a reload, and explaining itself (`dobsob_datasets`, table and column comments).
//! The real binary against the emulator; the analyst is this test process with its own DuckDB connections.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use socrata_emulator::{synthetic, Fault, FaultKind};
use support::*;

fn read_only(path: &std::path::Path) -> duckdb::Result<duckdb::Connection> {
    let cfg = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap();
    duckdb::Connection::open_with_flags(path, cfg)
}

fn count(conn: &duckdb::Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
    .unwrap()
}

#[test]
fn an_analyst_holding_the_file_open_through_a_sync_neither_fails_nor_blocks_it() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let published = env.data_dir().join("warehouse.duckdb");
    let before = count(&env.warehouse(), "dob_violations");
    // A notebook left connected read-only, and a careless one that opened the file read-write and wrote.
    let analyst = read_only(&published).expect("a read-only open of the published file");
    let careless = duckdb::Connection::open(&published).expect("root can open it read-write");
    careless
        .execute_batch("CREATE TABLE scratch AS SELECT 42 AS answer")
        .unwrap();
    env.insert_dob_violations(12, "77");
    env.emu
        .state()
        .faults
        .push(Fault::on("/resource/", FaultKind::DelayMs(50)).times(10_000));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut queries = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // The snapshot it opened, unchanged by the sync.
                assert_eq!(count(&analyst, "dob_violations"), before);
                queries += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (queries, analyst)
        })
    };
    env.run_ok(&["sync", "--page-size", "5"]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (queries, analyst) = reader.join().expect("the analyst's queries never failed");
    assert!(queries > 5, "the analyst queried during the sync");
    assert_eq!(count(&analyst, "dob_violations"), before);
    // A fresh open sees the new rows, and nothing of the careless session.
    env.assert_all_equal_to_source();
    let fresh = env.warehouse();
    assert_eq!(count(&fresh, "dob_violations"), before + 12);
    let scratch: i64 = fresh
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scratch'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        scratch, 0,
        "a read-write session's writes never reach a newer snapshot"
    );
    drop((fresh, analyst, careless));
    // The careless session closing does not damage the published file for the next reader, nor the next
    // sync.
    env.insert_dob_violations(3, "77");
    env.run_ok(&["sync"]);
    env.assert_all_equal_to_source();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&published).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o400,
            "the published file is read-only, for its owner only"
        );
    }
}

#[test]
fn opening_the_file_during_a_slow_sync_always_succeeds_and_shows_a_committed_state() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let before = count(&env.warehouse(), "dob_violations");
    let mut child = env.spawn_slow_sync(30);
    let published = env.data_dir().join("warehouse.duckdb");
    let mut seen = vec![before];
    let (mut opens, mut side_commands) = (0, false);
    while child.try_wait().unwrap().is_none() {
        let conn = read_only(&published).expect("every open succeeds during the sync");
        let n = count(&conn, "dob_violations");
        // Pages of 5 new rows (no overlap window) commit one by one: any snapshot holds a whole number of
        // them.
        assert!(
            n >= *seen.last().unwrap() && n <= before + 30 && (n - before) % 5 == 0,
            "a snapshot with {n} rows (before {before})"
        );
        if n != *seen.last().unwrap() {
            seen.push(n);
        }
        opens += 1;
        drop(conn);
        if !side_commands && opens > 3 {
            // status, report and verify work while the sync runs.
            side_commands = true;
            env.run_ok(&["status"]);
            env.run_ok(&["report", "--last"]);
            let v = env.run(&["verify", "--datasets", "dob_violations"]);
            assert!(
                matches!(v.status.code(), Some(0 | 1)) && !stderr(&v).contains("lock"),
                "{}",
                stderr(&v)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
    assert!(side_commands, "the sync was too quick to look at");
    assert!(
        seen.len() >= 2 && seen.iter().any(|n| *n != before && *n != before + 30),
        "a publish during the run showed progress: counts seen {seen:?}"
    );
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
}

#[test]
fn a_kill_during_a_publish_leaves_the_old_file_and_the_next_run_publishes() {
    let env = TestEnv::new();
    const BIG: &str = "bigg-0001";
    env.emu.state().add_dataset(synthetic(BIG, 60_000));
    let catalog = env.dir.path().join("big.toml");
    std::fs::write(
        &catalog,
        format!(
            "[[dataset]]\nkey = \"big\"\nid = \"{BIG}\"\nname = \"big\"\ngroup = \"primary\"\n\
             frequency = \"daily\"\nsize_mb = 10\n"
        ),
    )
    .unwrap();
    let cat = catalog.to_str().unwrap();
    env.run_ok(&["--catalog", cat, "sync"]);
    let published = env.data_dir().join("warehouse.duckdb");
    let tmp = env.data_dir().join(".warehouse.duckdb.publishing");
    let old = env.table_dump("big");
    let ids = env.emu.state().datasets[BIG].ids();
    env.emu.state().edit(BIG, |e| {
        for id in ids.iter().take(500) {
            e.set(id, "street", Some(json!("CHANGED")));
        }
    });
    let mut killed_mid_publish = false;
    for _ in 0..20 {
        let mut child = env.spawn(&[
            "--catalog",
            cat,
            "sync",
            "--force",
            "--publish-interval",
            "0",
            "-q",
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !tmp.exists() && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        if tmp.exists() {
            child.kill().unwrap();
            child.wait().unwrap();
            killed_mid_publish = true;
            break;
        }
        child.wait().unwrap();
    }
    assert!(killed_mid_publish, "never caught a publish in the act");
    // The published file is the old snapshot, whole.
    assert_eq!(env.table_dump("big"), old);
    drop(read_only(&published).expect("the old snapshot opens"));
    // The next run removes the leftover and publishes the synced state.
    env.run_ok(&["--catalog", cat, "sync"]);
    assert!(!tmp.exists(), "the killed publish's leftover is removed");
    env.assert_equal_to_source("big", BIG);
}

#[test]
fn a_data_directory_from_before_is_adopted_without_a_reload() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    // The layout of earlier dobsob versions: the warehouse the sync writes is data/warehouse.duckdb.
    let published = env.data_dir().join("warehouse.duckdb");
    std::fs::remove_file(&published).unwrap();
    std::fs::rename(env.working_path(), &published).unwrap();
    std::fs::remove_dir_all(env.data_dir().join("work")).unwrap();
    env.insert_dob_violations(4, "77");
    let served = env.full_rows_served(DOB_VIOLATIONS);
    let out = env.run_ok(&["sync"]);
    assert!(env.working_path().exists(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("adopting"),
        "says what it did: {}",
        stderr(&out)
    );
    assert!(
        env.full_rows_served(DOB_VIOLATIONS) - served <= 4 + 5,
        "no reload: only the new rows (and the overlap window) were fetched"
    );
    let r = env.last_report();
    assert!(
        jobs(&r).iter().all(|d| d["mode"] != "full"),
        "nothing reloaded: {r}"
    );
    env.assert_all_equal_to_source();
}

#[test]
fn the_warehouse_explains_itself_and_follows_the_portals_descriptions() {
    let env = TestEnv::new();
    let describe = |env: &TestEnv, what: &str, bin: &str| {
        let mut st = env.emu.state();
        let view = &mut st.datasets.get_mut(DOB_VIOLATIONS).unwrap().view;
        view.insert("description".into(), json!(what));
        for c in view["columns"].as_array_mut().unwrap() {
            if c["fieldName"] == "bin" {
                c["name"] = json!("BIN");
                c["description"] = json!(bin);
            }
        }
    };
    describe(
        &env,
        "Violations issued by the Department of Buildings.",
        "Building Identification Number",
    );
    env.run_ok(&["sync"]);
    let wh = env.warehouse();
    type Row = (
        String,
        String,
        String,
        Option<String>,
        String,
        i64,
        bool,
        String,
    );
    let rows: Vec<Row> = wh
        .prepare(
            "SELECT key, socrata_id, name, description, source_url, rows, stale, last_outcome
             FROM dobsob_datasets ORDER BY key",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 5);
    for (key, id, ..) in &rows {
        assert!(
            FIXTURES.contains(&(key.as_str(), id.as_str())),
            "{key} {id}"
        );
    }
    let dob = rows.iter().find(|r| r.0 == "dob_violations").unwrap();
    assert_eq!(dob.2, "DOB Violations");
    assert_eq!(
        dob.3.as_deref(),
        Some("Violations issued by the Department of Buildings.")
    );
    assert_eq!(dob.4, format!("{}/d/{DOB_VIOLATIONS}", env.emu.url()));
    assert_eq!(dob.5, count(&wh, "dob_violations"));
    assert!(!dob.6, "just synced: not stale");
    assert_eq!(dob.7, "ok");
    let last_success: i64 = wh
        .query_row(
            "SELECT count(*) FROM dobsob_datasets WHERE last_success_at IS NOT NULL AND due_at > last_success_at",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(last_success, 5);

    let column_comment = |wh: &duckdb::Connection, column: &str| -> Option<String> {
        wh.query_row(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'dob_violations' AND column_name = ?",
            [column],
            |r| r.get(0),
        )
        .unwrap()
    };
    let table_comment: Option<String> = wh
        .query_row(
            "SELECT comment FROM duckdb_tables() WHERE table_name = 'dob_violations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let table_comment = table_comment.unwrap();
    assert!(
        table_comment.contains("Violations issued by the Department of Buildings.")
            && table_comment.contains(DOB_VIOLATIONS),
        "{table_comment}"
    );
    assert_eq!(
        column_comment(&wh, "bin").as_deref(),
        Some("BIN: Building Identification Number")
    );
    assert!(column_comment(&wh, "socrata_id")
        .unwrap()
        .contains("Socrata :id"));
    // Every column of every table has a comment.
    let bare: i64 = wh
        .query_row(
            "SELECT count(*) FROM duckdb_columns() c JOIN dobsob_datasets d ON c.table_name = d.key
             WHERE c.schema_name = 'main' AND (c.comment IS NULL OR c.comment = '')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bare, 0);
    drop(wh);

    // The portal edits the descriptions only (no data change): the next sync, stopped by the change gate
    // after the metadata request, still brings the new text.
    describe(&env, "DOB violations, all boroughs.", "The building's BIN");
    env.run_ok(&["sync"]);
    let wh = env.warehouse();
    assert_eq!(
        column_comment(&wh, "bin").as_deref(),
        Some("BIN: The building's BIN")
    );
    let d: String = wh
        .query_row(
            "SELECT description FROM dobsob_datasets WHERE key = 'dob_violations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(d, "DOB violations, all boroughs.");
    let r = env.last_report();
    assert_eq!(r["skipped_jobs"]["dob_violations"]["mode"], "unchanged");
}

/// The SQL statements of the ```sql blocks of a markdown file, in order.
fn sql_statements(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in markdown.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```sql") => block = Some(String::new()),
            (Some(b), l) if l.starts_with("```") => {
                out.extend(
                    b.split(';')
                        .map(|s| {
                            s.lines()
                                .filter(|l| !l.trim_start().starts_with("--"))
                                .collect::<Vec<_>>()
                                .join("\n")
                        })
                        .filter(|s| !s.trim().is_empty()),
                );
                block = None;
            }
            (Some(b), _) => {
                // A comment after a statement ends with its line.
                let code = line.split(" --").next().unwrap_or(line);
                b.push_str(code);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

#[test]
fn every_query_docs_warehouse_shows_runs_on_the_nyc_shaped_fixtures() {
    let env = TestEnv::new();
    // One building in both datasets: an HPD violation (bin a number at the source) at a DOB violation's BIN.
    let dob_bin = {
        let st = env.emu.state();
        let ds = &st.datasets[DOB_VIOLATIONS];
        let col = ds
            .columns
            .iter()
            .position(|c| c.field_name == "bin")
            .unwrap();
        ds.snapshot()[0].cells[col].clone().unwrap()
    };
    let hpd_ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.set(&hpd_ids[0], "bin", Some(json!(dob_bin)));
    });
    env.run_ok(&["sync"]);
    let doc = std::fs::read_to_string(repo().join("docs/warehouse.md")).unwrap();
    let statements = sql_statements(&doc);
    assert!(statements.len() >= 8, "{statements:#?}");
    let conn = env.warehouse();
    for sql in &statements {
        let mut stmt = conn
            .prepare(sql)
            .unwrap_or_else(|e| panic!("docs/warehouse.md: {sql}\n{e}"));
        let mut rows = stmt
            .query([])
            .unwrap_or_else(|e| panic!("docs/warehouse.md: {sql}\n{e}"));
        while rows.next().unwrap().is_some() {}
    }
    // The join across datasets by BIN is text = text and finds the buildings both datasets name.
    let joined: i64 = conn
        .query_row(
            "SELECT count(*) FROM hpd_violations h JOIN dob_violations d USING (bin)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let types: Vec<String> = conn
        .prepare(
            "SELECT DISTINCT data_type FROM duckdb_columns() WHERE column_name = 'bin' AND schema_name = 'main'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(types, ["VARCHAR"], "every dataset's bin is text");
    assert!(
        joined >= 1,
        "the building in both datasets is found by its BIN"
    );
}
