//! `dobsob serve`: a web dashboard of the data directory (and its warehouse, DuckDB or PostgreSQL), the
//! Prometheus metrics and the JSON API, from one binary with no external assets.
//!
//! Every page is rendered on the server from the ledger (opened read-only per request, so it shows a run of
//! any process: cron's, another terminal's, this server's), the catalog and, for a dataset's page, the
//! warehouse's own tables. Pages work without JavaScript; one small script (served by this binary) only
//! refreshes the live run panel.
//!
//! Safety: control (starting runs) is off unless `--allow-control`. A server listening on anything but
//! loopback refuses to start without a token; with a token every request needs it (HTTP Basic password or
//! Bearer, compared in constant time). Without one, only loopback host names are answered (no DNS
//! rebinding). Every state-changing request is a POST carrying the page's form token, from the same origin.

mod assets;
mod pages;
mod svg;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use dobsob_engine::ledger::Ledger;
use dobsob_engine::sync::{Mode, Shutdown};
use dobsob_engine::warehouse::postgres::{off_runtime, ConnInfo};

use crate::cli::{ServeArgs, SyncArgs, SyncOnly};
use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::Settings;

/// The server's state, shared by every request.
pub struct App {
    pub settings: Settings,
    /// A PostgreSQL warehouse (`--warehouse`), else the DuckDB file of the data directory.
    pub postgres: Option<ConnInfo>,
    /// The URL as given, for the runs this server starts.
    warehouse_url: Option<String>,
    token: Option<String>,
    pub allow_control: bool,
    /// The form token every POST carries: random per server start, in every page with a form.
    pub csrf: String,
    /// Answer only loopback host names (no token: a DNS-rebinding page must not read or post).
    loopback_only: bool,
    /// The run this server started, if any.
    pub control: Mutex<Option<ControlRun>>,
    shutdown: Shutdown,
    runs: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// A run started from the dashboard.
#[derive(Debug, Clone)]
pub struct ControlRun {
    /// Which start of this server it is (1, 2, ...).
    pub id: u64,
    pub what: String,
    pub started_at: String,
    /// How it ended, in words, once it ended.
    pub ended: Option<String>,
    /// Its exit status, once it ended.
    pub code: Option<u8>,
}

/// The actions the control buttons POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SyncAll,
    RetryFailed,
    Sync(String),
    Rebuild(String),
}

impl Action {
    fn describe(&self) -> String {
        match self {
            Action::SyncAll => "sync of every dataset".into(),
            Action::RetryFailed => "retry of the failed datasets".into(),
            Action::Sync(k) => format!("sync of {k}"),
            Action::Rebuild(k) => format!("rebuild of {k}"),
        }
    }

    /// The sync flags of the action, as a user would type them.
    fn flags(&self) -> Vec<String> {
        match self {
            Action::SyncAll => vec![],
            Action::RetryFailed => vec!["--retry-failed".into()],
            Action::Sync(k) | Action::Rebuild(k) => vec!["--datasets".into(), k.clone()],
        }
    }
}

/// The sync command's flags, parsed as `dobsob sync` parses them, so that a run started here has exactly
/// the defaults (and environment) of one started from a terminal.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct ControlFlags {
    #[command(flatten)]
    run: SyncArgs,
    #[command(flatten)]
    only: SyncOnly,
}

