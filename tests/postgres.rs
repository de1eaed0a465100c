//! The PostgreSQL warehouse target against a real server these tests start themselves (see
//! `support/pg.rs`): the same whole-table comparison with the source as the DuckDB tests, through changes,
//! deletions, a new column, a rebuild, a capped `$limit`, a portal that ignores `$where` and a kill -9; an
//! analyst holding a long transaction through a rebuild; a read-only role; two workers sharing the work.

mod support;

use std::time::{Duration, Instant};

use dobsob_engine::warehouse::postgres::connect::{connect, server_version};
use dobsob_engine::warehouse::postgres::conninfo::ConnInfo;
use serde_json::json;
use socrata_emulator::{Fault, FaultKind};
use support::pg::{client, PgServer};
use support::*;

/// A fresh env pointed at a new database `db` of `server`, datasets in schema `nyc`; returns the URL.
fn pg_env(server: &PgServer, db: &str) -> (TestEnv, String) {
    let env = TestEnv::new();
    let url = format!("{}&schema=nyc", server.url(db));
    *env.warehouse_url.borrow_mut() = Some(url.clone());
    (env, url)
}

#[test]
fn dobsob_connects_over_the_unix_socket_and_a_wrong_password_error_never_shows_it() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.url("nyc");
    let info = ConnInfo::parse(&url, None, None).unwrap();
    let mut client = connect(&info).unwrap();
    assert!(server_version(&mut client).unwrap() >= 130_000);
    let tz: String = client.query_one("SHOW TimeZone", &[]).unwrap().get(0);
    assert_eq!(tz, "UTC");
    // A database that does not exist: the error names the server, never the password.
    let bad = url
        .replace("/nyc?", "/nope?")
        .replace("dobsob@", "dobsob:hunter2@");
    let info = ConnInfo::parse(&bad, None, None).unwrap();
    let e = connect(&info).err().expect("no such database").to_string();
    assert!(e.contains("nope") && !e.contains("hunter2"), "{e}");
    // Nor does the command line, for a URL it refuses or a server it cannot reach.
    let env = TestEnv::new();
    for (url, code) in [
        (
            "postgres://dobsob:hunter2@db.example.org/nyc?sslmode=disable",
            2,
        ),
        (bad.as_str(), 1),
    ] {
        let out = env.run(&["sync", "--datasets", "dob_violations", "--warehouse", url]);
        assert_exit(&out, code);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains("hunter2"), "{all}");
    }
}

