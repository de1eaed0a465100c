//! Integration tests for the guards against the portal's quirks and for every destructive step: each runs the
//! real `dobsob` binary against the emulator misbehaving in one way, and ends by comparing whole tables with
//! the source (or showing that nothing changed when the sync had to refuse).

mod support;

use serde_json::json;
use socrata_emulator::{Fault, FaultKind};
use support::*;

fn row(field: &str, v: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut r = serde_json::Map::new();
    r.insert(field.into(), json!(v));
    r
}

#[test]
fn a_capped_limit_neither_truncates_a_full_load_nor_empties_a_table() {
    let env = TestEnv::new();
    // The portal serves at most 7 rows whatever $limit says (a proxy's cap).
    env.emu.state().quirks.limit_cap = Some(7);
    let out = env.run_ok(&["sync", "--page-size", "10"]);
    env.assert_all_equal_to_source();
    let warned = jobs(&env.last_report())
        .iter()
        .any(|d| d["warnings"].to_string().contains("caps $limit"));
    assert!(warned, "{}", stderr(&out));
    // Deletions with the cap still in force: the id listing pages on past short pages, so it is complete
    // and deletes exactly the rows that went.
    let ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.delete(&ids[3]);
        e.delete(&ids[33]);
    });
    env.run_ok(&["sync", "--datasets", "hpd_violations", "--page-size", "10"]);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
}

/// A full load of large pages commits in row-group batches that assume nothing of the pages' size: when the
/// portal caps `$limit` far below what is asked (5,000 of 8,192), the short pages go on into batches of up to
/// 16 pages, and the table still equals the source.
#[test]
fn a_capped_limit_in_a_batched_full_load_loses_nothing() {
    let env = TestEnv::new();
    let total = 90_000;
    let catalog = env.generated_catalog("big", "bigc-0001", total);
    env.emu.state().quirks.limit_cap = Some(5_000);
    let out = env
        .cmd(&["sync", "--datasets", "big", "--page-size", "8192"])
        .env("DOBSOB_CATALOG", &catalog)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    env.assert_equal_to_source("big", "bigc-0001");
    let pages: i64 = env
        .ledger()
        .query_row("SELECT count(*) FROM pages WHERE rows = 5000", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        pages, 18,
        "the full load: 90,000 rows in capped pages of 5,000"
    );
}

