//! The HTTP side of the Socrata client: metadata, JSON queries, and CSV pages streamed to disk with their
//! sha256, all behind one retry policy.
//!
//! Pages go to a file, never into memory: memory stays bounded by a buffer, whatever the page holds. A retry
//! restarts the page from scratch (the file is truncated), so a body cut half-way is never half-used.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

use super::error::{parse_error_body, SodaError};
use super::soql::{PageQuery, Watermark};

/// A Socrata app token. Sent as `X-App-Token`; its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct AppToken(String);

impl AppToken {
    pub fn new(token: String) -> Option<Self> {
        let t = token.trim().to_string();
        (!t.is_empty()).then_some(AppToken(t))
    }
}

impl fmt::Debug for AppToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppToken(<redacted>)")
    }
}

/// How failed requests are retried: exponential backoff with full jitter, `Retry-After` honoured when sent.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = fail on the first error).
    pub max_retries: u32,
    /// The first backoff; each retry doubles it, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: crate::defaults::MAX_RETRIES,
            base_delay: Duration::from_millis(crate::defaults::RETRY_BASE_MS),
            max_delay: Duration::from_secs(crate::defaults::RETRY_MAX_DELAY_SECS),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based) after `err`.
    pub fn delay(&self, retry: u32, err: &SodaError) -> Duration {
        if let Some(ra) = err.retry_after() {
            return ra.min(self.max_delay.max(Duration::from_secs(1)));
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_delay);
        // Jitter between half and all of the exponential delay, so parallel clients spread out.
        let ms = exp.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
    }
}

/// Column metadata from `/api/views/{id}.json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ViewColumn {
    pub field_name: String,
    pub data_type_name: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

impl ViewColumn {
    /// A column named by its field name, without a description (for tests and hand-made schemas).
    pub fn new(field_name: &str, data_type_name: &str) -> ViewColumn {
        ViewColumn {
            field_name: field_name.into(),
            data_type_name: data_type_name.into(),
            name: field_name.into(),
            description: None,
        }
    }
}

/// The parts of `/api/views/{id}.json` that dobsob uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewMetadata {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Epoch seconds of the last data change.
    pub rows_updated_at: Option<i64>,
    pub columns: Vec<ViewColumn>,
    /// The portal's own clock when it answered (its `Date` header, epoch seconds): compared with
    /// `rowsUpdatedAt`, both source facts, never with our clock.
    #[serde(skip)]
    pub portal_date: Option<i64>,
}

/// What a page download wrote.
#[derive(Debug, Clone)]
pub struct Download {
    pub bytes: u64,
    /// Hex sha256 of the body as received.
    pub sha256: String,
    /// The request URL (never contains the token: that travels in a header).
    pub url: String,
    /// Seconds spent computing the sha256 (part of the download's time).
    pub hash_s: f64,
}

/// One request budget for a whole run, shared by every dataset job: on average at most one request per
/// `interval`, with up to `burst` requests back to back when the budget has been idle (a token bucket, kept
/// as the time the next request is due: the generic cell rate algorithm). A 429 from the portal holds every
/// job back, not only the one that got it, and empties the bucket.
#[derive(Debug)]
pub struct Budget {
    interval: Duration,
    /// How far ahead of its due time a request may go: `(burst - 1) * interval`.
    tolerance: Duration,
    /// When the next request is due if requests went out exactly one `interval` apart.
    next: tokio::sync::Mutex<tokio::time::Instant>,
    /// No request goes out before this (a 429 holds back even requests that already had their turn).
    held_until: std::sync::Mutex<tokio::time::Instant>,
}