#[test]
fn the_postgres_warehouse_equals_the_source_through_changes_deletions_a_new_column_and_a_rebuild() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let (env, url) = pg_env(&server, "sync");
    env.run_ok(&["sync", "--page-size", "7"]);
    env.assert_all_pg_equal_to_source(&url, "nyc");
    // The dry run plans from PostgreSQL's committed states: nothing to load in full.
    let plan = stdout(&env.run_ok(&["sync", "--dry-run"]));
    assert!(
        plan.contains("planned from the PostgreSQL warehouse") && !plan.contains("full load ("),
        "{plan}"
    );
    // `verify --deep` compares PostgreSQL's tables with the source, row by row; a row deleted behind
    // dobsob's back is named.
    let out = env.run_ok(&["verify", "--deep"]);
    assert!(
        stdout(&out).matches("in step").count() == FIXTURES.len(),
        "{}",
        stdout(&out)
    );
    let gone: String = client(&url)
        .query_one(
            "DELETE FROM nyc.ecb_violations WHERE socrata_id = (SELECT min(socrata_id) FROM nyc.ecb_violations) \
             RETURNING socrata_id",
            &[],
        )
        .unwrap()
        .get(0);
    let out = env.run(&["verify", "--deep", "--datasets", "ecb_violations"]);
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("1 rows missing from the warehouse") && stdout(&out).contains(&gone),
        "{}",
        stdout(&out)
    );
    // The source is unchanged, so only a forced sync looks: its count check finds the row and fetches it.
    env.run_ok(&["sync", "--force", "--datasets", "ecb_violations"]);
    env.assert_pg_equal_to_source(&url, "nyc", "ecb_violations", ECB_VIOLATIONS);
    // `sql` reads the DuckDB snapshot only: refused clearly, not answered from nothing.
    let out = env.run(&["sql", "SELECT 1"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("psql"), "{}", stderr(&out));
    // No DuckDB file: the data is in PostgreSQL; the ledger stays local.
    assert!(
        !files_under(&env.data_dir())
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "duckdb")),
        "{:?}",
        files_under(&env.data_dir())
    );

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
        e.insert(row);
    });
    let cids = env.emu.state().datasets[DOB_COMPLAINTS].ids();
    env.emu.state().edit(DOB_COMPLAINTS, |e| {
        e.add_column("Weird \"Name\"; DROP TABLE x", "number");
        for id in cids.iter().take(5) {
            e.set(id, "Weird \"Name\"; DROP TABLE x", Some(json!("3.25")));
        }
    });
    let out = env.run_ok(&["sync", "--page-size", "2", "--overlap", "0"]);
    env.assert_all_pg_equal_to_source(&url, "nyc");
    assert!(stdout(&out).contains("unchanged"), "{}", stdout(&out));

    let hids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.delete(&hids[2]);
        e.set(&hids[7], "class", Some(json!("C")));
    });
    env.run_ok(&["rebuild", "--datasets", "hpd_violations"]);
    env.assert_all_pg_equal_to_source(&url, "nyc");

    let mut c = client(&url);
    // What analysts see: the datasets' view, comments from the portal, the types chosen for PostgreSQL.
    let listed: i64 = c
        .query_one(
            "SELECT count(*) FROM nyc.dobsob_datasets WHERE rows IS NOT NULL AND last_success_at IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(listed, FIXTURES.len() as i64);
    let comment: String = c
        .query_one(
            "SELECT obj_description('nyc.dob_violations'::regclass, 'pg_class')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(comment.contains("Socrata dataset 3h2n-5cm9"), "{comment}");
    let types: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = 'nyc' AND table_name = 'every_type' ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for want in [
        ("socrata_updated_at", "timestamp with time zone"),
        ("latitude", "numeric"),
    ] {
        assert!(
            types.iter().any(|(n, t)| n == want.0 && t == want.1),
            "{want:?} in {types:?}"
        );
    }
    // Points and locations have their coordinates beside them, read from the text.
    let (lon, lat, missing): (f64, f64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT the_geom_longitude FROM nyc.every_type WHERE the_geom = 'POINT (-73.890519 40.528451)'),
                        (SELECT location_latitude FROM nyc.every_type WHERE location LIKE '%(40.528451, -73.890519)'),
                        (SELECT count(*) FROM nyc.every_type WHERE (the_geom IS NOT NULL AND the_geom_latitude IS NULL)
                            OR (location LIKE '%)' AND location_longitude IS NULL))",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((lon, lat, missing), (-73.890519, 40.528451, 0));
    // Every table has its primary key on the row id; no load table is left over.
    let keys: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'nyc' AND indexname LIKE '%\\_pkey'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(keys, FIXTURES.len() as i64);
    let loads: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'nyc' AND tablename LIKE '\\_dobsob%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(loads, 0);
}

#[test]
fn a_capped_limit_a_portal_ignoring_where_and_a_kill_9_leave_postgres_equal_to_the_source() {
    let Some(server) = PgServer::start() else {
        return;
    };
    // $limit capped silently at 7 rows: every row still arrives, once.
    let (env, url) = pg_env(&server, "capped");
    env.emu.state().quirks.limit_cap = Some(7);
    env.run_ok(&["sync", "--page-size", "10"]);
    env.assert_all_pg_equal_to_source(&url, "nyc");

    // A portal that drops $where: the load fails and nothing half-loaded is swapped in.
    let (env, url) = pg_env(&server, "nowhere");
    env.emu.state().quirks.ignore_where = Some((0, u32::MAX));
    let out = env.run(&["sync", "--datasets", "dob_violations", "--page-size", "10"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("ignored $where"), "{}", stderr(&out));
    let live: i64 = client(&url)
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'nyc' AND tablename = 'dob_violations'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(live, 0, "no half load was swapped in");
    env.emu.state().quirks.ignore_where = None;
    env.run_ok(&["sync", "--datasets", "dob_violations", "--page-size", "10"]);
    env.assert_pg_equal_to_source(&url, "nyc", "dob_violations", DOB_VIOLATIONS);

    // A publisher's full replace (every row re-stamped under new ids, one gone): reloaded and swapped in.
    let (env, url) = pg_env(&server, "replaced");
    env.run_ok(&["sync", "--datasets", "dob_complaints"]);
    env.emu.state().edit(DOB_COMPLAINTS, |e| {
        e.replace_all();
        let first = e.dataset().ids()[0].clone();
        e.delete(&first);
    });
    let out = env.run_ok(&["sync", "--datasets", "dob_complaints", "--page-size", "7"]);
    assert!(stdout(&out).contains(" full "), "{}", stdout(&out));
    env.assert_pg_equal_to_source(&url, "nyc", "dob_complaints", DOB_COMPLAINTS);

    // Late rows: inside the overlap, inside the late window (with a deletion so the counts agree), and
    // beyond it (found by the full id check).
    let (env, url) = pg_env(&server, "late");
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    let late = |id: &str| {
        let mut r = serde_json::Map::new();
        r.insert("violationid".into(), json!(id));
        r
    };
    env.emu
        .state()
        .edit(HPD_VIOLATIONS, |e| e.insert(late("90000001")));
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    let ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.insert_late(late("90000002"), 60_000);
        e.insert_late(late("90000003"), 2 * 3600 * 1000);
        e.delete(&ids[7]);
    });
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    env.assert_pg_equal_to_source(&url, "nyc", "hpd_violations", HPD_VIOLATIONS);
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.insert_late(late("90000004"), 3 * 86_400 * 1000);
    });
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    env.assert_pg_equal_to_source(&url, "nyc", "hpd_violations", HPD_VIOLATIONS);

    // kill -9 mid full load, rows changed meanwhile: the next sync resumes and equals the source.
    let (env, url) = pg_env(&server, "killed");
    env.kill_sync_mid_run("hpd_violations", HPD_VIOLATIONS, 5, 3);
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
    env.assert_pg_equal_to_source(&url, "nyc", "hpd_violations", HPD_VIOLATIONS);
    let total = env.emu.state().datasets[HPD_VIOLATIONS].rows.len();
    let refetched = env.full_rows_served(HPD_VIOLATIONS) - served_before;
    assert!(
        refetched < total,
        "refetched {refetched} of {total}: the load restarted instead of resuming"
    );
}