pub async fn run(
    settings: Settings,
    args: &ServeArgs,
    printer: Printer,
    shutdown: Shutdown,
) -> Result<ExitStatus, Error> {
    let addr: SocketAddr = args.listen.parse().map_err(|_| {
        Error::Config(format!(
            "--listen {:?}: not an address and port, e.g. 127.0.0.1:8686 or [::1]:8686 (0.0.0.0:8686 for \
             every interface, with --token)",
            args.listen
        ))
    })?;
    let token = args.token.clone().filter(|t| !t.is_empty());
    if let Some(t) = &token {
        if t.len() < 16 {
            return Err(Error::Config(
                "--token (DOBSOB_SERVE_TOKEN) is shorter than 16 characters: use a long random one, e.g. \
                 `openssl rand -hex 24`"
                    .into(),
            ));
        }
    }
    if token.is_some() && std::env::var_os("DOBSOB_SERVE_TOKEN").is_none() {
        tracing::warn!(
            "--token on the command line is visible to the machine's other accounts (ps, /proc): prefer \
             the DOBSOB_SERVE_TOKEN environment variable"
        );
    }
    if args.allow_control && token.is_none() {
        tracing::warn!(
            "control is on without a token: any account of this machine that can reach 127.0.0.1 can start \
             syncs and rebuilds as you; on a shared machine set DOBSOB_SERVE_TOKEN"
        );
    }
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(Error::Config(format!(
            "--listen {addr} is reachable from other machines: give a token (--token or DOBSOB_SERVE_TOKEN; \
             e.g. `export DOBSOB_SERVE_TOKEN=$(openssl rand -hex 24)`) that every request must carry, or \
             listen on 127.0.0.1"
        )));
    }
    let postgres = crate::settings::warehouse(args.warehouse.as_deref())?;
    let app = Arc::new(App {
        settings,
        postgres,
        warehouse_url: args.warehouse.clone(),
        loopback_only: token.is_none(),
        token,
        allow_control: args.allow_control,
        csrf: random_hex(24)?,
        control: Mutex::new(None),
        shutdown: shutdown.clone(),
        runs: Mutex::new(Vec::new()),
    });
    let router = router(app.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Io(format!("cannot read the listening address: {e}")))?;
    // The one line a user (and a test, with port 0) needs: where to point the browser.
    printer.data(&format!(
        "dobsob dashboard on http://{bound}/ (control {}; Ctrl-C stops it)",
        if app.allow_control {
            "on"
        } else {
            "off: --allow-control turns it on"
        }
    ));
    tracing::info!(%bound, allow_control = app.allow_control, "dashboard listening");
    let stop = shutdown.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.wait().await })
        .await
        .map_err(|e| Error::Io(format!("the dashboard stopped: {e}")))?;
    // A run started here stops at its next page boundary (the same Ctrl-C reached it); wait for it.
    let runs = std::mem::take(&mut *app.runs.lock().unwrap_or_else(|p| p.into_inner()));
    if !runs.is_empty() {
        printer.line("waiting for the run started from the dashboard to stop at a page boundary");
    }
    for r in runs {
        let _ = tokio::task::spawn_blocking(move || r.join()).await;
    }
    // Stopping is how a server ends (systemd's SIGTERM): 0, unless a run it started was cut short by it.
    let cut = app
        .control
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|c| c.code == Some(ExitStatus::Interrupted as u8));
    Ok(if cut {
        ExitStatus::Interrupted
    } else {
        ExitStatus::Ok
    })
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/datasets/{key}", get(pages::dataset))
        .route("/fragment/live", get(pages::live_fragment))
        .route("/metrics", get(pages::metrics))
        .route("/api/status.json", get(pages::status_json))
        .route("/api/runs/{file}", get(pages::run_json))
        .route("/static/{file}", get(assets::serve))
        .route("/control/sync", post(control_sync_all))
        .route("/control/retry-failed", post(control_retry_failed))
        .route("/control/sync/{key}", post(control_sync_one))
        .route("/control/rebuild/{key}", post(control_rebuild))
        .fallback(|| async { pages::not_found("no such page") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Random bytes from the kernel, as hex.
fn random_hex(n: usize) -> Result<String, Error> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::Io(format!("cannot read /dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Equal, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// The standard base64 alphabet, decoded (for HTTP Basic credentials); `None` if it is not base64.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The token a request carries: a Bearer token, or the password of HTTP Basic credentials (any user name).
fn presented_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest)?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// A loopback host name as a browser sends it in `Host` (with or without the port).
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Every request: the host rule, the token, then for a POST the same-origin rules; every response gets
/// the security headers.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let refused = if app.loopback_only && !is_loopback_host(&host) {
        Some(pages::error_page(
            StatusCode::MISDIRECTED_REQUEST,
            "This dashboard answers only on localhost (it has no token). Open it as http://127.0.0.1:PORT/.",
        ))
    } else if let Some(token) = &app.token {
        match presented_token(headers) {
            Some(t) if constant_time_eq(&t, token.as_bytes()) => None,
            _ => {
                let mut r = pages::error_page(
                    StatusCode::UNAUTHORIZED,
                    "This dashboard needs its token: as the password of the browser's login prompt (any user \
                     name), or as `Authorization: Bearer TOKEN`.",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"dobsob\", charset=\"UTF-8\""),
                );
                Some(r)
            }
        }
    } else {
        None
    };
    let refused = refused.or_else(|| {
        (req.method() == axum::http::Method::POST)
            .then(|| same_origin(headers, &host))
            .flatten()
    });
    let mut response = match refused {
        Some(r) => r,
        None => next.run(req).await,
    };
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src \
             'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A POST from another site is refused: by the browser's `Sec-Fetch-Site`, else by `Origin` against
/// `Host`. (The form token is checked by each action.)
fn same_origin(headers: &HeaderMap, host: &str) -> Option<Response> {
    let cross = || {
        Some(pages::error_page(
            StatusCode::FORBIDDEN,
            "Refused: a state-changing request from another site (or without the page's form token).",
        ))
    };
    // A browser that sends Sec-Fetch-Site says where the request came from, also behind a proxy that
    // rewrites Host: trust it.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return if matches!(site, "same-origin" | "none") {
            None
        } else {
            cross()
        };
    }
    // An older browser: its Origin must name this server.
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host_of = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if origin == "null" || !host_of.eq_ignore_ascii_case(host) {
            return cross();
        }
    }
    None
}

