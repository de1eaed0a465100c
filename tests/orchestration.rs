//! Integration tests for which datasets a run takes and how: `--schedule-check` with its grace, the change
//! gate's skips, `--force`, `--incremental-only`, `--no-incremental`, `--retry-failed`, `--dry-run`,
//! priorities and conflicting flags. The real binary against the emulator, as everywhere.

mod support;

use serde_json::{json, Value};
use socrata_emulator::{Fault, FaultKind};
use support::*;

fn set_last_success(env: &TestEnv, key: &str, ago: chrono::Duration) {
    let t = (chrono::Utc::now() - ago).to_rfc3339();
    env.ledger()
        .execute(
            "UPDATE datasets SET last_success_at = ?1 WHERE key = ?2",
            [t.as_str(), key],
        )
        .unwrap();
}

fn report_of(r: &Value, key: &str) -> Value {
    jobs(r)
        .into_iter()
        .find(|d| d["key"] == key)
        .unwrap_or_else(|| panic!("{key} not in the report: {r}"))
}

#[test]
fn schedule_check_syncs_what_is_due_and_skips_the_rest_with_reasons() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    // dob_violations was last synced 2 days ago (daily: due); ecb_violations 23.5 hours ago (due within the
    // one-hour grace); the rest just now (not due).
    set_last_success(&env, "dob_violations", chrono::Duration::days(2));
    set_last_success(
        &env,
        "ecb_violations",
        chrono::Duration::minutes(23 * 60 + 30),
    );
    let ids = env.emu.state().datasets[DOB_VIOLATIONS].ids();
    env.emu
        .state()
        .edit(DOB_VIOLATIONS, |e| e.set(&ids[0], "boro", Some(json!("5"))));
    let before: Vec<usize> = FIXTURES
        .iter()
        .map(|(_, id)| env.requests_for(id))
        .collect();
    let out = env.run_ok(&["sync", "--schedule-check"]);
    let r = env.last_report();
    assert_eq!(report_of(&r, "dob_violations")["outcome"], "ok");
    assert_eq!(report_of(&r, "dob_violations")["mode"], "incremental");
    // Due but unchanged at the source: skipped by the gate at one request, with the reason.
    let ecb = report_of(&r, "ecb_violations");
    assert_eq!(ecb["mode"], "unchanged");
    assert!(
        ecb["reason"]
            .as_str()
            .unwrap()
            .starts_with("source unchanged since"),
        "{ecb}"
    );
    for key in ["hpd_violations", "dob_complaints", "every_type"] {
        let d = report_of(&r, key);
        assert_eq!(d["outcome"], "skipped", "{key}");
        assert!(
            d["reason"].as_str().unwrap().starts_with("not due until"),
            "{d}"
        );
    }
    let after: Vec<usize> = FIXTURES
        .iter()
        .map(|(_, id)| env.requests_for(id))
        .collect();
    let made: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // Order of FIXTURES: dob_violations, ecb, hpd, complaints, every_type.
    assert_eq!(made[1], 1, "an unchanged due dataset costs one request");
    assert_eq!(&made[2..], [0, 0, 0], "datasets not due cost nothing");
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
    assert!(stdout(&out).contains("not due until"), "{}", stdout(&out));
    // The skips are in the ledger with their reasons.
    let skipped: i64 = env
        .ledger()
        .query_row(
            "SELECT count(*) FROM attempts WHERE outcome = 'skipped' AND reason LIKE 'not due until%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(skipped, 3);
    // Without the grace, 23.5 hours is not a day.
    set_last_success(
        &env,
        "ecb_violations",
        chrono::Duration::minutes(23 * 60 + 30),
    );
    env.run_ok(&[
        "sync",
        "--schedule-check",
        "--grace",
        "0",
        "--datasets",
        "ecb_violations",
    ]);
    assert_eq!(
        report_of(&env.last_report(), "ecb_violations")["outcome"],
        "skipped"
    );
}

