//! The benchmarks, on the real `dobsob` binary against the emulator, each with a baseline measured in the
//! same run:
//!
//! - `sync`: a full and an incremental sync of one generated dataset, against a plain keyset download of the
//!   same pages to disk (HTTP + a file + finding the next cursor), with no checking or loading; and what the
//!   publish at the end of the full sync cost, against a plain copy of the same file (`--dir` on XFS or
//!   btrfs measures a reflink publish);
//! - `orchestration`: a night when none of 18 datasets changed (requests and wall time, under the default
//!   budgets), and a full sync of several datasets at `--max-concurrent` 1, 2 and 4 against a portal that
//!   takes `--latency-ms` to answer each request (rows/s, against `--max-concurrent 1`).
//!
//! Run: `cargo run --release --bin dobsob-bench [-- --scenario sync|orchestration|all] [-- SYNC_ARGS]`

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use dobsob::emulator::{synthetic, Emulator, Fault, FaultKind, State};
use dobsob::soda::{PageQuery, RetryPolicy, SodaClient};

const ID: &str = "bnch-0001";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Sync,
    Orchestration,
    All,
}

#[derive(Parser)]
#[command(name = "dobsob-bench")]
struct Args {
    /// Which benchmark.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// orchestration: datasets of the no-change night.
    #[arg(long, default_value_t = 18)]
    night_datasets: usize,
    /// orchestration: datasets (and rows each) of the concurrent full sync.
    #[arg(long, default_value_t = 6)]
    concurrent_datasets: usize,
    #[arg(long, default_value_t = 100_000)]
    concurrent_rows: u64,
    /// orchestration: milliseconds the emulated portal waits before answering each data request (the real
    /// portal takes hundreds).
    #[arg(long, default_value_t = 100)]
    latency_ms: u64,
    /// Where the data directories go (default: the system's temp directory). Put it on a filesystem with
    /// reflinks (XFS, btrfs) to measure a reflink publish.
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
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
    requests: u64,
    peak_rss: u64,
    report: serde_json::Value,
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
        // is the engine, against a local emulator (unless the extra arguments set them).
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
    let report = std::fs::read_dir(data.join("reports"))
        .unwrap()
        .flatten()
        .map(|e| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
            v
        })
        .max_by_key(|v| v["run_id"].as_i64().unwrap_or(0))
        .expect("a run report");
    let rows_fetched = ["completed_jobs", "failed_jobs", "skipped_jobs"]
        .iter()
        .filter_map(|b| report[*b].as_object())
        .flat_map(|m| m.values())
        .map(|j| j["rows_fetched"].as_u64().unwrap_or(0))
        .sum();
    Measured {
        seconds,
        rows_fetched,
        requests: report["execution_summary"]["total_requests"]
            .as_u64()
            .unwrap_or(0),
        peak_rss: (report["performance_metrics"]["peak_rss_mb"]
            .as_f64()
            .unwrap_or(0.0)
            * 1e6) as u64,
        report,
    }
}

/// A catalog of `n` generated datasets, `bench_00`..; their ids are `bnch-00NN`.
fn catalog_of(path: &Path, ids: &[String]) {
    let mut toml = String::new();
    for (i, id) in ids.iter().enumerate() {
        toml.push_str(&format!(
            "[[dataset]]\nkey = \"bench_{i:02}\"\nid = \"{id}\"\nname = \"bench {i}\"\n\
             group = \"primary\"\nfrequency = \"daily\"\nsize_mb = 10\n\n"
        ));
    }
    std::fs::write(path, toml).unwrap();
}

