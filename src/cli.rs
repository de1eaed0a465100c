//! Command-line types (clap derive) and nothing else: `settings.rs` turns them into validated settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Examples:
  dobsob sync                          sync every dataset of the built-in NYC catalog into data/
  dobsob sync --primary                only the primary datasets
  dobsob sync --datasets dob_violations,hpd_violations
  dobsob status                        how fresh each dataset is
  dobsob verify --deep                 compare every row's id and :updated_at with the portal
  dobsob rebuild --datasets dob_complaints
                                       reload one dataset in full, swapped in atomically
  dobsob sql \"SELECT count(*) FROM hpd_violations\"
                                       query the warehouse with dobsob's own DuckDB (read-only)
  dobsob sync --share-group analysts   let the group analysts read the published warehouse

  dobsob catalog                       the datasets of the catalog in force (--toml: as a file to edit)
  dobsob report --list                 the recent runs, one line each
  dobsob serve                         a web dashboard on http://127.0.0.1:8686/ (and /metrics)

Offline trial against the bundled emulator (from the repository):
  cargo run --release --bin socrata-emulator -- --port 8080 &
  dobsob --data-dir trial --portal http://127.0.0.1:8080 --catalog fixtures/catalog.toml sync
The data directory remembers the catalog and portal that filled it: later commands on it use them.

Exit codes:
  0    every requested dataset succeeded (or was skipped: not due, or unchanged at the source)
  1    some dataset failed or drifted, the portal was unreachable, or --max-duration cut the run
  2    usage or configuration error (a bad flag, catalog, portal or data directory)
  75   another sync or rebuild is running on this data directory (try again later)
  130  interrupted (Ctrl-C or SIGTERM); the next run resumes from the last committed page";

/// Keep a local DuckDB copy of Socrata open data (NYC buildings and housing records) in step with the portal,
/// fetching only what changed.
#[derive(Debug, Parser)]
#[command(name = "dobsob", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Directory for warehouse.duckdb, ledger.sqlite, reports/ and logs/ (created private to you).
    #[arg(
        long,
        global = true,
        env = "DOBSOB_DATA_DIR",
        default_value = "data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Dataset catalog (TOML) to use instead of the built-in NYC catalog (`builtin`: the built-in one).
    /// Default: the catalog that filled the data directory (recorded by its first sync), else the built-in
    /// one. `dobsob catalog --toml` prints the catalog in force, to start your own from.
    #[arg(long, global = true, env = "DOBSOB_CATALOG", value_name = "FILE")]
    pub catalog: Option<PathBuf>,

    /// Socrata portal base URL, e.g. https://data.cityofnewyork.us. Default: the portal that filled the data
    /// directory, else the catalog's `portal`, else https://data.cityofnewyork.us.
    #[arg(long, global = true, env = "DOBSOB_PORTAL", value_name = "URL")]
    pub portal: Option<String>,

    /// Confirm that this data directory is to be filled from another catalog or portal than the one it
    /// records (without it, that is an error: the tables would mix two sources). Datasets the new source
    /// shares with the old are reloaded in full when the portal changes.
    #[arg(long, global = true)]
    pub switch_source: bool,

    /// Socrata app token, sent as X-App-Token (avoids shared throttling). Never printed or logged.
    #[arg(
        long,
        global = true,
        env = "SOCRATA_APP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub app_token: Option<String>,

    /// Only print errors and the final summary (for cron; the log file still gets everything).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Days of daily log files (logs/dobsob.YYYY-MM-DD.log) to keep.
    #[arg(long, global = true, default_value_t = 30, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub log_retention_days: u64,

    /// More detail (-v debug, -vv trace). RUST_LOG overrides both.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch what changed since the last sync (the first sync of a dataset loads it in full).
    Sync(SyncCommand),
    /// Show each dataset's rows, last success, watermark, freshness and last error.
    Status(StatusArgs),
    /// Reload datasets in full into fresh tables and swap them in atomically. Name them (--datasets, a group,
    /// or --all): a bare `rebuild` would download every dataset again.
    Rebuild(SyncArgs),
    /// Compare each dataset of the published warehouse with the source without changing anything; exit 1 if
    /// anything differs. Works while a sync runs (it checks the last published snapshot).
    Verify(VerifyArgs),
    /// Print crontab lines (or, with --systemd, services and timers) that run the nightly sync and the weekly
    /// forced sync, with this data directory, catalog and portal.
    Cron(CronArgs),
    /// Show a run from the ledger, also one still running: each dataset's outcome, mode, rows, bytes, pages
    /// and error or reason; --list for the recent runs, one line each.
    Report(ReportArgs),
    /// Run a read-only SQL query on the published warehouse and print the result as a table, CSV, JSON or
    /// Markdown; also lists the tables (--tables) and a table's columns (--describe). Works while a sync runs.
    #[command(after_help = SQL_AFTER_HELP)]
    Sql(SqlArgs),
    /// List the datasets of the catalog in force: key, Socrata id, group, frequency, priority, size; with
    /// --toml, print the catalog as a file to start your own from.
    Catalog(CatalogArgs),
    /// Administer a PostgreSQL warehouse (--warehouse postgres://...): grant-read gives a role read access.
    #[command(subcommand)]
    Postgres(PostgresCommand),
    /// Serve a web dashboard of the datasets and runs (freshness, row counts, run timelines, data quality),
    /// Prometheus metrics at /metrics and JSON at /api/status.json and /api/runs/ID.json; with
    /// --allow-control, buttons that start syncs and rebuilds.
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(ServeArgs),
}

