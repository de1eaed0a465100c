//! `dobsob serve` over HTTP (every page and endpoint, the token rules, control off by default, cross-site
//! posts refused, a rebuild started from the page), the Prometheus text checked by Prometheus' own parser
//! (promtool), the data-quality flags against the emulator, and the dashboard in a real headless Chromium.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::http::{get, http, serve};
use support::*;

/// The form token in a page.
fn csrf(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a form token in the page")
        .to_string()
}

/// Runs `dobsob ARGS` with ecb_violations' metadata answered 404 once: that dataset fails.
fn fail_ecb_violations(env: &TestEnv, args: &[&str]) -> std::process::Output {
    env.emu.state().faults.push(
        socrata_emulator::Fault::on(
            &format!("/api/views/{ECB_VIOLATIONS}"),
            socrata_emulator::FaultKind::Status {
                status: 404,
                errorcode_shape: false,
                retry_after: None,
            },
        )
        .times(1),
    );
    let out = env.run(args);
    env.emu.state().faults.clear();
    out
}

fn synced() -> TestEnv {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    env
}

#[test]
fn every_page_and_endpoint_of_a_synced_warehouse() {
    let env = synced();
    // With an app token, which no page may show.
    let srv = serve(&env, &["--app-token", "sekrit-app-token"]);
    let a = srv.addr.as_str();

    let home = get(a, "/");
    assert_eq!(home.status, 200);
    assert!(home
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(home
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    for (key, _) in FIXTURES {
        assert!(
            home.body
                .contains(&format!("data-dataset=\"{key}\" data-state=\"fresh\"")),
            "{key} fresh in the overview"
        );
    }
    // Control is off by default: no buttons, and a POST is refused whatever it carries.
    assert!(!home.body.contains("<form"), "no control forms by default");
    let post = http(a, "POST", "/control/sync", &[], "csrf=x");
    assert_eq!(post.status, 403);
    assert!(post.body.contains("--allow-control"));

    let runs = get(a, "/runs");
    assert_eq!(runs.status, 200);
    assert!(runs.body.contains("href=\"/runs/1\""));
    let run = get(a, "/runs/1");
    assert_eq!(run.status, 200);
    assert!(run.body.contains("class=\"chart timeline\""));
    for (key, _) in FIXTURES {
        assert!(
            run.body.contains(&format!(">{key}</text>")),
            "{key} on the timeline"
        );
    }
    assert_eq!(get(a, "/runs/999").status, 404);
    assert_eq!(get(a, "/runs/x").status, 404);

    let ds = get(a, "/datasets/every_type");
    assert_eq!(ds.status, 200);
    // Its columns with the stored types, the uncastable values with examples, the portal's page, a query.
    assert!(ds.body.contains("id=\"columns\""));
    assert!(ds.body.contains("id=\"uncastable\""));
    let uncastable: i64 = env
        .warehouse()
        .query_row(
            "SELECT count(*) FROM dobsob.uncastable WHERE table_name = 'every_type'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(uncastable > 0);
    let (column, value): (String, String) = env
        .warehouse()
        .query_row(
            "SELECT column_name, raw_value FROM dobsob.uncastable WHERE table_name = 'every_type' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(ds.body.contains(&format!("<code>{column}</code>")));
    assert!(
        ds.body
            .contains(&format!("<code>{}</code>", html_escape(&value))),
        "the uncastable value {value:?} shown"
    );
    assert!(ds.body.contains(&format!(
        "{}/d/{EVERY_TYPE}",
        env.emu.url().trim_end_matches('/')
    )));
    assert!(ds.body.contains("FROM &quot;every_type&quot;"));
    assert_eq!(get(a, "/datasets/nope").status, 404);
    assert_eq!(get(a, "/no/such/page").status, 404);

    // The JSON has the shapes of `status --json` and `report --json`.
    let api: serde_json::Value = serde_json::from_str(&get(a, "/api/status.json").body).unwrap();
    let cli: serde_json::Value =
        serde_json::from_str(&stdout(&env.run_ok(&["status", "--json"]))).unwrap();
    let strip = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d.as_object_mut().unwrap().remove("age_seconds");
                d
            })
            .collect()
    };
    assert_eq!(strip(&api), strip(&cli));
    let run_json: serde_json::Value =
        serde_json::from_str(&get(a, "/api/runs/1.json").body).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&env.run_ok(&["report", "1", "--json"]))).unwrap();
    assert_eq!(run_json, report);
    assert_eq!(get(a, "/api/runs/2.json").status, 404);
    assert_eq!(get(a, "/static/style.css").status, 200);
    assert_eq!(get(a, "/static/../ledger.sqlite").status, 404);

    // Nothing secret on any page: the data directory's ledger path is fine, an app token is not.
    for p in [
        "/",
        "/runs",
        "/runs/1",
        "/datasets/dob_violations",
        "/metrics",
        "/api/status.json",
    ] {
        assert!(!get(a, p).body.contains("sekrit-app-token"), "{p}");
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[test]
fn the_token_rules() {
    let env = synced();
    // Beyond loopback without a token: refused before listening.
    let out = env
        .cmd(&["serve", "--listen", "0.0.0.0:0"])
        .env_remove("DOBSOB_SERVE_TOKEN")
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--token"), "{}", stderr(&out));
    let out = env.run(&["serve", "--listen", "127.0.0.1:0", "--token", "short"]);
    assert_exit(&out, 2);
    let out = env.run(&["serve", "--listen", "nonsense"]);
    assert_exit(&out, 2);

    let token = "0123456789abcdef-the-token";
    let srv = serve(&env, &["--token", token]);
    let a = srv.addr.as_str();
    let anon = get(a, "/");
    assert_eq!(anon.status, 401);
    assert!(anon
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic"));
    assert!(!anon.body.contains(token));
    for bad in [
        "Bearer wrong",
        "Bearer 0123456789abcdef-the-toke",
        "Basic dTp3cm9uZw==",
    ] {
        assert_eq!(
            http(a, "GET", "/metrics", &[("Authorization", bad)], "").status,
            401,
            "{bad}"
        );
    }
    let bearer = format!("Bearer {token}");
    assert_eq!(
        http(a, "GET", "/metrics", &[("Authorization", &bearer)], "").status,
        200
    );
    // HTTP Basic, any user name, the token as password (what a browser's login prompt sends).
    let basic = format!("Basic {}", base64(&format!("analyst:{token}")));
    let page = http(a, "GET", "/", &[("Authorization", &basic)], "");
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains(token),
        "the token never appears on a page"
    );
    // With a token, any Host is fine (it is the token that guards).
    assert_eq!(
        http(
            a,
            "GET",
            "/",
            &[("Authorization", &bearer), ("Host", "dash.example")],
            ""
        )
        .status,
        200
    );
    drop(srv);

    // Without a token (loopback only), a page reached through another host name (DNS rebinding) is
    // refused.
    let srv = serve(&env, &[]);
    let a = srv.addr.as_str();
    assert_eq!(
        http(a, "GET", "/", &[("Host", "evil.example")], "").status,
        421
    );
    assert_eq!(
        http(a, "GET", "/", &[("Host", "localhost")], "").status,
        200
    );
}

fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (c as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Waits until run `id` of the ledger has finished; returns its report.
fn wait_for_run(addr: &str, id: i64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = get(addr, &format!("/api/runs/{id}.json"));
        if r.status == 200 {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            if !v["finished_at"].is_null() {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "run {id} never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn control_starts_runs_under_the_run_lock_and_refuses_cross_site_posts() {
    let env = synced();
    let srv = serve(&env, &["--allow-control"]);
    let a = srv.addr.as_str();
    let page = get(a, "/datasets/dob_complaints").body;
    assert!(page.contains("action=\"/control/rebuild/dob_complaints\""));
    let token = csrf(&page);
    let body = format!("csrf={token}");

    // Cross-site or token-less posts change nothing.
    assert_eq!(
        http(a, "POST", "/control/rebuild/dob_complaints", &[], "").status,
        403
    );
    assert_eq!(
        http(
            a,
            "POST",
            "/control/rebuild/dob_complaints",
            &[],
            "csrf=guess"
        )
        .status,
        403
    );
    let evil = [("Origin", "http://evil.example")];
    assert_eq!(
        http(a, "POST", "/control/rebuild/dob_complaints", &evil, &body).status,
        403
    );
    let cross = [("Sec-Fetch-Site", "cross-site")];
    assert_eq!(
        http(a, "POST", "/control/rebuild/dob_complaints", &cross, &body).status,
        403
    );
    assert_eq!(http(a, "GET", "/control/sync", &[], "").status, 405);
    assert_eq!(
        http(a, "POST", "/control/rebuild/nope", &[], &body).status,
        404
    );
    std::thread::sleep(Duration::from_millis(300));
    let runs: i64 = env
        .ledger()
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 1, "no refused post started a run");

    // A same-origin post with the page's token rebuilds the dataset, from the source as it is now.
    env.emu.state().edit(DOB_COMPLAINTS, |e| {
        let id = e.dataset().ids()[0].clone();
        e.delete(&id);
    });
    // The rebuild's pages come slowly: a second start while it runs is refused, naming it.
    env.emu.state().faults.push(
        socrata_emulator::Fault::on(
            &format!("/resource/{DOB_COMPLAINTS}.csv"),
            socrata_emulator::FaultKind::DelayMs(1500),
        )
        .times(1),
    );
    let origin = format!("http://{a}");
    let ok = http(
        a,
        "POST",
        "/control/rebuild/dob_complaints",
        &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
        &body,
    );
    assert_eq!(ok.status, 202, "{}", ok.body);
    let again = http(a, "POST", "/control/sync", &[], &body);
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(
        again
            .body
            .contains("rebuild of dob_complaints started here"),
        "{}",
        again.body
    );
    let report = wait_for_run(a, 2);
    assert_eq!(report["command"], "rebuild");
    assert_eq!(report["outcome"], "ok", "{report:#}");
    env.assert_equal_to_source("dob_complaints", DOB_COMPLAINTS);
    assert!(
        get(a, "/").body.contains("rebuild of dob_complaints"),
        "the page says what it started"
    );

    // Another process holds the run lock (cron's sync): nothing starts, and the page names the holder.
    let held = dobsob_engine::lock::RunLock::acquire(&env.data_dir()).unwrap();
    assert!(get(a, "/metrics").body.contains("dobsob_run_in_progress 1"));
    let refused = http(a, "POST", "/control/sync", &[], &body);
    assert_eq!(refused.status, 409);
    assert!(
        refused
            .body
            .contains(&format!("pid {}", std::process::id())),
        "{}",
        refused.body
    );
    drop(held);
    assert!(get(a, "/metrics").body.contains("dobsob_run_in_progress 0"));
    let runs: i64 = env
        .ledger()
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 2);
}

/// promtool (Prometheus' own parser and linter), from the `prometheus` package `.ci/run` installs.
fn promtool() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from("/usr/bin/promtool");
    if p.exists() {
        return Some(p);
    }
    eprintln!("SKIPPED the promtool check: no /usr/bin/promtool (Debian's prometheus package; .ci/run installs it)");
    None
}

fn promtool_check(text: &str) {
    let Some(tool) = promtool() else { return };
    let mut child = std::process::Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused the metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of a sample `name{labels}` in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

#[test]
fn prometheus_metrics_parse_and_say_what_the_ledger_says() {
    let env = synced();
    // Make one dataset fail: its metrics say so.
    let out = fail_ecb_violations(&env, &["sync", "--force"]);
    assert_exit(&out, 1);

    let text = stdout(&env.run_ok(&["status", "--prometheus"]));
    promtool_check(&text);
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&env.run_ok(&["status", "--json"]))).unwrap();
    for d in status.as_array().unwrap() {
        let key = d["key"].as_str().unwrap();
        assert_eq!(
            sample(&text, &format!("dobsob_dataset_rows{{dataset=\"{key}\"}}")),
            d["rows"].as_f64(),
            "{key}"
        );
        let outcome = d["last_outcome"].as_str().unwrap();
        assert_eq!(
            sample(
                &text,
                &format!("dobsob_dataset_last_outcome{{dataset=\"{key}\",outcome=\"{outcome}\"}}")
            ),
            Some(1.0)
        );
    }
    assert_eq!(
        sample(
            &text,
            "dobsob_dataset_consecutive_failures{dataset=\"ecb_violations\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "dobsob_last_run_datasets{outcome=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "dobsob_last_run_id"), Some(2.0));
    assert!(sample(&text, "dobsob_last_run_requests").unwrap() > 0.0);

    // The server's /metrics: the same families, plus whether a run is in progress.
    let srv = serve(&env, &[]);
    let m = get(&srv.addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    promtool_check(&m.body);
    assert_eq!(sample(&m.body, "dobsob_run_in_progress"), Some(0.0));
    assert_eq!(
        sample(&m.body, "dobsob_dataset_rows{dataset=\"hpd_violations\"}"),
        sample(&text, "dobsob_dataset_rows{dataset=\"hpd_violations\"}")
    );
}

/// The anomalies a sync's report lists for `key`.
fn quality_of(env: &TestEnv, key: &str) -> Vec<String> {
    let report = env.last_report();
    let job = jobs(&report)
        .into_iter()
        .find(|j| j["key"] == key)
        .unwrap_or_else(|| panic!("{key} in the report"));
    let mut kinds: Vec<String> = job["quality"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["kind"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    kinds.dedup();
    kinds
}

#[test]
fn each_data_quality_flag_fires_on_what_it_guards_and_not_on_a_steady_table() {
    let env = synced();
    // The fixture's hpd_violations has an inspection date in 2105: flagged at its first profile, once.
    assert_eq!(quality_of(&env, "hpd_violations"), ["future_dates"]);
    let sync = |env: &TestEnv| {
        env.run_ok(&[
            "sync",
            "--datasets",
            "hpd_violations",
            "--max-delete-percent",
            "50",
        ]);
    };
    let ids = |env: &TestEnv| env.emu.state().edit(HPD_VIOLATIONS, |e| e.dataset().ids());

    // A steady change: no anomaly (the far date is the same one, already said).
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        let id = e.dataset().ids()[0].clone();
        e.set(&id, "currentstatus", Some(serde_json::json!("CLOSED")));
    });
    sync(&env);
    assert_eq!(quality_of(&env, "hpd_violations"), Vec::<String>::new());

    // Rows fell by 12% (6 of 50).
    let all = ids(&env);
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        for id in &all[..6] {
            e.delete(id);
        }
    });
    sync(&env);
    assert_eq!(quality_of(&env, "hpd_violations"), ["rows_fell"]);

    // A filled column gone mostly NULL.
    let all = ids(&env);
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        for id in &all[..40] {
            e.set(id, "streetname", None);
        }
    });
    sync(&env);
    assert_eq!(quality_of(&env, "hpd_violations"), ["column_emptied"]);

    // A new share of values that are not of their column's type.
    let all = ids(&env);
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        for id in &all[..10] {
            e.set(id, "buildingid", Some(serde_json::json!("n/a")));
        }
    });
    sync(&env);
    assert_eq!(quality_of(&env, "hpd_violations"), ["uncastable_rise"]);

    // A date centuries ahead, new since the last profile.
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        let id = e.dataset().ids()[3].clone();
        e.set(
            &id,
            "approveddate",
            Some(serde_json::json!("2999-01-01T00:00:00.000")),
        );
    });
    sync(&env);
    assert_eq!(quality_of(&env, "hpd_violations"), ["future_dates"]);
    env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);

    // The anomalies reach status (table and JSON), the ledger's warnings and the dashboard.
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&env.run_ok(&["status", "--json"]))).unwrap();
    let hpd = status
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "hpd_violations")
        .unwrap();
    assert_eq!(hpd["quality"][0]["kind"], "future_dates");
    assert_eq!(hpd["quality"][0]["column"], "approveddate");
    assert!(stdout(&env.run_ok(&["status"])).contains("quality: column \"approveddate\""));
    let warned: i64 = env
        .ledger()
        .query_row(
            "SELECT count(DISTINCT attempt_id) FROM warnings WHERE dataset_key = 'hpd_violations' AND message LIKE 'data quality:%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(warned, 5, "one warning per flagged sync");
    let profiles: i64 = env
        .ledger()
        .query_row(
            "SELECT count(*) FROM profiles WHERE dataset_key = 'hpd_violations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(profiles, 6, "a profile per sync that changed the table");
    let srv = serve(&env, &[]);
    let page = get(&srv.addr, "/datasets/hpd_violations").body;
    assert!(page.contains("id=\"anomalies\"") && page.contains("2999-01-01"));
    assert!(
        page.contains("class=\"chart\""),
        "the rows chart over the profiles"
    );
    drop(srv);

    // A source the change gate finds unchanged is not profiled again. (Right
    // after an edit the gate cannot hold yet: the portal's clock must pass the change first; the sync
    // then checks incrementally, and profiles.)
    let profiles = || -> i64 {
        env.ledger()
            .query_row(
                "SELECT count(*) FROM profiles WHERE dataset_key = 'hpd_violations'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let mut unchanged = false;
    for _ in 0..5 {
        let before = profiles();
        env.run_ok(&["sync", "--datasets", "hpd_violations"]);
        let mode = jobs(&env.last_report())
            .into_iter()
            .find(|j| j["key"] == "hpd_violations")
            .unwrap()["mode"]
            .clone();
        if mode == "unchanged" {
            assert_eq!(profiles(), before, "an unchanged source is not profiled");
            unchanged = true;
            break;
        }
        assert_eq!(profiles(), before + 1, "a checked source is profiled");
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(unchanged, "the change gate never held");
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&env.run_ok(&["status", "--json"]))).unwrap();
    let hpd = status
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "hpd_violations")
        .unwrap();
    // Anomalies are news: status shows the last profile's, and a profile that found the same far date
    // again found nothing new. What each sync found stays in the ledger's warnings and the reports.
    assert_eq!(hpd["quality"], serde_json::json!([]));
}

#[test]
fn quality_thresholds_come_from_the_catalog_and_are_checked() {
    let env = TestEnv::new();
    let base = std::fs::read_to_string(repo().join("fixtures/catalog.toml")).unwrap();
    let catalog = env.dir.path().join("catalog.toml");
    // Lenient: a fall of up to 50% and dates up to 200 years ahead are fine.
    std::fs::write(
        &catalog,
        format!("{base}\n[quality]\nrow_drop_percent = 50\nfuture_days = 73000\n"),
    )
    .unwrap();
    let cat = catalog.to_str().unwrap();
    env.run_ok(&["--catalog", cat, "sync"]);
    assert_eq!(quality_of(&env, "hpd_violations"), Vec::<String>::new());
    let all = env.emu.state().edit(HPD_VIOLATIONS, |e| e.dataset().ids());
    env.emu.state().edit(HPD_VIOLATIONS, |e| {
        for id in &all[..6] {
            e.delete(id);
        }
    });
    env.run_ok(&[
        "--catalog",
        cat,
        "sync",
        "--datasets",
        "hpd_violations",
        "--max-delete-percent",
        "50",
    ]);
    assert_eq!(quality_of(&env, "hpd_violations"), Vec::<String>::new());

    // Nonsense thresholds are a configuration error naming the field; nothing runs.
    for (bad, named) in [
        ("row_drop_percent = 150", "row_drop_percent"),
        ("filled_max_null = 0.9", "below emptied_min_null"),
        ("no_such = 1", "no_such"),
    ] {
        std::fs::write(&catalog, format!("{base}\n[quality]\n{bad}\n")).unwrap();
        let out = env.run(&["--catalog", cat, "sync"]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(named), "{bad}: {}", stderr(&out));
    }
}

/// Debian's Chromium, which `.ci/run` installs.
fn chromium() -> Option<&'static str> {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(p).exists() {
            return Some(p);
        }
    }
    eprintln!(
        "SKIPPED the browser test: no Chromium (Debian's chromium package; .ci/run installs it)"
    );
    None
}

