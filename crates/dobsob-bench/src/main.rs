//! The benchmarks, on the real `dobsob` binary against the emulator, each with a baseline measured in the
//! same run:
//!
//! - `sync`: a full and an incremental sync of one generated dataset, against a plain keyset download of the
//!   same pages to disk (HTTP + a file + finding the next cursor), with no checking or loading, against
//!   DuckDB's own `read_csv` of those pages (the limit) and against dobsob's own load of them with nothing
//!   else running (the writer alone); and what the publish at the end of the full sync cost, against a plain
//!   copy of the same file (`--dir` on XFS or btrfs measures a reflink publish);
//! - `orchestration`: a night when none of 18 datasets changed (requests and wall time, under the default
//!   budgets), and a full sync of several datasets at `--max-concurrent` 1, 2 and 4 against a portal that
//!   takes `--latency-ms` to answer each request (rows/s, against `--max-concurrent 1`);
//! - `storage`: the warehouse in DuckDB 2.0's newest storage format (`--storage-version latest`, the
//!   baseline) against the format every DuckDB from 1.0 on reads (v1.0.0, dobsob's default): the full
//!   sync's time, the file's size and three analyst queries (a scan, a group-by, a join of two datasets by
//!   BBL) on the published file.
//!
//! Run: `cargo run --release --bin dobsob-bench [-- --scenario sync|orchestration|storage|all] [-- SYNC_ARGS]`

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use dobsob_engine::internals::PageInfo;
use dobsob_engine::soda::{PageQuery, RetryPolicy, SodaClient, ViewColumn};
use dobsob_engine::warehouse::{
    quote_literal, MemoryLimit, NumberType, PageFile, TableSchema, Warehouse,
};
use socrata_emulator::{synthetic, synthetic_wide, Emulator, Fault, FaultKind, State};

const ID: &str = "bnch-0001";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Sync,
    Orchestration,
    Storage,
    /// sync and orchestration (storage is run on its own).
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
    /// Columns of the generated dataset (NYC's are 15 to 50 wide; HPD violations has 46).
    #[arg(long, default_value_t = 46)]
    columns: usize,
    /// Repetitions of the full sync and of its limit (the medians are printed).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,
    /// Write the figures as JSON to this file too, to compare runs over time.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// `--page-size` for dobsob; the baseline asks what dobsob's full load asks for it (50,000: 40,960, a
    /// third of a DuckDB row group).
    #[arg(long, default_value_t = 50_000)]
    page_size: u64,
    /// sync: generate HPD violations' real shapes (`synthetic_hpd`: 46 columns, ~700 bytes a row) instead of
    /// the wide generator (whose 15-place decimals are dear for DuckDB itself); --columns is then ignored.
    #[arg(long)]
    realistic: bool,
    /// Percent of rows changed before the incremental sync.
    #[arg(long, default_value_t = 1.0)]
    change_percent: f64,
    /// Extra arguments for `dobsob sync` after `--`, e.g. `-- --overlap 0 --late-window 0` to measure what
    /// the late-row guards cost.
    #[arg(last = true, value_name = "SYNC_ARGS")]
    sync_args: Vec<String>,
}

/// The baseline: keyset pages streamed to disk (kept, as `page-N.csv`, for the read_csv limit); the only
/// parsing is finding the last `:id` for the cursor. Pages are the size dobsob's full load asks for
/// `--page-size` ([`dobsob_engine::internals::full_page_size`]), so both make the same requests.
async fn baseline(url: &str, page_size: u64, dir: &Path) -> (u64, u64, Vec<Page>) {
    let page_size = dobsob_engine::internals::full_page_size(page_size);
    let client = SodaClient::new(
        &url::Url::parse(url).unwrap(),
        None,
        RetryPolicy::default(),
        Duration::from_secs(300),
    )
    .unwrap();
    let (mut rows, mut bytes, mut cursor) = (0u64, 0u64, None::<String>);
    let mut pages = Vec::new();
    for n in 0.. {
        let path = dir.join(format!("page-{n:05}.csv"));
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
        if let Some(last_id) = &last {
            pages.push(Page {
                path: path.clone(),
                rows: n,
                last_id: last_id.clone(),
            });
        }
        if n < page_size {
            break;
        }
        cursor = last;
    }
    (rows, bytes, pages)
}

