//! Integration tests for what an operator gets from a run: the report in the original guide's shape, where it
//! goes and how long it stays, the webhook notification, and the live progress display (only on a terminal).
//! The real binary against the emulator, as everywhere.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use socrata_emulator::{Fault, FaultKind};
use support::*;

fn status(code: u16) -> FaultKind {
    FaultKind::Status {
        status: code,
        errorcode_shape: false,
        retry_after: None,
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

#[test]
fn the_report_has_the_original_guides_shape_with_each_dataset_in_one_list() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--page-size", "20"]);
    // Four fixture datasets are over --large-mb's default of 100 MB by their catalog size_mb.
    assert_eq!(
        env.last_report()["performance_metrics"]["large_files_processed"],
        4
    );
    // dob_violations: two rows change and one is new; ecb_violations changes but its rows fail with a 400;
    // the other three have not changed. One 500 on dob_violations is retried.
    {
        let mut st = env.emu.state();
        let ids = st.datasets[DOB_VIOLATIONS].ids();
        st.edit(DOB_VIOLATIONS, |e| {
            e.set(&ids[3], "street", Some(json!("CHANGED ONE")));
            e.set(&ids[7], "street", Some(json!("CHANGED TWO")));
            let mut row = serde_json::Map::new();
            row.insert("isn_dob_bis_viol".into(), json!("9000001"));
            row.insert("street".into(), json!("NEW ROW"));
            e.insert(row);
        });
        let ecb = st.datasets[ECB_VIOLATIONS].ids();
        st.edit(ECB_VIOLATIONS, |e| {
            e.set(&ecb[0], "ecb_violation_status", Some(json!("RESOLVE")))
        });
        st.faults
            .push(Fault::on(&format!("/resource/{ECB_VIOLATIONS}"), status(400)).times(100));
        st.faults
            .push(Fault::on(&format!("/resource/{DOB_VIOLATIONS}"), status(500)).times(1));
    }
    let served_before = env.emu.state().log.len();
    let out = env.run(&[
        "sync",
        "--page-size",
        "20",
        "--overlap",
        "0",
        "--late-window",
        "0",
    ]);
    assert_exit(&out, 1);
    env.assert_equal_to_source("dob_violations", DOB_VIOLATIONS);
    let served = env.emu.state().log.len() - served_before;

    let reports = files_under(&env.data_dir().join("reports"));
    assert_eq!(reports.len(), 2);
    for p in &reports {
        let name = p.file_name().unwrap().to_str().unwrap();
        let stamp = name
            .strip_prefix("orchestration_report_")
            .and_then(|n| n.strip_suffix(".json"))
            .unwrap_or_else(|| panic!("{name}"));
        let (date_time, run) = stamp.split_at(15.min(stamp.len()));
        assert!(
            date_time.len() == 15
                && date_time.as_bytes()[8] == b'_'
                && date_time
                    .replace('_', "")
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                && (run.is_empty() || run.starts_with("_run")),
            "{name}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} is private");
        }
    }
    let r = env.last_report();
    assert_eq!(r["outcome"], "failed");
    assert_eq!(r["command"], "sync");
    assert_eq!(
        keys(&r),
        [
            "command",
            "completed_jobs",
            "error",
            "execution_summary",
            "failed_jobs",
            "interrupted_jobs",
            "job_order",
            "outcome",
            "performance_metrics",
            "portal",
            "run_id",
            "skipped_jobs"
        ]
    );
    let s = &r["execution_summary"];
    assert_eq!(
        keys(s),
        [
            "average_speed_mbps",
            "completed_jobs",
            "end_time",
            "failed_jobs",
            "interrupted_jobs",
            "skipped_jobs",
            "start_time",
            "success_rate_percent",
            "total_data_downloaded_mb",
            "total_duration_seconds",
            "total_jobs",
            "total_requests"
        ]
    );
    assert_eq!(
        (
            &s["total_jobs"],
            &s["completed_jobs"],
            &s["failed_jobs"],
            &s["skipped_jobs"]
        ),
        (&json!(5), &json!(1), &json!(1), &json!(3))
    );
    assert_eq!(s["success_rate_percent"], 50.0);
    assert_eq!(
        s["total_requests"], served,
        "every request the portal answered is counted"
    );
    let bytes: u64 = jobs(&r).iter().map(|j| j["bytes"].as_u64().unwrap()).sum();
    assert!(bytes > 0);
    assert_eq!(
        s["total_data_downloaded_mb"].as_f64().unwrap(),
        (bytes as f64 / 1e4).round() / 100.0,
        "{s}"
    );

    let dob = &r["completed_jobs"]["dob_violations"];
    assert_eq!(dob["mode"], "incremental", "{dob}");
    assert_eq!(dob["name"], "DOB Violations");
    assert_eq!(dob["socrata_id"], DOB_VIOLATIONS);
    assert_eq!(dob["priority"], "CRITICAL");
    assert_eq!(
        (
            &dob["rows_fetched"],
            &dob["rows_inserted"],
            &dob["rows_updated"],
            &dob["rows_deleted"]
        ),
        (&json!(3), &json!(1), &json!(2), &json!(0)),
        "{dob}"
    );
    assert_eq!(dob["retries"], 1, "{dob}");
    assert!(dob["requests"].as_u64().unwrap() >= 3, "{dob}");
    assert!(dob["bytes"].as_u64().unwrap() > 0 && dob["pages"].as_u64().unwrap() >= 1);

    let ecb = &r["failed_jobs"]["ecb_violations"];
    assert_eq!(ecb["outcome"], "failed");
    assert!(
        ecb["error"].as_str().unwrap().contains("400"),
        "{ecb}: the error says what failed"
    );
    for (key, d) in r["skipped_jobs"].as_object().unwrap() {
        assert_eq!(d["mode"], "unchanged", "{key}");
        assert!(
            d["reason"]
                .as_str()
                .unwrap()
                .starts_with("source unchanged since"),
            "{key}: {d}"
        );
    }
    assert_eq!(job_order(&r).len(), 5);
    assert_eq!(jobs(&r).len(), 5, "each dataset in exactly one list");

    let m = &r["performance_metrics"];
    assert_eq!(
        keys(m),
        [
            "breakdown",
            "large_files_processed",
            "max_concurrent_jobs",
            "max_large_jobs",
            "max_requests_per_second",
            "memory_limit_auto",
            "memory_limit_mb",
            "peak_concurrent_jobs",
            "peak_rss_mb",
            "publish_reflink",
            "publish_seconds",
            "published_mb",
            "request_burst",
            "retry_attempts",
            "throttle_delay_seconds"
        ]
    );
    assert_eq!(m["retry_attempts"], 1);
    assert_eq!(
        m["memory_limit_mb"],
        dobsob_engine::warehouse::DEFAULT_MEMORY_LIMIT_MB
    );
    assert_eq!(m["memory_limit_auto"], true);
    assert_eq!(m["throttle_delay_seconds"], 0.0);
    // Once loaded, a dataset's size is what its full load downloaded: a few KB, none large any more.
    assert_eq!(m["large_files_processed"], 0);
    let peak = m["peak_concurrent_jobs"].as_u64().unwrap();
    assert!((1..=4).contains(&peak), "{m}");
    assert!(m["peak_rss_mb"].as_f64().unwrap() > 1.0, "{m}");
    let published = std::fs::metadata(env.data_dir().join("warehouse.duckdb"))
        .unwrap()
        .len();
    assert_eq!(
        m["published_mb"].as_f64().unwrap(),
        (published as f64 / 1e4).round() / 100.0,
        "{m}"
    );
    assert!(m["publish_reflink"].is_boolean() && m["publish_seconds"].as_f64().is_some());
    assert_eq!(
        keys(&m["breakdown"]),
        [
            "check_s",
            "commit_s",
            "count_s",
            "download_s",
            "hash_s",
            "insert_s",
            "merge_s",
            "publish_s",
            "stage_s",
            "swap_s",
            "uncastable_s"
        ]
    );
    assert!(m["breakdown"]["merge_s"].as_f64().unwrap() > 0.0, "{m}");
    let (hash, download) = (
        m["breakdown"]["hash_s"].as_f64().unwrap(),
        m["breakdown"]["download_s"].as_f64().unwrap(),
    );
    assert!(
        hash >= 0.0 && hash <= download,
        "hashing is part of the download: {m}"
    );

    // The summary's last line says it in one line, and the report's path follows.
    let text = stdout(&out);
    assert!(
        text.contains("5 datasets: 1 synced, 1 failed (ecb_violations), 3 unchanged."),
        "{text}"
    );
    assert!(text.contains("report: "), "{text}");
}