/// An analyst's transaction holds the live table through a rebuild: the swap gives up its place in the lock
/// queue every couple of seconds, so another analyst's queries never wait long behind it, and the rebuild
/// completes once the long transaction ends, saying in its report that it waited.
#[test]
fn an_analysts_long_transaction_never_queues_other_readers_behind_a_rebuild() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let (env, url) = pg_env(&server, "readers");
    env.run_ok(&["sync", "--datasets", "dob_violations"]);
    let mut long = client(&url);
    let mut tx = long.transaction().unwrap();
    let before: i64 = tx
        .query_one("SELECT count(*) FROM nyc.dob_violations", &[])
        .unwrap()
        .get(0);
    env.emu.state().edit(DOB_VIOLATIONS, |e| {
        let mut row = serde_json::Map::new();
        row.insert("isn_dob_bis_viol".into(), json!("8888888"));
        e.insert(row);
    });
    let mut rebuild = env.spawn(&["rebuild", "--datasets", "dob_violations", "-q"]);
    // Another analyst queries the table every 100 ms while the long transaction stays open for 8 s.
    // A query queued behind the swap for 6 s gives up (else, without the swap's lock timeout, this test
    // would wait forever: the long transaction ends only after the loop).
    let mut other = client(&url);
    other.batch_execute("SET statement_timeout = '6s'").unwrap();
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let answered = other.query_one("SELECT count(*) FROM nyc.dob_violations", &[]);
        slowest = slowest.max(t.elapsed());
        if let Err(e) = answered {
            panic!("a reader was held up behind the swap for {slowest:?}: {e}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        rebuild.try_wait().unwrap().is_none(),
        "the rebuild must still be waiting for the long transaction"
    );
    // The long transaction saw one snapshot throughout.
    let still: i64 = tx
        .query_one("SELECT count(*) FROM nyc.dob_violations", &[])
        .unwrap()
        .get(0);
    assert_eq!(still, before);
    tx.commit().unwrap();
    let status = rebuild.wait().unwrap();
    assert!(status.success(), "rebuild: {status:?}");
    assert!(
        slowest < Duration::from_secs(5),
        "a reader waited {slowest:?} behind the swap"
    );
    env.assert_pg_equal_to_source(&url, "nyc", "dob_violations", DOB_VIOLATIONS);
    let report = env.last_report();
    let warnings = jobs(&report)[0]["warnings"].to_string();
    assert!(warnings.contains("waited"), "{warnings}");
}

