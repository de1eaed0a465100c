//! Integration tests: the real `dobsob` binary against the in-process Socrata emulator. Every test that syncs
//! compares whole tables with the source.

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};
use socrata_emulator::{Fault, FaultKind};
use support::*;

fn status_json(env: &TestEnv) -> Vec<Value> {
    let out = env.run_ok(&["status", "--json"]);
    serde_json::from_str(&stdout(&out)).expect("status --json prints JSON")
}

fn ledger_state(
    env: &TestEnv,
    key: &str,
) -> (Option<String>, Option<String>, Option<i64>, Option<String>) {
    env.ledger()
        .query_row(
            "SELECT wm_updated_at, wm_id, row_count, last_success_at FROM datasets WHERE key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

#[test]
fn first_sync_equals_source_across_small_pages() {
    let env = TestEnv::new();
    // Pages of 4 rows: ids and :updated_at ties cross page boundaries. No overlap window, so each row is
    // fetched exactly once.
    let out = env.run_ok(&["sync", "--page-size", "4", "--overlap", "0"]);
    assert!(stdout(&out).contains("dob_violations"), "{}", stdout(&out));
    env.assert_all_equal_to_source();
    // Each row was fetched once by the full load (the incremental pass after it found nothing new).
    for (_, id) in FIXTURES {
        let n = env.emu.state().datasets[id].rows.len();
        assert_eq!(env.full_rows_served(id), n, "{id}");
    }
    let conn = env.warehouse();
    // A number column has the narrowest type its values need. Exponents, signs and trailing zeros are
    // numbers, held exactly: 1e3 is 1000; 14 decimals and 5 integer digits need DECIMAL(38,14).
    let ty = |table: &str, column: &str| -> String {
        conn.query_row(
            "SELECT data_type FROM duckdb_columns() WHERE table_name = ? AND column_name = ?",
            [table, column],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(ty("ecb_violations", "penality_imposed"), "DECIMAL(38,14)");
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM ecb_violations WHERE penality_imposed = 1000",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(n > 0, "1e3 landed as 1000");
    // Integers stay integers: a 29-digit balance is too big for BIGINT, not for HUGEINT; ids are BIGINT.
    assert_eq!(ty("ecb_violations", "balance_due"), "HUGEINT");
    assert_eq!(ty("ecb_violations", "amount_paid"), "DECIMAL(18,2)");
    assert_eq!(ty("hpd_violations", "violationid"), "BIGINT");
    // Identifiers the catalog makes text, whatever the portal's type: HPD's bin and block are numbers there.
    assert_eq!(ty("hpd_violations", "bin"), "VARCHAR");
    assert_eq!(ty("hpd_violations", "block"), "VARCHAR");
    let widened: i64 = conn
        .query_row(
            "SELECT count(*) FROM dobsob.schema_changes WHERE table_name = 'ecb_violations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(widened, 0, "a full load's types are its types, not changes");
    // dobsob.columns says what each column is, the portal's type beside.
    let mapped: (String, String) = conn
        .query_row(
            "SELECT socrata_type, duckdb_type FROM dobsob.columns WHERE table_name = 'hpd_violations' AND column_name = 'bin'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(mapped, ("number".to_string(), "VARCHAR".to_string()));
    // Only values that are not numbers at all are kept aside: text, an empty string, a bad double, and
    // `1_000`, which DuckDB alone would read as 1000.
    let raw: Vec<String> = conn
        .prepare("SELECT DISTINCT raw_value FROM dobsob.uncastable ORDER BY 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for r in &raw {
        assert!(
            ["", "N/A", "nan?", "1_000"].contains(&r.as_str()),
            "{r:?} should have been typed: {raw:?}"
        );
    }
    // Geocoder coordinates keep every digit.
    let lat: Vec<String> = conn
        .prepare("SELECT DISTINCT CAST(latitude AS VARCHAR) FROM every_type WHERE latitude IS NOT NULL ORDER BY 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ty("every_type", "latitude"), "DECIMAL(18,16)");
    assert!(lat.contains(&"-73.8637547073083450".to_string()), "{lat:?}");
    assert!(lat.contains(&"40.7127764000000012".to_string()), "{lat:?}");
}

#[test]
fn second_sync_fetches_only_changed_rows_and_equals_source() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--overlap", "0"]);
    let before = env.full_rows_served(DOB_VIOLATIONS);
    let ids = env.emu.state().datasets[DOB_VIOLATIONS].ids();
    env.emu.state().edit(DOB_VIOLATIONS, |e| {
        e.set(
            &ids[3],
            "street",
            Some(json!("NEW \"STREET\", APT 1\nREAR")),
        );
        e.set(&ids[10], "description", None);
        e.set(&ids[20], "disposition_comments", Some(json!("")));
        e.delete(&ids[5]);
        e.delete(&ids[30]);
        let mut row = serde_json::Map::new();
        row.insert("isn_dob_bis_viol".into(), json!("9999999"));
        row.insert("street".into(), json!("ÜBERSTRASSE"));
        e.insert(row.clone());
        row.insert("isn_dob_bis_viol".into(), json!("9999998"));
        e.insert(row);
    });
    let out = env.run_ok(&["sync", "--page-size", "2", "--overlap", "0"]);
    env.assert_all_equal_to_source();
    // 3 updated + 2 inserted rows fetched, nothing else; the deletions came from the id check.
    assert_eq!(
        env.full_rows_served(DOB_VIOLATIONS) - before,
        5,
        "{}",
        stdout(&out)
    );
    // Unchanged datasets were not fetched again at all.
    assert_eq!(
        env.full_rows_served(HPD_VIOLATIONS),
        env.emu.state().datasets[HPD_VIOLATIONS].rows.len()
    );
    let report = stdout(&out);
    assert!(report.contains("unchanged"), "{report}");
}

#[test]
fn bulk_update_with_one_timestamp_is_paged_by_id_without_loss() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    let ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    // 20 rows stamped with the same :updated_at: pages of 3 must walk the tie by :id.
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        for (i, id) in ids.iter().take(20).enumerate() {
            e.set(id, "currentstatus", Some(json!(format!("BULK {i}"))));
        }
    });
    let before = env.full_rows_served(HPD_VIOLATIONS);
    env.run_ok(&[
        "sync",
        "--datasets",
        "hpd_violations",
        "--page-size",
        "3",
        "--overlap",
        "0",
    ]);
    assert_eq!(env.full_rows_served(HPD_VIOLATIONS) - before, 20);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
}

#[test]
fn full_replace_by_the_publisher_leaves_no_stale_rows() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "dob_complaints"]);
    let old_ids = env.emu.state().datasets[DOB_COMPLAINTS].ids();
    env.emu.state().edit(DOB_COMPLAINTS, |e| {
        e.replace_all();
        let first = e.dataset().ids()[0].clone();
        e.delete(&first);
    });
    let out = env.run_ok(&["sync", "--datasets", "dob_complaints", "--page-size", "7"]);
    env.assert_equal_to_source("dob_complaints", DOB_COMPLAINTS);
    // Detected as a replace: reloaded and swapped in, not upserted row by row.
    assert!(stdout(&out).contains(" full "), "{}", stdout(&out));
    let n: i64 = env
        .warehouse()
        .query_row(
            &format!(
                "SELECT count(*) FROM dob_complaints WHERE socrata_id IN ('{}')",
                old_ids.join("','")
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0, "rows under the replaced ids must be gone");
}

#[test]
fn kill_mid_full_load_then_resume_equals_source() {
    let env = TestEnv::new();
    // The 4th page request stalls, so the process is surely mid-load when it is killed.
    env.kill_sync_mid_run("hpd_violations", HPD_VIOLATIONS, 5, 3);
    // Rows change while the sync is dead, including behind the load's cursor.
    let ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.set(&ids[0], "class", Some(json!("C")));
        e.delete(&ids[1]);
        e.set(&ids[45], "class", Some(json!("B")));
    });
    let served_before = env.full_rows_served(HPD_VIOLATIONS);
    env.run_ok(&[
        "sync",
        "--datasets",
        "hpd_violations",
        "--page-size",
        "5",
        "--overlap",
        "0",
    ]);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
    // It resumed: the 15 rows committed before the kill were not all fetched again.
    let total = env.emu.state().datasets[HPD_VIOLATIONS].rows.len();
    let refetched = env.full_rows_served(HPD_VIOLATIONS) - served_before;
    assert!(
        refetched < total,
        "refetched {refetched} of {total}: the load restarted instead of resuming"
    );
}

