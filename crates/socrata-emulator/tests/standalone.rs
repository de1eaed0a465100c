//! The standalone `socrata-emulator` binary, run as a user would (the root package's tests sync from it).

use std::process::{Command, Output};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
}

#[test]
fn outside_the_repository_it_asks_for_fixtures_and_checks_ids() {
    let emulator = env!("CARGO_BIN_EXE_socrata-emulator");
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(emulator)
        .current_dir(elsewhere.path())
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--fixtures"), "{}", stderr(&out));
    let out = Command::new(emulator)
        .current_dir(elsewhere.path())
        .args(["--port", "0", "--synthetic", "bench-0001:10"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("not a Socrata dataset id"),
        "{}",
        stderr(&out)
    );
    let help = String::from_utf8_lossy(
        &Command::new(emulator)
            .arg("--help")
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(help.contains("bnch-0001:1000000"), "{help}");
}