#[test]
fn a_read_only_role_reads_every_dataset_now_and_later_and_cannot_write() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let (env, url) = pg_env(&server, "roles");
    env.run_ok(&["sync", "--datasets", "dob_violations"]);
    client(&url)
        .batch_execute("CREATE ROLE analyst LOGIN")
        .unwrap();
    // --print shows the SQL and changes nothing.
    let printed = env.run_ok(&["postgres", "grant-read", "analyst", "--print"]);
    assert!(
        stdout(&printed).contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"nyc\" TO \"analyst\"")
            && stdout(&printed)
                .contains("ALTER DEFAULT PRIVILEGES FOR ROLE \"dobsob\" IN SCHEMA \"nyc\""),
        "{}",
        stdout(&printed)
    );
    env.run_ok(&["postgres", "grant-read", "analyst"]);
    // A table created after the grant is readable too (default privileges).
    env.run_ok(&["sync", "--datasets", "hpd_violations"]);
    let mut analyst = client(&url.replace("dobsob@", "analyst@"));
    for t in ["dob_violations", "hpd_violations", "dobsob_datasets"] {
        let n: i64 = analyst
            .query_one(&format!("SELECT count(*) FROM nyc.{t}"), &[])
            .unwrap_or_else(|e| panic!("{t}: {e}"))
            .get(0);
        assert!(n > 0, "{t}");
    }
    for write in [
        "DELETE FROM nyc.dob_violations",
        "INSERT INTO nyc.hpd_violations (socrata_id) VALUES ('x')",
        "UPDATE dobsob.sync_state SET cursor_id = 'x'",
        "CREATE TABLE nyc.mine (a int)",
    ] {
        let e = analyst.batch_execute(write).unwrap_err();
        assert_eq!(
            e.code(),
            Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{write}: {e}"
        );
    }
    env.assert_pg_equal_to_source(&url, "nyc", "dob_violations", DOB_VIOLATIONS);
}

/// Six datasets; the catalog of the fixtures plus a generated one.
fn six_dataset_catalog(env: &TestEnv) -> std::path::PathBuf {
    env.emu
        .state()
        .add_dataset(socrata_emulator::synthetic("gen6-rows", 600));
    let mut catalog = std::fs::read_to_string(repo().join("fixtures/catalog.toml")).unwrap();
    catalog.push_str(
        "\n[[dataset]]\nkey = \"generated\"\nid = \"gen6-rows\"\nname = \"generated\"\ngroup = \"primary\"\n\
         frequency = \"daily\"\nsize_mb = 10\n",
    );
    let path = env.dir.path().join("six.toml");
    std::fs::write(&path, catalog).unwrap();
    path
}

fn worker(
    env: &TestEnv,
    data_dir: &std::path::Path,
    catalog: &std::path::Path,
) -> std::process::Command {
    let mut c = env.cmd(&[
        "sync",
        "--schedule-check",
        "--page-size",
        "20",
        "--retry-base-ms",
        "10",
        "--throttle",
        "0",
        "--max-requests-per-second",
        "1000",
        "-q",
    ]);
    c.env("DOBSOB_DATA_DIR", data_dir)
        .env("DOBSOB_CATALOG", catalog);
    c
}