/// A page the baseline downloaded.
struct Page {
    path: std::path::PathBuf,
    rows: u64,
    last_id: String,
}

/// The writer alone: dobsob's own full load of the baseline's page files (the batches a full sync commits,
/// each loaded as the page check's answers say, straight from `read_csv` when certain to cast, then the
/// swap and a checkpoint), under DuckDB's cap `memory`, with no download or emulator running meanwhile (the
/// page check runs before the clock starts). What the full sync's DuckDB
/// work costs by itself, between the limit and the full sync. Returns (seconds, CPU seconds).
fn writer_alone(
    dir: &Path,
    pages: &[Page],
    view_columns: &[ViewColumn],
    page_size: u64,
    memory: MemoryLimit,
) -> (f64, f64) {
    let schema = TableSchema::from_view(view_columns).unwrap();
    // What the page check says of each page (certain to cast, its numbers' sizes), as a sync would pass it
    // on; checked before the clock starts. The keys it holds are not needed here.
    let infos: Vec<PageInfo> = pages
        .iter()
        .map(|p| {
            let mut info = dobsob_engine::internals::inspect_rows(&p.path, &schema).unwrap();
            info.keys = Default::default();
            info
        })
        .collect();
    let work = dir.join("writer-alone");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut wh = Warehouse::open(&work.join("w.duckdb"), &work.join("tmp"), memory, None).unwrap();
    wh.begin_full("bench", &schema, "bench", None).unwrap();
    let limit = dobsob_engine::internals::full_page_size(page_size);
    let mut batch: Vec<(&Page, &PageInfo)> = Vec::new();
    for (i, page) in pages.iter().zip(&infos).enumerate() {
        batch.push(page);
        let rows: u64 = batch.iter().map(|(p, _)| p.rows).sum();
        if i + 1 == pages.len()
            || dobsob_engine::internals::full_batch_ready(limit, rows, batch.len())
        {
            let files: Vec<PageFile> = batch
                .iter()
                .map(|(p, info)| PageFile {
                    path: &p.path,
                    header: &info.header,
                    number_shapes: &info.number_shapes,
                    exponent_numbers: &info.exponent_numbers,
                    castable: info.castable,
                })
                .collect();
            let ids: Vec<String> = batch.iter().map(|(p, _)| p.last_id.clone()).collect();
            wh.load_pages("bench", &schema, &files, &ids).unwrap();
            batch.clear();
        }
    }
    wh.finish_full("bench", &schema).unwrap();
    wh.checkpoint().unwrap();
    drop(wh);
    let r = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    std::fs::remove_dir_all(&work).unwrap();
    r
}

/// The header of a page file.
fn csv_header(path: &Path) -> Vec<String> {
    csv::Reader::from_path(path)
        .unwrap()
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect()
}

/// CPU seconds (user and system) this process has used.
fn cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// CPU seconds (user and system) of this process's children that ended and were waited for: the `dobsob`
/// runs (the emulator runs in this process, so the portal's CPU is never counted as dobsob's).
fn children_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_CHILDREN)
}

fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

struct Measured {
    seconds: f64,
    /// CPU-seconds (user + system) of the `dobsob` process.
    cpu: f64,
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
    let cpu_before = children_cpu_seconds();
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
    let cpu = children_cpu_seconds() - cpu_before;
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
        cpu,
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

/// A catalog of the generated datasets `ids`, keyed `bench_00`, `bench_01`, ...
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
            "  {label:<36} {served:>3} requests ({:.2} per dataset), {:>5.2} s wall, {:.2} CPU-s, {unchanged}/{} unchanged",
            served as f64 / night.len() as f64,
            m.seconds,
            m.cpu,
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
    let mut latent_cpu = 0.0;
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
            "  --max-concurrent {n}: {:>6.2} s  {:>9.0} rows/s  {:.2}x --max-concurrent 1  {:.2} CPU-s  peak RSS {:.0} MB  peak {} at once",
            m.seconds,
            rate,
            rate / b,
            m.cpu,
            m.peak_rss as f64 / 1e6,
            m.report["performance_metrics"]["peak_concurrent_jobs"]
        );
        if n == 1 {
            latent_cpu = m.cpu;
        }
    }
    // Waiting costs nothing: the same sync from a portal that answers at once, against the one above.
    emu.state().faults.clear();
    let m = run_dobsob(
        exe,
        &dir.path().join("many-fast"),
        &catalog,
        &emu.url(),
        page,
        &["--max-concurrent".into(), "1".into()],
    );
    println!(
        "  --max-concurrent 1, no portal latency: {:>6.2} s  {:.2} CPU-s: the {} ms waits cost {:.2}x the CPU of none (1.00x: no busy-waiting)",
        m.seconds,
        m.cpu,
        args.latency_ms,
        latent_cpu / m.cpu
    );
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
    if args.scenario == Scenario::Storage {
        storage(&args, &exe);
    }
    ExitCode::SUCCESS
}