#[test]
fn a_portal_that_ignores_where_fails_the_dataset_without_looping_or_committing() {
    let env = TestEnv::new();
    // The first filtered request comes back unfiltered: page 2 of the load repeats page 1.
    env.emu.state().quirks.ignore_where = Some((0, u32::MAX));
    let out = env.run(&["sync", "--datasets", "dob_violations", "--page-size", "10"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("dob_violations") && err.contains("page 2") && err.contains("ignored $where"),
        "{err}"
    );
    assert!(
        env.requests_for(DOB_VIOLATIONS) < 10,
        "it stopped at once instead of paging on"
    );
    let n: i64 = env
        .warehouse()
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'dob_violations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0, "no half load was swapped in");

    // Once the portal behaves, the sync completes; then a misbehaving incremental pass leaves the table and
    // the watermark as they were.
    env.emu.state().quirks.ignore_where = None;
    env.run_ok(&["sync", "--datasets", "dob_violations", "--page-size", "10"]);
    let ids = env.emu.state().datasets[DOB_VIOLATIONS].ids();
    env.emu.state().edit(DOB_VIOLATIONS, |e| {
        for id in ids.iter().take(3) {
            e.set(id, "boro", Some(json!("4")));
        }
    });
    let before = env.table_dump("dob_violations");
    let wm = |env: &TestEnv| -> (String, String) {
        env.ledger()
            .query_row(
                "SELECT wm_updated_at, wm_id FROM datasets WHERE key = 'dob_violations'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let wm_before = wm(&env);
    env.emu.state().quirks.ignore_where = Some((0, u32::MAX));
    let out = env.run(&["sync", "--datasets", "dob_violations", "--page-size", "10"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("ignored $where"), "{}", stderr(&out));
    assert_eq!(env.table_dump("dob_violations"), before);
    assert_eq!(wm(&env), wm_before);
    env.emu.state().quirks.ignore_where = None;
    env.run_ok(&["sync", "--datasets", "dob_violations", "--page-size", "10"]);
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
}

/// Requests for dataset `id` that fetched rows by id (`:id IN (...)`).
fn fetches_by_id(env: &TestEnv, id: &str) -> usize {
    env.emu
        .state()
        .log
        .iter()
        .filter(|s| s.path.contains(id) && s.where_.as_deref().is_some_and(|w| w.contains(" IN (")))
        .count()
}

#[test]
fn late_rows_behind_the_watermark_are_fetched() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    // A normal edit moves the watermark to now; then rows become visible with older stamps.
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.insert(row("violationid", "90000001"));
    });
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    // One minute behind: inside the overlap window, re-read by the pass itself.
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.insert_late(row("violationid", "90000002"), 60_000);
    });
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
    assert_eq!(
        fetches_by_id(&env, HPD_VIOLATIONS),
        0,
        "the overlap caught it"
    );
    // Two hours behind, with a deletion in the same interval so that the counts agree: the late window's id
    // listing finds it.
    let ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.insert_late(row("violationid", "90000003"), 2 * 3600 * 1000);
        e.delete(&ids[7]);
    });
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
    assert_eq!(fetches_by_id(&env, HPD_VIOLATIONS), 1);
    // Three days behind, beyond the late window: the count differs, and the full id check fetches it.
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.insert_late(row("violationid", "90000004"), 3 * 86_400 * 1000);
    });
    let out = env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
    assert_eq!(fetches_by_id(&env, HPD_VIOLATIONS), 2);
    assert_eq!(
        jobs(&env.last_report())[0]["outcome"],
        "ok",
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_lagging_count_is_drift_and_deletes_nothing() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "ecb_violations"]);
    let ids = env.emu.state().datasets[ECB_VIOLATIONS].ids();
    env.emu.state().edit(ECB_VIOLATIONS, |e| {
        e.delete(&ids[1]);
        e.delete(&ids[2]);
    });
    let before = env.table_dump("ecb_violations");
    // A replica whose count(*) is one row behind its rows: the listing can never match it.
    env.emu.state().quirks.count_lag = Some((1, u32::MAX));
    let out = env.run(&["sync", "--datasets", "ecb_violations"]);
    assert_exit(&out, 1);
    let all = stdout(&out) + &stderr(&out);
    assert!(all.contains("drift"), "{all}");
    assert_eq!(
        env.table_dump("ecb_violations"),
        before,
        "nothing deleted on incomplete evidence"
    );
    let r = env.last_report();
    let d = &jobs(&r)[0];
    assert_eq!(d["outcome"], "drift");
    assert_eq!(d["rows"], 40);
    assert_eq!(d["source_rows"], 37);
    let status = stdout(&env.run_ok(&["status", "--json"]));
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    let ecb = st
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "ecb_violations")
        .unwrap();
    assert_eq!(ecb["last_outcome"], "drift");
    assert!(ecb["last_error"].as_str().unwrap().contains("drift"));
    // The replica catches up: the next sync deletes and ends ok.
    env.emu.state().quirks.count_lag = None;
    env.run_ok(&["sync", "--datasets", "ecb_violations"]);
    env.assert_equal_to_source("ecb_violations", ECB_VIOLATIONS);
}

#[test]
fn a_mass_delete_is_refused_until_confirmed() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    let ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        for id in ids.iter().take(5) {
            e.delete(id);
        }
    });
    let before = env.table_dump("hpd_violations");
    let out = env.run(&[
        "sync",
        "--datasets",
        "hpd_violations",
        "--max-delete-rows",
        "3",
    ]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("refusing to delete 5 of 50 rows") && err.contains("--allow-mass-delete"),
        "{err}"
    );
    assert_eq!(env.table_dump("hpd_violations"), before);
    env.run_ok(&[
        "sync",
        "--datasets",
        "hpd_violations",
        "--max-delete-rows",
        "3",
        "--allow-mass-delete",
    ]);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
}