fn last_report_in(data_dir: &std::path::Path) -> serde_json::Value {
    files_under(&data_dir.join("reports"))
        .into_iter()
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).unwrap()).unwrap()
        })
        .max_by_key(|r| r["run_id"].as_i64())
        .expect("a report")
}

#[test]
fn two_workers_share_six_datasets_each_synced_once_and_a_killed_workers_dataset_is_completed() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let (env, url) = pg_env(&server, "workers");
    let catalog = six_dataset_catalog(&env);
    // A portal slow enough that the workers overlap.
    env.emu
        .state()
        .faults
        .push(Fault::on("/resource/", FaultKind::DelayMs(120)).times(u32::MAX));
    let (a, b) = (env.dir.path().join("a"), env.dir.path().join("b"));
    let mut wa = worker(&env, &a, &catalog).spawn().unwrap();
    let mut wb = worker(&env, &b, &catalog).spawn().unwrap();
    assert!(wa.wait().unwrap().success());
    assert!(wb.wait().unwrap().success());
    env.emu.state().faults.clear();
    let (ra, rb) = (last_report_in(&a), last_report_in(&b));
    let keys: Vec<String> = job_order(&ra);
    assert_eq!(keys.len(), 6);
    let mut held = 0;
    for k in &keys {
        let find = |r: &serde_json::Value| {
            jobs(r)
                .into_iter()
                .find(|j| j["key"] == k.as_str())
                .unwrap()
        };
        let (ja, jb) = (find(&ra), find(&rb));
        let synced = [&ja, &jb]
            .iter()
            .filter(|j| j["bucket"] == "completed_jobs" && j["outcome"] != "skipped")
            .count();
        assert_eq!(synced, 1, "{k} synced by exactly one worker: {ja} {jb}");
        let skipped = if ja["outcome"] == "skipped" { &ja } else { &jb };
        let why = skipped["reason"].as_str().unwrap_or_default();
        assert!(
            why.starts_with("being synced by ") || why.contains("synced by another worker"),
            "{k}: {why}"
        );
        held += usize::from(why.starts_with("being synced by "));
    }
    assert!(held > 0, "the workers never overlapped: {ra} {rb}");
    env.assert_all_pg_equal_to_source(&url, "nyc");
    env.assert_pg_equal_to_source(&url, "nyc", "generated", "gen6-rows");
    // `status` names the PostgreSQL warehouse (never a DuckDB file, never the password).
    let out = env
        .cmd(&["status"])
        .env("DOBSOB_DATA_DIR", &a)
        .env("DOBSOB_CATALOG", &catalog)
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("warehouse: PostgreSQL postgres://dobsob@/workers?")
            && !stdout(&out).contains(".duckdb"),
        "{}",
        stdout(&out)
    );
    // `status --warehouse` on either worker shows every dataset synced, whichever worker synced it.
    for dir in [&a, &b] {
        let out = env
            .cmd(&["status", "--json"])
            .env("DOBSOB_DATA_DIR", dir)
            .env("DOBSOB_CATALOG", &catalog)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let statuses: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(statuses.len(), 6);
        for s in &statuses {
            assert!(
                s["last_success_at"].is_string() && s["rows"].is_i64(),
                "{}: {s}",
                dir.display()
            );
        }
    }

    // A worker killed mid-dataset: its claim ends with its connection, and the other worker completes it.
    let id = HPD_VIOLATIONS;
    env.emu.state().edit(id, |e| {
        for _ in 0..40 {
            e.insert(serde_json::Map::new());
        }
    });
    let base = env.full_rows_served(id);
    env.emu
        .state()
        .faults
        .push(Fault::on(&format!("/resource/{id}.csv"), FaultKind::DelayMs(30_000)).skip(2));
    let mut killed = env
        .cmd(&[
            "rebuild",
            "--datasets",
            "hpd_violations",
            "--page-size",
            "5",
            "-q",
        ])
        .env("DOBSOB_DATA_DIR", &a)
        .env("DOBSOB_CATALOG", &catalog)
        .spawn()
        .unwrap();
    env.wait_for_rows_served(id, base + 10);
    std::thread::sleep(Duration::from_millis(300));
    killed.kill().unwrap();
    killed.wait().unwrap();
    env.emu.state().faults.clear();
    let out = env
        .cmd(&[
            "sync",
            "--datasets",
            "hpd_violations",
            "--retry-base-ms",
            "10",
        ])
        .env("DOBSOB_DATA_DIR", &b)
        .env("DOBSOB_CATALOG", &catalog)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    env.assert_pg_equal_to_source(&url, "nyc", "hpd_violations", id);
}