/// The types dobsob's number columns end with for these pages (the page check's shapes, joined), by name.
fn number_types(
    pages: &[Page],
    view_columns: &[ViewColumn],
) -> std::collections::HashMap<String, String> {
    let schema = TableSchema::from_view(view_columns).unwrap();
    let mut shapes: std::collections::HashMap<String, (u32, u32)> = Default::default();
    for p in pages {
        let info = dobsob_engine::internals::inspect_rows(&p.path, &schema).unwrap();
        for (name, (i, d)) in info.number_shapes {
            let e = shapes.entry(name).or_insert((0, 0));
            *e = (e.0.max(i), e.1.max(d));
        }
    }
    shapes
        .into_iter()
        .map(|(name, shape)| (name, NumberType::BigInt.widened(0, shape).sql()))
        .collect()
}

/// The limit: DuckDB's own `read_csv` of the very pages the baseline downloaded, into a table of the types
/// dobsob gives them (same engine build, through the duckdb crate; numbers as `number_types`). Returns
/// (seconds, CPU seconds).
fn read_csv_limit(
    dir: &Path,
    view_columns: &[ViewColumn],
    number_types: &std::collections::HashMap<String, String>,
) -> (f64, f64) {
    let schema = TableSchema::from_view(view_columns).unwrap();
    let header = csv_header(&dir.join("page-00000.csv"));
    let columns: Vec<String> = header
        .iter()
        .map(|h| {
            let t = match h.as_str() {
                ":created_at" | ":updated_at" => "TIMESTAMPTZ",
                _ => number_types.get(h).map(String::as_str).unwrap_or_else(|| {
                    schema
                        .columns
                        .iter()
                        .find(|c| &c.name == h)
                        .map_or("VARCHAR", |c| c.kind.duckdb_type())
                }),
            };
            format!("{}: '{t}'", quote_literal(h))
        })
        .collect();
    let db = dir.join("limit.duckdb");
    let _ = std::fs::remove_file(&db);
    let conn = duckdb::Connection::open(&db).unwrap();
    let sql = format!(
        "CREATE TABLE t AS SELECT * FROM read_csv({}, header = true, auto_detect = false, delim = ',', \
         quote = '\"', escape = '\"', allow_quoted_nulls = false, strict_mode = true, columns = {{{}}}); \
         CHECKPOINT;",
        quote_literal(&dir.join("page-*.csv").display().to_string()),
        columns.join(", ")
    );
    let (t, cpu) = (Instant::now(), cpu_seconds());
    conn.execute_batch(&sql).expect("read_csv of the pages");
    let r = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    drop(conn);
    let _ = std::fs::remove_file(&db);
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sync_bench(args: &Args, exe: &Path) {
    let dir = scratch(args);
    eprintln!(
        "generating {} rows of {} columns ...",
        args.rows, args.columns
    );
    let mut state = State::default();
    state.add_dataset(if args.realistic {
        socrata_emulator::synthetic_hpd(ID, args.rows)
    } else if args.columns == 14 {
        synthetic(ID, args.rows)
    } else {
        synthetic_wide(ID, args.rows, args.columns)
    });
    let view_columns: Vec<ViewColumn> =
        serde_json::from_value(state.datasets[ID].view["columns"].clone()).unwrap();
    let emu = Emulator::start(state, 0).unwrap();
    let catalog = dir.path().join("catalog.toml");
    catalog_of(&catalog, &[ID.to_string()]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let pages = dir.path().join("pages");
    std::fs::create_dir_all(&pages).unwrap();
    let t = Instant::now();
    let (base_rows, base_bytes, page_list) =
        rt.block_on(baseline(&emu.url(), args.page_size, &pages));
    let base_s = t.elapsed().as_secs_f64();
    let numbers = number_types(&page_list, &view_columns);
    let limits: Vec<(f64, f64)> = (0..args.repeat)
        .map(|_| read_csv_limit(&pages, &view_columns, &numbers))
        .collect();
    let limit_s = median(limits.iter().map(|r| r.0).collect());
    let limit_cpu = median(limits.iter().map(|r| r.1).collect());
    // The writer alone, at the cap a full sync starts with and at 1 GB (what the cap costs).
    let writer = |memory| {
        let runs: Vec<(f64, f64)> = (0..args.repeat)
            .map(|_| {
                writer_alone(
                    dir.path(),
                    &page_list,
                    &view_columns,
                    args.page_size,
                    memory,
                )
            })
            .collect();
        (
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()),
        )
    };
    let writer_capped = writer(MemoryLimit::default());
    let writer_1g = writer(MemoryLimit::Fixed(1024));
    std::fs::remove_dir_all(&pages).unwrap();

    let url = emu.url();
    let mut fulls = Vec::new();
    for r in 0..args.repeat {
        let data = dir.path().join(format!("data-{r}"));
        fulls.push(run_dobsob(
            exe,
            &data,
            &catalog,
            &url,
            args.page_size,
            &args.sync_args,
        ));
        if r + 1 < args.repeat {
            std::fs::remove_dir_all(&data).unwrap();
        }
    }
    let full_s = median(fulls.iter().map(|m| m.seconds).collect());
    let full_cpu = median(fulls.iter().map(|m| m.cpu).collect());
    let full = fulls
        .iter()
        .min_by(|a, b| {
            (a.seconds - full_s)
                .abs()
                .total_cmp(&(b.seconds - full_s).abs())
        })
        .unwrap();
    let data = dir.path().join(format!("data-{}", args.repeat - 1));
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
        let field = view_columns
            .iter()
            .find(|c| c.data_type_name == "text")
            .map(|c| c.field_name.clone())
            .unwrap();
        st.edit(ID, |e| {
            for id in &ids {
                e.set(id, &field, Some(serde_json::json!("CHANGED")));
            }
        });
    }
    let incr = run_dobsob(exe, &data, &catalog, &url, args.page_size, &args.sync_args);

    let rate = |rows: u64, s: f64| rows as f64 / s;
    println!(
        "dobsob benchmark: {} rows x {} columns{}, page size {}, {:.0} MB of CSV, median of {}",
        args.rows,
        if args.realistic { 46 } else { args.columns },
        if args.realistic {
            " (HPD violations' real shapes)"
        } else {
            ""
        },
        args.page_size,
        base_bytes as f64 / 1e6,
        args.repeat
    );
    println!(
        "baseline (keyset download to disk, no load): {:>8.2} s  {:>10.0} rows/s  (the emulator and HTTP alone)",
        base_s,
        rate(base_rows, base_s)
    );
    println!(
        "limit (DuckDB read_csv of the same pages):   {:>8.2} s  {:>10.0} rows/s                {:.1} CPU-s  DuckDB's default cap (80% of RAM), one statement",
        limit_s,
        rate(base_rows, limit_s),
        limit_cpu
    );
    println!(
        "writer alone (dobsob's load of those files): {:>8.2} s  {:>10.0} rows/s  {:.2}x the limit  {:.1} CPU-s  DuckDB's cap {} MB (the full sync's)",
        writer_capped.0,
        rate(base_rows, writer_capped.0),
        writer_capped.0 / limit_s,
        writer_capped.1,
        MemoryLimit::default().start_mb()
    );
    println!(
        "writer alone, DuckDB's cap 1024 MB:          {:>8.2} s  {:>10.0} rows/s  {:.2}x the limit  {:.1} CPU-s",
        writer_1g.0,
        rate(base_rows, writer_1g.0),
        writer_1g.0 / limit_s,
        writer_1g.1
    );
    println!(
        "dobsob full sync:                            {:>8.2} s  {:>10.0} rows/s  {:.2}x the limit  {:.2}x baseline  peak RSS {:.0} MB",
        full_s,
        rate(full.rows_fetched, full_s),
        full_s / limit_s,
        full_s / base_s,
        full.peak_rss as f64 / 1e6
    );
    println!(
        "dobsob incremental ({} changed rows):      {:>8.2} s  {:>10} fetched  {:.3}x the full sync  peak RSS {:.0} MB",
        changed,
        incr.seconds,
        incr.rows_fetched,
        incr.seconds / full_s,
        incr.peak_rss as f64 / 1e6
    );
    println!(
        "CPU-seconds (user + system; dobsob's process, the emulator not counted): limit {:.2} | full sync {:.2} = {:.2}x the limit | incremental {:.2} = {:.1}% of the full sync",
        limit_cpu,
        full_cpu,
        full_cpu / limit_cpu,
        incr.cpu,
        incr.cpu / full_cpu * 100.0
    );
    let b = &full.report["performance_metrics"]["breakdown"];
    println!(
        "  full sync, busy seconds per stage (download overlaps merge): download {} (hashing {}) | check {} | merge {} = stage {} + insert {} + uncastable {} + commit {} + count {} + rest | swap {} | publish {}",
        b["download_s"], b["hash_s"], b["check_s"], b["merge_s"], b["stage_s"], b["insert_s"], b["uncastable_s"], b["commit_s"], b["count_s"], b["swap_s"], b["publish_s"]
    );
    // The incremental sync's cost is per run, not per row: say where it goes.
    let ib = &incr.report["performance_metrics"]["breakdown"];
    let run_s = incr.report["execution_summary"]["total_duration_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    let stage = |k: &str| ib[k].as_f64().unwrap_or(0.0);
    let staged = stage("download_s") + stage("merge_s") + stage("publish_s");
    println!(
        "  incremental, of its {:.2} s: {} requests, download {} (check {}) | merge {} | publish {} | the rest of the run {:.2} | process start and exit {:.2}",
        incr.seconds,
        incr.requests,
        ib["download_s"],
        ib["check_s"],
        ib["merge_s"],
        ib["publish_s"],
        (run_s - staged).max(0.0),
        (incr.seconds - run_s).max(0.0)
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
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "rows": args.rows, "columns": args.columns, "page_size": args.page_size, "csv_mb": base_bytes as f64 / 1e6,
            "repeat": args.repeat,
            "baseline_s": base_s, "limit_s": limit_s, "limit_cpu_s": limit_cpu, "full_s": full_s,
            "full_cpu_s": full_cpu, "full_cpu_over_limit_cpu": full_cpu / limit_cpu,
            "incremental_cpu_s": incr.cpu, "incremental_cpu_over_full_cpu": incr.cpu / full_cpu,
            "writer_alone_s": writer_capped.0, "writer_alone_cpu_s": writer_capped.1,
            "writer_alone_1g_s": writer_1g.0, "writer_alone_1g_cpu_s": writer_1g.1, "full_over_limit": full_s / limit_s,
            "incremental_s": incr.seconds, "incremental_over_full": incr.seconds / full_s,
            "full_peak_rss_mb": full.peak_rss as f64 / 1e6, "incremental_peak_rss_mb": incr.peak_rss as f64 / 1e6,
            "breakdown": b, "incremental_breakdown": ib, "incremental_requests": incr.requests, "publish": {"mb": publish.0, "seconds": publish.1, "reflink": publish.2, "plain_copy_s": copy_s},
        });
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}

