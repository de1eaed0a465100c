//! Proof at scale: random kills during sync and rebuild, and a seeded soak of random source mutations,
//! portal faults and quirks interleaved with syncs, the warehouse compared with the source after every
//! completed sync. `DOBSOB_SOAK_ROUNDS` (default 200) and `DOBSOB_SOAK_SEED` run it longer or replay a
//! failure; the seed is printed when a round fails.

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use socrata_emulator::{Fault, FaultKind};
use support::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints the seed and round if the test panics inside them.
struct Replay {
    seed: u64,
    round: u64,
}

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "soak failed in round {}; replay with DOBSOB_SOAK_SEED={} DOBSOB_SOAK_ROUNDS={}",
                self.round,
                self.seed,
                self.round + 1
            );
        }
    }
}

#[test]
fn kill_9_at_random_moments_of_sync_and_rebuild_then_rerun_equals_source() {
    let seeds = env_u64("DOBSOB_KILL_SEEDS", 6);
    for seed in 0..seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let env = TestEnv::new();
        let page = rng.random_range(3..8);
        let settle = rng.random_range(0..400);
        let command = if seed % 3 == 2 { "rebuild" } else { "sync" };
        // Rows the killed run would fetch: all of them for a first load or a rebuild, the changed ones for
        // an incremental pass. The stall falls on one of its pages.
        let mut rows = 50;
        if seed % 2 == 1 {
            env.run_ok(&["sync", "--datasets", "hpd_violations"]);
            let ids = env.emu.state().datasets[HPD_VIOLATIONS].ids();
            let changed = rng.random_range(10..40);
            env.emu.state().edit(HPD_VIOLATIONS, |e| {
                for id in ids.iter().take(changed) {
                    e.set(id, "class", Some(json!("K")));
                }
            });
            if command == "sync" {
                rows = changed;
            }
        }
        let stall = rng.random_range(1..=(rows / page).clamp(1, 4)) as u32;
        env.kill_mid_run(
            command,
            "hpd_violations",
            HPD_VIOLATIONS,
            page,
            stall,
            settle,
        );
        env.assert_ledger_not_ahead("hpd_violations");
        let out = env.run(&["sync", "--datasets", "hpd_violations", "--page-size", "4"]);
        assert_exit(&out, 0);
        env.assert_equal_to_source("hpd_violations", HPD_VIOLATIONS);
    }
}

/// A number as the portal may send one: small and huge integers, decimals of any scale, exponents, and
/// rarely one no number type holds.
fn random_number(rng: &mut StdRng) -> String {
    let digits = |rng: &mut StdRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect()
    };
    let sign = if rng.random_bool(0.3) { "-" } else { "" };
    match rng.random_range(0..100) {
        0..=29 => format!("{sign}{}", rng.random_range(0..100_000)),
        30..=54 => {
            let scale = rng.random_range(1..8);
            format!("{sign}{}.{}", rng.random_range(0..1000), digits(rng, scale))
        }
        55..=69 => {
            let n = rng.random_range(18..30);
            format!("{sign}1{}", digits(rng, n))
        }
        70..=84 => {
            let (m, e) = (rng.random_range(1..10), rng.random_range(-6..6));
            format!("{sign}{m}.{}e{e}", digits(rng, 2))
        }
        85..=97 => {
            let scale = rng.random_range(15..25);
            format!("{sign}{}.{}", rng.random_range(0..100), digits(rng, scale))
        }
        _ => format!("{sign}9{}.5", digits(rng, 40)),
    }
}

#[test]
fn soak_random_mutations_faults_and_quirks_keep_the_warehouse_equal_to_the_source() {
    let rounds = env_u64("DOBSOB_SOAK_ROUNDS", 200);
    let seed = env_u64("DOBSOB_SOAK_SEED", 20_261_201);
    let mut rng = StdRng::seed_from_u64(seed);
    let env = TestEnv::new();
    // Each target's text field and number field: numbers of every shape arrive over the rounds, so number
    // columns widen in place (BIGINT, HUGEINT, DECIMAL of growing scale, now and then text) between syncs.
    let targets = [
        (
            "hpd_violations",
            HPD_VIOLATIONS,
            "currentstatus",
            "latitude",
        ),
        ("every_type", EVERY_TYPE, "name", "amount"),
    ];
    let mut replay = Replay { seed, round: 0 };
    for round in 0..rounds {
        replay.round = round;
        for (_, id, field, number) in targets {
            let ids = env.emu.state().datasets[id].ids();
            let n = ids.len();
            env.emu.state().edit(id, |e| {
                // Updates stamped with one time (ties), inserts, hard deletes.
                for _ in 0..rng.random_range(0..6) {
                    let id = &ids[rng.random_range(0..n)];
                    if e.dataset()
                        .rows
                        .contains_key(&socrata_emulator::ids::decode(id).unwrap())
                    {
                        e.set(id, field, Some(json!(format!("R{round} \"q\", x\ny"))));
                    }
                }
                if rng.random_bool(0.5) && std::env::var("NONUM").is_err() {
                    let id = &ids[rng.random_range(0..n)];
                    if e.dataset()
                        .rows
                        .contains_key(&socrata_emulator::ids::decode(id).unwrap())
                    {
                        e.set(id, number, Some(json!(random_number(&mut rng))));
                    }
                }
                for _ in 0..rng.random_range(0..3) {
                    let mut r = serde_json::Map::new();
                    r.insert(field.into(), json!(format!("NEW {round}")));
                    e.insert(r);
                }
                for _ in 0..rng.random_range(0..2) {
                    let id = &ids[rng.random_range(0..n)];
                    if e.dataset()
                        .rows
                        .contains_key(&socrata_emulator::ids::decode(id).unwrap())
                    {
                        e.delete(id);
                    }
                }
                // A row that becomes visible late, inside or far behind the overlap window.
                if rng.random_bool(0.3) {
                    let mut r = serde_json::Map::new();
                    r.insert(field.into(), json!(format!("LATE {round}")));
                    e.insert_late(r, rng.random_range(0..4 * 3600 * 1000));
                }
                if rng.random_bool(0.04) {
                    e.replace_all();
                }
                if rng.random_bool(0.02) {
                    e.add_column(&format!("added_{round}"), "text");
                }
            });
        }
        {
            let mut st = env.emu.state();
            st.quirks.limit_cap = rng.random_bool(0.2).then(|| rng.random_range(2..9));
            if rng.random_bool(0.3) {
                let kind = match rng.random_range(0..4) {
                    0 => FaultKind::Status {
                        status: 500,
                        errorcode_shape: rng.random_bool(0.5),
                        retry_after: None,
                    },
                    1 => FaultKind::Status {
                        status: 429,
                        errorcode_shape: false,
                        retry_after: Some(0),
                    },
                    2 => FaultKind::CutAfter(rng.random_range(1..400)),
                    _ => FaultKind::Raw {
                        status: 502,
                        content_type: "text/html".into(),
                        headers: vec![],
                        body: "<html>Bad Gateway</html>".into(),
                    },
                };
                st.faults.push(
                    Fault::on("/resource/", kind)
                        .skip(rng.random_range(0..4))
                        .times(rng.random_range(1..3)),
                );
            }
        }
        let page = rng.random_range(3..15).to_string();
        let out = env.run(&[
            "sync",
            "--datasets",
            "hpd_violations,every_type",
            "--page-size",
            &page,
            "--max-retries",
            "8",
        ]);
        assert_exit(&out, 0);
        for (key, id, _, _) in targets {
            env.assert_equal_to_source(key, id);
        }
        env.emu.state().faults.clear();
    }
}