/// The casts accept the portal's grammar and nothing else, never raise, and give NULL (kept as uncastable
/// by the load) for what does not fit: checked on the server itself, value by value.
#[test]
fn the_postgres_casts_take_exactly_the_portals_values_and_never_raise() {
    use dobsob_engine::warehouse::postgres::cast::cast_sql;
    use dobsob_engine::warehouse::ColumnKind;
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.url("casts");
    // Opening creates dobsob's cast functions.
    let info = ConnInfo::parse(&url, None, None).unwrap();
    dobsob_engine::warehouse::postgres::PgWarehouse::open(&info).unwrap();
    // One schema of datasets per database: dobsob's state is keyed by dataset alone.
    let other = ConnInfo::parse(&format!("{url}&schema=chi"), None, None).unwrap();
    let e = dobsob_engine::warehouse::postgres::PgWarehouse::open(&other)
        .err()
        .expect("a second schema is refused")
        .to_string();
    assert!(e.contains("\"public\", not \"chi\""), "{e}");
    let mut c = client(&url);
    let cases: &[(ColumnKind, &str, Option<&str>)] = &[
        (ColumnKind::Number, "1.50", Some("1.50")),
        (ColumnKind::Number, "-073.8600", Some("-73.8600")),
        (ColumnKind::Number, "+7", Some("7")),
        (ColumnKind::Number, ".5", Some("0.5")),
        (ColumnKind::Number, "1.5E-3", Some("0.0015")),
        (
            ColumnKind::Number,
            "12345678901234567890123456789012345678901234567890",
            Some("12345678901234567890123456789012345678901234567890"),
        ),
        (ColumnKind::Number, "12abc", None),
        (ColumnKind::Number, "1_000", None),
        (ColumnKind::Number, " 1", None),
        (ColumnKind::Number, "NaN", None),
        (ColumnKind::Number, "Infinity", None),
        (ColumnKind::Number, "0x1F", None),
        (ColumnKind::Number, "1e999999", None),
        (ColumnKind::Number, "", None),
        (ColumnKind::Double, "1.25", Some("1.25")),
        (ColumnKind::Double, "abc", None),
        (
            ColumnKind::Timestamp,
            "2024-02-29T13:05:00.000",
            Some("2024-02-29 13:05:00"),
        ),
        (
            ColumnKind::Timestamp,
            "2105-01-01T00:00:00.000",
            Some("2105-01-01 00:00:00"),
        ),
        (ColumnKind::Timestamp, "2023-02-29T00:00:00.000", None),
        (
            ColumnKind::Timestamp,
            "2024-01-31T00:00:00.000",
            Some("2024-01-31 00:00:00"),
        ),
        (
            ColumnKind::Timestamp,
            "2024-04-30T23:59:59.999",
            Some("2024-04-30 23:59:59.999"),
        ),
        (ColumnKind::Timestamp, "2024-04-31T00:00:00.000", None),
        (ColumnKind::Timestamp, "2024-02-30T00:00:00.000", None),
        (
            ColumnKind::Timestamp,
            "2024-01-01T24:00:00.000",
            Some("2024-01-02 00:00:00"),
        ),
        (ColumnKind::Timestamp, "2024-13-01T00:00:00.000", None),
        (ColumnKind::Timestamp, "0000-01-01T00:00:00.000", None),
        (ColumnKind::Timestamp, "now", None),
        (ColumnKind::Timestamp, "01/02/2024", None),
        (
            ColumnKind::Instant,
            "2014-10-13T00:00:00.000Z",
            Some("2014-10-13 00:00:00+00"),
        ),
        (
            ColumnKind::Instant,
            "2014-10-13T05:00:00.000",
            Some("2014-10-13 05:00:00+00"),
        ),
        (ColumnKind::Instant, "2014-10-13T00:00:00+05:00", None),
        (ColumnKind::Boolean, "true", Some("true")),
        (ColumnKind::Boolean, "TRUE", None),
        (ColumnKind::Boolean, "yes", None),
        (ColumnKind::Text, "  as sent ", Some("  as sent ")),
    ];
    for (kind, value, want) in cases {
        let sql = format!(
            "SELECT ({})::text FROM (SELECT $1::text AS v) t",
            cast_sql(*kind, "v")
        );
        let got: Option<String> = c
            .query_one(&sql, &[value])
            .unwrap_or_else(|e| panic!("{kind:?} {value:?} raised: {e}"))
            .get(0);
        assert_eq!(got.as_deref(), *want, "{kind:?} {value:?}");
    }
}