/// The analyst queries of the storage benchmark, on `bench_00` (the wide dataset) and `bench_01` (a
/// narrower one with the same kind of BBL).
const ANALYST_QUERIES: [(&str, &str); 3] = [
    (
        "scan",
        "SELECT count(*), sum(length(novdescription)), max(inspectiondate), sum(latitude) FROM bench_00",
    ),
    (
        "group-by",
        "SELECT boroid, class, count(*), avg(longitude) FROM bench_00 GROUP BY ALL ORDER BY ALL",
    ),
    (
        "join by BBL",
        "SELECT count(*), count(DISTINCT a.bbl) FROM bench_00 a JOIN bench_01 b ON a.bbl = b.bbl",
    ),
];

/// Median seconds of `repeat` runs of `sql` on a read-only connection to `path` (after one unmeasured run).
fn query_seconds(path: &Path, sql: &str, repeat: u64) -> f64 {
    let cfg = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap();
    let conn = duckdb::Connection::open_with_flags(path, cfg).unwrap();
    let run = || {
        let t = Instant::now();
        let mut stmt = conn.prepare(sql).unwrap();
        let mut rows = stmt.query([]).unwrap();
        while rows.next().unwrap().is_some() {}
        t.elapsed().as_secs_f64()
    };
    run();
    median((0..repeat.max(3)).map(|_| run()).collect())
}