const SERVE_AFTER_HELP: &str = "\
Examples:
  dobsob serve                                  http://127.0.0.1:8686/, read-only
  dobsob serve --allow-control                  with sync / retry / rebuild buttons
  DOBSOB_SERVE_TOKEN=$(openssl rand -hex 24) dobsob serve --listen 0.0.0.0:8686
                                                for the team: every request needs the token (the
                                                browser asks for it as a password; Prometheus sends it
                                                as `authorization: credentials: TOKEN`)

Pages: / (overview), /runs, /runs/ID, /datasets/KEY; /metrics (Prometheus text format);
/api/status.json (as `status --json`), /api/runs/ID.json (as `report ID --json`).
The server stops on Ctrl-C or SIGTERM; a run it started stops at its next page boundary first.";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on. Anything but loopback (127.0.0.1, ::1) needs --token.
    #[arg(long, default_value = "127.0.0.1:8686", value_name = "ADDR:PORT")]
    pub listen: String,

    /// Show buttons that start runs ("sync now", "retry failed", "rebuild this dataset") in this process,
    /// under the data directory's run lock (a cron run holding it is named, and nothing starts).
    #[arg(long)]
    pub allow_control: bool,

    /// A secret every request must carry (HTTP Basic password, or `Authorization: Bearer TOKEN`); required
    /// when listening beyond loopback. At least 16 characters. Never printed or logged; give it in the
    /// environment (DOBSOB_SERVE_TOKEN): a command line is visible to the machine's other accounts.
    #[arg(
        long,
        env = "DOBSOB_SERVE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// A PostgreSQL warehouse (see `dobsob sync --help`): show every worker's state and read dataset facts
    /// from it; runs started here sync into it.
    #[arg(
        long,
        env = "DOBSOB_WAREHOUSE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub warehouse: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PostgresCommand {
    /// Let ROLE read the datasets, the dobsob_datasets view and dobsob's state, now and for every table
    /// dobsob creates later (GRANT SELECT, ALTER DEFAULT PRIVILEGES). ROLE must exist; it gets no write
    /// access. --print shows the SQL instead, for a DBA to run.
    GrantRead(GrantReadArgs),
}