/// A full load of large pages commits in batches of a DuckDB row group (15 pages of 8,192 rows): killed
/// after its first batch committed and while the next was downloading, it resumes from that batch, and the
/// ledger never records a page of a batch that did not commit.
#[test]
fn kill_9_between_row_group_batches_resumes_from_the_last_batch() {
    let env = TestEnv::new();
    let id = "bigr-0001";
    let total = 2 * 122_880 + 5_000;
    let catalog = env.generated_catalog("big", id, total as u64);
    let args = ["sync", "--datasets", "big", "--page-size", "8192", "-q"];
    // The 21st request for rows stalls (a page of the second batch: the count and the newest row are asked
    // first), so the second batch cannot commit.
    env.emu
        .state()
        .faults
        .push(Fault::on(&format!("/resource/{id}.csv"), FaultKind::DelayMs(30_000)).skip(20));
    let mut child = env
        .cmd(&args)
        .env("DOBSOB_CATALOG", &catalog)
        .spawn()
        .unwrap();
    let committed = || -> i64 {
        let path = env.data_dir().join("ledger.sqlite");
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM pages", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while committed() < 15 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first batch never committed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    env.emu.state().faults.clear();
    // Exactly the first batch, a whole row group, is in the ledger and in the load table.
    assert_eq!(committed(), 15);
    let loaded: i64 = env
        .working()
        .query_row("SELECT count(*) FROM main._dobsob_load_big", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(loaded, 122_880);
    env.assert_ledger_not_ahead("big");

    let served_before = env.full_rows_served(id);
    let out = env
        .cmd(&args)
        .env("DOBSOB_CATALOG", &catalog)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_equal_to_source("big", id);
    let refetched = env.full_rows_served(id) - served_before;
    // Only what the first batch had not committed (and the incremental pass's tie at its watermark).
    assert!(
        (total - 122_880..total - 122_880 + 8_192).contains(&refetched),
        "refetched {refetched} of {total} rows"
    );
}

#[test]
fn kill_mid_incremental_then_rerun_equals_source() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "ecb_violations"]);
    let ids = env.emu.state().datasets[ECB_VIOLATIONS].ids();
    env.emu.state().edit(ECB_VIOLATIONS, |e| {
        for id in ids.iter().take(30) {
            e.set(id, "ecb_violation_status", Some(json!("RESOLVE")));
            e.set(id, "balance_due", Some(json!("12.5")));
        }
    });
    env.kill_sync_mid_run("ecb_violations", ECB_VIOLATIONS, 4, 2);
    env.run_ok(&["sync", "--datasets", "ecb_violations", "--page-size", "4"]);
    env.assert_equal_to_source("ecb_violations", ECB_VIOLATIONS);
}