#[test]
fn clock_skew_never_skips_a_change() {
    let env = TestEnv::new();
    // The portal's clock stands ten minutes behind ours, and stands still (every change lands in the same
    // second of rowsUpdatedAt).
    let portal_now = chrono::Utc::now().timestamp_millis() - 600_000;
    env.emu.state().quirks.frozen_clock_ms = Some(portal_now);
    env.run_ok(&["sync", "--datasets", "every_type"]);
    let ids = env.emu.state().datasets[EVERY_TYPE].ids();
    env.emu
        .state()
        .edit(EVERY_TYPE, |e| e.set(&ids[0], "name", Some(json!("FIRST"))));
    env.run_ok(&["sync", "--datasets", "every_type"]);
    // A second change in the same portal second: rowsUpdatedAt does not move.
    env.emu.state().edit(EVERY_TYPE, |e| {
        e.set(&ids[1], "name", Some(json!("SECOND")))
    });
    env.run_ok(&["sync", "--datasets", "every_type"]);
    env.assert_equal_to_source("every_type", EVERY_TYPE);
    // With the portal's clock moved on, an unchanged source is skipped at one request.
    env.emu.state().quirks.frozen_clock_ms = Some(portal_now + 60_000);
    env.run_ok(&["sync", "--datasets", "every_type"]);
    let before = env.requests_for(EVERY_TYPE);
    let out = env.run_ok(&["sync", "--datasets", "every_type"]);
    assert!(stdout(&out).contains("unchanged"), "{}", stdout(&out));
    assert_eq!(env.requests_for(EVERY_TYPE) - before, 1);
}