#[derive(Debug, Args)]
pub struct GrantReadArgs {
    /// The role (user or group) that may read.
    #[arg(value_name = "ROLE")]
    pub role: String,
    /// The PostgreSQL warehouse (see `dobsob sync --help`).
    #[arg(
        long,
        env = "DOBSOB_WAREHOUSE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub warehouse: String,
    /// Print the SQL instead of running it.
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Print the catalog in force as a TOML catalog file (the built-in one with its comments), e.g.
    /// `dobsob catalog --toml > my-catalog.toml`, then `--catalog my-catalog.toml`.
    #[arg(long, conflicts_with = "json")]
    pub toml: bool,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run's id (`run_id` in its report file; `report --list` shows them); default the newest, also
    /// while it is still running.
    #[arg(value_name = "RUN_ID", conflicts_with_all = ["last", "list"])]
    pub run: Option<i64>,
    /// The newest run (the default).
    #[arg(long, conflicts_with = "list")]
    pub last: bool,
    /// The recent runs, newest first, one line each: id, command, start, duration, outcome and counts.
    #[arg(long)]
    pub list: bool,
    /// With --list: how many runs.
    #[arg(long, default_value_t = 20, value_name = "N", requires = "list")]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CronArgs {
    /// Print a systemd service and timer instead of crontab lines.
    #[arg(long)]
    pub systemd: bool,
    /// Time of the nightly run, HH:MM (the weekly forced sync runs two hours later on Sundays).
    #[arg(long, default_value = "02:30", value_name = "HH:MM")]
    pub at: String,
}

/// Which datasets a command works on.
#[derive(Debug, Args, Default)]
#[group(id = "selection", multiple = false)]
#[command(next_help_heading = "Datasets (pick one)")]
pub struct Selection {
    /// Every dataset in the catalog (the default, except for rebuild, which must be told).
    #[arg(long)]
    pub all: bool,
    /// Datasets of group "primary".
    #[arg(long)]
    pub primary: bool,
    /// Datasets of group "secondary".
    #[arg(long)]
    pub secondary: bool,
    /// Datasets of group "tertiary".
    #[arg(long)]
    pub tertiary: bool,
    /// These datasets, by key (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "KEY,...")]
    pub datasets: Vec<String>,
}

impl Selection {
    /// No selection flag given.
    pub fn is_empty(&self) -> bool {
        !(self.all || self.primary || self.secondary || self.tertiary) && self.datasets.is_empty()
    }
}

/// `dobsob sync`: the flags of sync and rebuild, and those that only a sync takes.
#[derive(Debug, Args)]
pub struct SyncCommand {
    #[command(flatten)]
    pub run: SyncArgs,
    #[command(flatten)]
    pub only: SyncOnly,
}

/// What only `sync` takes: which datasets are due, incremental or not, retries of failures, cron lines.
#[derive(Debug, Args, Default)]
pub struct SyncOnly {
    /// Only the datasets that are due by their catalog frequency since their last success (less --grace);
    /// among those the change gate still skips a source that has not changed. The nightly job.
    #[arg(long, help_heading = "Which datasets and how", conflicts_with_all = ["force", "retry_failed"])]
    pub schedule_check: bool,

    /// With --schedule-check: a dataset is due this many seconds before its period is over, so a nightly run
    /// a little earlier than yesterday's still syncs it.
    #[arg(
        long,
        help_heading = "Which datasets and how",
        default_value_t = dobsob_engine::defaults::GRACE_SECS,
        value_name = "SECS"
    )]
    pub grace: u64,

    /// Sync even when not due and even when the source reports no change (ignores the change gate).
    #[arg(long, help_heading = "Which datasets and how")]
    pub force: bool,

    /// Never start a full load: a dataset that needs one (never loaded, columns changed, interrupted load) is
    /// skipped with that reason.
    #[arg(
        long,
        help_heading = "Which datasets and how",
        conflicts_with = "no_incremental"
    )]
    pub incremental_only: bool,

    /// Reload the selected datasets in full into fresh tables, swapped in atomically (what `rebuild` does).
    #[arg(long, help_heading = "Which datasets and how")]
    pub no_incremental: bool,

    /// Exactly the datasets whose last attempt failed, drifted or was interrupted (within the selection).
    #[arg(long, help_heading = "Which datasets and how")]
    pub retry_failed: bool,

    /// Print crontab lines for the nightly job and exit (the original guide's flag; same as `dobsob cron`).
    #[arg(long, help_heading = "Which datasets and how")]
    pub generate_cron: bool,
}