#[test]
fn ctrl_c_stops_at_a_page_boundary_with_exit_130_and_resumes() {
    let env = TestEnv::new();
    env.emu.state().faults.push(
        Fault::on(
            &format!("/resource/{DOB_VIOLATIONS}.csv"),
            FaultKind::DelayMs(1_500),
        )
        .skip(2),
    );
    let child = env
        .cmd(&["sync", "--datasets", "dob_violations", "--page-size", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for_rows_served(DOB_VIOLATIONS, 10);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 130);
    let attempts: String = env
        .ledger()
        .query_row(
            "SELECT outcome FROM attempts ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(attempts, "interrupted");
    // Interrupted everywhere, not failed, not invisible: the summary, status, the report, the analysts' view.
    let text = stdout(&out);
    assert!(
        text.contains("1 dataset: 0 synced, 0 failed, 1 interrupted (dob_violations)"),
        "{text}"
    );
    let status = status_json(&env);
    let dob = status
        .iter()
        .find(|s| s["key"] == "dob_violations")
        .unwrap();
    assert_eq!(dob["last_outcome"], "interrupted", "{dob}");
    assert_eq!(
        dob["consecutive_failures"], 0,
        "an interruption is no failure: {dob}"
    );
    let table = stdout(&env.run_ok(&["status", "--datasets", "dob_violations"]));
    assert!(
        table.lines().nth(1).unwrap().contains("interrupted"),
        "{table}"
    );
    let check = env.run(&["status", "--check", "--datasets", "dob_violations"]);
    assert_exit(&check, 1);
    assert!(
        stdout(&check).contains("INTERRUPTED dob_violations"),
        "{}",
        stdout(&check)
    );
    let report = stdout(&env.run_ok(&["report", "--last"]));
    assert!(
        report.contains(": interrupted (0 synced, 0 failed, 1 interrupted)"),
        "{report}"
    );
    let view: String = env
        .warehouse()
        .query_row(
            "SELECT last_outcome FROM dobsob_datasets WHERE key = 'dob_violations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(view, "interrupted");
    // --retry-failed retries it, and only it.
    let out = env.run_ok(&["sync", "--retry-failed", "--page-size", "5"]);
    let text = stdout(&out);
    assert!(text.contains("1 dataset: 1 synced, 0 failed"), "{text}");
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
}

#[test]
fn rebuild_reloads_in_full_and_swaps_atomically() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let ids = env.emu.state().datasets[DOB_VIOLATIONS].ids();
    env.emu.state().edit(DOB_VIOLATIONS, |e| {
        e.set(&ids[0], "street", Some(json!("REBUILT ST")));
        e.delete(&ids[2]);
    });
    let before = env.full_rows_served(DOB_VIOLATIONS);
    let served_hpd = env.full_rows_served(HPD_VIOLATIONS);
    env.run_ok(&[
        "rebuild",
        "--datasets",
        "dob_violations",
        "--page-size",
        "10",
        "--overlap",
        "0",
    ]);
    env.assert_all_equal_to_source();
    let n = env.emu.state().datasets[DOB_VIOLATIONS].rows.len();
    assert_eq!(
        env.full_rows_served(DOB_VIOLATIONS) - before,
        n,
        "a rebuild fetches every row"
    );
    assert_eq!(
        env.full_rows_served(HPD_VIOLATIONS),
        served_hpd,
        "other datasets are untouched"
    );
    let mode: String = env
        .ledger()
        .query_row(
            "SELECT mode FROM attempts WHERE dataset_key = 'dob_violations' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mode, "full");
    // No load table is left behind.
    let left: i64 = env
        .warehouse()
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '_dobsob_load_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn status_json_tells_rows_watermark_and_staleness() {
    let env = TestEnv::new();
    std::fs::create_dir(env.data_dir()).unwrap();
    let before = status_json(&env);
    assert_eq!(before.len(), 5);
    for s in &before {
        assert_eq!(s["stale"], true);
        assert_eq!(s["rows"], Value::Null);
        assert_eq!(s["last_success_at"], Value::Null);
        assert_eq!(s["watermark"], Value::Null);
    }
    assert!(
        !env.data_dir().join("ledger.sqlite").exists(),
        "status must not create a ledger"
    );
    env.run_ok(&["sync", "--datasets", "dob_violations,every_type"]);
    let after = status_json(&env);
    let get = |k: &str| after.iter().find(|s| s["key"] == k).unwrap().clone();
    let dv = get("dob_violations");
    assert_eq!(dv["id"], DOB_VIOLATIONS);
    assert_eq!(
        dv["rows"],
        env.emu.state().datasets[DOB_VIOLATIONS].rows.len()
    );
    assert_eq!(dv["stale"], false);
    assert_eq!(dv["last_error"], Value::Null);
    let newest = env.emu.state().datasets[DOB_VIOLATIONS]
        .snapshot()
        .into_iter()
        .map(|r| r.updated_at)
        .max()
        .unwrap();
    assert_eq!(dv["watermark"]["updated_at"], newest.as_str());
    assert!(chrono::DateTime::parse_from_rfc3339(dv["last_success_at"].as_str().unwrap()).is_ok());
    assert_eq!(get("hpd_violations")["stale"], true);
    // Two days later a daily dataset is stale; a weekly one is still fresh.
    let two_days_ago = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    env.ledger()
        .execute("UPDATE datasets SET last_success_at = ?1", [&two_days_ago])
        .unwrap();
    let later = status_json(&env);
    let get = |k: &str| later.iter().find(|s| s["key"] == k).unwrap().clone();
    assert_eq!(
        (
            get("dob_violations")["stale"].clone(),
            get("dob_violations")["due"].clone()
        ),
        (json!(true), json!(true))
    );
    assert_eq!(
        (
            get("every_type")["stale"].clone(),
            get("every_type")["due"].clone()
        ),
        (json!(false), json!(false))
    );
    let table = stdout(&env.run_ok(&["status"]));
    assert!(
        table.contains("dob_violations") && table.contains("fresh") && table.contains("never"),
        "{table}"
    );
}

#[test]
fn bad_catalog_exits_2_naming_file_dataset_and_problem() {
    let env = TestEnv::new();
    let path = env.dir.path().join("bad.toml");
    let one = |key: &str, id: &str| {
        format!("[[dataset]]\nkey = \"{key}\"\nid = \"{id}\"\nname = \"x\"\ngroup = \"primary\"\nfrequency = \"daily\"\nsize_mb = 1\n")
    };
    for (body, needle) in [
        (
            format!("{}{}", one("a", "aaaa-bbbb"), one("a", "cccc-dddd")),
            "duplicate key",
        ),
        (
            format!("{}{}", one("a", "aaaa-bbbb"), one("b", "aaaa-bbbb")),
            "duplicate id",
        ),
        (one("Bad-Key", "aaaa-bbbb"), "must match"),
        (one("a", "aaaa-bbbb").replace("primary", "urgent"), "urgent"),
        (format!("{}colour = 1\n", one("a", "aaaa-bbbb")), "colour"),
    ] {
        std::fs::write(&path, body).unwrap();
        let out = env.run(&[
            "--catalog",
            path.to_str().unwrap(),
            "--switch-source",
            "sync",
        ]);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains("bad.toml") && err.contains(needle), "{err}");
        assert!(!env.data_dir().join("warehouse.duckdb").exists());
    }
    let out = env.run(&["sync", "--datasets", "nope"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("no dataset \"nope\""),
        "{}",
        stderr(&out)
    );
    assert_exit(&env.run(&["sync", "--page-size", "0"]), 2);
    assert_exit(&env.run(&["sync", "--primary", "--secondary"]), 2);
    // DuckDB's cap has a floor: at 64 MB it already refused a 46-column load.
    let out = env.run(&["sync", "--memory-limit", "10"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--memory-limit"), "{}", stderr(&out));
}

#[test]
fn unreachable_portal_fails_clearly_and_keeps_ledger_and_warehouse() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "dob_violations"]);
    let before = ledger_state(&env, "dob_violations");
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let out = env.run(&[
        "--portal",
        &format!("http://127.0.0.1:{port}"),
        "--switch-source",
        // A new portal is a reload of the whole catalog (dob_violations starts first: the smallest).
        "sync",
        "--max-retries",
        "1",
    ]);
    assert_exit(&out, 1);
    // A portal that filled nothing does not become the data directory's source.
    let source = std::fs::read_to_string(env.data_dir().join("source.json")).unwrap();
    assert!(source.contains(&env.emu.url()), "{source}");
    let err = stderr(&out) + &stdout(&out);
    assert!(
        err.contains("dob_violations")
            && err.contains(&format!("127.0.0.1:{port}/api/views/{DOB_VIOLATIONS}.json")),
        "{err}"
    );
    assert_eq!(
        ledger_state(&env, "dob_violations"),
        before,
        "watermark, count and last success unchanged"
    );
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
    let last_error: String = env
        .ledger()
        .query_row(
            "SELECT last_error FROM datasets WHERE key = 'dob_violations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(last_error.contains("failed"), "{last_error}");
}

#[test]
fn portal_errors_carry_the_portals_code_and_fail_fast() {
    let env = TestEnv::new();
    env.emu.state().faults.push(
        Fault::on(
            "/resource/",
            FaultKind::Status {
                status: 400,
                errorcode_shape: true,
                retry_after: None,
            },
        )
        .times(5),
    );
    let out = env.run(&["sync", "--datasets", "dob_violations"]);
    assert_exit(&out, 1);
    let all = stderr(&out) + &stdout(&out);
    assert!(
        all.contains("HTTP 400") && all.contains("injected_fault"),
        "{all}"
    );
    // 400 is not retried: exactly one resource request was answered with it.
    let n400 = env
        .emu
        .state()
        .log
        .iter()
        .filter(|s| s.status == 400)
        .count();
    assert_eq!(n400, 1);
    // A missing dataset answers 404 in the other error shape.
    let path = env.dir.path().join("missing.toml");
    std::fs::write(
        &path,
        "[[dataset]]\nkey = \"gone\"\nid = \"zzzz-zzzz\"\nname = \"x\"\ngroup = \"primary\"\nfrequency = \"daily\"\nsize_mb = 1\n",
    )
    .unwrap();
    let out = env.run(&[
        "--catalog",
        path.to_str().unwrap(),
        "--switch-source",
        "sync",
    ]);
    assert_exit(&out, 1);
    assert!(
        (stderr(&out) + &stdout(&out)).contains("dataset.missing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn transient_errors_throttling_and_cut_connections_are_retried() {
    let env = TestEnv::new();
    let csv = format!("/resource/{DOB_VIOLATIONS}.csv");
    {
        let mut st = env.emu.state();
        st.faults.push(
            Fault::on(
                &csv,
                FaultKind::Status {
                    status: 500,
                    errorcode_shape: false,
                    retry_after: None,
                },
            )
            .times(2),
        );
        st.faults.push(Fault::on(
            &csv,
            FaultKind::Status {
                status: 429,
                errorcode_shape: false,
                retry_after: Some(1),
            },
        ));
        st.faults
            .push(Fault::on(&csv, FaultKind::CutAfter(700)).times(2));
        st.faults.push(Fault::on(
            "/api/views/",
            FaultKind::Status {
                status: 503,
                errorcode_shape: true,
                retry_after: None,
            },
        ));
    }
    env.run_ok(&["sync", "--datasets", "dob_violations", "--page-size", "10"]);
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
    assert!(
        env.emu.state().faults.iter().all(|f| f.times == 0),
        "every fault was hit"
    );
}

#[test]
fn a_new_column_on_the_portal_reloads_the_table() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "dob_complaints"]);
    let ids = env.emu.state().datasets[DOB_COMPLAINTS].ids();
    env.emu.state().edit(DOB_COMPLAINTS, |e| {
        e.add_column("Weird \"Name\"; DROP TABLE x", "number");
        for id in ids.iter().take(5) {
            e.set(id, "Weird \"Name\"; DROP TABLE x", Some(json!("3.25")));
        }
    });
    env.run_ok(&["sync", "--datasets", "dob_complaints"]);
    env.assert_equal_to_source("dob_complaints", DOB_COMPLAINTS);
}

#[test]
fn app_token_is_sent_and_never_shown() {
    let env = TestEnv::new();
    let secret = "tok-SEKRIT-123";
    env.emu.state().required_token = Some(secret.into());
    let out = env.run(&["sync", "--datasets", "every_type"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    let out = env
        .cmd(&["sync", "--datasets", "every_type", "-vv"])
        .env("SOCRATA_APP_TOKEN", secret)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    env.assert_equal_to_source("every_type", EVERY_TYPE);
    assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
    for f in files_under(&env.data_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} contains the token",
            f.display()
        );
    }
    let help = env
        .cmd(&["--help"])
        .env("SOCRATA_APP_TOKEN", secret)
        .output()
        .unwrap();
    assert!(!stdout(&help).contains(secret));
}

#[test]
fn data_files_are_private() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "every_type"]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.data_dir()), 0o700);
    for f in files_under(&env.data_dir()) {
        assert_eq!(mode(&f) & 0o077, 0, "{} is readable by others", f.display());
    }
    assert!(env.data_dir().join("reports").read_dir().unwrap().count() >= 1);
}

