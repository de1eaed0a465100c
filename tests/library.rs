//! The orchestrator used as a library, as the original guide's custom-job example: a plan of catalog jobs and
//! hand-made ones, run against the emulator, the report returned, nothing printed. One test in this binary,
//! so that nothing else writes to the process's stdout or stderr while it watches them.

mod support;

use std::os::fd::AsRawFd;
use std::time::Duration;

use dobsob_engine::catalog::{Catalog, Priority};
use dobsob_engine::sync::{Outcome, Shutdown};
use dobsob_engine::{Config, Job, Orchestrator, Plan};
use support::*;

/// Runs `f` with this process's stdout and stderr (the file descriptors, so anything at all) sent to a
/// file; returns what was written there.
fn captured<T>(f: impl FnOnce() -> T) -> (T, String) {
    let file = tempfile::tempfile().unwrap();
    let saved = unsafe { [libc::dup(1), libc::dup(2)] };
    unsafe {
        libc::dup2(file.as_raw_fd(), 1);
        libc::dup2(file.as_raw_fd(), 2);
    }
    let out = f();
    unsafe {
        libc::dup2(saved[0], 1);
        libc::dup2(saved[1], 2);
        libc::close(saved[0]);
        libc::close(saved[1]);
    }
    let mut file = file;
    let mut text = String::new();
    use std::io::{Read, Seek};
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    (out, text)
}

#[test]
fn a_plan_of_catalog_and_hand_made_jobs_runs_silently_and_returns_its_report() {
    let env = TestEnv::new();
    let catalog = Catalog::load(Some(&repo().join("fixtures/catalog.toml"))).unwrap();
    let ecb = catalog.get("ecb_violations").unwrap().clone();
    let plan = Plan::new(vec![
        Job::custom("violations_by_hand", DOB_VIOLATIONS)
            .unwrap()
            .priority(Priority::Low),
        Job::new(ecb).force(true),
        Job::custom("types", EVERY_TYPE)
            .unwrap()
            .priority(Priority::Critical)
            .size_mb(500),
    ]);
    let keys: Vec<&str> = plan.jobs.iter().map(|j| j.dataset.key.as_str()).collect();
    assert_eq!(
        keys,
        ["ecb_violations", "types", "violations_by_hand"],
        "priority order, then the smaller first"
    );
    assert!(Job::custom("Bad Key", DOB_VIOLATIONS).is_err());
    assert!(Job::custom("ok_key", "not-an-id").is_err());

    let mut config = Config::new(env.data_dir(), url::Url::parse(&env.emu.url()).unwrap());
    config.limits.throttle = Duration::ZERO;
    config.max_requests_per_second = 1000.0;
    config.retry.base_delay = Duration::from_millis(10);
    config.page_size = 20;
    let orchestrator = Orchestrator::new(config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = |rt: &tokio::runtime::Runtime| {
        rt.block_on(orchestrator.run(&plan, Shutdown::default()))
            .expect("the run happens")
    };

    let (first, printed) = captured(|| run(&rt));
    assert_eq!(printed, "", "the library prints nothing");
    assert_eq!(first.outcome, Outcome::Ok, "{first:?}");
    assert_eq!(first.completed().count(), 3);
    let order: Vec<&str> = first.datasets.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(order, keys, "reported in start order");
    env.assert_equal_to_source("violations_by_hand", DOB_VIOLATIONS);
    env.assert_equal_to_source("ecb_violations", ECB_VIOLATIONS);
    env.assert_equal_to_source("types", EVERY_TYPE);
    // The report file is the CLI's.
    let path = first.path.clone().expect("written");
    assert!(path.starts_with(env.data_dir().join("reports")));
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(on_disk, first.to_json());
    assert_eq!(on_disk["completed_jobs"]["types"]["priority"], "CRITICAL");
    assert_eq!(
        on_disk["performance_metrics"]["large_files_processed"], 2,
        "the custom 500 MB job and ecb_violations (300 MB in the catalog)"
    );
    // No logging was set up, so no log files either.
    assert!(!env.data_dir().join("logs").exists());

    // Again, nothing changed: the forced job syncs, the others stop at the change gate.
    let (second, printed) = captured(|| run(&rt));
    assert_eq!(printed, "");
    assert_eq!(second.outcome, Outcome::Ok);
    let ecb = second
        .completed()
        .find(|d| d.key == "ecb_violations")
        .expect("forced: synced although unchanged");
    assert_eq!(
        ecb.progress.mode,
        Some(dobsob_engine::sync::SyncMode::Incremental)
    );
    let skipped: Vec<&str> = second.skipped().map(|d| d.key.as_str()).collect();
    assert_eq!(skipped, ["types", "violations_by_hand"]);
    assert!(second.run_id > first.run_id);
}