/// Sets a file's modification time `days` ago.
fn age(path: &Path, days: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

#[test]
fn reports_go_to_report_path_and_old_ones_of_ours_are_pruned() {
    let env = TestEnv::new();
    let dir = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        ("orchestration_report_20200101_000000.json", 100, false),
        ("sync-000001.json", 100, false),
        ("orchestration_report_20201231_000000.json", 10, true),
        // Not dobsob's: never removed, however old.
        ("notes.json", 100, true),
        ("orchestration_report_notes.txt", 100, true),
    ];
    for (name, days, _) in files {
        std::fs::write(dir.join(name), "{}").unwrap();
        age(&dir.join(name), days);
    }
    env.run_ok(&[
        "sync",
        "--report-path",
        dir.to_str().unwrap(),
        "--report-retention-days",
        "30",
    ]);
    for (name, _, kept) in files {
        assert_eq!(dir.join(name).exists(), kept, "{name}");
    }
    let new: Vec<_> = files_under(&dir)
        .into_iter()
        .filter(|p| !files.iter().any(|(n, _, _)| p.ends_with(n)))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&new[0]).unwrap()).unwrap();
    assert_eq!(r["outcome"], "ok");
    assert!(files_under(&env.data_dir().join("reports")).is_empty());

    let out = env.run(&["sync", "--report-retention-days", "0"]);
    assert_exit(&out, 2);
}