#[test]
fn malformed_page_fails_naming_the_line_and_loses_nothing() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "dob_violations"]);
    let ids = env.emu.state().datasets[DOB_VIOLATIONS].ids();
    env.emu.state().edit(DOB_VIOLATIONS, |e| {
        for id in ids.iter().take(12) {
            e.set(id, "boro", Some(json!("9")));
        }
    });
    let before = ledger_state(&env, "dob_violations");
    let bad = "\":id\",\":created_at\",\":updated_at\",\"boro\"\n\"row-x\",\"2026-01-01T00:00:00.000Z\"\n";
    env.emu.state().faults.push(
        Fault::on(
            &format!("/resource/{DOB_VIOLATIONS}.csv"),
            FaultKind::Body(bad.into()),
        )
        .skip(1),
    );
    let out = env.run(&["sync", "--datasets", "dob_violations", "--page-size", "5"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("bad page 2 from") && err.contains("line 2"),
        "{err}"
    );
    // The first page (5 rows) was committed before the bad one; the watermark moved exactly that far.
    let after = ledger_state(&env, "dob_violations");
    assert_ne!(after.0, before.0);
    assert_eq!(after.3, before.3, "no new last success");
    env.run_ok(&["sync", "--datasets", "dob_violations", "--page-size", "5"]);
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
}