/// The flags of both `sync` and `rebuild`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub selection: Selection,

    /// Print the plan and change nothing on disk: per dataset its priority, due or not and why, full /
    /// incremental / skip, the size estimate, and the limits in force, decided as the sync decides. It asks
    /// the portal for each due dataset's metadata (and, for a changed source, the two counts of the
    /// full-replace check) but fetches no rows; exit 1 when the portal cannot answer.
    #[arg(long, help_heading = "Which datasets and how")]
    pub dry_run: bool,

    /// Rows per request. Memory use grows with it, not with the dataset.
    #[arg(long, help_heading = "Fetching", default_value_t = dobsob_engine::defaults::PAGE_SIZE, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub page_size: u64,

    /// Retries of a failed request (429, 5xx, 408, 202, network errors) before the dataset fails.
    #[arg(long, help_heading = "Fetching", default_value_t = dobsob_engine::defaults::MAX_RETRIES, value_name = "N")]
    pub max_retries: u32,

    /// First retry delay in milliseconds; doubles each retry (with jitter), at most 2 minutes.
    #[arg(
        long,
        help_heading = "Fetching",
        default_value_t = dobsob_engine::defaults::RETRY_BASE_MS,
        value_name = "MS"
    )]
    pub retry_base_ms: u64,

    /// Cores the sync may keep busy: DuckDB's worker threads and the page checks running at once (default:
    /// every core). `--cpu-threads 1` leaves the other cores to analysts during office hours; the load then
    /// takes longer (docs/performance.md has the figures).
    #[arg(long, help_heading = "Fetching", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub cpu_threads: Option<u32>,

    /// Seconds to wait for data from the portal before a request counts as failed (large NYC queries are slow).
    #[arg(long, help_heading = "Fetching", default_value_t = dobsob_engine::defaults::TIMEOUT_SECS, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// Datasets synced at once (fetching in parallel; merges go through the one warehouse writer).
    #[arg(long, help_heading = "Concurrency and politeness", default_value_t = dobsob_engine::defaults::MAX_CONCURRENT, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_concurrent: u64,

    /// Of those, at most this many large ones (over --large-mb).
    #[arg(long, help_heading = "Concurrency and politeness", default_value_t = dobsob_engine::defaults::MAX_LARGE, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_large: u64,

    /// A dataset is large above this catalog size_mb.
    #[arg(
        long,
        help_heading = "Concurrency and politeness",
        default_value_t = dobsob_engine::defaults::LARGE_MB,
        value_name = "MB"
    )]
    pub large_mb: u32,

    /// Requests per second for the whole run, all datasets together; a 429 from the portal slows every
    /// dataset down. Default: 5 without an app token, 20 with one.
    #[arg(long, help_heading = "Concurrency and politeness", value_name = "N", value_parser = positive_f64)]
    pub max_requests_per_second: Option<f64>,

    /// Requests that may go out back to back, within --max-requests-per-second on average, after the budget
    /// was idle: a night of unchanged datasets costs one metadata request each and goes out in one burst
    /// (at most --max-concurrent at a time) instead of waiting a turn for each. 1: no burst.
    #[arg(long, help_heading = "Concurrency and politeness", default_value_t = dobsob_engine::defaults::REQUEST_BURST, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub request_burst: u32,

    /// A deadline for the run, e.g. 2h, 90m, 1h30m, 600s: past it nothing new starts and running datasets stop
    /// at a page boundary (their committed pages stay; the next run resumes); the run exits 1.
    #[arg(long, help_heading = "Concurrency and politeness", value_name = "DURATION", value_parser = duration)]
    pub max_duration: Option<std::time::Duration>,

    /// During a long run, publish what has committed to the analysts' warehouse.duckdb at most this often
    /// (e.g. 15m, 1h; 0: only when the run ends). A run always publishes when it ends, whatever its outcome.
    #[arg(long, help_heading = "Concurrency and politeness", default_value = dobsob_engine::defaults::PUBLISH_INTERVAL, value_name = "DURATION", value_parser = duration)]
    pub publish_interval: std::time::Duration,

    /// Seconds between the starts of dataset downloads (the original guide's default). A dataset whose
    /// source has not changed costs one metadata request and does not wait.
    #[arg(long, help_heading = "Concurrency and politeness", default_value_t = dobsob_engine::defaults::THROTTLE_SECS, value_name = "SECS", value_parser = non_negative_f64)]
    pub throttle: f64,

    /// A fixed cap on DuckDB's memory in MB for the whole run; beyond it DuckDB spills to <data-dir>/tmp.
    /// Default: 80 MB, which keeps a full load of a 46-column dataset under 200 MB resident, doubled (to
    /// 1024 MB at most) for the rest of the run when DuckDB needs more to load a wider dataset. With a
    /// fixed cap, a batch DuckDB refuses for memory is loaded page by page instead, several times slower.
    #[arg(long, help_heading = "Concurrency and politeness", value_name = "MB", value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub memory_limit: Option<u32>,

    /// The oldest DuckDB release that must open the warehouse: v1.0.0 (the default) is read by every DuckDB
    /// from 1.0 on, `latest` only by DuckDB 2.0 and later (docs/performance.md compares them).
    /// Remembered for the data directory; a warehouse in another version is converted once, in place
    /// beside the old file, with no download.
    #[arg(long, help_heading = "Warehouse", env = "DOBSOB_STORAGE_VERSION", value_name = "VERSION", value_parser = storage_version)]
    pub storage_version: Option<dobsob_engine::warehouse::StorageVersion>,

    /// Let this group of the machine's accounts read the published warehouse.duckdb (data directory 0750,
    /// snapshot 0440, group GROUP; the ledger, work/, tmp/, reports and logs stay private). Remembered for
    /// the data directory; `none` makes it private again. You must be in the group.
    #[arg(long, help_heading = "Warehouse", env = "DOBSOB_SHARE_GROUP", value_name = "GROUP", value_parser = share_group)]
    pub share_group: Option<dobsob_engine::warehouse::Sharing>,

    /// Keep a PostgreSQL database in step instead of the DuckDB file: postgres://USER@HOST[:PORT]/DB, with
    /// ?schema=NAME for the datasets' tables (default public; dobsob's own are in schema dobsob),
    /// ?host=/socket/dir for a unix socket, ?sslrootcert=FILE for a private CA. A remote server needs TLS
    /// with certificate verification (sslmode=verify-full, the default); sslmode=disable only for a socket
    /// or loopback. The password comes from the URL, PGPASSWORD or ~/.pgpass (PGPASSFILE) and is never
    /// printed. Several workers may point at one database: each dataset is synced by one at a time.
    /// docs/postgres.md.
    // Parsed by the command, not by clap: clap's error would print the value, password included.
    #[arg(
        long,
        help_heading = "Warehouse",
        env = "DOBSOB_WAREHOUSE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub warehouse: Option<String>,

    /// Directory for the run report (orchestration_report_YYYYMMDD_HHMMSS.json). Default: <data-dir>/reports.
    #[arg(long, help_heading = "Reports and notifications", value_name = "DIR")]
    pub report_path: Option<PathBuf>,

    /// Days to keep run reports: older ones (dobsob's own files only) are removed after each run.
    #[arg(long, help_heading = "Reports and notifications", default_value_t = dobsob_engine::defaults::REPORT_RETENTION_DAYS, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=36500))]
    pub report_retention_days: u64,

    /// POST a JSON summary of the run to this URL when it ends (success or not), with a one-line `text`
    /// field that Slack, Mattermost and Teams incoming webhooks show as is. A failed notification is a
    /// warning, never a failed run. The URL is not logged (webhook URLs are secrets); the app token is
    /// never sent to it.
    #[arg(long, help_heading = "Reports and notifications", env = "DOBSOB_NOTIFY_WEBHOOK", hide_env_values = true, value_name = "URL", value_parser = webhook_url)]
    pub notify_webhook: Option<url::Url>,

    /// No live progress display, even on a terminal (it is never shown when stderr is not a terminal, nor
    /// with -q).
    #[arg(long, help_heading = "Reports and notifications")]
    pub no_progress: bool,

    /// Seconds behind the watermark an incremental pass starts, to catch rows that became visible late
    /// (a publisher's long transaction); re-read rows are upserted, so this costs only their download. 0
    /// starts exactly at the watermark.
    #[arg(
        long,
        help_heading = "Guards",
        default_value_t = dobsob_engine::defaults::OVERLAP_SECS,
        value_name = "SECS"
    )]
    pub overlap: u64,

    /// Seconds behind the watermark whose rows' ids (ids only, a small listing) are compared with the
    /// warehouse after each incremental pass, fetching rows that became visible later than the overlap
    /// window. 0 turns it off.
    #[arg(
        long,
        help_heading = "Guards",
        default_value_t = dobsob_engine::defaults::LATE_WINDOW_SECS,
        value_name = "SECS"
    )]
    pub late_window: u64,

    /// Refuse a sync whose id check would delete more than this many rows of a dataset.
    #[arg(
        long,
        help_heading = "Guards",
        default_value_t = dobsob_engine::defaults::MAX_DELETE_ROWS,
        value_name = "N"
    )]
    pub max_delete_rows: u64,

    /// Refuse a sync whose id check would delete more than this percentage of a dataset's rows (deletions
    /// of at most 100 rows are never refused for their share).
    #[arg(long, help_heading = "Guards", default_value_t = dobsob_engine::defaults::MAX_DELETE_PERCENT, value_name = "PERCENT", value_parser = percent)]
    pub max_delete_percent: f64,

    /// Confirm that deletions past --max-delete-rows / --max-delete-percent are real, and let them happen.
    #[arg(long, help_heading = "Guards")]
    pub allow_mass_delete: bool,
}