/// A one-shot HTTP listener: answers the first request with `status` and returns what it received (request
/// line, lowercased header lines, body).
fn listener(
    status: u16,
) -> (
    String,
    std::thread::JoinHandle<(String, Vec<String>, String)>,
) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/T000/s3cr3t-path", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (stream, _) = l.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            headers.push(h.trim().to_ascii_lowercase());
        }
        let len: usize = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let mut s = r.into_inner();
        write!(
            s,
            "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        )
        .unwrap();
        (
            line.trim().to_string(),
            headers,
            String::from_utf8(body).unwrap(),
        )
    });
    (url, h)
}

#[test]
fn the_webhook_gets_a_one_line_summary_without_the_app_token() {
    let env = TestEnv::new();
    let (url, got) = listener(200);
    let out = env.run_ok(&[
        "--app-token",
        "tok-SECRET-123",
        "sync",
        "--notify-webhook",
        &url,
    ]);
    let (line, headers, body) = got.join().unwrap();
    assert_eq!(line, "POST /hooks/T000/s3cr3t-path HTTP/1.1");
    assert!(headers
        .iter()
        .any(|h| h == "content-type: application/json"));
    assert!(
        !headers.iter().any(|h| h.starts_with("x-app-token")) && !body.contains("tok-SECRET"),
        "the app token is never sent to the webhook: {headers:?}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.starts_with("dobsob sync run 1 (127.0.0.1): ok. 5 datasets: 5 synced, 0 failed"),
        "{text}"
    );
    assert_eq!(v["outcome"], "ok");
    assert_eq!(v["execution_summary"]["completed_jobs"], 5);
    // The fixtures' far-future dates and uncastable values: the data-quality findings reach the webhook.
    assert!(
        text.contains("Data quality: 2 to look at (hpd_violations, every_type)."),
        "{text}"
    );
    assert_eq!(
        v["quality_warnings"]["hpd_violations"][0]["kind"],
        "future_dates"
    );
    assert!(v["report_path"]
        .as_str()
        .unwrap()
        .contains("orchestration_report_"));
    // Webhook URLs are secrets: the log shows the host only.
    let log = stderr(&out)
        + &files_under(&env.data_dir().join("logs"))
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect::<String>();
    assert!(
        log.contains("sent to the webhook at http://127.0.0.1/..."),
        "{log}"
    );
    assert!(
        !log.contains("s3cr3t") && !log.contains("tok-SECRET"),
        "{log}"
    );
}

#[test]
fn a_failed_notification_is_a_warning_not_a_failed_run() {
    let env = TestEnv::new();
    // The listener answers 500.
    let (url, got) = listener(500);
    let out = env.run_ok(&["sync", "--notify-webhook", &url]);
    got.join().unwrap();
    assert!(
        stderr(&out).contains("webhook notification to http://127.0.0.1/... failed: HTTP 500"),
        "{}",
        stderr(&out)
    );
    // Nobody listens: connection refused. A failed run stays exit 1, not worse.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.emu
        .state()
        .faults
        .push(Fault::on(&format!("/api/views/{EVERY_TYPE}"), status(400)).times(10));
    let out = env.run(&[
        "sync",
        "--force",
        "--notify-webhook",
        &format!("http://127.0.0.1:{port}/hook"),
    ]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("webhook notification to http://127.0.0.1/... failed"),
        "{}",
        stderr(&out)
    );
    // A URL that is not one is a usage error before anything runs.
    let out = env.run(&["sync", "--notify-webhook", "ftp://example.org/x"]);
    assert_exit(&out, 2);
}