#[test]
fn a_working_database_held_by_another_process_is_a_clear_error() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "every_type"]);
    let holder = duckdb::Connection::open(env.working_path()).unwrap();
    let out = env.run(&["sync", "--datasets", "every_type"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("cannot open the warehouse"),
        "{}",
        stderr(&out)
    );
    drop(holder);
    env.run_ok(&["sync", "--datasets", "every_type"]);
    env.assert_equal_to_source("every_type", EVERY_TYPE);
}

#[test]
fn a_table_dropped_by_hand_is_reloaded_in_full() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "every_type"]);
    duckdb::Connection::open(env.working_path())
        .unwrap()
        .execute_batch("DROP TABLE every_type")
        .unwrap();
    let out = env.run_ok(&["sync", "--datasets", "every_type"]);
    assert!(stdout(&out).contains("full"), "{}", stdout(&out));
    env.assert_equal_to_source("every_type", EVERY_TYPE);
}

#[test]
fn a_ledger_behind_the_warehouse_is_repaired_from_it() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "dob_violations"]);
    let synced = ledger_state(&env, "dob_violations");
    // As if the process died after a DuckDB commit but before the ledger write.
    env.ledger()
        .execute(
            "UPDATE datasets SET wm_updated_at = '2000-01-01T00:00:00.000Z', wm_id = 'row-x', row_count = 1",
            [],
        )
        .unwrap();
    let out = env.run_ok(&["sync", "--datasets", "dob_violations", "-v"]);
    assert!(
        stderr(&out).contains("repaired from the warehouse"),
        "{}",
        stderr(&out)
    );
    let repaired = ledger_state(&env, "dob_violations");
    assert_eq!(
        (repaired.0, repaired.1, repaired.2),
        (synced.0, synced.1, synced.2)
    );
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
}