/// `2h`, `90m`, `1h30m`, `45s`, or plain seconds.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration: use e.g. 2h, 90m, 1h30m, 600s");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

fn webhook_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match u.scheme() {
        "http" | "https" if u.host().is_some() => Ok(u),
        _ => Err("must be an http:// or https:// URL with a host".into()),
    }
}

fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} must be more than 0"))
    }
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v >= 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} must be 0 or more"))
    }
}

fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 100"))
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub selection: Selection,

    /// Also list the source's whole id set with each row's :updated_at and :version and compare it row by
    /// row with the warehouse (one small request per page of ids): missing, extra and stale rows, with
    /// examples.
    #[arg(long, help_heading = "Comparison")]
    pub deep: bool,

    /// Ids per request of the deep comparison.
    #[arg(long, help_heading = "Comparison", default_value_t = dobsob_engine::defaults::PAGE_SIZE, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub page_size: u64,

    /// Seconds to wait for data from the portal before a request counts as failed.
    #[arg(long, help_heading = "Comparison", default_value_t = dobsob_engine::defaults::TIMEOUT_SECS, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// A PostgreSQL warehouse (see `dobsob sync --help`) to compare instead of the DuckDB snapshot.
    #[arg(
        long,
        env = "DOBSOB_WAREHOUSE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub warehouse: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub selection: Selection,

    /// Print a JSON array instead of a table (fields in docs/operations.md).
    #[arg(long, help_heading = "Output")]
    pub json: bool,

    /// For monitoring (Nagios, systemd OnFailure): exit 1 when any selected dataset is stale, never synced,
    /// failing (its last attempt failed or drifted) or interrupted, naming each in one line; exit 0 and one
    /// OK line otherwise.
    #[arg(long, help_heading = "Output", conflicts_with = "json")]
    pub check: bool,

    /// Print the status in Prometheus' text format (the same metrics as `dobsob serve`'s /metrics), for
    /// node_exporter's textfile collector when no server runs:
    /// `dobsob status --prometheus > dobsob.prom.tmp && mv dobsob.prom.tmp /var/lib/node_exporter/dobsob.prom`
    #[arg(long, help_heading = "Output", conflicts_with_all = ["json", "check"])]
    pub prometheus: bool,

    /// A PostgreSQL warehouse (see `dobsob sync --help`): show what every worker syncing into it recorded
    /// there, the newer of that and this data directory's ledger per dataset.
    #[arg(
        long,
        env = "DOBSOB_WAREHOUSE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub warehouse: Option<String>,
}