fn scratch(args: &Args) -> tempfile::TempDir {
    match &args.dir {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn orchestration(args: &Args, exe: &Path) {
    let dir = scratch(args);
    let ids = |n: usize| {
        (0..n)
            .map(|i| format!("bnch-{:04}", i + 1))
            .collect::<Vec<_>>()
    };

    // A night when nothing changed at the source.
    let night = ids(args.night_datasets);
    let mut state = State::default();
    for id in &night {
        state.add_dataset(synthetic(id, 2_000));
    }
    let emu = Emulator::start(state, 0).unwrap();
    let catalog = dir.path().join("night.toml");
    catalog_of(&catalog, &night);
    let data = dir.path().join("night");
    run_dobsob(exe, &data, &catalog, &emu.url(), 50_000, &[]);
    // The change gate needs the portal's clock a little past the last change.
    std::thread::sleep(Duration::from_millis(2_500));
    println!(
        "no-change night, {} datasets (default --max-concurrent 4, --throttle 1.0):",
        night.len()
    );
    for (label, budget) in [
        ("no app token (5 requests/s)", "5"),
        ("with an app token (20 requests/s)", "20"),
        ("no request budget", "100000"),
    ] {
        let before = emu.state().log.len();
        let m = run_dobsob(
            exe,
            &data,
            &catalog,
            &emu.url(),
            50_000,
            &[
                "--max-requests-per-second".into(),
                budget.into(),
                "--throttle".into(),
                "1.0".into(),
            ],
        );
        let served = emu.state().log.len() - before;
        let unchanged = m.report["skipped_jobs"].as_object().map_or(0, |o| {
            o.values().filter(|j| j["mode"] == "unchanged").count()
        });
        println!(
            "  {label:<36} {served:>3} requests ({:.2} per dataset), {:>5.2} s wall, {unchanged}/{} unchanged",
            served as f64 / night.len() as f64,
            m.seconds,
            night.len()
        );
        assert_eq!(
            m.requests as usize, served,
            "the report counts every request"
        );
    }
    drop(emu);

    // A full sync of several datasets at once, against a portal with latency.
    let many = ids(args.concurrent_datasets);
    let mut state = State::default();
    for id in &many {
        state.add_dataset(synthetic(id, args.concurrent_rows));
    }
    state
        .faults
        .push(Fault::on("/resource/", FaultKind::DelayMs(args.latency_ms)).times(u32::MAX));
    let emu = Emulator::start(state, 0).unwrap();
    let catalog = dir.path().join("many.toml");
    catalog_of(&catalog, &many);
    let page = args.page_size.min(10_000);
    println!(
        "full sync of {} datasets x {} rows, page size {page}, {} ms portal latency per request:",
        many.len(),
        args.concurrent_rows,
        args.latency_ms
    );
    let mut base = None;
    for n in [1, 2, 4] {
        let data = dir.path().join(format!("many-{n}"));
        let m = run_dobsob(
            exe,
            &data,
            &catalog,
            &emu.url(),
            page,
            &["--max-concurrent".into(), n.to_string()],
        );
        let rate = m.rows_fetched as f64 / m.seconds;
        let b = *base.get_or_insert(rate);
        println!(
            "  --max-concurrent {n}: {:>6.2} s  {:>9.0} rows/s  {:.2}x --max-concurrent 1  peak RSS {:.0} MB  peak {} at once",
            m.seconds,
            rate,
            rate / b,
            m.peak_rss as f64 / 1e6,
            m.report["performance_metrics"]["peak_concurrent_jobs"]
        );
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
    if matches!(args.scenario, Scenario::Sync | Scenario::All) {
        sync_bench(&args, &exe);
    }
    if matches!(args.scenario, Scenario::Orchestration | Scenario::All) {
        orchestration(&args, &exe);
    }
    ExitCode::SUCCESS
}

fn sync_bench(args: &Args, exe: &Path) {
    let dir = scratch(args);
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
    let sync = || run_dobsob(exe, &data, &catalog, &url, args.page_size, &args.sync_args);
    let full = sync();
    // The publish at the end of the full sync, against a plain copy of the same file made now.
    let m = &full.report["performance_metrics"];
    let working = data.join("work").join("warehouse.duckdb");
    let t = Instant::now();
    std::fs::copy(&working, dir.path().join("plain-copy.duckdb")).unwrap();
    std::fs::File::open(dir.path().join("plain-copy.duckdb"))
        .and_then(|f| f.sync_all())
        .unwrap();
    let copy_s = t.elapsed().as_secs_f64();
    std::fs::remove_file(dir.path().join("plain-copy.duckdb")).unwrap();
    let publish = (
        m["published_mb"].as_f64().unwrap_or(0.0),
        m["publish_seconds"].as_f64().unwrap_or(0.0),
        m["publish_reflink"].as_bool().unwrap_or(false),
    );

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
    println!(
        "publish after the full sync ({}): {:>8.2} s for {:.0} MB ({:.2} s/GB); plain copy + fsync of the same file {:.2} s ({:.2}x)",
        if publish.2 { "reflink" } else { "copy, no reflink here" },
        publish.1,
        publish.0,
        publish.1 / (publish.0 / 1000.0).max(0.001),
        copy_s,
        publish.1 / copy_s.max(0.001)
    );
}
