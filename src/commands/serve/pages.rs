//! The dashboard's pages and endpoints, rendered on the server. Every text that comes from the ledger, the
//! catalog, the portal or the warehouse is escaped ([`esc`]); nothing the user or the portal wrote is ever
//! placed in a page unescaped.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use dobsob_engine::ledger::{AttemptView, Ledger, RunLine, RunView};
use dobsob_engine::sync::schedule::parse_time;

use super::svg::{self, seconds, short_date, thousands};
use super::{blocking, ledger, App};
use crate::commands::status::{collect, DatasetStatus};
use crate::error::Error;

/// An HTML page.
pub struct Html(pub String);

/// Escapes text for HTML (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment, percent-encoded (dataset keys are plain already; this keeps a link a link).
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn layout(app: &App, title: &str, body: &str) -> Html {
    let where_ = match &app.postgres {
        // The address without its password.
        Some(info) => format!("PostgreSQL {info}, schema {}", info.schema),
        None => format!("{}", app.settings.warehouse_path().display()),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · dobsob</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head><body>\
         <header><a class=\"brand\" href=\"/\">dobsob</a><nav><a href=\"/\">Overview</a><a href=\"/runs\">Runs</a>\
         <a href=\"/metrics\">Metrics</a><a href=\"/api/status.json\">JSON</a></nav>\
         <span class=\"where\">{w} · portal {p}</span></header><main>{body}</main>\
         <footer>dobsob {v} · rendered {now} UTC</footer>\
         <script src=\"/static/live.js\" defer></script></body></html>",
        t = esc(title),
        w = esc(&where_),
        p = esc(app.settings.portal.as_str()),
        v = env!("CARGO_PKG_VERSION"),
        now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S"),
    ))
}

fn plain_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} · dobsob</title>\
         <link rel=\"stylesheet\" href=\"/static/style.css\"></head><body><header><a class=\"brand\" \
         href=\"/\">dobsob</a></header><main><h1>{t}</h1><div class=\"card\"><p>{m}</p><p><a href=\"/\">Back to \
         the overview</a></p></div></main></body></html>",
        t = esc(title),
        m = esc(message)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    plain_page(
        status,
        status.canonical_reason().unwrap_or("Error"),
        message,
    )
}

pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    plain_page(status, title, message)
}

pub fn not_found(message: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, message)
}