/// Runs headless Chromium on `url` with `args`; returns (stdout, the console lines it logged).
fn chromium_run(
    bin: &str,
    profile: &std::path::Path,
    url: &str,
    args: &[&str],
) -> (String, Vec<String>) {
    let out = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            // Long enough for the page's script to run (and its first live refresh to be sent).
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some(bin) = chromium() else { return };
    let env = synced();
    // A failing dataset too, so that the page shows more than one state.
    fail_ecb_violations(&env, &["sync", "--force", "--datasets", "ecb_violations"]);
    let srv = serve(&env, &["--allow-control"]);
    let base = format!("http://{}", srv.addr);
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();

    // The DOM after the page's script ran: the expected datasets and states, no console message at all
    // (a script error or a refused inline style would log one).
    let (dom, console) = chromium_run(bin, profile.path(), &format!("{base}/"), &["--dump-dom"]);
    assert!(
        console.is_empty(),
        "console messages on the overview: {console:#?}"
    );
    for (key, _) in FIXTURES {
        let state = if key == "ecb_violations" {
            "failing"
        } else {
            "fresh"
        };
        assert!(
            dom.contains(&format!("data-dataset=\"{key}\" data-state=\"{state}\"")),
            "{key} is {state} in the browser's DOM"
        );
    }
    assert!(dom.contains("id=\"live\""), "the live panel");
    let (dom, console) = chromium_run(
        bin,
        profile.path(),
        &format!("{base}/datasets/every_type"),
        &["--dump-dom"],
    );
    assert!(
        console.is_empty(),
        "console messages on a dataset page: {console:#?}"
    );
    // The script ran: it shows the copy button it hides from script-less browsers.
    assert!(
        dom.contains("data-copy=\"query\">Copy</button>")
            && !dom.contains("data-copy=\"query\" hidden"),
        "the copy button is shown by the script"
    );
    let (_, console) = chromium_run(
        bin,
        profile.path(),
        &format!("{base}/runs/1"),
        &["--dump-dom"],
    );
    assert!(
        console.is_empty(),
        "console messages on a run page: {console:#?}"
    );

    // Screenshots at a phone's width and a desktop's, kept for a person to look at.
    for (name, size) in [("phone", "390,1600"), ("desktop", "1280,1000")] {
        for (page, path) in [
            ("overview", "/"),
            ("dataset", "/datasets/hpd_violations"),
            ("run", "/runs/1"),
        ] {
            let file = shots.join(format!("{page}-{name}.png"));
            let _ = std::fs::remove_file(&file);
            chromium_run(
                bin,
                profile.path(),
                &format!("{base}{path}"),
                &[
                    &format!("--window-size={size}"),
                    &format!("--screenshot={}", file.display()),
                ],
            );
            let png = std::fs::read(&file).unwrap_or_default();
            assert!(
                png.starts_with(b"\x89PNG") && png.len() > 10_000,
                "{} is a real screenshot",
                file.display()
            );
        }
    }
    eprintln!("screenshots in {}", shots.display());
}

