//! A run's [`Config`]: everything [`super::Orchestrator::run`] needs besides the plan, with the one set of
//! defaults ([`crate::defaults`]).

use super::*;

/// How a run goes: where, against which portal, and every limit. [`Config::new`] gives the CLI's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub portal: Url,
    pub token: Option<AppToken>,
    /// `sync` or `rebuild`: the command recorded in the ledger and the report.
    pub command: &'static str,
    pub mode: Mode,
    pub page_size: u64,
    pub retry: RetryPolicy,
    /// How long to wait for data from the portal before a request counts as failed.
    pub timeout: Duration,
    pub limits: Limits,
    /// The whole run's request budget (all datasets together): an average rate, and how many requests
    /// may go out back to back after a pause.
    pub max_requests_per_second: f64,
    pub request_burst: u32,
    /// DuckDB's memory cap (`--memory-limit`, else automatic).
    pub memory: crate::warehouse::MemoryLimit,
    /// The storage version the warehouse is written in (`--storage-version`; `None`: the one the data
    /// directory records, else `v1.0.0`, readable by every DuckDB from 1.0 on).
    pub storage_version: Option<crate::warehouse::StorageVersion>,
    /// Who reads the published snapshot (`--share-group`; `None`: what the data directory remembers).
    pub sharing: Option<crate::warehouse::Sharing>,
    pub options: RunOptions,
    pub overlap: Duration,
    pub late_window: Duration,
    pub deletes: DeleteGuard,
    /// A deadline: past it nothing new starts and running datasets stop at a page boundary.
    pub max_duration: Option<Duration>,
    /// Where the run report is written (None: not written).
    pub report_dir: Option<PathBuf>,
    /// Reports older than this are removed from `report_dir` after a run (None: kept).
    pub report_retention: Option<Duration>,
    /// POSTed a JSON summary when the run ends; a failure is a warning, never a failed run.
    pub notify_webhook: Option<Url>,
    /// During a run, publish what committed at most this often (None: only at the end).
    pub publish_interval: Option<Duration>,
    /// A PostgreSQL warehouse (`--warehouse postgres://...`) instead of the DuckDB file in `data_dir`.
    pub warehouse: Option<crate::warehouse::postgres::ConnInfo>,
    /// `--cpu-threads`: DuckDB's worker threads and the page checks at once (`None`: the machine's cores).
    pub cpu_threads: Option<usize>,
}

/// Requests that may go out back to back after a pause (`--request-burst`).
pub const DEFAULT_REQUEST_BURST: u32 = crate::defaults::REQUEST_BURST;

/// The request budget when none is asked for: 5 requests per second without an app token (the portal's
/// shared per-IP pool), 20 with one.
pub fn default_requests_per_second(token: Option<&AppToken>) -> f64 {
    if token.is_some() {
        crate::defaults::REQUESTS_PER_SECOND_WITH_TOKEN
    } else {
        crate::defaults::REQUESTS_PER_SECOND
    }
}

impl Config {
    /// Page checks that may run at once: `--cpu-threads`, else the machine's cores.
    pub fn cpu_threads(&self) -> usize {
        self.cpu_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }

    /// The CLI's defaults, with reports in `<data_dir>/reports`.
    pub fn new(data_dir: PathBuf, portal: Url) -> Config {
        use crate::defaults as d;
        Config {
            report_dir: Some(DataDir(&data_dir).reports()),
            data_dir,
            portal,
            token: None,
            command: "sync",
            mode: Mode::Sync,
            page_size: d::PAGE_SIZE,
            retry: RetryPolicy {
                max_retries: d::MAX_RETRIES,
                base_delay: Duration::from_millis(d::RETRY_BASE_MS),
                max_delay: Duration::from_secs(d::RETRY_MAX_DELAY_SECS),
            },
            timeout: Duration::from_secs(d::TIMEOUT_SECS),
            limits: Limits::default(),
            max_requests_per_second: default_requests_per_second(None),
            request_burst: DEFAULT_REQUEST_BURST,
            memory: crate::warehouse::MemoryLimit::default(),
            storage_version: None,
            sharing: None,
            options: RunOptions::default(),
            overlap: Duration::from_secs(d::OVERLAP_SECS),
            late_window: Duration::from_secs(d::LATE_WINDOW_SECS),
            deletes: DeleteGuard {
                max_rows: d::MAX_DELETE_ROWS,
                max_percent: d::MAX_DELETE_PERCENT,
                allow: false,
            },
            max_duration: None,
            report_retention: Some(Duration::from_secs(d::REPORT_RETENTION_DAYS * 86_400)),
            notify_webhook: None,
            publish_interval: Some(Duration::from_secs(d::PUBLISH_INTERVAL_SECS)),
            warehouse: None,
            cpu_threads: None,
        }
    }

    /// The data directory's layout.
    pub fn layout(&self) -> DataDir<'_> {
        DataDir(&self.data_dir)
    }
}
