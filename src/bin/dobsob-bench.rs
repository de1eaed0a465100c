//! The benchmark: a full and an incremental sync of a generated dataset served by the emulator, measured on
//! the real `dobsob` binary, against a baseline measured in the same run: plain keyset download of the same
//! pages to disk (HTTP + a file + finding the next cursor), with no checking or loading.
//!
//! Run: `cargo run --release --bin dobsob-bench [-- --rows N --page-size N] [-- SYNC_ARGS]`

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dobsob::emulator::{synthetic, Emulator, State};
use dobsob::soda::{PageQuery, RetryPolicy, SodaClient};

const ID: &str = "bnch-0001";

#[derive(Parser)]
#[command(name = "dobsob-bench")]
struct Args {
    /// Rows in the generated dataset.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows per request, for dobsob and the baseline alike.
    #[arg(long, default_value_t = 50_000)]
    page_size: u64,
    /// Percent of rows changed before the incremental sync.
    #[arg(long, default_value_t = 1.0)]
    change_percent: f64,
    /// Extra arguments for `dobsob sync` after `--`, e.g. `-- --overlap 0 --late-window 0` to measure what
    /// the late-row guards cost.
    #[arg(last = true, value_name = "SYNC_ARGS")]
    sync_args: Vec<String>,
}

/// The baseline: keyset pages streamed to disk; the only parsing is finding the last `:id` for the cursor.
async fn baseline(url: &str, page_size: u64, dir: &Path) -> (u64, u64) {
    let client = SodaClient::new(
        &url::Url::parse(url).unwrap(),
        None,
        RetryPolicy::default(),
        Duration::from_secs(300),
    )
    .unwrap();
    let path = dir.join("baseline.csv");
    let (mut rows, mut bytes, mut cursor) = (0u64, 0u64, None::<String>);
    loop {
        let q = PageQuery::full_page(cursor.as_deref(), page_size);
        let dl = client
            .download_csv(ID, &q, &path)
            .await
            .expect("baseline page");
        bytes += dl.bytes;
        let mut rdr = csv::Reader::from_path(&path).unwrap();
        let id_col = rdr
            .headers()
            .unwrap()
            .iter()
            .position(|h| h == ":id")
            .unwrap();
        let (mut n, mut last) = (0u64, None);
        let mut rec = csv::StringRecord::new();
        while rdr.read_record(&mut rec).unwrap() {
            n += 1;
            last = Some(rec[id_col].to_string());
        }
        rows += n;
        if n < page_size {
            break;
        }
        cursor = last;
    }
    (rows, bytes)
}

struct Measured {
    seconds: f64,
    rows_fetched: u64,
    peak_rss: u64,
}

fn run_dobsob(
    exe: &Path,
    data: &Path,
    catalog: &Path,
    url: &str,
    page_size: u64,
    extra: &[String],
) -> Measured {
    let started = Instant::now();
    let out = std::process::Command::new(exe)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
        ])
        .args([
            "--portal",
            url,
            "-q",
            "sync",
            "--page-size",
            &page_size.to_string(),
        ])
        .args(extra)
        // The run's request budget and start spacing are politeness towards a real portal; measured here
        // is the engine, against a local emulator.
        .args(
            [("--max-requests-per-second", "100000"), ("--throttle", "0")]
                .iter()
                .filter(|(flag, _)| !extra.iter().any(|e| e == flag))
                .flat_map(|(flag, v)| [*flag, *v]),
        )
        .output()
        .expect("dobsob runs");
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "dobsob failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reports: Vec<_> = std::fs::read_dir(data.join("reports"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    reports.sort();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.last().unwrap()).unwrap()).unwrap();
    Measured {
        seconds,
        rows_fetched: report["datasets"][0]["rows_fetched"].as_u64().unwrap_or(0),
        peak_rss: report["peak_rss_bytes"].as_u64().unwrap_or(0),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let exe = std::env::current_exe().unwrap().with_file_name("dobsob");
    if !exe.exists() {
        eprintln!(
            "error: {} not found: build it first (cargo build --release)",
            exe.display()
        );
        return ExitCode::from(2);
    }
    let dir = tempfile::tempdir().unwrap();
    eprintln!("generating {} rows ...", args.rows);
    let mut state = State::default();
    state.add_dataset(synthetic(ID, args.rows));
    let emu = Emulator::start(state, 0).unwrap();
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        format!(
            "[[dataset]]\nkey = \"bench\"\nid = \"{ID}\"\nname = \"bench\"\ngroup = \"primary\"\n\
             frequency = \"daily\"\nsize_mb = 1\n"
        ),
    )
    .unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Instant::now();
    let (base_rows, base_bytes) = rt.block_on(baseline(&emu.url(), args.page_size, dir.path()));
    let base_s = t.elapsed().as_secs_f64();

    let data = dir.path().join("data");
    let url = emu.url();
    let sync = || run_dobsob(&exe, &data, &catalog, &url, args.page_size, &args.sync_args);
    let full = sync();

    let changed = ((args.rows as f64) * args.change_percent / 100.0) as usize;
    {
        let mut st = emu.state();
        let ids: Vec<String> = st.datasets[ID]
            .ids()
            .into_iter()
            .step_by((args.rows as usize / changed.max(1)).max(1))
            .take(changed)
            .collect();
        st.edit(ID, |e| {
            for id in &ids {
                e.set(id, "street", Some(serde_json::json!("CHANGED")));
            }
        });
    }
    let incr = sync();

    let rate = |rows: u64, s: f64| rows as f64 / s;
    println!(
        "dobsob benchmark: {} rows, page size {}, {:.0} MB of CSV",
        args.rows,
        args.page_size,
        base_bytes as f64 / 1e6
    );
    println!(
        "baseline (keyset download to disk, no load): {:>8.2} s  {:>10.0} rows/s",
        base_s,
        rate(base_rows, base_s)
    );
    println!(
        "dobsob full sync:                            {:>8.2} s  {:>10.0} rows/s  {:.2}x baseline time  peak RSS {:.0} MB",
        full.seconds,
        rate(full.rows_fetched, full.seconds),
        full.seconds / base_s,
        full.peak_rss as f64 / 1e6
    );
    println!(
        "dobsob incremental ({} changed rows):      {:>8.2} s  {:>10} fetched  {:.3}x baseline time  peak RSS {:.0} MB",
        changed,
        incr.seconds,
        incr.rows_fetched,
        incr.seconds / base_s,
        incr.peak_rss as f64 / 1e6
    );
    ExitCode::SUCCESS
}
