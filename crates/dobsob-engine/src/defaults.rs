//! Every default of a run, in one place: [`crate::orchestrator::Config::new`], [`crate::sync::Limits`]'s
//! `Default`, the schedule's grace and the command line's flags (whose `--help` shows them) all read these,
//! so the library and `--help` cannot disagree.

/// Rows per request (`--page-size`); also the deep verify's ids per request.
pub const PAGE_SIZE: u64 = 50_000;
/// Retries of a failed request before the dataset fails (`--max-retries`).
pub const MAX_RETRIES: u32 = 5;
/// The first retry's delay, doubled each retry (`--retry-base-ms`).
pub const RETRY_BASE_MS: u64 = 2_000;
/// The longest retry delay.
pub const RETRY_MAX_DELAY_SECS: u64 = 120;
/// Seconds to wait for data from the portal (`--timeout`; also verify's).
pub const TIMEOUT_SECS: u64 = 300;
/// Datasets synced at once (`--max-concurrent`).
pub const MAX_CONCURRENT: u64 = 4;
/// Of those, large ones (`--max-large`).
pub const MAX_LARGE: u64 = 2;
/// A dataset is large above this size (`--large-mb`).
pub const LARGE_MB: u32 = 100;
/// Seconds between the starts of dataset downloads (`--throttle`, the original guide's default).
pub const THROTTLE_SECS: f64 = 1.0;
/// Requests that may go out back to back after a pause (`--request-burst`): a night's metadata checks of
/// 18 datasets in one burst.
pub const REQUEST_BURST: u32 = 20;
/// Requests per second for the whole run without an app token (the portal's shared per-IP pool).
pub const REQUESTS_PER_SECOND: f64 = 5.0;
/// Requests per second with an app token.
pub const REQUESTS_PER_SECOND_WITH_TOKEN: f64 = 20.0;
/// How often a long run publishes what committed (`--publish-interval`), as the flag reads it and in
/// seconds (a unit test checks that they agree).
pub const PUBLISH_INTERVAL: &str = "15m";
pub const PUBLISH_INTERVAL_SECS: u64 = 15 * 60;
/// Days a run report is kept (`--report-retention-days`).
pub const REPORT_RETENTION_DAYS: u64 = 90;
/// Seconds behind the watermark an incremental pass starts (`--overlap`).
pub const OVERLAP_SECS: u64 = 300;
/// Seconds behind the watermark whose ids are compared after a pass (`--late-window`).
pub const LATE_WINDOW_SECS: u64 = 86_400;
/// The id check refuses to delete more rows than this (`--max-delete-rows`)...
pub const MAX_DELETE_ROWS: u64 = 10_000;
/// ...or more than this percentage of a dataset (`--max-delete-percent`).
pub const MAX_DELETE_PERCENT: f64 = 5.0;
/// A dataset is due this many seconds before its period is over (`--grace` of `--schedule-check`; `status`
/// and the warehouse's `dobsob_datasets.due_at` use it too).
pub const GRACE_SECS: u64 = 3_600;