fn failed(e: Error) -> Response {
    tracing::warn!("dashboard: {e}");
    error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

/// Every catalog dataset's status, from this data directory's ledger and the PostgreSQL warehouse's shared
/// state when there is one.
fn all_statuses(app: &App) -> Result<Vec<DatasetStatus>, Error> {
    collect(
        &app.settings,
        &crate::cli::Selection::default(),
        app.postgres.as_ref(),
    )
}

/// A state or outcome as a badge: colour and the word.
fn badge(state: &str) -> String {
    format!(
        "<span class=\"badge s-{}\">{}</span>",
        esc(state),
        esc(state)
    )
}

fn opt_num(v: Option<i64>) -> String {
    v.map(thousands).unwrap_or_else(|| "-".into())
}

fn age_text(secs: Option<i64>) -> String {
    secs.map(crate::printer::age)
        .unwrap_or_else(|| "never".into())
}

fn mb(bytes: i64) -> String {
    let mb = bytes as f64 / 1e6;
    if mb > 0.0 && mb < 1.0 {
        format!("{mb:.2}")
    } else {
        format!("{mb:.1}")
    }
}

/// Seconds between two RFC 3339 times (`end` None: now).
fn span(start: &str, end: Option<&str>) -> Option<f64> {
    let a = parse_time(start)?;
    let b = match end {
        Some(e) => parse_time(e)?,
        None => chrono::Utc::now(),
    };
    Some((b - a).num_milliseconds().max(0) as f64 / 1000.0)
}

/// The run in progress, if a run holds the data directory and the ledger's newest run is still running.
fn live_run(app: &App, l: Option<&Ledger>) -> Result<Option<RunView>, Error> {
    let held = dobsob_engine::lock::is_held(&app.settings.data_dir);
    let Some(l) = l else { return Ok(None) };
    if !held {
        return Ok(None);
    }
    Ok(l.run_view(None)?.filter(|r| r.finished_at.is_none()))
}

fn live_panel(app: &App, run: Option<&RunView>) -> String {
    let mut s = String::new();
    let control = app
        .control
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match run {
        None => {
            s.push_str("<section id=\"live\" class=\"card live idle\" data-running=\"0\"><h2>Now</h2><p class=\"muted\">No run in progress.");
            if let Some(c) = control.filter(|c| c.ended.is_some()) {
                let _ = write!(
                    s,
                    " The {} started here at {} {}.",
                    esc(&c.what),
                    esc(&short_date(&c.started_at)),
                    esc(c.ended.as_deref().unwrap_or(""))
                );
            }
            s.push_str("</p></section>");
        }
        Some(r) => {
            let running: Vec<&AttemptView> = r
                .attempts
                .iter()
                .filter(|a| a.outcome == "running")
                .collect();
            let elapsed = span(&r.started_at, None).unwrap_or(0.0);
            let bytes: i64 = r.attempts.iter().map(|a| a.bytes).sum();
            let rows: i64 = r.attempts.iter().map(|a| a.rows_fetched).sum();
            let _ = write!(
                s,
                "<section id=\"live\" class=\"card live\" data-running=\"1\"><h2>Now: run <a href=\"/runs/{id}\">{id}</a> \
                 {badge}</h2><p>{cmd} started {start} ({el} ago): {done} of the datasets so far; {rows} rows, {mb} MB, \
                 {rate} MB/s.{by}</p>",
                id = r.run_id,
                badge = badge("running"),
                cmd = esc(&r.command),
                start = esc(&short_date(&r.started_at)),
                el = seconds(elapsed),
                done = esc(&r.counts.summary()),
                rows = thousands(rows),
                mb = mb(bytes),
                rate = if elapsed > 0.0 {
                    format!("{:.2}", bytes as f64 / 1e6 / elapsed)
                } else {
                    "-".into()
                },
                by = match control.filter(|c| c.ended.is_none()) {
                    Some(c) => format!(" Started from this dashboard ({}).", esc(&c.what)),
                    None => String::new(),
                }
            );
            if running.is_empty() {
                s.push_str("<p class=\"muted\">Between datasets.</p>");
            } else {
                s.push_str("<div class=\"scroll\"><table><thead><tr><th>In flight</th><th>Mode</th><th class=\"num\">Rows</th><th class=\"num\">MB</th><th class=\"num\">MB/s</th><th class=\"num\">For</th></tr></thead><tbody>");
                for a in running {
                    let t = span(&a.started_at, None).unwrap_or(0.0);
                    let _ = write!(
                        s,
                        "<tr><td><a href=\"/datasets/{k}\">{key}</a></td><td>{mode}</td><td class=\"num\">{rows}</td>\
                         <td class=\"num\">{mb}</td><td class=\"num\">{rate}</td><td class=\"num\">{t}</td></tr>",
                        k = seg(&a.dataset),
                        key = esc(&a.dataset),
                        mode = esc(&a.mode),
                        rows = thousands(a.rows_fetched),
                        mb = mb(a.bytes),
                        rate = if t > 0.0 {
                            format!("{:.2}", a.bytes as f64 / 1e6 / t)
                        } else {
                            "-".into()
                        },
                        t = seconds(t)
                    );
                }
                s.push_str("</tbody></table></div>");
            }
            s.push_str("</section>");
        }
    }
    s
}

fn controls(app: &App) -> String {
    if !app.allow_control {
        return String::new();
    }
    let form = |action: &str, label: &str, class: &str| {
        format!(
            "<form class=\"inline\" method=\"post\" action=\"{a}\"><input type=\"hidden\" name=\"csrf\" \
             value=\"{c}\"><button class=\"{class}\" type=\"submit\">{l}</button></form>",
            a = esc(action),
            c = esc(&app.csrf),
            l = esc(label)
        )
    };
    format!(
        "<section class=\"card\"><h2>Control</h2><div class=\"controls\">{}{}<span class=\"muted small\">Runs \
         start in this server under the data directory's lock; a run already holding it is named and nothing \
         starts.</span></div></section>",
        form("/control/sync", "Sync now", ""),
        form("/control/retry-failed", "Retry failed", "secondary"),
    )
}

/// Per dataset, its row counts over the recent profiles and its durations over the recent attempts that
/// did something (oldest first).
fn history(l: &Ledger, key: &str) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let rows = l
        .profile_history(key, 30)?
        .iter()
        .map(|p| p.rows as f64)
        .collect();
    let mut durations: Vec<f64> = l
        .dataset_attempts(key, 60)?
        .iter()
        .filter(|a| matches!(a.attempt.outcome.as_str(), "ok" | "drift" | "failed"))
        .filter_map(|a| span(&a.attempt.started_at, a.attempt.finished_at.as_deref()))
        .take(30)
        .collect();
    durations.reverse();
    Ok((rows, durations))
}