impl Budget {
    /// At most `per_second` requests per second on average (0: unlimited), `burst` of them (at least 1) at
    /// once after a pause.
    pub fn new(per_second: f64, burst: u32) -> Budget {
        let interval = if per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Budget {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            held_until: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this request's turn. A request whose turn came while a 429 holds everyone back waits for
    /// the hold to end and takes a new turn then, so that the held requests do not go out in a burst.
    async fn take(&self) {
        loop {
            let at = {
                let mut next = self.next.lock().await;
                let now = tokio::time::Instant::now();
                let due = (*next).max(now);
                *next = due + self.interval;
                due.checked_sub(self.tolerance).unwrap_or(now).max(now)
            };
            tokio::time::sleep_until(at).await;
            let held = *self.held_until.lock().unwrap_or_else(|p| p.into_inner());
            if held <= tokio::time::Instant::now() {
                return;
            }
            tokio::time::sleep_until(held).await;
        }
    }

    /// Holds every request back for `wait` (the portal throttled us); after it, requests resume one
    /// `interval` apart, without a burst.
    async fn hold(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        {
            let mut held = self.held_until.lock().unwrap_or_else(|p| p.into_inner());
            *held = (*held).max(until);
        }
        let mut next = self.next.lock().await;
        *next = (*next).max(until + self.tolerance);
    }
}

/// Requests sent and retries made, counted as they happen.
#[derive(Debug, Default)]
pub struct RequestStats {
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RequestStats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// The portal client. Cheap to clone: clones share the connection pool, the request budget, the run's
/// request counts and whether the portal has answered yet; [`SodaClient::for_job`] gives a clone that also
/// counts its own requests and retries.
#[derive(Clone)]
pub struct SodaClient {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    budget: Arc<Budget>,
    answered: Arc<std::sync::atomic::AtomicBool>,
    /// Every request of this client and all its clones.
    run_stats: Arc<RequestStats>,
    /// This clone's (one dataset job's) requests.
    job_stats: Arc<RequestStats>,
}

impl SodaClient {
    pub fn new(
        portal: &Url,
        token: Option<AppToken>,
        retry: RetryPolicy,
        read_timeout: Duration,
    ) -> Result<Self, crate::Error> {
        let mut headers = HeaderMap::new();
        if let Some(AppToken(t)) = token {
            let mut v = HeaderValue::from_str(&t).map_err(|_| {
                crate::Error::Config(
                    "the app token contains characters not allowed in an HTTP header".into(),
                )
            })?;
            v.set_sensitive(true);
            headers.insert("X-App-Token", v);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("dobsob/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(20))
            // Large NYC queries take minutes before the first byte; the timeout applies per read.
            .read_timeout(read_timeout)
            .build()
            .map_err(|e| crate::Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let mut base = portal.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(SodaClient {
            http,
            base,
            retry,
            budget: Arc::new(Budget::new(0.0, 1)),
            answered: Default::default(),
            run_stats: Default::default(),
            job_stats: Default::default(),
        })
    }

    /// Shares `budget` among this client and its clones.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = Arc::new(budget);
        self
    }

    /// A clone for one dataset job: the same pool, budget and run counts, with request counts of its own.
    pub fn for_job(&self) -> SodaClient {
        SodaClient {
            job_stats: Default::default(),
            ..self.clone()
        }
    }

    /// Requests and retries of this client and all its clones (the whole run).
    pub fn run_stats(&self) -> &RequestStats {
        &self.run_stats
    }

    /// Requests and retries of this job's clone (see [`SodaClient::for_job`]).
    pub fn job_stats(&self) -> &RequestStats {
        &self.job_stats
    }

    /// Whether the portal has answered any request yet (with any status).
    pub fn has_answered(&self) -> bool {
        self.answered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once the portal has answered a request.
    pub async fn answered(&self) {
        while !self.has_answered() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The portal's base URL.
    pub fn portal(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str, query: Option<&PageQuery>) -> Url {
        let mut u = self
            .base
            .join(path)
            .expect("dataset ids are validated 4x4s");
        if let Some(q) = query {
            let mut pairs = u.query_pairs_mut();
            for (k, v) in q.params() {
                pairs.append_pair(k, &v);
            }
        }
        u
    }

    /// `GET /api/views/{id}.json`: the schema and the last data change, with the portal's clock.
    pub async fn metadata(&self, dataset_id: &str) -> Result<ViewMetadata, SodaError> {
        let url = self.url(&format!("api/views/{dataset_id}.json"), None);
        let (body, date) = self
            .with_retry(|| async {
                let resp = self.send(&url).await?;
                let date = http_date(resp.headers().get(reqwest::header::DATE));
                let body = resp.text().await.map_err(|e| network("GET", &url, &e))?;
                Ok::<_, SodaError>((body, date))
            })
            .await?;
        let mut meta: ViewMetadata =
            serde_json::from_str(&body).map_err(|e| SodaError::BadResponse {
                url: url.to_string(),
                message: format!("expected the metadata JSON: {e}"),
            })?;
        meta.portal_date = date;
        Ok(meta)
    }

    /// `GET /resource/{id}.json` for small answers (counts, the newest row).
    pub async fn query_json(
        &self,
        dataset_id: &str,
        q: &PageQuery,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, SodaError> {
        let url = self.url(&format!("resource/{dataset_id}.json"), Some(q));
        self.get_json(&url, "a JSON array of rows").await
    }

    /// Fetches `url` and parses it as `T`; a body that does not parse names what was `expected`.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        expected: &str,
    ) -> Result<T, SodaError> {
        let body = self.get_text(url).await?;
        serde_json::from_str(&body).map_err(|e| SodaError::BadResponse {
            url: url.to_string(),
            message: format!("expected {expected}: {e}"),
        })
    }

    /// The number of rows the portal has (`$select=count(*)`; Socrata returns it as a string), or of those
    /// changed after `since`.
    pub async fn count(
        &self,
        dataset_id: &str,
        since: Option<&Watermark>,
    ) -> Result<u64, SodaError> {
        self.count_query(dataset_id, &PageQuery::count(since)).await
    }

    /// The answer of a `count(*)` query.
    pub async fn count_query(&self, dataset_id: &str, q: &PageQuery) -> Result<u64, SodaError> {
        let rows = self.query_json(dataset_id, q).await?;
        let v = rows.first().and_then(|r| r.values().next());
        let n = match v {
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            _ => None,
        };
        n.ok_or_else(|| SodaError::BadResponse {
            url: self
                .url(&format!("resource/{dataset_id}.json"), Some(q))
                .to_string(),
            message: format!("count(*) answer has no number: {rows:?}"),
        })
    }

    /// Streams `GET /resource/{id}.csv` with `q` into `path`, hashing as it goes. Retries as a whole.
    pub async fn download_csv(
        &self,
        dataset_id: &str,
        q: &PageQuery,
        path: &Path,
    ) -> Result<Download, SodaError> {
        let url = self.url(&format!("resource/{dataset_id}.csv"), Some(q));
        self.with_retry(|| self.download_once(&url, path)).await
    }

    async fn download_once(&self, url: &Url, path: &Path) -> Result<Download, SodaError> {
        let resp = self.send(url).await?;
        // A proxy's HTML page or a JSON body with status 200 is not a page of rows: say what came instead.
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !ctype.is_empty() && !ctype.contains("csv") && !ctype.starts_with("text/plain") {
            let body = resp.text().await.unwrap_or_default();
            let snippet: String = body.trim().chars().take(120).collect();
            return Err(SodaError::BadResponse {
                url: url.to_string(),
                message: format!("expected CSV, got {ctype}: {snippet:?}"),
            });
        }
        let io = |source| SodaError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = create_private(path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut hash = Duration::ZERO;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| network("GET", url, &e))?;
            let started = std::time::Instant::now();
            hasher.update(&chunk);
            hash += started.elapsed();
            bytes += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(Download {
            bytes,
            sha256: hex(&hasher.finalize()),
            url: url.to_string(),
            hash_s: hash.as_secs_f64(),
        })
    }

    async fn get_text(&self, url: &Url) -> Result<String, SodaError> {
        self.with_retry(|| async {
            let resp = self.send(url).await?;
            resp.text().await.map_err(|e| network("GET", url, &e))
        })
        .await
    }

    /// Sends a GET and turns any status but 200 into a [`SodaError::Status`] with the portal's own words.
    async fn send(&self, url: &Url) -> Result<reqwest::Response, SodaError> {
        self.budget.take().await;
        for s in [&self.run_stats, &self.job_stats] {
            s.requests.fetch_add(1, Ordering::Relaxed);
        }
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| network("GET", url, &e))?;
        self.answered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(resp);
        }
        let retry_after = retry_after(resp.headers());
        let body = resp.text().await.unwrap_or_default();
        let (code, message) = parse_error_body(&body);
        Err(SodaError::Status {
            method: "GET",
            url: url.to_string(),
            status,
            code,
            message,
            retry_after,
        })
    }

    async fn with_retry<T, F, Fut>(&self, mut op: F) -> Result<T, SodaError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SodaError>>,
    {
        let mut retry = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                // A portal that cannot be reached at all is tried once more, not five times: it is
                // down or the network is, and the run says so instead of waiting minutes.
                Err(e) if e.is_unreachable() && retry >= 1 => return Err(e),
                Err(e) if e.is_retryable() && retry < self.retry.max_retries => {
                    let wait = self.retry.delay(retry, &e);
                    if matches!(e, SodaError::Status { status: 429, .. }) {
                        self.budget.hold(wait).await;
                    }
                    tracing::warn!(
                        "{e}; retry {}/{} in {wait:?}",
                        retry + 1,
                        self.retry.max_retries
                    );
                    for s in [&self.run_stats, &self.job_stats] {
                        s.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// An HTTP date header (`Sun, 06 Nov 1994 08:49:37 GMT`) as epoch seconds.
fn http_date(v: Option<&HeaderValue>) -> Option<i64> {
    let s = v?.to_str().ok()?;
    chrono::DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|d| d.timestamp())
}

/// `Retry-After` in either form: seconds, or an HTTP date (measured against the portal's own `Date` header
/// when it sent one, so the two clocks are never mixed).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?.timestamp();
    let now =
        http_date(h.get(reqwest::header::DATE)).unwrap_or_else(|| chrono::Utc::now().timestamp());
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

fn network(method: &'static str, url: &Url, e: &reqwest::Error) -> SodaError {
    // reqwest's own message repeats the URL and stops at the outermost cause; say what kind of failure it
    // was, then the chain of causes, which says what actually happened.
    let mut message = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_body() || e.is_decode() {
        "the response body was cut or unreadable".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    SodaError::Network {
        method,
        url: url.to_string(),
        message,
        connect: e.is_connect(),
    }
}

/// Creates (or truncates) a file readable by its owner only: downloaded pages are the user's data.
pub async fn create_private(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut o = tokio::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path).await
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When each of `n` requests taken back to back went out, in milliseconds after the first call.
    async fn send_times(budget: &Budget, n: usize) -> Vec<u128> {
        let start = tokio::time::Instant::now();
        let mut at = Vec::new();
        for _ in 0..n {
            budget.take().await;
            at.push((tokio::time::Instant::now() - start).as_millis());
        }
        at
    }

    #[tokio::test(start_paused = true)]
    async fn budget_lets_a_burst_through_then_spaces_requests() {
        let b = Budget::new(5.0, 3);
        assert_eq!(send_times(&b, 5).await, [0, 0, 0, 200, 400]);
        // Idle long enough to refill the bucket: another burst of three.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(send_times(&b, 4).await, [0, 0, 0, 200]);
        // No burst: every request one interval after the one before.
        let b = Budget::new(5.0, 1);
        assert_eq!(send_times(&b, 3).await, [0, 200, 400]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_hold_empties_the_bucket() {
        let b = Budget::new(5.0, 3);
        b.hold(Duration::from_secs(1)).await;
        // Nothing before the hold ends, and no burst after it.
        assert_eq!(send_times(&b, 3).await, [1000, 1200, 1400]);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_against_the_portals_clock() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"),
        );
        h.insert(
            reqwest::header::DATE,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn token_is_never_shown() {
        let t = AppToken::new("s3cret".into()).unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(AppToken::new("  ".into()).is_none());
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        let e = SodaError::Network {
            method: "GET",
            url: "u".into(),
            message: "m".into(),
            connect: false,
        };
        for _ in 0..50 {
            let d0 = p.delay(0, &e);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = p.delay(3, &e);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            assert!(p.delay(10, &e) <= Duration::from_millis(1000));
        }
        let throttled = SodaError::Status {
            method: "GET",
            url: "u".into(),
            status: 429,
            code: None,
            message: String::new(),
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(p.delay(0, &throttled), Duration::from_secs(1));
    }
}