#[test]
fn run_report_counts_what_happened() {
    let env = TestEnv::new();
    env.run_ok(&[
        "sync",
        "--datasets",
        "every_type",
        "--page-size",
        "10",
        "--overlap",
        "0",
    ]);
    let reports: Vec<_> = env
        .data_dir()
        .join("reports")
        .read_dir()
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(reports.len(), 1);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(reports[0].path()).unwrap()).unwrap();
    assert_eq!(r["outcome"], "ok");
    let d = &jobs(&r)[0];
    let n = env.emu.state().datasets[EVERY_TYPE].rows.len();
    assert_eq!(d["mode"], "full");
    assert_eq!(d["rows"], n);
    assert_eq!(d["rows_fetched"], n);
    // Pages of 10, an empty page ending the load when the last one was full, and the empty incremental page.
    assert_eq!(
        d["pages"],
        n.div_ceil(10) + usize::from(n.is_multiple_of(10)) + 1
    );
    let kept: i64 = env
        .warehouse()
        .query_row(
            "SELECT count(*) FROM dobsob.uncastable WHERE table_name = 'every_type'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(kept > 0, "every_type has text in a number column");
    assert_eq!(d["uncastable"], kept);
    assert_eq!(d["source_rows"], n);
    let pages: i64 = env
        .ledger()
        .query_row(
            "SELECT count(*) FROM pages WHERE length(sha256) = 64 AND rows > 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pages as usize, n.div_ceil(10));
}

#[test]
fn rows_changed_behind_the_cursor_during_a_full_load_are_caught() {
    let env = TestEnv::new();
    env.emu.state().faults.push(
        Fault::on(
            &format!("/resource/{HPD_VIOLATIONS}.csv"),
            FaultKind::DelayMs(1_500),
        )
        .skip(2),
    );
    let child = env
        .cmd(&[
            "sync",
            "--datasets",
            "hpd_violations",
            "--page-size",
            "5",
            "-q",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for_rows_served(HPD_VIOLATIONS, 10);
    // The load has passed the first rows; change them, and rows ahead, while it runs.
    let ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.set(&ids[0], "currentstatus", Some(json!("CHANGED DURING LOAD")));
        e.delete(&ids[1]);
        e.set(&ids[40], "currentstatus", Some(json!("CHANGED AHEAD")));
        let mut row = serde_json::Map::new();
        row.insert("violationid".into(), json!("77777777"));
        e.insert(row);
    });
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
}

#[test]
fn points_and_locations_are_kept_as_text_and_queryable_as_coordinates() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "every_type"]);
    env.assert_equal_to_source("every_type", EVERY_TYPE);
    // The coordinates beside the text are the source's own numbers.
    // Per row: point longitude and latitude, location longitude and latitude.
    type Coords = (Option<f64>, Option<f64>, Option<f64>, Option<f64>);
    let want: Vec<(String, Coords)> = {
        let st = env.emu.state();
        let ds = &st.datasets[EVERY_TYPE];
        let (g, l) = (
            ds.column_index("the_geom").unwrap(),
            ds.column_index("location").unwrap(),
        );
        ds.rows
            .values()
            .map(|r| {
                let geom = r.cells[g].as_ref().map(|v| v["coordinates"].clone());
                let loc = r.cells[l].as_ref();
                let num =
                    |v: Option<&Value>| v.and_then(|v| v.as_str()).and_then(|s| s.parse().ok());
                (
                    socrata_emulator::ids::encode(r.seq),
                    (
                        geom.as_ref().and_then(|c| c[0].as_f64()),
                        geom.as_ref().and_then(|c| c[1].as_f64()),
                        num(loc.and_then(|l| l.get("longitude"))),
                        num(loc.and_then(|l| l.get("latitude"))),
                    ),
                )
            })
            .collect()
    };
    let conn = env.warehouse();
    let mut stmt = conn
        .prepare(
            "SELECT socrata_id, the_geom_longitude, the_geom_latitude, location_longitude, location_latitude
             FROM every_type ORDER BY socrata_id",
        )
        .unwrap();
    let got: std::collections::BTreeMap<String, Coords> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut some = 0;
    for (id, c) in want {
        assert_eq!(got[&id], c, "{id}");
        some += usize::from(c.0.is_some()) + usize::from(c.3.is_some());
    }
    assert!(some > 10, "the fixture has points and locations");
}