pub async fn overview(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    let r = blocking(move || {
        let statuses = all_statuses(&a)?;
        let l = ledger(&a)?;
        let live = live_run(&a, l.as_ref())?;
        let mut histories = Vec::new();
        for s in &statuses {
            histories.push(match &l {
                Some(l) => history(l, &s.key)?,
                None => Default::default(),
            });
        }
        Ok((statuses, live, histories))
    })
    .await;
    let (statuses, live, histories) = match r {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let mut s = String::new();
    let count = |state: &str| statuses.iter().filter(|d| d.state == state).count();
    let _ = write!(s, "<h1>Datasets</h1><div class=\"summary\">");
    for state in ["fresh", "due", "stale", "failing", "drift", "never"] {
        let _ = write!(s, "<div><b>{}</b>{}</div>", count(state), badge(state));
    }
    let anomalies: usize = statuses.iter().filter(|d| !d.quality.is_empty()).count();
    let _ = write!(
        s,
        "<div><b>{anomalies}</b><span class=\"badge s-{}\">quality warnings</span></div></div>",
        if anomalies > 0 { "stale" } else { "fresh" }
    );
    s.push_str(&live_panel(&app, live.as_ref()));
    s.push_str(&controls(&app));
    s.push_str(
        "<div class=\"scroll card\"><table id=\"datasets\"><thead><tr><th>State</th><th>Dataset</th>\
         <th class=\"num\">Rows <span class=\"muted\">(recent)</span></th><th>Last success</th>\
         <th class=\"wide\">Last outcome <span class=\"muted\">(sync time)</span></th><th>Problems</th></tr></thead><tbody>",
    );
    for (d, (rows, durations)) in statuses.iter().zip(&histories) {
        s.push_str(&dataset_row(d, rows, durations));
    }
    s.push_str("</tbody></table></div>");
    layout(&app, "Overview", &s).into_response()
}

fn dataset_row(d: &DatasetStatus, rows: &[f64], durations: &[f64]) -> String {
    let mut problems = Vec::new();
    if let Some(e) = &d.last_error {
        problems.push(format!("<span class=\"err\">{}</span>", esc(e)));
    }
    // The first two findings; the dataset's page has them all.
    for a in d.quality.iter().take(2) {
        problems.push(format!(
            "<span class=\"warn\">quality: {}</span>",
            esc(&a.message)
        ));
    }
    if d.quality.len() > 2 {
        problems.push(format!(
            "<a class=\"warn\" href=\"/datasets/{}\">and {} more quality findings</a>",
            seg(&d.key),
            d.quality.len() - 2
        ));
    }
    if d.uncastable.is_some_and(|n| n > 0) {
        problems.push(format!(
            "<span class=\"muted\">{} uncastable values</span>",
            thousands(d.uncastable.unwrap_or(0))
        ));
    }
    let rows_text = match (d.rows, d.source_rows) {
        (Some(r), Some(src)) if r != src => format!(
            "{} <span class=\"muted small\">(source {})</span>",
            thousands(r),
            thousands(src)
        ),
        (r, _) => opt_num(r),
    };
    format!(
        "<tr data-dataset=\"{key}\" data-state=\"{state}\"><td>{badge}</td><td><a href=\"/datasets/{k}\">{key}</a>\
         <div class=\"muted small\">{name} · {prio}</div></td><td class=\"num\">{rows}<div>{rspark}</div></td>\
         <td class=\"nowrap\" data-label=\"last success\">{age}<div class=\"muted small\">next due {due}</div></td>\
         <td class=\"wide\">{outcome}<div>{dspark}</div></td><td class=\"note\">{problems}</td></tr>",
        key = esc(&d.key),
        k = seg(&d.key),
        state = esc(d.state),
        badge = badge(d.state),
        name = esc(&d.name),
        prio = esc(&d.priority.to_string()),
        rows = rows_text,
        rspark = spark(rows, &format!("{}: rows over the last {} profiles", d.key, rows.len())),
        age = esc(&age_text(d.age_seconds)),
        due = esc(&d
            .next_due_at
            .as_deref()
            .map(short_date)
            .unwrap_or_else(|| "now".into())),
        outcome = d
            .last_outcome
            .map(|o| badge(o.as_str()))
            .unwrap_or_else(|| "-".into()),
        dspark = spark(durations, &format!("{}: seconds per sync, last {}", d.key, durations.len())),
        problems = problems.join("<br>"),
    )
}

/// A sparkline of the overview (nothing for fewer than two values).
fn spark(values: &[f64], label: &str) -> String {
    svg::sparkline(values, 90.0, 20.0, label)
}

pub async fn live_fragment(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    match blocking(move || {
        let l = ledger(&a)?;
        live_run(&a, l.as_ref())
    })
    .await
    {
        Ok(live) => Html(live_panel(&app, live.as_ref())).into_response(),
        Err(e) => failed(e),
    }
}

#[derive(serde::Deserialize)]
pub struct RunsQuery {
    limit: Option<u32>,
}

fn runs_table(runs: &[RunLine]) -> String {
    let mut s = String::from(
        "<div class=\"scroll card\"><table id=\"runs\"><thead><tr><th>Run</th><th>Outcome</th><th>Command</th>\
         <th>Started</th><th class=\"num\">Took</th><th>Datasets</th><th class=\"num wide\">Rows</th>\
         <th class=\"num wide\">MB</th><th class=\"num wide\">Requests</th></tr></thead><tbody>",
    );
    for r in runs {
        let _ = write!(
            s,
            "<tr><td><a href=\"/runs/{id}\">{id}</a></td><td>{o}</td><td>{c}</td><td>{st}</td>\
             <td class=\"num\">{took}</td><td>{n}</td><td class=\"num wide\">{rows}</td><td class=\"num wide\">{mb}</td>\
             <td class=\"num wide\">{req}</td></tr>",
            id = r.run_id,
            o = badge(&r.outcome),
            c = esc(&r.command),
            st = esc(&short_date(&r.started_at)),
            took = match r.finished_at.as_deref() {
                Some(f) => span(&r.started_at, Some(f)).map(seconds).unwrap_or_default(),
                None => "running".into(),
            },
            n = esc(&r.counts.summary()),
            rows = thousands(r.rows_fetched),
            mb = mb(r.bytes),
            req = thousands(r.requests)
        );
    }
    s.push_str("</tbody></table></div>");
    s
}

pub async fn runs(State(app): State<Arc<App>>, Query(q): Query<RunsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let a = app.clone();
    let runs = match blocking(move || match ledger(&a)? {
        Some(l) => Ok(l.runs(limit)?),
        None => Ok(Vec::new()),
    })
    .await
    {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let mut s = String::from("<h1>Runs</h1>");
    if runs.is_empty() {
        s.push_str("<div class=\"card\"><p>No runs yet: the first <code>dobsob sync</code> records one.</p></div>");
    } else {
        let durations: Vec<f64> = runs
            .iter()
            .rev()
            .filter_map(|r| {
                r.finished_at
                    .as_deref()
                    .and_then(|f| span(&r.started_at, Some(f)))
            })
            .collect();
        let _ = write!(
            s,
            "<div class=\"card\"><p>The newest {} runs. Duration per run, oldest to newest: {}</p></div>",
            runs.len(),
            svg::sparkline(&durations, 240.0, 30.0, "seconds per run")
        );
        s.push_str(&runs_table(&runs));
        if runs.len() as u32 == limit {
            let _ = write!(
                s,
                "<p><a href=\"/runs?limit={}\">Older runs</a></p>",
                (limit * 4).min(1000)
            );
        }
    }
    layout(&app, "Runs", &s).into_response()
}

fn outcome_class(a: &AttemptView) -> &str {
    match (a.outcome.as_str(), a.mode.as_str()) {
        ("ok", "unchanged") => "unchanged",
        (o, _) => o,
    }
}

pub async fn run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found("a run is named by its number, e.g. /runs/12");
    };
    let a = app.clone();
    let view = match blocking(move || match ledger(&a)? {
        Some(l) => Ok(l.run_view(Some(id))?),
        None => Ok(None),
    })
    .await
    {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(&format!("no run {id} in the ledger")),
        Err(e) => return failed(e),
    };
    let total = span(&view.started_at, view.finished_at.as_deref()).unwrap_or(0.0);
    let mut s = format!(
        "<h1>Run {id} {o}</h1><div class=\"card\"><dl class=\"facts\"><dt>Command</dt><dd>{c}</dd><dt>Started</dt>\
         <dd>{st}</dd><dt>Finished</dt><dd>{fi}</dd><dt>Took</dt><dd>{took}</dd><dt>Datasets</dt><dd>{n}</dd>\
         <dt>Downloaded</dt><dd>{rows} rows, {mb} MB, {req} requests</dd></dl>\
         <p><a href=\"/api/runs/{id}.json\" download=\"dobsob-run-{id}.json\">Download the report (JSON)</a></p></div>",
        o = badge(&view.outcome),
        c = esc(&view.command),
        st = esc(&view.started_at),
        fi = esc(view.finished_at.as_deref().unwrap_or("still running")),
        took = seconds(total),
        n = esc(&view.counts.summary()),
        rows = thousands(view.attempts.iter().map(|a| a.rows_fetched).sum()),
        mb = mb(view.attempts.iter().map(|a| a.bytes).sum()),
        req = thousands(view.attempts.iter().map(|a| a.requests).sum()),
    );
    let bars: Vec<svg::Bar> = view
        .attempts
        .iter()
        .map(|a| {
            let start = span(&view.started_at, Some(&a.started_at)).unwrap_or(0.0);
            let end = match a.finished_at.as_deref() {
                Some(f) => span(&view.started_at, Some(f)).unwrap_or(start),
                None => total,
            };
            svg::Bar {
                label: a.dataset.clone(),
                start,
                end,
                class: outcome_class(a).to_string(),
                title: format!(
                    "{}: {} {} from {} to {} ({})",
                    a.dataset,
                    outcome_class(a),
                    a.mode,
                    seconds(start),
                    seconds(end),
                    seconds(end - start)
                ),
            }
        })
        .collect();
    if !bars.is_empty() {
        let _ = write!(
            s,
            "<h2>Timeline</h2><div class=\"card\">{}</div>",
            svg::timeline(
                &bars,
                total,
                &format!("run {id}: one bar per dataset, from its start to its end")
            )
        );
    }
    s.push_str(
        "<h2>Datasets</h2><div class=\"scroll card\"><table id=\"attempts\"><thead><tr><th>Dataset</th><th>Outcome</th>\
         <th>Mode</th><th class=\"num\">Fetched</th><th class=\"num wide\">Deleted</th><th class=\"num wide\">MB</th>\
         <th class=\"num wide\">Pages</th><th class=\"num\">Took</th><th>Note</th></tr></thead><tbody>",
    );
    for a in &view.attempts {
        let took = span(&a.started_at, a.finished_at.as_deref()).unwrap_or(0.0);
        let _ = write!(
            s,
            "<tr><td><a href=\"/datasets/{k}\">{key}</a></td><td>{o}</td><td>{m}</td><td class=\"num\">{f}</td>\
             <td class=\"num wide\">{d}</td><td class=\"num wide\">{mb}</td><td class=\"num wide\">{p}</td>\
             <td class=\"num\">{t}</td><td class=\"{cls}\">{note}</td></tr>",
            k = seg(&a.dataset),
            key = esc(&a.dataset),
            o = badge(outcome_class(a)),
            m = esc(&a.mode),
            f = thousands(a.rows_fetched),
            d = thousands(a.rows_deleted),
            mb = mb(a.bytes),
            p = a.pages,
            t = seconds(took),
            cls = if a.error.is_some() { "err" } else { "note" },
            note = esc(a.error.as_deref().or(a.reason.as_deref()).unwrap_or("")),
        );
    }
    s.push_str("</tbody></table></div>");
    layout(&app, &format!("Run {id}"), &s).into_response()
}