/// The form token of a POST body (`application/x-www-form-urlencoded`), checked in constant time.
fn form_token_ok(app: &App, body: &[u8]) -> bool {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf")
        .is_some_and(|(_, v)| constant_time_eq(v.as_bytes(), app.csrf.as_bytes()))
}

async fn control_sync_all(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    start(app, &body, Action::SyncAll)
}

async fn control_retry_failed(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    start(app, &body, Action::RetryFailed)
}

async fn control_sync_one(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    start(app, &body, Action::Sync(key))
}

async fn control_rebuild(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    start(app, &body, Action::Rebuild(key))
}

/// Starts `action` as a run of this process (the orchestrator of `dobsob sync`, under the same run lock),
/// or says why not; answers with a page that links back.
fn start(app: Arc<App>, body: &[u8], action: Action) -> Response {
    if !app.allow_control {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "Control is off: start the server with --allow-control to start runs from the dashboard.",
        );
    }
    if !form_token_ok(&app, body) {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "Refused: the form token is missing or stale (the server restarted?). Reload the page and try \
             again.",
        );
    }
    if let Action::Sync(k) | Action::Rebuild(k) = &action {
        if app.settings.catalog.get(k).is_none() {
            return pages::not_found(&format!("no dataset {k:?} in the catalog"));
        }
    }
    // One run from here at a time.
    if let Some(c) = app
        .control
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|c| c.ended.is_none())
    {
        return pages::message_page(
            StatusCode::CONFLICT,
            "Not started",
            &format!(
                "The {} was not started: the {} started here at {} is still running.",
                action.describe(),
                c.what,
                c.started_at
            ),
        );
    }
    // Another process's run (cron's, a terminal's), seen without taking its lock. (One that starts in the
    // same instant wins the lock: the run started here then ends at once, saying so on the overview.)
    let dir = &app.settings.data_dir;
    if dobsob_engine::lock::is_held(dir) {
        return pages::message_page(
            StatusCode::CONFLICT,
            "Not started",
            &format!(
                "The {} was not started: another dobsob run holds {} ({}); it is still running. The overview \
                 shows it live.",
                action.describe(),
                dir.join("dobsob.lock").display(),
                dobsob_engine::lock::holder(dir).unwrap_or_else(|| "holder unknown".into())
            ),
        );
    }
    let mut flags = action.flags();
    flags.push("--no-progress".into());
    let parsed = match ControlFlags::try_parse_from(&flags) {
        Ok(p) => p,
        Err(e) => {
            return pages::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    };
    let ControlFlags {
        run: mut sync_args,
        only,
    } = parsed;
    if app.warehouse_url.is_some() {
        sync_args.warehouse = app.warehouse_url.clone();
    }
    let mode = if matches!(action, Action::Rebuild(_)) {
        Mode::Rebuild
    } else {
        Mode::Sync
    };
    let what = action.describe();
    let id = {
        let mut control = app.control.lock().unwrap_or_else(|p| p.into_inner());
        let id = control.as_ref().map_or(1, |c| c.id + 1);
        *control = Some(ControlRun {
            id,
            what: what.clone(),
            started_at: dobsob_engine::ledger::now(),
            ended: None,
            code: None,
        });
        id
    };
    let runner = app.clone();
    let handle = std::thread::Builder::new()
        .name("dashboard-run".into())
        .spawn(move || {
            let (code, ended) = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let printer = Printer { quiet: true };
                    match rt.block_on(super::sync::run(
                        &runner.settings,
                        &sync_args,
                        &only,
                        mode,
                        printer,
                        runner.shutdown.clone(),
                    )) {
                        Ok(status) => (
                            status as u8,
                            format!("ended with exit status {}", status as u8),
                        ),
                        Err(e) => (crate::error::exit_status(&e) as u8, format!("failed: {e}")),
                    }
                }
                Err(e) => (ExitStatus::Failed as u8, format!("could not start: {e}")),
            };
            tracing::info!("dashboard run ({what}) {ended}");
            // The run's memory (DuckDB's buffers, the pages) was freed; hand it back to the system rather
            // than keep a sync's peak in an idle server.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free heap memory; no pointer is involved.
            unsafe {
                libc::malloc_trim(0);
            }
            if let Some(c) = runner
                .control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .filter(|c| c.id == id)
            {
                c.ended = Some(ended);
                c.code = Some(code);
            }
        });
    match handle {
        Ok(h) => {
            app.runs.lock().unwrap_or_else(|p| p.into_inner()).push(h);
            pages::message_page(
                StatusCode::ACCEPTED,
                "Started",
                &format!(
                    "The {} started. The overview shows it live; its report is under Runs when it ends.",
                    action.describe()
                ),
            )
        }
        Err(e) => pages::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot start a thread for the run: {e}"),
        ),
    }
}

/// Opens the ledger for reading (none yet: `None`; an older one migrated first, as `status` does).
pub fn ledger(app: &App) -> Result<Option<Ledger>, Error> {
    super::status::open_ledger(&app.settings)
}

/// Runs blocking work (SQLite, DuckDB, PostgreSQL) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(move || off_runtime(f))
        .await
        .map_err(|e| Error::Io(format!("a dashboard task failed: {e}")))?
}

impl IntoResponse for pages::Html {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_basic_credentials_decode() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert_eq!(base64_decode("dTpzZWNyZXQ=").unwrap(), b"u:secret");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert!(base64_decode("**").is_none());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic dTpzZWNyZXQ=".parse().unwrap());
        assert_eq!(presented_token(&h).unwrap(), b"secret");
        h.insert(header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        assert_eq!(presented_token(&h).unwrap(), b"t0k");
    }

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for ok in [
            "127.0.0.1:8686",
            "localhost:1",
            "LOCALHOST",
            "[::1]:8686",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for no in [
            "evil.example:8686",
            "10.0.0.1:8686",
            "",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(no), "{no}");
        }
    }
}