fn storage(args: &Args, exe: &Path) {
    let dir = scratch(args);
    let second = "bnch-0002";
    eprintln!(
        "generating {} rows of {} columns and {} rows of 12 ...",
        args.rows,
        args.columns,
        args.rows / 4
    );
    let mut state = State::default();
    state.add_dataset(synthetic_wide(ID, args.rows, args.columns));
    state.add_dataset(synthetic_wide(second, args.rows / 4, 12));
    let emu = Emulator::start(state, 0).unwrap();
    let catalog = dir.path().join("catalog.toml");
    catalog_of(&catalog, &[ID.to_string(), second.to_string()]);
    let url = emu.url();
    struct Run {
        sync_s: f64,
        peak_rss: u64,
        bytes: u64,
        queries: Vec<f64>,
    }
    let versions = ["latest", "v1.0.0"];
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(), Vec::new()];
    for r in 0..args.repeat {
        // Alternating which goes first, so that neither always has the warmer machine.
        let order: Vec<usize> = if r % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for v in order {
            let data = dir.path().join(format!("data-{}-{r}", versions[v]));
            let mut extra = vec!["--storage-version".to_string(), versions[v].to_string()];
            extra.extend(args.sync_args.iter().cloned());
            let m = run_dobsob(exe, &data, &catalog, &url, args.page_size, &extra);
            let published = data.join("warehouse.duckdb");
            let bytes = std::fs::metadata(&published).unwrap().len();
            let queries = ANALYST_QUERIES
                .iter()
                .map(|(_, sql)| query_seconds(&published, sql, 3))
                .collect();
            eprintln!(
                "{} run {}: full sync {:.1}s, {:.0} MB",
                versions[v],
                r + 1,
                m.seconds,
                bytes as f64 / 1e6
            );
            runs[v].push(Run {
                sync_s: m.seconds,
                peak_rss: m.peak_rss,
                bytes,
                queries,
            });
            std::fs::remove_dir_all(&data).unwrap();
        }
    }
    let med = |v: usize, f: &dyn Fn(&Run) -> f64| median(runs[v].iter().map(f).collect());
    println!(
        "\nstorage: {} rows x {} columns + {} rows x 12, median of {} run(s); ratio = v1.0.0 / latest",
        args.rows,
        args.columns,
        args.rows / 4,
        args.repeat
    );
    println!(
        "{:<22} {:>12} {:>12} {:>7}",
        "", "latest", "v1.0.0", "ratio"
    );
    let line = |name: &str, f: &dyn Fn(&Run) -> f64, unit: &str| {
        let (a, b) = (med(0, f), med(1, f));
        println!(
            "{name:<22} {:>10.2}{unit:<2} {:>10.2}{unit:<2} {:>6.2}x",
            a,
            b,
            b / a
        );
    };
    line("full sync", &|r| r.sync_s, "s");
    line("peak RSS", &|r| r.peak_rss as f64 / 1e6, "MB");
    line("file size", &|r| r.bytes as f64 / 1e6, "MB");
    for (i, (name, _)) in ANALYST_QUERIES.iter().enumerate() {
        line(&format!("query: {name}"), &|r| r.queries[i] * 1e3, "ms");
    }
}