#[test]
fn a_value_a_number_column_cannot_hold_widens_it_in_place_to_a_decimal_or_exact_text() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "every_type"]);
    let ids = env.emu.state().datasets[EVERY_TYPE].ids();
    env.emu.state().edit(EVERY_TYPE, |e| {
        e.set(
            &ids[2],
            "latitude",
            Some(json!("40.7127764000000012345678")),
        );
        e.set(
            &ids[3],
            "fee",
            // 41 digits: more than any DuckDB number holds exactly.
            Some(json!("1234567890123456789012345678901234567890.5")),
        );
    });
    env.run_ok(&["sync", "--datasets", "every_type"]);
    env.assert_equal_to_source("every_type", EVERY_TYPE);
    let conn = env.warehouse();
    let types: Vec<(String, String)> = conn
        .prepare(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'every_type'
             AND column_name IN ('latitude', 'fee', 'amount') ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        types,
        [
            ("amount".to_string(), "DECIMAL(38,18)".to_string()),
            ("fee".to_string(), "VARCHAR".to_string()),
            ("latitude".to_string(), "DECIMAL(38,22)".to_string())
        ]
    );
    let changes: i64 = conn
        .query_row(
            "SELECT count(*) FROM dobsob.schema_changes WHERE table_name = 'every_type'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(changes, 2, "both changes of the live table are recorded");
    // A rebuild starts from the narrow type and widens again: still equal. Its table's record says only
    // what is a surprise in a new table: the number column that is text.
    drop(conn);
    env.run_ok(&["rebuild", "--datasets", "every_type"]);
    env.assert_equal_to_source("every_type", EVERY_TYPE);
    let changes: Vec<(String, String)> = env
        .warehouse()
        .prepare("SELECT column_name, to_type FROM dobsob.schema_changes WHERE table_name = 'every_type'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(changes, [("fee".to_string(), "VARCHAR".to_string())]);
}

#[test]
fn faults_of_every_kind_are_retried_to_an_equal_table() {
    let env = TestEnv::new();
    let csv = format!("/resource/{HPD_VIOLATIONS}.csv");
    let retry_at = (chrono::Utc::now() + chrono::Duration::seconds(1))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let raw =
        |status: u16, ctype: &str, headers: Vec<(String, String)>, body: &str| FaultKind::Raw {
            status,
            content_type: ctype.into(),
            headers,
            body: body.into(),
        };
    {
        let mut st = env.emu.state();
        for f in [
            raw(
                502,
                "text/html",
                vec![],
                "<html><body>502 Bad Gateway</body></html>",
            ),
            raw(
                408,
                "application/json",
                vec![],
                r#"{"code":"query.timeout","message":"timed out"}"#,
            ),
            raw(
                202,
                "application/json",
                vec![],
                r#"{"message":"processing"}"#,
            ),
            raw(
                429,
                "application/json",
                vec![("Retry-After".into(), retry_at)],
                "{}",
            ),
            raw(429, "application/json", vec![], "{}"),
            raw(503, "text/plain", vec![], "Service Unavailable"),
            FaultKind::CutAfter(300),
            FaultKind::StallAfter(200),
            FaultKind::Trickle {
                chunk: 97,
                pause_ms: 5,
            },
        ] {
            st.faults.push(Fault::on(&csv, f));
        }
        st.faults.push(Fault::on(
            &format!("/api/views/{HPD_VIOLATIONS}"),
            FaultKind::CutAfter(10),
        ));
    }
    env.run_ok(&[
        "sync",
        "--datasets",
        "hpd_violations",
        "--page-size",
        "20",
        "--max-retries",
        "12",
        "--timeout",
        "1",
    ]);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
    assert!(
        env.emu.state().faults.iter().all(|f| f.times == 0),
        "every fault was hit"
    );
}

#[test]
fn malformed_pages_fail_naming_dataset_and_page_and_commit_nothing() {
    let head = "\":id\",\":created_at\",\":updated_at\",\"boro\"\n";
    let ts = "\"2026-01-01T00:00:00.000Z\"";
    let big = format!("{head}\"row-x\",{ts},{ts},\"{}\"\n", "x".repeat(10 << 20));
    let cases: Vec<(FaultKind, &str)> = vec![
        (FaultKind::Body(format!("{head}\"row-x\",{ts}\n")), "line 2"),
        (
            FaultKind::Body(format!("{head}\"row-x\",{ts},{ts},\"1\",\"2\"\n")),
            "line 2",
        ),
        (
            FaultKind::Body(format!("{head}\"row-x\",{ts},{ts},\"open\n")),
            "unterminated",
        ),
        (
            FaultKind::Body("\"a\",\"b\"\n\"1\",\"2\"\n".into()),
            "no :id",
        ),
        (
            FaultKind::Raw {
                status: 200,
                content_type: "application/json".into(),
                headers: vec![],
                body: "[{\":id\":\"row-x\"}]".into(),
            },
            "expected CSV",
        ),
        (
            FaultKind::Raw {
                status: 200,
                content_type: "text/html".into(),
                headers: vec![],
                body: "<html>Please log in</html>".into(),
            },
            "expected CSV",
        ),
        // A 10 MB cell is streamed like any other; this page fails for being behind the cursor, by number.
        (FaultKind::Body(big), "page 1"),
    ];
    for (fault, needle) in cases {
        let env = TestEnv::new();
        env.run_ok(&["sync", "--datasets", "dob_violations", "--page-size", "5"]);
        let ids = env.emu.state().datasets[DOB_VIOLATIONS].ids();
        env.emu.state().edit(DOB_VIOLATIONS, |e| {
            for id in ids.iter().take(3) {
                e.set(id, "boro", Some(json!("9")));
            }
        });
        let before = env.table_dump("dob_violations");
        env.emu
            .state()
            .faults
            .push(Fault::on(&format!("/resource/{DOB_VIOLATIONS}.csv"), fault).times(50));
        let out = env.run(&["sync", "--datasets", "dob_violations", "--page-size", "5"]);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("dob_violations") && err.contains("page 1") && err.contains(needle),
            "{needle}: {err}"
        );
        assert_eq!(env.table_dump("dob_violations"), before, "{needle}");
        env.emu.state().faults.clear();
        env.run_ok(&["sync", "--datasets", "dob_violations", "--page-size", "5"]);
        env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
    }
}

