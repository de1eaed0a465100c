//! A local Socrata portal serving `fixtures/` (or generated data) on loopback, for offline trials and
//! benchmarks. See the `socrata_emulator` library for what it emulates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use socrata_emulator::{synthetic, synthetic_hpd, synthetic_wide, Emulator, State};

const AFTER_HELP: &str = "\
Examples (from the repository):
  socrata-emulator --port 8080
      the fixture datasets (fixtures/catalog.toml is their catalog)
  socrata-emulator --port 8080 --synthetic bnch-0001:1000000 --columns 46
      a million generated rows, 46 columns wide; fixtures/synthetic-catalog.toml is its catalog:
      dobsob --data-dir bench-data --portal http://127.0.0.1:8080 --catalog fixtures/synthetic-catalog.toml sync";

/// Serve Socrata datasets from a fixtures folder on 127.0.0.1, with the real API's awkward behaviour.
#[derive(Parser)]
#[command(name = "socrata-emulator", version, after_help = AFTER_HELP)]
struct Args {
    /// Folder of datasets: one subfolder per dataset id holding view.json and rows.jsonl. Default:
    /// ./fixtures (run from the repository); with --synthetic and no ./fixtures, only generated datasets.
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    /// Port on 127.0.0.1 (0 picks a free one; the chosen address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Also serve a generated dataset: ID:ROWS, with ID a Socrata id ("4x4"), e.g. bnch-0001:1000000.
    #[arg(long, value_name = "ID:ROWS")]
    synthetic: Vec<String>,
    /// Generate the --synthetic datasets this many columns wide, shaped like HPD violations (free text with
    /// quotes and newlines, 15-place decimals, dates, points), as the benchmark does; without it, the
    /// 14-column generator.
    #[arg(long, value_name = "N", conflicts_with = "realistic")]
    columns: Option<usize>,
    /// Generate the --synthetic datasets as HPD violations' real rows look: its 46 columns, 6-place
    /// coordinates, mostly empty certify-by dates, about 700 bytes a row (`synthetic_hpd`).
    #[arg(long)]
    realistic: bool,
    /// Answer 403 to requests without this X-App-Token.
    #[arg(long, value_name = "TOKEN")]
    require_token: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let default = PathBuf::from("fixtures");
    let fixtures = match &args.fixtures {
        Some(dir) => Some(dir.clone()),
        None if default.is_dir() => Some(default),
        None if !args.synthetic.is_empty() => None,
        None => {
            eprintln!(
                "error: no ./fixtures folder here: run from the repository, pass --fixtures DIR (the \
                 repository's fixtures/), or serve generated data only with --synthetic ID:ROWS"
            );
            return ExitCode::from(2);
        }
    };
    let loaded = match &fixtures {
        Some(dir) => State::from_fixtures(dir),
        None => Ok(State::default()),
    };
    let mut state = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot load fixtures: {e} (--fixtures DIR names the folder)");
            return ExitCode::from(2);
        }
    };
    for s in &args.synthetic {
        let parsed = s
            .split_once(':')
            .and_then(|(id, n)| Some((id, n.parse::<u64>().ok()?)));
        let Some((id, rows)) = parsed else {
            eprintln!("error: --synthetic {s:?}: expected ID:ROWS, e.g. bnch-0001:1000000");
            return ExitCode::from(2);
        };
        if !is_four_by_four(id) {
            eprintln!(
                "error: --synthetic {s:?}: id {id:?} is not a Socrata dataset id like \"3h2n-5cm9\" \
                 (the portal names every dataset so, and dobsob's catalog accepts only such ids)"
            );
            return ExitCode::from(2);
        }
        state.add_dataset(match args.columns {
            _ if args.realistic => synthetic_hpd(id, rows),
            Some(width) => synthetic_wide(id, rows, width),
            None => synthetic(id, rows),
        });
    }
    state.required_token = args.require_token;
    let ids: Vec<String> = state.datasets.keys().cloned().collect();
    match Emulator::start(state, args.port) {
        Ok(emu) => {
            println!(
                "socrata-emulator listening on {} serving {}",
                emu.url(),
                ids.join(", ")
            );
            emu.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", args.port);
            ExitCode::from(2)
        }
    }
}

/// A Socrata dataset id ("4x4"): four lowercase letters or digits, a dash, four more, as the portal's URLs
/// name its datasets.
fn is_four_by_four(id: &str) -> bool {
    let b = id.as_bytes();
    let part = |r: &[u8]| {
        r.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    b.len() == 9 && b[4] == b'-' && part(&b[..4]) && part(&b[5..])
}