#[test]
fn force_ignores_the_gate_and_no_incremental_reloads() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "every_type"]);
    env.run_ok(&["sync", "--datasets", "every_type"]);
    assert_eq!(
        report_of(&env.last_report(), "every_type")["mode"],
        "unchanged"
    );
    env.run_ok(&["sync", "--datasets", "every_type", "--force"]);
    assert_eq!(
        report_of(&env.last_report(), "every_type")["mode"],
        "incremental"
    );
    let before = env.full_rows_served(EVERY_TYPE);
    env.run_ok(&[
        "sync",
        "--datasets",
        "every_type",
        "--no-incremental",
        "--overlap",
        "0",
    ]);
    assert_eq!(report_of(&env.last_report(), "every_type")["mode"], "full");
    assert_eq!(env.full_rows_served(EVERY_TYPE) - before, 25);
    env.assert_equal_to_source("every_type", EVERY_TYPE);
}

#[test]
fn incremental_only_never_starts_a_full_load() {
    let env = TestEnv::new();
    let out = env.run_ok(&["sync", "--datasets", "every_type", "--incremental-only"]);
    let d = report_of(&env.last_report(), "every_type").clone();
    assert_eq!(d["outcome"], "skipped");
    assert!(
        d["reason"].as_str().unwrap().contains("never loaded"),
        "{d}"
    );
    assert_eq!(env.full_rows_served(EVERY_TYPE), 0, "{}", stdout(&out));
    env.run_ok(&["sync", "--datasets", "every_type"]);
    let ids = env.emu.state().datasets[EVERY_TYPE].ids();
    env.emu
        .state()
        .edit(EVERY_TYPE, |e| e.set(&ids[0], "name", Some(json!("X"))));
    env.run_ok(&["sync", "--datasets", "every_type", "--incremental-only"]);
    assert_eq!(
        report_of(&env.last_report(), "every_type")["mode"],
        "incremental"
    );
    env.assert_equal_to_source("every_type", EVERY_TYPE);
}

#[test]
fn retry_failed_runs_exactly_the_datasets_whose_last_attempt_failed() {
    let env = TestEnv::new();
    env.emu.state().faults.push(
        Fault::on(
            &format!("/api/views/{ECB_VIOLATIONS}"),
            FaultKind::Status {
                status: 404,
                errorcode_shape: false,
                retry_after: None,
            },
        )
        .times(1),
    );
    let out = env.run(&["sync"]);
    assert_exit(&out, 1);
    let before: Vec<usize> = FIXTURES
        .iter()
        .map(|(_, id)| env.requests_for(id))
        .collect();
    env.run_ok(&["sync", "--retry-failed"]);
    let r = env.last_report();
    let js = jobs(&r);
    let keys: Vec<&str> = js.iter().map(|d| d["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["ecb_violations"]);
    let after: Vec<usize> = FIXTURES
        .iter()
        .map(|(_, id)| env.requests_for(id))
        .collect();
    for (i, (key, _)) in FIXTURES.iter().enumerate() {
        if *key != "ecb_violations" {
            assert_eq!(after[i], before[i], "{key} was not touched");
        }
    }
    env.assert_all_equal_to_source();
    // Nothing failed any more: nothing to retry.
    let out = env.run_ok(&["sync", "--retry-failed"]);
    assert!(
        stdout(&out).contains("no selected dataset failed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let env = TestEnv::new();
    // Before anything exists: every dataset would be loaded in full; no data directory appears and no row
    // is fetched.
    let out = env.run_ok(&["sync", "--dry-run"]);
    let o = stdout(&out);
    assert!(o.contains("CRITICAL") && o.contains("MEDIUM"), "{o}");
    assert_eq!(o.matches("full load (never loaded)").count(), 5, "{o}");
    assert!(o.contains("--max-delete-rows 10000"), "{o}");
    assert!(
        o.contains("--max-concurrent 4, --max-large 2 (over --large-mb 100)"),
        "{o}"
    );
    assert!(o.contains("300 MB (catalog, large)"), "{o}");
    assert!(
        !env.data_dir().exists(),
        "a dry run created the data directory"
    );
    assert_eq!(env.full_rows_served(DOB_VIOLATIONS), 0);
    // After a sync: an unchanged source would be skipped, a changed one synced incrementally, a dataset not
    // due skipped under --schedule-check; and not a byte of the data directory changes.
    env.run_ok(&["sync"]);
    let ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        e.set(&ids[0], "class", Some(json!("A")))
    });
    let snapshot: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&env.data_dir())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let served = env.emu.state().log.len();
    let out = env.run_ok(&["sync", "--dry-run"]);
    let o = stdout(&out);
    assert!(o.contains("skip: source unchanged since"), "{o}");
    assert!(o.contains("incremental from"), "{o}");
    // Once loaded, the size is what the full load downloaded (fixtures: well under a MB).
    assert!(o.contains("0 MB (last full load)"), "{o}");
    let out = env.run_ok(&["sync", "--dry-run", "--schedule-check"]);
    assert!(
        stdout(&out).contains("skip: not due until"),
        "{}",
        stdout(&out)
    );
    let log = env.emu.state().log[served..].to_vec();
    // Metadata, and for the changed source the full-replace check's two counts, as the sync would: no rows.
    assert!(
        log.iter()
            .all(|s| s.path.starts_with("/api/views/") || s.select.as_deref() == Some("count(*)")),
        "a dry run asks for metadata and counts only: {log:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|s| s.select.as_deref() == Some("count(*)"))
            .count(),
        2,
        "the changed dataset's replace check: {log:?}"
    );
    let now: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&env.data_dir())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    assert_eq!(now.len(), snapshot.len());
    for ((p, a), (_, b)) in snapshot.iter().zip(&now) {
        assert!(a == b, "{} changed in a dry run", p.display());
    }
}