#[test]
fn invalid_utf8_in_a_page_is_refused() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "dob_violations"]);
    let ids = env.emu.state().datasets[DOB_VIOLATIONS].ids();
    env.emu
        .state()
        .edit(DOB_VIOLATIONS, |e| e.set(&ids[0], "boro", Some(json!("7"))));
    let before = env.table_dump("dob_violations");
    // The emulator's Body fault is text; the bytes are made invalid through a Latin-1 cell served raw.
    let mut body = "\":id\",\":created_at\",\":updated_at\",\"boro\"\n\"".to_string();
    body.push_str(&ids[0]);
    body.push_str("\",\"2026-01-01T00:00:00.000Z\",\"2030-01-01T00:00:00.000Z\",\"caf\u{FFFD}\"\n");
    env.emu.state().faults.push(
        Fault::on(
            &format!("/resource/{DOB_VIOLATIONS}.csv"),
            FaultKind::InvalidUtf8(body),
        )
        .times(50),
    );
    let out = env.run(&["sync", "--datasets", "dob_violations"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).to_lowercase().contains("utf-8"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.table_dump("dob_violations"), before);
}

#[test]
fn metadata_that_lies_is_a_recorded_warning() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "dob_complaints"]);
    // The metadata loses a column the rows still carry.
    {
        let mut st = env.emu.state();
        let ds = st.datasets.get_mut(DOB_COMPLAINTS).unwrap();
        let cols = ds.view.get_mut("columns").unwrap().as_array_mut().unwrap();
        cols.retain(|c| c["fieldName"] != "unit");
    }
    let out = env.run_ok(&["sync", "--datasets", "dob_complaints"]);
    let r = env.last_report();
    assert!(
        jobs(&r)[0]["warnings"].to_string().contains("unit"),
        "{} {}",
        r,
        stderr(&out)
    );
    let n: i64 = env
        .ledger()
        .query_row(
            "SELECT count(*) FROM warnings WHERE message LIKE '%unit%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(n >= 1);
}

#[test]
fn a_ledger_whose_row_count_is_wrong_is_repaired_from_the_warehouse() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "ecb_violations"]);
    // As if the process died between the id-set delete and the ledger write: the watermark agrees, the
    // count does not.
    env.ledger()
        .execute(
            "UPDATE datasets SET row_count = 999 WHERE key = 'ecb_violations'",
            [],
        )
        .unwrap();
    let out = env.run_ok(&["sync", "--datasets", "ecb_violations", "-v"]);
    assert!(stderr(&out).contains("repaired"), "{}", stderr(&out));
    let n: i64 = env
        .ledger()
        .query_row(
            "SELECT row_count FROM datasets WHERE key = 'ecb_violations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 40);
}

#[test]
fn verify_says_in_step_or_exactly_what_differs_and_changes_nothing() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "dob_violations,every_type"]);
    let out = env.run_ok(&[
        "verify",
        "--datasets",
        "dob_violations,every_type",
        "--deep",
    ]);
    assert_eq!(
        stdout(&out).matches("in step").count(),
        2,
        "{}",
        stdout(&out)
    );
    let ids = env.emu.state().datasets[DOB_VIOLATIONS].ids();
    env.emu.state().edit(DOB_VIOLATIONS, |e| {
        e.set(&ids[4], "boro", Some(json!("3")));
        e.delete(&ids[6]);
        e.insert(row("isn_dob_bis_viol", "123"));
    });
    let wh = std::fs::read(env.data_dir().join("warehouse.duckdb")).unwrap();
    let ledger = std::fs::read(env.data_dir().join("ledger.sqlite")).unwrap();
    let out = env.run(&[
        "verify",
        "--datasets",
        "dob_violations",
        "--deep",
        "--page-size",
        "7",
    ]);
    assert_exit(&out, 1);
    let o = stdout(&out);
    assert!(o.contains("DIFFERS"), "{o}");
    assert!(o.contains("1 rows missing from the warehouse"), "{o}");
    assert!(
        o.contains(&format!(
            "1 rows in the warehouse but gone from the source, e.g. {}",
            ids[6]
        )),
        "{o}"
    );
    assert!(
        o.contains(&format!(
            "1 rows stale (another :version or :updated_at than the source), e.g. {}",
            ids[4]
        )),
        "{o}"
    );
    assert_eq!(
        std::fs::read(env.data_dir().join("warehouse.duckdb")).unwrap(),
        wh
    );
    assert_eq!(
        std::fs::read(env.data_dir().join("ledger.sqlite")).unwrap(),
        ledger
    );
    env.run_ok(&["sync", "--datasets", "dob_violations"]);
    env.run_ok(&["verify", "--datasets", "dob_violations", "--deep"]);
}