/// A server reached over TCP is verified: TLS with its certificate checked against the trusted roots and
/// its name against the host (sslmode=verify-full); a certificate from another CA, or for another name, is
/// refused before anything is sent. A sync over TLS equals the source.
#[test]
fn tls_verifies_the_servers_certificate_and_name() {
    let Some(server) = PgServer::start_tls() else {
        return;
    };
    server.url("tls");
    let url = |host: &str, ca: &std::path::Path| {
        format!(
            "postgres://dobsob@{host}:{}/tls?sslmode=verify-full&sslrootcert={}",
            server.port,
            ca.display()
        )
    };
    let good = url("localhost", &server.ca_pem());
    let mut c = client(&good);
    let ssl: bool = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl, "the session is encrypted");
    for (bad, why) in [
        (url("localhost", &server.other_ca_pem()), "another CA"),
        (url("127.0.0.1", &server.ca_pem()), "another name"),
    ] {
        let info = ConnInfo::parse(&bad, None, None).unwrap();
        let e = connect(&info).err().expect(why).to_string();
        assert!(e.to_lowercase().contains("certificate"), "{why}: {e}");
    }
    let env = TestEnv::new();
    *env.warehouse_url.borrow_mut() = Some(good.clone());
    env.run_ok(&["sync", "--datasets", "every_type"]);
    env.assert_pg_equal_to_source(&good, "public", "every_type", EVERY_TYPE);
}