const SQL_AFTER_HELP: &str = "\
Examples:
  dobsob sql --tables                       the tables, their rows, names and descriptions
  dobsob sql --describe dob_violations      a table's columns, types and the portal's descriptions
  dobsob sql \"FROM dobsob_datasets\"         each dataset's source, freshness and last outcome
  dobsob sql \"SELECT boro, count(*) AS n FROM dob_violations GROUP BY ALL ORDER BY n DESC\"
  dobsob sql --format csv \"FROM hpd_violations WHERE inspectiondate >= DATE '2024-01-01'\" > hpd.csv
  dobsob sql --format markdown --file weekly.sql
  echo 'SUMMARIZE dob_complaints' | dobsob sql --format table

It reads the published snapshot, <data-dir>/warehouse.duckdb, opened read-only: a running sync neither
blocks it nor is blocked by it, and a query sees the last publish. One statement per run, and only a query:
SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, and the PRAGMAs that list
(PRAGMA table_info('t'), PRAGMA show_tables). Anything else (INSERT, CREATE, COPY, ATTACH, SET, ...) is
refused, and DuckDB may not read or write any other file.

Formats (default: table on a terminal, csv otherwise). Values are DuckDB's own text for their type.
  table     aligned columns sized by the first 1,000 rows (a wider cell after those is cut to its column);
            cells cut at --max-width characters with \"…\"; NULL shows as NULL; \"N rows\" last (not with -q)
  csv       RFC 4180 with a header row and \\n line ends; NULL is an empty field, the empty string is \"\"
  json      a JSON array of objects, one object per line
  ndjson    one JSON object per line, no array
  markdown  a GitHub table, | escaped, NULL as NULL
