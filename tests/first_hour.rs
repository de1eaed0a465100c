//! A new user's first hour: every documented command does what the docs say, mistakes get a hint, and
//! nothing surprising happens to the data. The real `dobsob` and `socrata-emulator` binaries, with the
//! in-process emulator as the portal.

mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::*;

/// `dobsob ARGS` on this env's data directory, without the catalog and portal the other tests always give:
/// what a user types after the first sync.
fn bare(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dobsob"));
    c.env_remove("SOCRATA_APP_TOKEN")
        .env_remove("RUST_LOG")
        .env_remove("DOBSOB_CATALOG")
        .env_remove("DOBSOB_PORTAL")
        .env("DOBSOB_DATA_DIR", env.data_dir())
        .args(args);
    c.output().expect("dobsob runs")
}

fn keys(status_json: &str) -> Vec<String> {
    let v: Vec<Value> = serde_json::from_str(status_json).expect("JSON");
    let mut k: Vec<String> = v
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

fn fixture_keys() -> Vec<String> {
    let mut k: Vec<String> = FIXTURES.iter().map(|(k, _)| k.to_string()).collect();
    k.sort();
    k
}

#[test]
fn a_data_directory_remembers_the_catalog_and_portal_that_filled_it() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(env.data_dir().join("source.json")).unwrap())
            .unwrap();
    assert_eq!(
        recorded["catalog"].as_str().unwrap(),
        repo().join("fixtures/catalog.toml").to_str().unwrap()
    );
    assert!(
        recorded["portal"]
            .as_str()
            .unwrap()
            .starts_with(env.emu.url().as_str()),
        "{recorded}"
    );

    // Without --catalog and --portal: the recorded ones, said so; not the 18 NYC datasets.
    let out = bare(&env, &["status", "--json"]);
    assert_exit(&out, 0);
    assert_eq!(keys(&stdout(&out)), fixture_keys());
    assert!(
        stderr(&out).contains("using the catalog")
            && stderr(&out).contains("fixtures/catalog.toml"),
        "{}",
        stderr(&out)
    );
    // verify asks the emulator, not data.cityofnewyork.us.
    let before = env.requests_for(DOB_VIOLATIONS);
    let out = bare(&env, &["verify", "--datasets", "dob_violations"]);
    assert_exit(&out, 0);
    assert!(env.requests_for(DOB_VIOLATIONS) > before);
    // The crontab runs the nightly job on the same source.
    let cron = stdout(&bare(&env, &["cron"]));
    assert!(
        cron.contains("fixtures/catalog.toml")
            && cron.contains(&format!("--portal {}", env.emu.url())),
        "{cron}"
    );

    // Another catalog or portal is an error naming both and the way out; nothing is written.
    let nyc = env.dir.path().join("nyc-copy.toml");
    std::fs::write(&nyc, dobsob_engine::catalog::BUILTIN_CATALOG).unwrap();
    let out = bare(&env, &["--catalog", nyc.to_str().unwrap(), "status"]);
    assert_exit(&out, 2);
    let e = stderr(&out);
    assert!(
        e.contains("was filled from the catalog")
            && e.contains("nyc-copy.toml")
            && e.contains("--switch-source"),
        "{e}"
    );
    let out = bare(&env, &["--portal", "http://127.0.0.1:1", "sync"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("names the portal http://127.0.0.1:1/"),
        "{}",
        stderr(&out)
    );
    let out = bare(&env, &["--catalog", nyc.to_str().unwrap(), "sync"]);
    assert_exit(&out, 2);
    assert_eq!(
        serde_json::from_str::<Value>(
            &std::fs::read_to_string(env.data_dir().join("source.json")).unwrap()
        )
        .unwrap(),
        recorded,
        "a refused command records nothing"
    );
    // A copy of the same catalog is the same catalog.
    let copy = env.dir.path().join("copy.toml");
    std::fs::copy(repo().join("fixtures/catalog.toml"), &copy).unwrap();
    assert_exit(
        &bare(&env, &["--catalog", copy.to_str().unwrap(), "status"]),
        0,
    );
    // With --switch-source the user says so: the built-in catalog, nothing of it synced yet.
    let out = bare(
        &env,
        &[
            "--catalog",
            nyc.to_str().unwrap(),
            "--switch-source",
            "status",
            "--json",
        ],
    );
    assert_exit(&out, 0);
    assert_eq!(keys(&stdout(&out)).len(), 18);

    // `dobsob catalog` shows another catalog without complaint; `--catalog builtin` names the built-in one.
    let out = bare(&env, &["--catalog", nyc.to_str().unwrap(), "catalog"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("18 datasets from"),
        "{}",
        stdout(&out)
    );
    let out = bare(
        &env,
        &[
            "--catalog",
            "builtin",
            "--switch-source",
            "status",
            "--json",
        ],
    );
    assert_exit(&out, 0);
    assert_eq!(keys(&stdout(&out)).len(), 18);

    // Switching the portal reloads in full: the old watermarks belong to the old portal. So it covers the
    // whole catalog in one run.
    let other = socrata_emulator::Emulator::start(
        socrata_emulator::State::from_fixtures(&repo().join("fixtures")).unwrap(),
        0,
    )
    .unwrap();
    let out = env
        .cmd(&[
            "--portal",
            other.url().as_str(),
            "--switch-source",
            "sync",
            "--datasets",
            "dob_violations",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("reloads every dataset of the catalog"),
        "{}",
        stderr(&out)
    );
    let out = env
        .cmd(&[
            "--portal",
            other.url().as_str(),
            "--switch-source",
            "sync",
            "--throttle",
            "0",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let report = env.last_report();
    for job in jobs(&report) {
        assert_eq!(job["mode"], "full", "{job}");
    }
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(env.data_dir().join("source.json")).unwrap())
            .unwrap();
    assert!(recorded["portal"]
        .as_str()
        .unwrap()
        .starts_with(other.url().as_str()));
}

#[test]
fn report_sees_a_run_in_progress_and_lists_the_runs() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let mut child = env.spawn_slow_sync(40);
    // Wait until run 2 has committed a page.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let pages: i64 = env
            .ledger()
            .query_row(
                "SELECT count(*) FROM pages p JOIN attempts a ON a.id = p.attempt_id WHERE a.run_id = 2",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if pages > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run 2 never committed a page"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let last = stdout(&env.run_ok(&["report", "--last"]));
    assert!(last.starts_with("run 2: sync started"), "{last}");
    assert!(last.contains("still running"), "{last}");
    assert!(last.contains("dob_violations  running"), "{last}");
    let two = stdout(&env.run_ok(&["report", "2"]));
    assert!(two.starts_with("run 2:"), "{two}");
    let list = stdout(&env.run_ok(&["report", "--list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines[1].starts_with("2 ") && lines[1].contains("running"),
        "{list}"
    );
    assert!(
        lines[2].starts_with("1 ") && lines[2].contains("5 synced, 0 failed"),
        "{list}"
    );
    assert!(child.wait().unwrap().success());
    let list = stdout(&env.run_ok(&["report", "--list", "--json"]));
    let runs: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(runs[0]["run_id"], 2);
    assert_eq!(runs[0]["outcome"], "ok");
    assert_eq!(runs[0]["counts"]["synced"], 1, "{list}");
}

#[test]
fn dry_run_and_verify_ask_the_portal_and_say_once_when_it_is_unreachable() {
    let env = TestEnv::new();
    // A dry run asks for each due dataset's metadata, loaded or not.
    let out = env.run_ok(&["sync", "--dry-run"]);
    for (key, id) in FIXTURES {
        assert_eq!(env.requests_for(id), 1, "{key}: {}", stdout(&out));
    }
    assert!(!env.data_dir().exists(), "a dry run writes nothing");
    let closed = "http://127.0.0.1:1";
    let out = env.run(&[
        "--portal",
        closed,
        "sync",
        "--dry-run",
        "--max-retries",
        "0",
    ]);
    assert_exit(&out, 1);
    assert_eq!(
        stderr(&out).matches("cannot reach the portal").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert!(
        !stdout(&out).contains("full load"),
        "no plan as if all were well"
    );

    env.run_ok(&["sync"]);
    let started = std::time::Instant::now();
    let out = env.run(&["--portal", closed, "--switch-source", "verify"]);
    assert_exit(&out, 1);
    assert_eq!(
        stderr(&out).matches("cannot reach the portal").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "one dataset's retries, not five"
    );
    // verify says what it compared.
    let plain = stdout(&env.run_ok(&["verify", "--datasets", "dob_violations"]));
    assert!(
        plain.contains("row count and newest :updated_at match"),
        "{plain}"
    );
    let deep = stdout(&env.run_ok(&["verify", "--deep", "--datasets", "dob_violations"]));
    assert!(
        deep.contains("every row's :id, :updated_at and :version match"),
        "{deep}"
    );
}

#[test]
fn status_and_the_warehouse_view_give_the_same_due_time() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let status: Vec<Value> =
        serde_json::from_str(&stdout(&env.run_ok(&["status", "--json"]))).unwrap();
    let conn = env.warehouse();
    for s in &status {
        let key = s["key"].as_str().unwrap();
        let next = chrono::DateTime::parse_from_rfc3339(s["next_due_at"].as_str().unwrap())
            .unwrap()
            .timestamp();
        let last = chrono::DateTime::parse_from_rfc3339(s["last_success_at"].as_str().unwrap())
            .unwrap()
            .timestamp();
        // As text: DuckDB's TIMESTAMPTZ arithmetic needs the ICU extension, which is not here.
        let (due, stale_at): (String, String) = conn
            .query_row(
                "SELECT CAST(due_at AS VARCHAR), CAST(stale_at AS VARCHAR) FROM dobsob_datasets WHERE key = ?",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let epoch = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(&format!("{}:00", t.replacen(' ', "T", 1)))
                .unwrap_or_else(|e| panic!("{t}: {e}"))
                .timestamp()
        };
        let (due, stale_at) = (epoch(&due), epoch(&stale_at));
        assert!((due - next).abs() <= 1, "{key}: view {due}, status {next}");
        let period = if s["frequency"] == "daily" {
            86_400
        } else {
            7 * 86_400
        };
        assert!(
            (next - (last + period - 3600)).abs() <= 1,
            "{key}: due = last + period - grace"
        );
        assert!(
            (stale_at - (last + period)).abs() <= 1,
            "{key}: stale = last + period"
        );
    }
}

#[test]
fn rebuild_takes_only_its_own_flags_and_must_be_told_which_datasets() {
    let env = TestEnv::new();
    for flag in [
        "--generate-cron",
        "--schedule-check",
        "--incremental-only",
        "--force",
        "--retry-failed",
    ] {
        let out = env.run(&["rebuild", "--all", flag]);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("unexpected argument"),
            "{flag}: {}",
            stderr(&out)
        );
    }
    let help = stdout(&env.run_ok(&["rebuild", "--help"]));
    assert!(
        !help.contains("--schedule-check") && help.contains("--datasets"),
        "{help}"
    );
    let out = env.run(&["rebuild"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("--all for every dataset"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.full_rows_served(DOB_VIOLATIONS),
        0,
        "nothing downloaded"
    );
    let out = env.run_ok(&["rebuild", "--all"]);
    assert!(
        stdout(&out).contains("5 datasets: 5 synced"),
        "{}",
        stdout(&out)
    );
    env.assert_all_equal_to_source();
}

#[test]
fn a_wrong_data_directory_is_named_with_exit_2() {
    let env = TestEnv::new();
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for cmd in [
        &["status"][..],
        &["sync"],
        &["verify"],
        &["report"],
        &["cron"],
    ] {
        let out = env.cmd(cmd).env("DOBSOB_DATA_DIR", &file).output().unwrap();
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("not a directory"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    for cmd in [&["status"][..], &["verify"], &["report"]] {
        let out = env.run(cmd);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("no data directory at")
                && stderr(&out).contains("run `dobsob sync` first"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    assert!(!env.data_dir().exists());
}

#[test]
fn the_crontab_line_runs_for_a_data_directory_not_made_yet() {
    let env = TestEnv::new();
    let out = env.run_ok(&["cron"]);
    let line = stdout(&out)
        .lines()
        .find(|l| l.contains("--schedule-check"))
        .unwrap()
        .to_string();
    assert!(
        env.data_dir().join("logs").is_dir(),
        "cron made the log directory"
    );
    // Run the nightly line as cron would: sh, the five time fields dropped.
    let command: String = line.split(' ').skip(5).collect::<Vec<_>>().join(" ");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{command} --retry-base-ms 10 --throttle 0"))
        .env_remove("DOBSOB_DATA_DIR")
        .env_remove("DOBSOB_CATALOG")
        .env_remove("DOBSOB_PORTAL")
        .status()
        .unwrap();
    // The flags after the redirection go to dobsob too: sh puts them on its command line.
    assert!(status.success());
    let log = std::fs::read_to_string(env.data_dir().join("logs/cron.log")).unwrap();
    assert!(log.contains("5 datasets: 5 synced"), "{log}");
    env.assert_all_equal_to_source();
    let systemd = stdout(&env.run_ok(&["cron", "--systemd"]));
    assert!(
        systemd.contains("dobsob-weekly.timer") && systemd.contains("sync --force --primary -q"),
        "{systemd}"
    );
}

#[test]
fn mistakes_get_a_hint() {
    let env = TestEnv::new();
    let out = env.run(&["--portal", "127.0.0.1:8080", "status"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("did you mean http://127.0.0.1:8080?"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["--portal", "http://127.0.0.1:8080/api", "sync"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("did you mean http://127.0.0.1:8080?"),
        "{}",
        stderr(&out)
    );
    // The help keeps each option under its own heading, and the exit codes whole.
    let help = stdout(&env.run_ok(&["status", "--help"]));
    let datasets = help.split("Datasets (pick one):").nth(1).unwrap();
    let datasets = datasets.split("\n\n").next().unwrap();
    assert!(
        !datasets.contains("--json") && !datasets.contains("--check"),
        "{help}"
    );
    let help = stdout(&env.run_ok(&["--help"]));
    assert!(help.contains("  130  interrupted"), "{help}");
}

#[test]
fn the_standalone_emulators_example_syncs_outside_the_repository() {
    let emulator = support::emulator_bin();
    let elsewhere = tempfile::tempdir().unwrap();
    // Synthetic only, outside the repository: it starts, and the ready catalog syncs from it.
    let mut child = Command::new(&emulator)
        .current_dir(elsewhere.path())
        .args(["--port", "0", "--synthetic", "bnch-0001:2500"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let data = elsewhere.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_dobsob"))
        .env_remove("DOBSOB_CATALOG")
        .env_remove("DOBSOB_PORTAL")
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--portal",
            &url,
            "--catalog",
        ])
        .arg(repo().join("fixtures/synthetic-catalog.toml"))
        .args(["sync", "--throttle", "0", "-q"])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("1 dataset: 1 synced"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn catalog_lists_the_datasets_and_prints_a_file_to_start_from() {
    let env = TestEnv::new();
    let out = stdout(&env.run_ok(&["catalog"]));
    for (key, id) in FIXTURES {
        assert!(
            out.lines().any(|l| l.starts_with(key) && l.contains(id)),
            "{out}"
        );
    }
    // The built-in catalog, on a data directory of its own: the text compiled in, comments and all.
    let fresh = tempfile::tempdir().unwrap();
    let builtin = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dobsob"))
            .env_remove("DOBSOB_CATALOG")
            .env_remove("DOBSOB_PORTAL")
            .env("DOBSOB_DATA_DIR", fresh.path().join("d"))
            .args(args)
            .output()
            .unwrap()
    };
    let toml = stdout(&builtin(&["catalog", "--toml"]));
    assert_eq!(
        toml.trim_end(),
        dobsob_engine::catalog::BUILTIN_CATALOG.trim_end()
    );
    let json: Vec<Value> = serde_json::from_str(&stdout(&builtin(&["catalog", "--json"]))).unwrap();
    assert_eq!(json.len(), 18);
    assert!(json.iter().all(|d| d["id"].as_str().unwrap().len() == 9));
    // What --toml printed is a catalog dobsob takes.
    let mine = fresh.path().join("mine.toml");
    std::fs::write(&mine, &toml).unwrap();
    let out = builtin(&["--catalog", mine.to_str().unwrap(), "catalog"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("18 datasets from"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unchanged_night_says_unchanged_not_ok() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let out = stdout(&env.run_ok(&["sync"]));
    assert!(
        out.contains("5 datasets: 0 synced, 0 failed, 5 unchanged."),
        "{out}"
    );
    let report = stdout(&env.run_ok(&["report"]));
    assert!(
        report.contains(": ok (0 synced, 0 failed, 5 unchanged)"),
        "{report}"
    );
}

#[test]
fn a_recorded_catalog_that_is_gone_is_named_and_stops_only_the_commands_that_need_it() {
    let env = TestEnv::new();
    let catalog = env.dir.path().join("trial.toml");
    std::fs::copy(repo().join("fixtures/catalog.toml"), &catalog).unwrap();
    let out = env
        .cmd(&["sync", "--datasets", "dob_violations", "--throttle", "0"])
        .env("DOBSOB_CATALOG", &catalog)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    std::fs::remove_file(&catalog).unwrap();
    let out = bare(&env, &["status"]);
    assert_exit(&out, 2);
    let e = stderr(&out);
    assert!(
        e.contains("was filled from the catalog")
            && e.contains("trial.toml")
            && e.contains("--catalog FILE"),
        "{e}"
    );
    // sql and report use neither catalog nor portal.
    let out = bare(
        &env,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM dob_violations",
        ],
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "n\n45\n");
    assert_exit(&bare(&env, &["report"]), 0);
}

#[test]
fn the_built_in_catalog_of_another_dobsob_version_is_the_same_catalog() {
    let env = TestEnv::new();
    std::fs::create_dir(env.data_dir()).unwrap();
    // What an older dobsob with another built-in catalog text recorded.
    std::fs::write(
        env.data_dir().join("source.json"),
        r#"{"catalog": null, "catalog_sha256": "0000", "portal": "https://data.cityofnewyork.us/"}"#,
    )
    .unwrap();
    let out = bare(&env, &["status", "--json"]);
    assert_exit(&out, 0);
    assert_eq!(keys(&stdout(&out)).len(), 18);
    assert!(
        !stderr(&out).contains("using"),
        "nothing to say: {}",
        stderr(&out)
    );
    // A source record that is not one is named.
    std::fs::write(env.data_dir().join("source.json"), "{").unwrap();
    let out = bare(&env, &["status"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("source.json is not a dobsob source record"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_dry_run_says_what_the_run_then_does() {
    let env = TestEnv::new();
    let four = "dob_violations,dob_complaints,hpd_violations,ecb_violations";
    env.run_ok(&[
        "sync",
        "--datasets",
        "dob_violations,dob_complaints,hpd_violations",
    ]);
    // A publisher's full replace; a rebuild and a first load killed half-way (only the working database
    // knows: a killed run publishes nothing); dob_violations unchanged.
    env.emu.state().edit(DOB_COMPLAINTS, |e| e.replace_all());
    env.kill_mid_run("rebuild", "hpd_violations", HPD_VIOLATIONS, 10, 2, 300);
    env.kill_mid_run("sync", "ecb_violations", ECB_VIOLATIONS, 10, 2, 300);

    let plan = stdout(&env.run_ok(&["sync", "--dry-run", "--datasets", four]));
    let line = |key: &str| {
        plan.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key}: {plan}"))
            .to_string()
    };
    assert!(
        line("dob_complaints").contains("full load (the publisher replaced about every row)"),
        "{plan}"
    );
    for key in ["hpd_violations", "ecb_violations"] {
        assert!(
            line(key).contains("full load (resuming an interrupted full load)"),
            "{plan}"
        );
    }
    assert!(
        line("dob_violations").contains("skip: source unchanged"),
        "{plan}"
    );

    // The run does just that.
    let out = env.run_ok(&["sync", "--datasets", four, "--page-size", "10"]);
    let modes: std::collections::BTreeMap<String, String> = jobs(&env.last_report())
        .iter()
        .map(|j| {
            (
                j["key"].as_str().unwrap().to_string(),
                j["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(modes["dob_complaints"], "full");
    assert_eq!(modes["hpd_violations"], "full");
    assert_eq!(modes["ecb_violations"], "full");
    assert_eq!(modes["dob_violations"], "unchanged");
    assert_eq!(
        stderr(&out)
            .matches("resuming the interrupted full load")
            .count(),
        2,
        "{}",
        stderr(&out)
    );
    for (key, id) in FIXTURES.iter().take(4) {
        env.assert_equal_to_source(key, id);
    }

    // A resumed load's size is the whole load's, not the resumed part's (it decides --max-large).
    let ledger =
        dobsob_engine::ledger::Ledger::open(&env.data_dir().join("ledger.sqlite")).unwrap();
    let (whole, last): (i64, i64) = env
        .ledger()
        .query_row(
            "SELECT sum(bytes), (SELECT bytes FROM attempts WHERE dataset_key = 'hpd_violations'
                                 ORDER BY id DESC LIMIT 1)
             FROM attempts WHERE dataset_key = 'hpd_violations' AND mode = 'full' AND run_id > 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        whole > last,
        "the killed part counts too: {whole} vs {last}"
    );
    assert_eq!(
        ledger.last_full_load_bytes("hpd_violations").unwrap(),
        Some(whole)
    );
}