/// Runs `dobsob ARGS` under a pseudo-terminal (util-linux `script`), returning everything the terminal got.
fn on_terminal(env: &TestEnv, args: &[&str]) -> String {
    let cmd = std::iter::once(env!("CARGO_BIN_EXE_dobsob"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env_remove("RUST_LOG")
        .env("DOBSOB_DATA_DIR", env.data_dir())
        .env("DOBSOB_CATALOG", repo().join("fixtures/catalog.toml"))
        .env("DOBSOB_PORTAL", env.emu.url())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) from util-linux runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn progress_is_shown_on_a_terminal_only_and_never_with_quiet() {
    let env = TestEnv::new();
    env.emu
        .state()
        .faults
        .push(Fault::on("/resource/", FaultKind::DelayMs(150)).times(10_000));
    let quick = [
        "--throttle",
        "0",
        "--max-requests-per-second",
        "1000",
        "--page-size",
        "20",
    ];
    let mut args = vec!["sync", "--force"];
    args.extend(quick);
    let shown = on_terminal(&env, &args);
    assert!(shown.contains(" datasets "), "{shown}");
    assert!(shown.contains("in flight"), "{shown}");
    assert!(shown.contains("pages"), "a dataset's line: {shown}");
    // The summary still follows.
    assert!(shown.contains("DATASET"), "{shown}");

    let mut args = vec!["-q", "sync", "--force"];
    args.extend(quick);
    let quiet = on_terminal(&env, &args);
    assert!(!quiet.contains("in flight"), "{quiet}");
    assert!(quiet.contains("DATASET"), "{quiet}");

    let mut args = vec!["sync", "--force", "--no-progress"];
    args.extend(quick);
    let plain = on_terminal(&env, &args);
    assert!(!plain.contains("in flight"), "{plain}");

    // Not a terminal (cron, a pipe): no display.
    let mut args = vec!["sync", "--force"];
    args.extend(quick);
    let piped = env.run_ok(&args);
    assert!(!stderr(&piped).contains("in flight"), "{}", stderr(&piped));
}

#[test]
fn a_ledger_error_mid_run_ends_the_run_properly_and_the_next_run_completes() {
    let env = TestEnv::new();
    env.run_ok(&["sync", "--datasets", "every_type"]);
    // The ledger refuses dob_violations' second page (after its merge committed), then refuses to start
    // hpd_violations at all.
    let ledger = env.ledger();
    ledger
        .execute_batch(
            "CREATE TRIGGER fail_page BEFORE INSERT ON pages
               WHEN NEW.seq = 2 AND NEW.attempt_id IN
                    (SELECT id FROM attempts WHERE dataset_key = 'dob_violations')
             BEGIN SELECT RAISE(ABORT, 'injected ledger failure'); END;
             CREATE TRIGGER fail_start BEFORE INSERT ON attempts
               WHEN NEW.dataset_key = 'hpd_violations'
             BEGIN SELECT RAISE(ABORT, 'injected ledger failure at start'); END;",
        )
        .unwrap();
    let out = env.run(&["sync", "--page-size", "10", "--max-concurrent", "1"]);
    assert_exit(&out, 1);
    let r = env.last_report();
    assert_eq!(r["outcome"], "failed");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("injected ledger failure at start"),
        "{r}"
    );
    let dob = &r["failed_jobs"]["dob_violations"];
    assert!(
        dob["error"]
            .as_str()
            .unwrap()
            .contains("injected ledger failure"),
        "{dob}"
    );
    // Datasets before hpd_violations in start order ran and are reported; none after it started.
    assert!(!job_order(&r).iter().any(|k| k == "hpd_violations"), "{r}");
    let summary = stdout(&out);
    assert!(
        summary.contains("DATASET"),
        "the summary is printed: {summary}"
    );
    assert_eq!(
        summary.matches("run stopped early").count(),
        1,
        "said once, in the summary line: {summary}"
    );
    env.assert_ledger_not_ahead("dob_violations");

    ledger
        .execute_batch("DROP TRIGGER fail_page; DROP TRIGGER fail_start;")
        .unwrap();
    env.run_ok(&["sync", "--page-size", "10"]);
    env.assert_all_equal_to_source();
}