#[test]
fn a_corrupt_or_foreign_ledger_or_warehouse_is_refused_and_left_alone() {
    for (file, needle) in [
        ("ledger.sqlite", "ledger"),
        ("work/warehouse.duckdb", "warehouse"),
    ] {
        let env = TestEnv::new();
        env.run_ok(&["sync", "--datasets", "every_type"]);
        let path = env.data_dir().join(file);
        let garbage = b"this is not a database, it is somebody's notes\n".repeat(200);
        std::fs::write(&path, &garbage).unwrap();
        let out = env.run(&["sync", "--datasets", "every_type"]);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(err.contains(needle) && err.contains(file), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            garbage,
            "{file} was not overwritten"
        );
        // The way out the message gives: move it aside and sync.
        assert!(err.contains("move it aside"), "{err}");
        std::fs::rename(&path, path.with_extension("damaged")).unwrap();
        env.run_ok(&["sync", "--datasets", "every_type"]);
        env.assert_equal_to_source("every_type", EVERY_TYPE);
        let rows: i64 = env
            .ledger()
            .query_row(
                "SELECT row_count FROM datasets WHERE key = 'every_type'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 25, "{file}: the ledger knows the table again");
    }
    // A warehouse written by a newer dobsob.
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "every_type"]);
    duckdb::Connection::open(env.working_path())
        .unwrap()
        .execute_batch("UPDATE dobsob.meta SET value = '99' WHERE key = 'format'")
        .unwrap();
    let before = env.table_dump("every_type");
    let out = env.run(&["sync", "--datasets", "every_type"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("written by a newer dobsob"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.table_dump("every_type"), before);
    // A ledger written by a newer dobsob.
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "every_type"]);
    env.ledger()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let out = env.run(&["sync", "--datasets", "every_type"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("upgrade dobsob"), "{}", stderr(&out));
}

#[test]
fn a_full_load_short_of_the_source_count_is_not_swapped_in() {
    let env = TestEnv::new();
    // A replica whose first count lags far behind, and a capped $limit: the load's first short page
    // already reaches the (wrong) count and ends the pass. The count taken after the load tells.
    {
        let mut st = env.emu.state();
        st.quirks.limit_cap = Some(7);
        st.quirks.count_lag = Some((45, 1));
    }
    let out = env.run(&["sync", "--datasets", "hpd_violations", "--page-size", "10"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("not swapped in") && err.contains("7 rows but the source has 50"),
        "{err}"
    );
    let tables: i64 = env
        .warehouse()
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '%hpd_violations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        tables, 0,
        "neither a partial live table nor a load table is left"
    );
    env.run_ok(&["sync", "--datasets", "hpd_violations", "--page-size", "10"]);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
}

/// A tmpfs of `size` mounted at `dir` for the life of the value (root only).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?
            .success();
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_next_run_with_space_completes() {
    let env = TestEnv::new();
    let mnt = env.dir.path().join("data");
    // The data directory on a file system too small for the warehouse (a 1.5 MB tmpfs).
    let Some(fs) = Tmpfs::mount(&mnt, "1500k") else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the disk-full test did not run"
        );
        return;
    };
    let out = env.run(&["sync"]);
    assert_exit(&out, 1);
    let all = stdout(&out) + &stderr(&out);
    assert!(all.contains("No space left on device"), "{all}");
    fs.resize("64m");
    env.run_ok(&["sync"]);
    env.assert_all_equal_to_source();
    drop(fs);
}