#[test]
fn the_live_panel_shows_a_run_of_another_process_while_it_runs() {
    let env = synced();
    let srv = serve(&env, &[]);
    let a = srv.addr.as_str();
    let idle = get(a, "/fragment/live");
    assert!(idle.body.contains("data-running=\"0\""), "{}", idle.body);
    // A slow sync in another process (as cron's would be): pages of 5 rows, 400 ms apart.
    let mut sync = env.spawn_slow_sync(60);
    let deadline = Instant::now() + Duration::from_secs(60);
    let live = loop {
        let r = get(a, "/fragment/live");
        if r.body.contains("data-running=\"1\"") && r.body.contains(">dob_violations</a>") {
            break r.body;
        }
        assert!(
            Instant::now() < deadline,
            "the run never showed: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        live.contains("MB/s") && live.contains("In flight"),
        "{live}"
    );
    assert!(get(a, "/").body.contains("data-running=\"1\""));
    assert!(get(a, "/metrics").body.contains("dobsob_run_in_progress 1"));
    assert_eq!(sync.wait().unwrap().code(), Some(0));
    assert!(get(a, "/fragment/live").body.contains("data-running=\"0\""));
    assert!(get(a, "/runs").body.contains("href=\"/runs/2\""));
}

#[test]
fn a_ledger_of_the_dobsob_before_profiles_is_migrated_not_refused_by_status_and_the_dashboard() {
    let env = synced();
    // The ledger as the previous dobsob left it: schema version 3, no profiles, columns or requests.
    env.ledger()
        .execute_batch(
            "DROP TABLE profiles; DROP TABLE columns; ALTER TABLE attempts DROP COLUMN requests;
             PRAGMA user_version = 3;",
        )
        .unwrap();
    let text = stdout(&env.run_ok(&["status", "--prometheus"]));
    assert_eq!(
        sample(&text, "dobsob_dataset_rows{dataset=\"hpd_violations\"}"),
        Some(50.0)
    );
    let version: i64 = env
        .ledger()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4, "migrated as a sync would");
    let srv = serve(&env, &[]);
    for p in [
        "/",
        "/runs",
        "/runs/1",
        "/datasets/hpd_violations",
        "/metrics",
    ] {
        assert_eq!(get(&srv.addr, p).status, 200, "{p}");
    }
}