pub async fn dataset(State(app): State<Arc<App>>, Path(key): Path<String>) -> Response {
    let Some(ds) = app.settings.catalog.get(&key).cloned() else {
        return not_found(&format!("no dataset {key:?} in the catalog"));
    };
    let a = app.clone();
    let k = key.clone();
    let r = blocking(move || {
        let sel = crate::cli::Selection {
            datasets: vec![k.clone()],
            ..Default::default()
        };
        let status = collect(&a.settings, &sel, a.postgres.as_ref())?
            .into_iter()
            .next();
        let l = ledger(&a)?;
        let (profile, history, columns, attempts, warnings) = match &l {
            Some(l) => (
                l.latest_profile(&k)?,
                l.profile_history(&k, 60)?,
                l.columns(&k)?,
                l.dataset_attempts(&k, 25)?,
                l.dataset_warnings(&k, 25)?,
            ),
            None => Default::default(),
        };
        // The warehouse's own facts; a warehouse that cannot be read is said on the page, not a failure.
        let facts = match &a.postgres {
            Some(info) => dobsob_engine::warehouse::facts::postgres_facts(info, &k),
            None => dobsob_engine::warehouse::facts::duckdb_facts(
                &a.settings.warehouse_path(),
                &a.settings.tmp_dir(),
                &k,
            ),
        };
        Ok((status, profile, history, columns, attempts, warnings, facts))
    })
    .await;
    let (status, profile, history, columns, attempts, warnings, facts) = match r {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let mut s = String::new();
    let portal_page = app
        .settings
        .portal
        .join(&format!("d/{}", ds.id.as_str()))
        .map(|u| u.to_string())
        .unwrap_or_default();
    let _ = write!(
        s,
        "<h1>{key} {badge}</h1><div class=\"card\"><dl class=\"facts\"><dt>Name</dt><dd>{name}</dd>\
         <dt>Socrata id</dt><dd><a href=\"{portal}\" rel=\"noopener noreferrer\">{id}</a> (the portal's page)</dd>\
         <dt>Group, priority</dt><dd>{group}, {prio}</dd><dt>Frequency</dt><dd>{freq}</dd>",
        key = esc(&key),
        badge = status.as_ref().map(|s| badge(s.state)).unwrap_or_default(),
        name = esc(&ds.name),
        portal = esc(&portal_page),
        id = esc(ds.id.as_str()),
        group = esc(&ds.group.to_string()),
        prio = esc(&ds.priority().to_string()),
        freq = esc(&ds.frequency.to_string()),
    );
    if let Some(st) = &status {
        let _ = write!(
            s,
            "<dt>Rows</dt><dd>{rows}{src}</dd><dt>Last success</dt><dd>{last} ({age})</dd><dt>Next due</dt><dd>{due}</dd>\
             <dt>Watermark</dt><dd>{wm}</dd><dt>Last outcome</dt><dd>{out}</dd>",
            rows = opt_num(st.rows),
            src = match (st.rows, st.source_rows) {
                (Some(r), Some(x)) if r != x => format!(" (the source counted {})", thousands(x)),
                _ => String::new(),
            },
            last = esc(st.last_success_at.as_deref().unwrap_or("never")),
            age = esc(&age_text(st.age_seconds)),
            due = esc(st.next_due_at.as_deref().unwrap_or("now")),
            wm = esc(&st.watermark.as_ref().map(|w| format!("{} / {}", w.updated_at, w.id)).unwrap_or_else(|| "-".into())),
            out = st.last_outcome.map(|o| badge(o.as_str())).unwrap_or_else(|| "-".into()),
        );
        if let Some(e) = &st.last_error {
            let _ = write!(s, "<dt>Last error</dt><dd class=\"err\">{}</dd>", esc(e));
        }
    }
    s.push_str("</dl>");
    if app.allow_control {
        let form = |action: String, label: &str, class: &str| {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" \
                 value=\"{}\"><button class=\"{class}\" type=\"submit\">{}</button></form>",
                esc(&action),
                esc(&app.csrf),
                esc(label)
            )
        };
        let _ = write!(
            s,
            "<div class=\"controls gap\">{}{}</div>",
            form(
                format!("/control/sync/{}", seg(&key)),
                "Sync this dataset",
                ""
            ),
            form(
                format!("/control/rebuild/{}", seg(&key)),
                "Rebuild this dataset",
                "secondary"
            ),
        );
    }
    s.push_str("</div>");
    // Data quality.
    s.push_str("<h2>Data quality</h2><div class=\"card\">");
    match &profile {
        None => s.push_str("<p class=\"muted\">No profile yet: one is made after each sync that changes the table.</p>"),
        Some((p, anomalies)) => {
            if anomalies.is_empty() {
                s.push_str("<p>The last profile found nothing unusual.</p>");
            } else {
                s.push_str("<ul class=\"warnings\" id=\"anomalies\">");
                for a in anomalies {
                    let _ = write!(s, "<li class=\"warn\">{}</li>", esc(&a.message));
                }
                s.push_str("</ul>");
            }
            let _ = write!(
                s,
                "<p class=\"small muted\">{} rows, {} distinct ids, {} uncastable values at the last profile.</p>",
                thousands(p.rows),
                thousands(p.distinct_ids),
                thousands(p.uncastable)
            );
        }
    }
    if history.len() == 1 {
        s.push_str("<p class=\"small muted\">One profile so far: the chart of rows over time starts with the next sync that changes the table.</p>");
    }
    if history.len() > 1 {
        let points: Vec<(String, i64)> = history.iter().map(|h| (h.at.clone(), h.rows)).collect();
        s.push_str(&svg::rows_chart(
            &points,
            &format!("{key}: rows at each profile"),
        ));
    }
    s.push_str("</div>");
    // Columns.
    let stored: std::collections::HashMap<&str, &str> = facts
        .as_ref()
        .map(|f| {
            f.columns
                .iter()
                .map(|c| (c.name.as_str(), c.stored_type.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let described: std::collections::HashMap<&str, (&str, Option<&str>)> = columns
        .iter()
        .map(|c| {
            (
                c.field_name.as_str(),
                (c.name.as_str(), c.description.as_deref()),
            )
        })
        .collect();
    s.push_str(
        "<h2>Columns</h2><div class=\"scroll card\"><table id=\"columns\"><thead><tr><th>Column</th><th>Type</th>\
         <th class=\"num\">NULL</th><th class=\"wide\">Min</th><th class=\"wide\">Max</th><th class=\"wide\">Description</th>\
         </tr></thead><tbody>",
    );
    let profiled = profile.as_ref().map(|(p, _)| p);
    let names: Vec<String> = match profiled {
        Some(p) => p.columns.iter().map(|c| c.name.clone()).collect(),
        None => columns.iter().map(|c| c.field_name.clone()).collect(),
    };
    for name in &names {
        let pc = profiled.and_then(|p| p.columns.iter().find(|c| &c.name == name));
        let (display, description) = described.get(name.as_str()).copied().unwrap_or(("", None));
        let _ = write!(
            s,
            "<tr><td><code>{n}</code><div class=\"muted small\">{d}</div></td><td>{t}</td><td class=\"num\">{null}</td>\
             <td class=\"wide\">{min}</td><td class=\"wide\">{max}</td><td class=\"wide small\">{desc}</td></tr>",
            n = esc(name),
            d = esc(display),
            t = esc(stored.get(name.as_str()).copied().or(pc.map(|c| c.kind.as_str())).unwrap_or("")),
            null = match (pc, profiled) {
                (Some(c), Some(p)) => format!("{:.1}%", c.null_share(p.rows) * 100.0),
                _ => "-".into(),
            },
            min = esc(pc.and_then(|c| c.min.as_deref()).unwrap_or("")),
            max = esc(pc.and_then(|c| c.max.as_deref()).unwrap_or("")),
            desc = esc(description.unwrap_or("")),
        );
    }
    s.push_str("</tbody></table></div>");
    // A query to start from.
    let table = match &app.postgres {
        Some(info) => format!("{}.{}", ident(&info.schema), ident(&key)),
        None => ident(&key),
    };
    let query = format!("SELECT *\nFROM {table}\nORDER BY socrata_updated_at DESC\nLIMIT 100;");
    let how = match &app.postgres {
        Some(_) => "psql \"$DATABASE_URL\"".to_string(),
        None => format!(
            "duckdb -readonly {}",
            app.settings.warehouse_path().display()
        ),
    };
    let _ = write!(
        s,
        "<h2>Query</h2><div class=\"card\"><p class=\"small muted\">Open the warehouse with <code>{}</code> (or \
         <code>dobsob sql</code>) and start from:</p><pre><code id=\"query\">{}</code></pre>\
         <button class=\"secondary\" type=\"button\" data-copy=\"query\" hidden>Copy</button></div>",
        esc(&how),
        esc(&query)
    );
    // The warehouse's facts.
    match &facts {
        Err(e) => {
            let _ = write!(
                s,
                "<h2>Uncastable values</h2><div class=\"card\"><p class=\"warn\">The warehouse could not be read: {}</p></div>",
                esc(e)
            );
        }
        Ok(f) => {
            s.push_str("<h2>Uncastable values</h2><div class=\"card\">");
            if f.uncastable.is_empty() {
                s.push_str("<p class=\"muted\">None: every value fits its column's type.</p>");
            } else {
                let _ = write!(
                    s,
                    "<p class=\"small muted\">Values kept verbatim in <code>dobsob.uncastable</code> (the column holds \
                     NULL), the most frequent of up to {} looked at:</p><div class=\"scroll\"><table id=\"uncastable\">\
                     <thead><tr><th>Column</th><th>Type</th><th>Value</th><th class=\"num\">Count</th></tr></thead><tbody>",
                    thousands(dobsob_engine::warehouse::facts::SAMPLE as i64)
                );
                for u in &f.uncastable {
                    let _ = write!(
                        s,
                        "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td></tr>",
                        esc(&u.column),
                        esc(&u.data_type),
                        esc(&u.value),
                        thousands(u.count)
                    );
                }
                s.push_str("</tbody></table></div>");
            }
            s.push_str("</div>");
            if !f.schema_changes.is_empty() {
                s.push_str("<h2>Schema changes</h2><div class=\"scroll card\"><table><thead><tr><th>When</th><th>Column</th><th>From</th><th>To</th><th>Why</th></tr></thead><tbody>");
                for c in &f.schema_changes {
                    let _ = write!(
                        s,
                        "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"note\">{}</td></tr>",
                        esc(&c.at),
                        esc(&c.column),
                        esc(&c.from_type),
                        esc(&c.to_type),
                        esc(&c.reason)
                    );
                }
                s.push_str("</tbody></table></div>");
            }
        }
    }
    // Recent attempts and warnings.
    s.push_str(
        "<h2>Recent attempts</h2><div class=\"scroll card\"><table id=\"recent\"><thead><tr><th>Run</th><th>Outcome</th>\
         <th>Mode</th><th>Started</th><th class=\"num\">Took</th><th class=\"num wide\">Fetched</th>\
         <th class=\"num wide\">Deleted</th><th>Note</th></tr></thead><tbody>",
    );
    for at in &attempts {
        let a = &at.attempt;
        let _ = write!(
            s,
            "<tr><td><a href=\"/runs/{r}\">{r}</a></td><td>{o}</td><td>{m}</td><td>{st}</td><td class=\"num\">{t}</td>\
             <td class=\"num wide\">{f}</td><td class=\"num wide\">{d}</td><td class=\"{cls}\">{note}</td></tr>",
            r = at.run_id,
            o = badge(outcome_class(a)),
            m = esc(&a.mode),
            st = esc(&short_date(&a.started_at)),
            t = span(&a.started_at, a.finished_at.as_deref()).map(seconds).unwrap_or_default(),
            f = thousands(a.rows_fetched),
            d = thousands(a.rows_deleted),
            cls = if a.error.is_some() { "err" } else { "note" },
            note = esc(a.error.as_deref().or(a.reason.as_deref()).unwrap_or("")),
        );
    }
    s.push_str("</tbody></table></div>");
    if !warnings.is_empty() {
        s.push_str("<h2>Warnings</h2><div class=\"card\"><ul class=\"warnings\" id=\"warnings\">");
        for w in &warnings {
            let _ = write!(
                s,
                "<li><a href=\"/runs/{}\">run {}</a>, {}: {}</li>",
                w.run_id,
                w.run_id,
                esc(&short_date(&w.at)),
                esc(&w.message)
            );
        }
        s.push_str("</ul></div>");
    }
    layout(&app, &key, &s).into_response()
}

/// A SQL identifier, double-quoted.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn json(value: &impl serde::Serialize) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(value).expect("serializes"),
    )
        .into_response()
}

pub async fn status_json(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    match blocking(move || all_statuses(&a)).await {
        Ok(statuses) => json(&statuses),
        Err(e) => failed(e),
    }
}

pub async fn run_json(State(app): State<Arc<App>>, Path(file): Path<String>) -> Response {
    let Some(id) = file
        .strip_suffix(".json")
        .and_then(|i| i.parse::<i64>().ok())
    else {
        return not_found("a run's report is /api/runs/ID.json");
    };
    let a = app.clone();
    match blocking(move || match ledger(&a)? {
        Some(l) => Ok(l.run_view(Some(id))?),
        None => Ok(None),
    })
    .await
    {
        Ok(Some(v)) => json(&v),
        Ok(None) => not_found(&format!("no run {id} in the ledger")),
        Err(e) => failed(e),
    }
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    match blocking(move || {
        let statuses = all_statuses(&a)?;
        let l = ledger(&a)?;
        let runs = match &l {
            Some(l) => l.runs(1)?,
            None => Vec::new(),
        };
        let held = dobsob_engine::lock::is_held(&a.settings.data_dir);
        Ok(crate::metrics::render(&statuses, runs.first(), Some(held)))
    })
    .await
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => failed(e),
    }
}