#[test]
fn one_run_at_a_time_and_a_killed_run_is_marked_abandoned() {
    let env = TestEnv::new();
    // A sync held up by a slow portal.
    env.emu.state().faults.push(
        Fault::on(
            &format!("/resource/{DOB_VIOLATIONS}.csv"),
            FaultKind::DelayMs(30_000),
        )
        .skip(1),
    );
    let mut first = env
        .cmd(&[
            "sync",
            "--datasets",
            "dob_violations",
            "--page-size",
            "5",
            "-q",
        ])
        .spawn()
        .unwrap();
    env.wait_for_rows_served(DOB_VIOLATIONS, 5);
    // A second sync or rebuild exits at once with its own code, naming the holder.
    let started = std::time::Instant::now();
    for cmd in ["sync", "rebuild"] {
        let out = env.run(&[cmd, "--datasets", "every_type"]);
        assert_exit(&out, 75);
        assert!(
            stderr(&out).contains(&format!("pid {}", first.id()))
                && stderr(&out).contains("started"),
            "{}",
            stderr(&out)
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // status works meanwhile.
    env.run_ok(&["status"]);
    first.kill().unwrap();
    first.wait().unwrap();
    env.emu.state().faults.clear();
    // The kernel released the lock with the process; the next run marks the dead one abandoned.
    env.run_ok(&["sync", "--datasets", "dob_violations"]);
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
    let outcomes: Vec<String> = env
        .ledger()
        .prepare("SELECT outcome FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes, ["abandoned", "ok"]);
    let running: i64 = env
        .ledger()
        .query_row(
            "SELECT count(*) FROM attempts WHERE outcome = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0);
}