#[test]
fn jobs_start_in_priority_order_and_status_shows_it() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let order: Vec<String> = env
        .ledger()
        .prepare("SELECT dataset_key FROM attempts ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // Critical first, smallest first; then the weekly (MEDIUM) one.
    assert_eq!(
        order,
        [
            "dob_violations",
            "ecb_violations",
            "dob_complaints",
            "hpd_violations",
            "every_type"
        ]
    );
    let r = env.last_report();
    assert_eq!(report_of(&r, "every_type")["priority"], "MEDIUM");
    assert_eq!(report_of(&r, "hpd_violations")["priority"], "CRITICAL");
    let st: Vec<Value> = serde_json::from_str(&stdout(&env.run_ok(&["status", "--json"]))).unwrap();
    let et = st.iter().find(|s| s["key"] == "every_type").unwrap();
    assert_eq!(et["priority"], "MEDIUM");
    assert!(et["next_due_at"].as_str().is_some(), "{et}");
}

#[test]
fn conflicting_flags_are_usage_errors() {
    let env = TestEnv::new();
    for args in [
        &["sync", "--force", "--schedule-check"][..],
        &["sync", "--incremental-only", "--no-incremental"],
        &["sync", "--retry-failed", "--schedule-check"],
    ] {
        let out = env.run(args);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("cannot be used with"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn cron_and_systemd_lines_run_the_nightly_job_with_absolute_paths() {
    let env = TestEnv::new();
    let out = env.run_ok(&["cron"]);
    let c = stdout(&out);
    let exe = env!("CARGO_BIN_EXE_dobsob");
    let data = env.data_dir();
    assert!(
        c.contains(&format!(
            "30 2 * * * {exe} --data-dir {} --catalog ",
            data.display()
        )) && c.contains("sync --schedule-check -q >> ")
            && c.contains("sync --force --primary -q"),
        "{c}"
    );
    // Nothing but the log directory the lines append to (sh fails a redirection into a missing one).
    assert_eq!(
        files_under(&data),
        Vec::<std::path::PathBuf>::new(),
        "no file written"
    );
    assert!(
        data.join("logs").is_dir(),
        "the cron log's directory exists"
    );
    // The original guide's flag prints the same.
    assert_eq!(stdout(&env.run_ok(&["sync", "--generate-cron"])), c);
    let s = stdout(&env.run_ok(&["cron", "--systemd", "--at", "03:15"]));
    assert!(
        s.contains("OnCalendar=*-*-* 03:15:00")
            && s.contains("Persistent=true")
            && s.contains("RandomizedDelaySec=")
            && s.contains(&format!("ExecStart={exe} --data-dir {}", data.display())),
        "{s}"
    );
    assert_exit(&env.run(&["cron", "--at", "25:00"]), 2);
}

#[test]
fn status_check_exits_1_naming_stale_and_failing_datasets() {
    let env = TestEnv::new();
    let out = env.run(&["status", "--check"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("no data directory"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir(env.data_dir()).unwrap();
    let out = env.run(&["status", "--check"]);
    assert_exit(&out, 1);
    assert_eq!(
        stdout(&out).matches("never synced").count(),
        5,
        "{}",
        stdout(&out)
    );
    env.run_ok(&["sync"]);
    let out = env.run_ok(&["status", "--check"]);
    assert!(
        stdout(&out).starts_with("OK: 5 datasets fresh"),
        "{}",
        stdout(&out)
    );
    set_last_success(&env, "dob_violations", chrono::Duration::days(3));
    env.emu.state().faults.push(Fault::on(
        &format!("/api/views/{EVERY_TYPE}"),
        FaultKind::Status {
            status: 400,
            errorcode_shape: true,
            retry_after: None,
        },
    ));
    assert_exit(&env.run(&["sync", "--datasets", "every_type"]), 1);
    let out = env.run(&["status", "--check"]);
    assert_exit(&out, 1);
    let o = stdout(&out);
    assert!(o.contains("STALE dob_violations: last success"), "{o}");
    assert!(o.contains("FAILING every_type: "), "{o}");
    assert_eq!(o.lines().count(), 2, "{o}");
    // A selection narrows the check.
    env.run_ok(&["status", "--check", "--datasets", "hpd_violations"]);
}

#[test]
fn an_unreachable_portal_fails_the_run_fast_saying_so_once() {
    let env = TestEnv::new();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let started = std::time::Instant::now();
    // Default retries and backoff: a refused connection is tried twice, not six times per dataset.
    let out = env
        .cmd(&["--portal", &format!("http://127.0.0.1:{port}"), "sync"])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let err = stderr(&out);
    assert_eq!(err.matches("cannot reach the portal").count(), 1, "{err}");
    assert!(err.contains("--portal"), "{err}");
    let r = env.last_report();
    let js = jobs(&r);
    let outcomes: Vec<&str> = js.iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes,
        ["failed", "skipped", "skipped", "skipped", "skipped"]
    );
    assert!(
        jobs(&r)[1]["reason"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{r}"
    );
}

/// Every resource request of every fixture dataset waits `ms` first, so that jobs overlap visibly.
fn slow_portal(env: &TestEnv, ms: u64) {
    env.emu
        .state()
        .faults
        .push(Fault::on("/resource/", FaultKind::DelayMs(ms)).times(10_000));
}

fn sync_with(env: &TestEnv, extra: &[&str]) {
    let mut args = vec!["sync", "--page-size", "20"];
    args.extend_from_slice(extra);
    env.run_ok(&args);
    env.assert_all_equal_to_source();
}

#[test]
fn datasets_run_concurrently_within_the_limit() {
    let env = TestEnv::new();
    slow_portal(&env, 150);
    sync_with(&env, &["--max-concurrent", "1"]);
    assert_eq!(env.emu.state().peak_in_flight, 1, "one at a time");
    let env = TestEnv::new();
    slow_portal(&env, 150);
    sync_with(&env, &["--max-concurrent", "3", "--large-mb", "1000"]);
    let peak = env.emu.state().peak_in_flight;
    assert!(
        (2..=3).contains(&peak),
        "three datasets at once at most, and really at once: {peak}"
    );
}

#[test]
fn large_datasets_have_their_own_limit() {
    let env = TestEnv::new();
    slow_portal(&env, 100);
    // The four critical fixtures are over 100 MB in the catalog: at most one of them at a time.
    sync_with(
        &env,
        &[
            "--max-concurrent",
            "4",
            "--max-large",
            "1",
            "--large-mb",
            "100",
        ],
    );
    let arrivals = env.emu.state().arrivals.clone();
    let span = |id: &str| {
        let t: Vec<u64> = arrivals
            .iter()
            .filter(|(p, _)| p.contains(id))
            .map(|(_, t)| *t)
            .collect();
        (*t.iter().min().unwrap(), *t.iter().max().unwrap())
    };
    let large = [
        DOB_VIOLATIONS,
        ECB_VIOLATIONS,
        DOB_COMPLAINTS,
        HPD_VIOLATIONS,
    ];
    for (i, a) in large.iter().enumerate() {
        for b in &large[i + 1..] {
            let (sa, ea) = span(a);
            let (sb, eb) = span(b);
            assert!(
                ea < sb || eb < sa,
                "{a} ({sa}-{ea}) and {b} ({sb}-{eb}) overlapped"
            );
        }
    }
}

#[test]
fn one_request_budget_for_the_whole_run_and_a_429_slows_everyone() {
    let env = TestEnv::new();
    env.emu.state().faults.push(
        Fault::on(
            &format!("/resource/{HPD_VIOLATIONS}.csv"),
            FaultKind::Status {
                status: 429,
                errorcode_shape: false,
                retry_after: Some(2),
            },
        )
        .skip(1),
    );
    sync_with(
        &env,
        &[
            "--max-concurrent",
            "4",
            "--max-requests-per-second",
            "10",
            "--request-burst",
            "3",
            "--large-mb",
            "1000",
        ],
    );
    let times: Vec<u64> = env.emu.state().arrivals.iter().map(|(_, t)| *t).collect();
    assert!(
        times.len() > 40,
        "enough requests to measure: {}",
        times.len()
    );
    // Never more than 10 requests in any second plus the burst of 3 (one of slack for timer granularity),
    // and a burst of no more than 3 (4 within 20 ms would be one too many).
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| **u < t + 1000).count();
        assert!(
            in_window <= 14,
            "{in_window} requests in the second from {t} ms"
        );
        let at_once = times[i..].iter().take_while(|u| **u < t + 20).count();
        assert!(at_once <= 3, "{at_once} requests within 20 ms from {t} ms");
    }
    // After the 429 (Retry-After 2 s), no dataset sent anything for about two seconds (requests already on
    // the wire when it was answered excepted).
    let st = env.emu.state();
    let t429 = st
        .log
        .iter()
        .find(|s| s.status == 429)
        .expect("the 429 was served")
        .at_ms;
    let during: Vec<u64> = st
        .arrivals
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t > t429 + 50 && *t < t429 + 1800)
        .collect();
    assert!(
        during.is_empty(),
        "requests {during:?} ms after a 429 at {t429} ms"
    );
}

#[test]
fn throttle_spaces_dataset_downloads_and_an_unchanged_dataset_does_not_wait() {
    let env = TestEnv::new();
    let throttle = [
        "--throttle",
        "0.4",
        "--max-concurrent",
        "4",
        "--large-mb",
        "1000",
    ];
    sync_with(&env, &throttle);
    // Each dataset's first request after its metadata (the count of its first pass) starts a download.
    let firsts = |env: &TestEnv| {
        let mut seen = std::collections::HashSet::new();
        env.emu
            .state()
            .arrivals
            .iter()
            .filter_map(|(p, t)| Some((p.strip_prefix("/resource/")?.split('.').next()?, t)))
            .filter(|(id, _)| seen.insert(id.to_string()))
            .map(|(_, t)| *t)
            .collect::<Vec<u64>>()
    };
    let starts = firsts(&env);
    assert_eq!(starts.len(), 5);
    // The gap is taken before a ledger write (an fsync) that precedes the request, so arrivals may be a
    // few tens of ms closer than 400 on a loaded machine; without the throttle they are ~0 apart.
    for w in starts.windows(2) {
        assert!(
            w[1] >= w[0] + 300,
            "downloads start {} and {} ms",
            w[0],
            w[1]
        );
    }
    // Nothing changed: each dataset stops at the change gate after its metadata request, and none waits
    // for the throttle (a gap of 3 s would otherwise put 12 s between the first and the last).
    env.emu.state().arrivals.clear();
    let mut args = vec!["sync", "--throttle", "3"];
    args.extend_from_slice(&throttle[2..]);
    env.run_ok(&args);
    let r = env.last_report();
    assert!(jobs(&r).iter().all(|d| d["mode"] == "unchanged"), "{r}");
    let arrivals = env.emu.state().arrivals.clone();
    assert_eq!(arrivals.len(), 5, "one request per dataset: {arrivals:?}");
    let span = arrivals.last().unwrap().1 - arrivals[0].1;
    assert!(span < 3000, "metadata requests {arrivals:?}");
    // Under the budget without an app token (5 requests a second), the night's checks go out in one burst
    // (--request-burst, 20 by default): spaced one budget interval apart they would span at least 800 ms.
    env.emu.state().arrivals.clear();
    let mut args = vec!["sync", "--throttle", "3", "--max-requests-per-second", "5"];
    args.extend_from_slice(&throttle[2..]);
    env.run_ok(&args);
    let arrivals = env.emu.state().arrivals.clone();
    assert_eq!(arrivals.len(), 5, "one request per dataset: {arrivals:?}");
    let span = arrivals.last().unwrap().1 - arrivals[0].1;
    assert!(
        span < 600,
        "metadata requests under the default budget: {arrivals:?}"
    );
}

#[test]
fn a_deadline_stops_the_run_at_a_page_boundary_and_the_next_run_resumes() {
    let env = TestEnv::new();
    slow_portal(&env, 250);
    let started = std::time::Instant::now();
    let out = env.run(&[
        "sync",
        "--page-size",
        "5",
        "--max-concurrent",
        "2",
        "--large-mb",
        "1000",
        "--max-duration",
        "2s",
    ]);
    assert_exit(&out, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let r = env.last_report();
    let ds = jobs(&r);
    assert_eq!(ds.len(), 5, "every dataset is reported: {r}");
    let cut = ds
        .iter()
        .filter(|d| {
            d["error"]
                .as_str()
                .is_some_and(|e| e.contains("cut by the run's deadline"))
        })
        .count();
    let not_started = ds
        .iter()
        .filter(|d| d["reason"].as_str().is_some_and(|e| e.contains("deadline")))
        .count();
    assert!(cut >= 1 && not_started >= 1, "{r}");
    env.emu.state().faults.clear();
    env.run_ok(&["sync", "--page-size", "5"]);
    env.assert_all_equal_to_source();
}

#[test]
fn logs_go_to_a_daily_file_and_old_ones_are_pruned() {
    let env = TestEnv::new();
    let logs = env.data_dir().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for day in 1..=5 {
        std::fs::write(logs.join(format!("dobsob.2026-01-0{day}.log")), "old\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(logs.join("cron.log"), "not ours to prune\n").unwrap();
    let out = env.run_ok(&[
        "--log-retention-days",
        "3",
        "sync",
        "--datasets",
        "every_type",
        "-q",
    ]);
    // -q: no log lines on stderr, but the summary on stdout.
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(stdout(&out).contains("every_type"), "{}", stdout(&out));
    let today = logs.join(format!(
        "dobsob.{}.log",
        chrono::Utc::now().format("%Y-%m-%d")
    ));
    let text = std::fs::read_to_string(&today).unwrap();
    assert!(text.contains("sync starting"), "{text}");
    let mut ours: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dobsob."))
        .collect();
    ours.sort();
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert!(
        ours.contains(&"dobsob.2026-01-05.log".to_string()),
        "the newest old ones stay: {ours:?}"
    );
    assert!(logs.join("cron.log").exists());
}

#[test]
fn report_shows_a_past_run_from_the_ledger() {
    let env = TestEnv::new();
    let out = env.run(&["report"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("no data directory"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir(env.data_dir()).unwrap();
    let out = env.run(&["report"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no runs yet"), "{}", stderr(&out));
    env.run_ok(&["sync"]);
    env.run_ok(&["sync", "--schedule-check"]);
    let last = stdout(&env.run_ok(&["report", "--last"]));
    assert!(
        last.starts_with("run 2: sync") && last.contains("not due until"),
        "{last}"
    );
    let first: Value =
        serde_json::from_str(&stdout(&env.run_ok(&["report", "1", "--json"]))).unwrap();
    assert_eq!(first["run_id"], 1);
    assert_eq!(first["outcome"], "ok");
    let a = first["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 5);
    assert_eq!(a[0]["dataset"], "dob_violations");
    assert_eq!(a[0]["mode"], "full");
    assert!(a[0]["rows_fetched"].as_i64().unwrap() >= 45);
    let out = env.run(&["report", "9"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no run 9"), "{}", stderr(&out));
}

/// A library user decides by kind, not by text: a dataset the portal does not have (404) was refused and a
/// retry will not mend it; one whose metadata kept failing with 503 through the retries is worth running
/// again; a synced one has no error.
#[test]
fn a_failed_datasets_error_is_typed_for_a_library_user() {
    use dobsob_engine::sync::{FailureKind, Outcome, Shutdown};
    use dobsob_engine::{Config, Job, Orchestrator, Plan};

    let env = TestEnv::new();
    env.emu.state().faults.push(
        Fault::on(
            &format!("/api/views/{DOB_COMPLAINTS}"),
            FaultKind::Status {
                status: 503,
                errorcode_shape: false,
                retry_after: None,
            },
        )
        .times(100),
    );
    let plan = Plan::new(vec![
        Job::custom("fine", DOB_VIOLATIONS).unwrap(),
        Job::custom("gone", "zzzz-9999").unwrap(),
        Job::custom("flaky", DOB_COMPLAINTS).unwrap(),
    ]);
    let mut config = Config::new(env.data_dir(), url::Url::parse(&env.emu.url()).unwrap());
    config.limits.throttle = std::time::Duration::ZERO;
    config.max_requests_per_second = 1000.0;
    config.retry.base_delay = std::time::Duration::from_millis(5);
    config.report_dir = None;
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Orchestrator::new(config).run(&plan, Shutdown::default()))
        .expect("the run happens");
    let ended = |key: &str| report.datasets.iter().find(|d| d.key == key).unwrap();
    assert_eq!(ended("fine").outcome, Outcome::Ok);
    assert!(ended("fine").error.is_none());
    for (key, kind, retryable) in [
        ("gone", FailureKind::Refused, false),
        ("flaky", FailureKind::Portal, true),
    ] {
        let d = ended(key);
        assert_eq!(d.outcome, Outcome::Failed, "{key}");
        let e = d.error.as_ref().expect("a failed dataset says why");
        assert_eq!(
            (e.kind, e.kind.is_retryable()),
            (kind, retryable),
            "{key}: {e}"
        );
        assert!(e.message.starts_with(&format!("{key}: ")), "{e}");
    }
}

#[test]
fn a_gentle_sync_on_one_cpu_thread_equals_the_source_and_zero_threads_is_refused() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--cpu-threads", "1", "--page-size", "7"]);
    env.assert_all_equal_to_source();
    let out = env.run(&["sync", "--cpu-threads", "0"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--cpu-threads"), "{}", stderr(&out));
}