In JSON, integers and doubles are numbers, booleans true/false and NULL null; DECIMAL, HUGEINT and UHUGEINT
are strings, to stay exact (a JSON parser would round them to a double), as are infinite and NaN doubles;
timestamps are ISO 8601 (2024-05-01T13:45:00; TIMESTAMPTZ, in UTC, ends in +00:00); dates, times, lists,
structs and the rest are strings of DuckDB's text.

The result streams: memory stays small however many rows the query returns. Ctrl-C cancels the query.

Exit codes: 0 ok, 1 the query failed or was refused, 2 usage (no query, several statements, no published
warehouse yet, no such table), 130 interrupted.";

/// `dobsob sql`: a read-only query on the published warehouse.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query (it may start with a `--` comment). Without it (or with `-`) the query is read from standard
    /// input.
    #[arg(value_name = "QUERY", allow_hyphen_values = true, conflicts_with_all = ["file", "tables", "describe"])]
    pub query: Option<String>,

    /// Read the query from this file (`-`: standard input).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tables", "describe"])]
    pub file: Option<PathBuf>,

    /// List the tables with their row counts, names, last sync and the portal's descriptions.
    #[arg(long, conflicts_with = "describe")]
    pub tables: bool,

    /// Show a table's columns, their types and the portal's descriptions (`schema.table` for another schema,
    /// e.g. dobsob.uncastable).
    #[arg(long, value_name = "TABLE")]
    pub describe: Option<String>,

    /// How to print the result. Default: table on a terminal, csv when piped or redirected.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<SqlFormat>,

    /// Table format: cells longer than this many characters are cut, ending in "…"; 0 never cuts.
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub max_width: usize,
}

/// How `dobsob sql` prints a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqlFormat {
    /// Aligned columns for reading; a row count last.
    Table,
    /// RFC 4180 with a header row; NULL is an empty field.
    Csv,
    /// A JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// A GitHub Markdown table.
    Markdown,
}

fn storage_version(s: &str) -> Result<dobsob_engine::warehouse::StorageVersion, String> {
    let v = dobsob_engine::warehouse::StorageVersion::parse(s)?;
    v.check_known()?;
    Ok(v)
}

fn share_group(s: &str) -> Result<dobsob_engine::warehouse::Sharing, String> {
    dobsob_engine::warehouse::Sharing::parse(s)
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn the_publish_interval_reads_as_its_seconds() {
        use dobsob_engine::defaults::{PUBLISH_INTERVAL, PUBLISH_INTERVAL_SECS};
        assert_eq!(
            duration(PUBLISH_INTERVAL).unwrap().as_secs(),
            PUBLISH_INTERVAL_SECS
        );
    }

    #[test]
    fn durations_in_the_forms_people_write() {
        assert_eq!(duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(duration("600").unwrap(), Duration::from_secs(600));
        for bad in ["", "h", "2d", "1h30", "0m", "-5m"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
}