/// A page the page check wrongly called certain to cast still loads whole: PostgreSQL's own cast raises,
/// the savepoint rolls back, and the page goes the careful way, the bad cell kept as uncastable and every
/// other value typed; the load's cursor advances with it.
#[test]
fn a_page_wrongly_called_castable_loads_the_careful_way_and_loses_nothing() {
    use dobsob_engine::soda::ViewColumn;
    use dobsob_engine::warehouse::postgres::PgWarehouse;
    use dobsob_engine::warehouse::{PageFile, TableSchema, Target};
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.url("careful");
    let info = ConnInfo::parse(&url, None, None).unwrap();
    let mut wh = PgWarehouse::open(&info).unwrap();
    let schema =
        TableSchema::from_view(&[ViewColumn::new("n", "number"), ViewColumn::new("t", "text")])
            .unwrap();
    wh.begin_full("k", &schema, "fp", None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let header: Vec<String> = [":id", ":created_at", ":updated_at", "n", "t"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ts = "\"2024-01-01T00:00:00.000Z\"";
    let write = |name: &str, rows: &[(&str, &str)]| {
        let path = dir.path().join(name);
        let mut body = "\":id\",\":created_at\",\":updated_at\",\"n\",\"t\"\n".to_string();
        for (id, n) in rows {
            body.push_str(&format!("\"{id}\",{ts},{ts},\"{n}\",\"x, \"\"y\"\"\"\n"));
        }
        std::fs::write(&path, body).unwrap();
        path
    };
    let a = write("a.csv", &[("r1", "1.5"), ("r2", "-073.8600")]);
    let b = write("b.csv", &[("r3", "12abc"), ("r4", "7")]);
    let page = |path| PageFile {
        path,
        header: &header,
        number_shapes: &[],
        exponent_numbers: &[],
        castable: true,
    };
    Target::load_pages(
        &mut wh,
        "k",
        &schema,
        &[page(&a), page(&b)],
        &["r2".into(), "r4".into()],
    )
    .unwrap();
    let mut c = client(&url);
    let rows: Vec<(String, Option<String>, String)> = c
        .query(
            "SELECT socrata_id, n::text, t FROM public._dobsob_load_k ORDER BY socrata_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let t = "x, \"y\"".to_string();
    let n = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        [
            ("r1".into(), n("1.5"), t.clone()),
            ("r2".into(), n("-73.8600"), t.clone()),
            ("r3".into(), None, t.clone()),
            ("r4".into(), n("7"), t.clone()),
        ]
    );
    let kept: Vec<(String, String)> = c
        .query(
            "SELECT socrata_id, raw_value FROM dobsob.uncastable WHERE table_name = '_dobsob_load_k'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(kept, [("r3".to_string(), "12abc".to_string())]);
    let cursor: String = c
        .query_one(
            "SELECT cursor_id FROM dobsob.sync_state WHERE dataset = 'k'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cursor, "r4");
}

/// The data-quality profile and the dashboard work on a PostgreSQL warehouse as on DuckDB: the profile's SQL
/// runs on the server, the dataset page reads the uncastable values and stored types from PostgreSQL, and no
/// page shows the database password.
#[test]
fn the_profile_and_the_dashboard_work_on_a_postgres_warehouse() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let (env, url) = pg_env(&server, "dash");
    // A password in the URL (the test server trusts its socket and ignores it): no page may show it.
    let url = url.replacen("postgres://dobsob@", "postgres://dobsob:s3cret-pw@", 1);
    *env.warehouse_url.borrow_mut() = Some(url.clone());
    env.run_ok(&["sync"]);
    // A profile per dataset, computed by PostgreSQL, with what DuckDB finds in the same fixtures.
    let profiles: i64 = env
        .ledger()
        .query_row("SELECT count(*) FROM profiles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(profiles, FIXTURES.len() as i64);
    let profile: serde_json::Value = serde_json::from_str(
        &env.ledger()
            .query_row(
                "SELECT profile FROM profiles WHERE dataset_key = 'hpd_violations'",
                [],
                |r| r.get::<_, String>(0),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(profile["rows"], 50);
    assert_eq!(profile["distinct_ids"], 50);
    let inspection = profile["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "inspectiondate")
        .unwrap();
    assert!(
        inspection["max"]
            .as_str()
            .unwrap()
            .starts_with("2105-10-24"),
        "{inspection}"
    );
    let report = env.last_report();
    let hpd = jobs(&report)
        .into_iter()
        .find(|j| j["key"] == "hpd_violations")
        .unwrap();
    assert_eq!(hpd["quality"][0]["kind"], "future_dates");

    // The dashboard with DOBSOB_WAREHOUSE set (as env.cmd does): PostgreSQL's facts, never its password.
    let srv = support::http::serve(&env, &[]);
    let home = support::http::get(&srv.addr, "/");
    assert_eq!(home.status, 200);
    assert!(
        home.body.contains("PostgreSQL"),
        "the header names the warehouse"
    );
    for (key, _) in FIXTURES {
        assert!(
            home.body
                .contains(&format!("data-dataset=\"{key}\" data-state=\"fresh\"")),
            "{key}"
        );
    }
    let page = support::http::get(&srv.addr, "/datasets/every_type");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("id=\"uncastable\""),
        "uncastable values read from PostgreSQL"
    );
    assert!(
        page.body.contains("numeric"),
        "the stored types are PostgreSQL's"
    );
    assert!(page
        .body
        .contains("FROM &quot;nyc&quot;.&quot;every_type&quot;"));
    let metrics = support::http::get(&srv.addr, "/metrics");
    assert!(metrics
        .body
        .contains("dobsob_dataset_rows{dataset=\"every_type\"} 25"));
    for b in [&home.body, &page.body, &metrics.body] {
        assert!(
            !b.contains("s3cret-pw"),
            "the password never appears on a page"
        );
    }
}
