//! The emulator's HTTP side: routing, faults, query evaluation and the CSV/JSON representations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{Map, Value};

use super::soql::{self, Field, QueryError, Selection};
use super::{format_time, ids, Dataset, FaultKind, Row, Served, State};

type Shared = Arc<Mutex<State>>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/resource/{file}", get(resource))
        .route("/api/views/{file}", get(view))
        .fallback(|| async { error(404, false, "not_found", "Not found".into(), None) })
        .with_state(state)
}

/// An error in one of the two shapes the real portal uses.
fn error(
    status: u16,
    errorcode_shape: bool,
    code: &str,
    message: String,
    retry_after: Option<u64>,
) -> Response {
    let body = if errorcode_shape {
        serde_json::json!({"message": message, "errorCode": code, "data": {}})
    } else {
        serde_json::json!({"code": code, "error": true, "message": message, "data": {}})
    };
    let mut r = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("Content-Type", "application/json; charset=utf-8");
    if let Some(s) = retry_after {
        r = r.header("Retry-After", s.to_string());
    }
    r.body(Body::from(body.to_string()))
        .expect("a valid response")
}

fn query_error(e: QueryError) -> Response {
    error(400, true, e.code, e.message, None)
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Finds the fault for this request, if any, consuming one use of it.
fn take_fault(st: &mut State, path: &str) -> Option<FaultKind> {
    for f in st.faults.iter_mut() {
        if f.times == 0 || !path.contains(&f.path_contains) {
            continue;
        }
        if f.skip > 0 {
            f.skip -= 1;
            return None;
        }
        f.times -= 1;
        return Some(f.kind.clone());
    }
    None
}

/// How the body of a normal answer is sent.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    Whole,
    /// The first n bytes, then a broken connection.
    Cut(usize),
    /// The first n bytes, then silence.
    Stall(usize),
    /// Chunks of `chunk` bytes with a pause between them.
    Trickle {
        chunk: usize,
        pause_ms: u64,
    },
}

/// A request being handled: counted in `in_flight` from its arrival until its answer is built.
struct InFlight(Shared);

impl InFlight {
    fn arrive(shared: &Shared, path: &str) -> InFlight {
        let mut st = lock(shared);
        let epoch = *st.epoch.get_or_insert_with(std::time::Instant::now);
        let at = epoch.elapsed().as_millis() as u64;
        st.arrivals.push((path.to_string(), at));
        st.in_flight += 1;
        st.peak_in_flight = st.peak_in_flight.max(st.in_flight);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = lock(&self.0);
        st.in_flight = st.in_flight.saturating_sub(1);
    }
}

/// Checks the token and faults; returns how to deliver a normal answer, or an answer to send now.
async fn preamble(shared: &Shared, headers: &HeaderMap, path: &str) -> Result<Delivery, Response> {
    let fault = {
        let mut st = lock(shared);
        if let Some(tok) = &st.required_token {
            if headers.get("X-App-Token").and_then(|v| v.to_str().ok()) != Some(tok.as_str()) {
                return Err(error(
                    403,
                    false,
                    "permission_denied",
                    "Invalid app_token specified".into(),
                    None,
                ));
            }
        }
        take_fault(&mut st, path)
    };
    match fault {
        None => Ok(Delivery::Whole),
        Some(FaultKind::DelayMs(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Delivery::Whole)
        }
        Some(FaultKind::CutAfter(n)) => Ok(Delivery::Cut(n)),
        Some(FaultKind::StallAfter(n)) => Ok(Delivery::Stall(n)),
        Some(FaultKind::Trickle { chunk, pause_ms }) => Ok(Delivery::Trickle {
            chunk: chunk.max(1),
            pause_ms,
        }),
        Some(FaultKind::Body(body)) => Err(Response::builder()
            .header("Content-Type", "text/csv; charset=utf-8")
            .body(Body::from(body))
            .expect("a valid response")),
        Some(FaultKind::InvalidUtf8(body)) => {
            let mut bytes = Vec::with_capacity(body.len());
            for part in body.split('\u{FFFD}').enumerate() {
                if part.0 > 0 {
                    bytes.push(0xE9);
                }
                bytes.extend_from_slice(part.1.as_bytes());
            }
            Err(Response::builder()
                .header("Content-Type", "text/csv; charset=utf-8")
                .body(Body::from(bytes))
                .expect("a valid response"))
        }
        Some(FaultKind::Raw {
            status,
            content_type,
            headers,
            body,
        }) => {
            let mut r = Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
                .header("Content-Type", content_type);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            Err(r.body(Body::from(body)).expect("a valid response"))
        }
        Some(FaultKind::Status {
            status,
            errorcode_shape,
            retry_after,
        }) => {
            let code = match status {
                429 => "too_many_requests",
                500 => "internal_error",
                503 => "service_unavailable",
                _ => "injected_fault",
            };
            Err(error(
                status,
                errorcode_shape,
                code,
                format!("Injected fault {status}"),
                retry_after,
            ))
        }
    }
}

/// The portal's `Date` header: its own clock (which the quirks may set apart from ours).
fn date_header(shared: &Shared) -> HeaderValue {
    let ms = lock(shared).portal_now_ms();
    let t = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    HeaderValue::from_str(&t).expect("ascii")
}

fn log(shared: &Shared, path: &str, select: Option<String>, status: u16, rows: usize) {
    log_where(shared, path, select, None, status, rows)
}

fn log_where(
    shared: &Shared,
    path: &str,
    select: Option<String>,
    where_: Option<String>,
    status: u16,
    rows: usize,
) {
    let mut st = lock(shared);
    let at_ms = st
        .epoch
        .map(|e| e.elapsed().as_millis() as u64)
        .unwrap_or(0);
    st.log.push(Served {
        path: path.to_string(),
        select,
        where_,
        at_ms,
        status,
        rows,
    });
}

/// Sends `body` as `delivery` says.
fn send(mut resp: axum::http::response::Builder, body: Vec<u8>, delivery: Delivery) -> Response {
    type Chunk = Result<Bytes, std::io::Error>;
    fn prefix(body: &[u8], n: usize) -> Bytes {
        Bytes::from(body[..n.min(body.len())].to_vec())
    }
    let stream: futures_util::stream::BoxStream<'static, Chunk> = match delivery {
        Delivery::Whole => {
            resp = resp.header("Content-Length", body.len());
            return resp.body(Body::from(body)).expect("a valid response");
        }
        Delivery::Cut(n) => Box::pin(futures_util::stream::iter(vec![
            Ok(prefix(&body, n)),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected cut",
            )),
        ])),
        Delivery::Stall(n) => {
            let first =
                futures_util::stream::iter(vec![Ok::<Bytes, std::io::Error>(prefix(&body, n))]);
            let silence = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Err::<Bytes, _>(std::io::Error::other("stalled"))
            });
            Box::pin(futures_util::StreamExt::chain(first, silence))
        }
        Delivery::Trickle { chunk, pause_ms } => {
            let chunks: Vec<Bytes> = body
                .chunks(chunk)
                .map(|c| Bytes::from(c.to_vec()))
                .collect();
            Box::pin(futures_util::stream::unfold(
                (chunks.into_iter(), true),
                move |(mut it, first)| async move {
                    let c = it.next()?;
                    if !first {
                        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    }
                    Some((Ok(c), (it, false)))
                },
            ))
        }
    };
    resp.body(Body::from_stream(stream))
        .expect("a valid response")
}

async fn view(
    AxState(shared): AxState<Shared>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/views/{file}");
    let _in_flight = InFlight::arrive(&shared, &path);
    let delivery = match preamble(&shared, &headers, &path).await {
        Ok(d) => d,
        Err(r) => {
            log(&shared, &path, None, r.status().as_u16(), 0);
            return r;
        }
    };
    let body = {
        let st = lock(&shared);
        let Some(ds) = file
            .strip_suffix(".json")
            .and_then(|id| st.datasets.get(id))
        else {
            drop(st);
            log(&shared, &path, None, 404, 0);
            return error(
                404,
                false,
                "dataset.missing",
                format!("Cannot find view with id {file}"),
                None,
            );
        };
        serde_json::to_vec(&ds.view).expect("JSON")
    };
    log(&shared, &path, None, 200, 0);
    send(
        Response::builder()
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Date", date_header(&shared)),
        body,
        delivery,
    )
}

struct Params {
    select: String,
    where_: Option<String>,
    order: Option<String>,
    limit: usize,
    offset: usize,
}

fn parse_params(raw: &str) -> Result<Params, QueryError> {
    let mut p = Params {
        select: "*".into(),
        where_: None,
        order: None,
        limit: 1000,
        offset: 0,
    };
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        let bad = |what: &str| QueryError {
            code: "query.soql.invalid-parameter",
            message: format!("Invalid {what}: {v}"),
        };
        match k.as_ref() {
            "$select" => p.select = v.to_string(),
            "$where" => p.where_ = Some(v.to_string()),
            "$order" => p.order = Some(v.to_string()),
            "$limit" => p.limit = v.parse().map_err(|_| bad("$limit"))?,
            "$offset" => p.offset = v.parse().map_err(|_| bad("$offset"))?,
            other => {
                return Err(QueryError {
                    code: "query.soql.invalid-parameter",
                    message: format!("Unsupported parameter {other}"),
                })
            }
        }
    }
    Ok(p)
}

async fn resource(
    AxState(shared): AxState<Shared>,
    Path(file): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = format!("/resource/{file}");
    let raw = raw.unwrap_or_default();
    let param = |name: &str| {
        url::form_urlencoded::parse(raw.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
    };
    let select_param = param("$select");
    let where_param = param("$where");
    let _in_flight = InFlight::arrive(&shared, &path);
    let delivery = match preamble(&shared, &headers, &path).await {
        Ok(d) => d,
        Err(r) => {
            log(&shared, &path, select_param, r.status().as_u16(), 0);
            return r;
        }
    };
    let (id, csv) = match (file.strip_suffix(".csv"), file.strip_suffix(".json")) {
        (Some(id), _) => (id.to_string(), true),
        (_, Some(id)) => (id.to_string(), false),
        _ => {
            return error(
                404,
                false,
                "not_found",
                format!("Unknown format of {file}"),
                None,
            )
        }
    };
    let result = {
        let mut st = lock(&shared);
        let has_where = url::form_urlencoded::parse(raw.as_bytes()).any(|(k, _)| k == "$where");
        let quirks = take_quirks(&mut st, select_param.as_deref(), has_where);
        match st.datasets.get(&id) {
            None => Err(error(
                404,
                false,
                "dataset.missing",
                format!("Cannot find view with id {id}"),
                None,
            )),
            Some(ds) => answer(ds, &raw, csv, &quirks).map_err(query_error),
        }
    };
    match result {
        Err(r) => {
            log(&shared, &path, select_param, r.status().as_u16(), 0);
            r
        }
        Ok((body, rows, rows_updated_at)) => {
            log_where(&shared, &path, select_param, where_param, 200, rows);
            let stamp = chrono::DateTime::from_timestamp(rows_updated_at, 0)
                .unwrap_or_default()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            let ctype = if csv {
                "text/csv; charset=utf-8"
            } else {
                "application/json; charset=utf-8"
            };
            let b = Response::builder()
                .header("Content-Type", ctype)
                .header(
                    "X-SODA2-Truth-Last-Modified",
                    HeaderValue::from_str(&stamp).expect("ascii"),
                )
                .header(
                    "Last-Modified",
                    HeaderValue::from_str(&stamp).expect("ascii"),
                )
                .header("Date", date_header(&shared));
            send(b, body, delivery)
        }
    }
}

/// The quirks that apply to one resource request, decided (and counted) when it arrives.
#[derive(Debug, Clone, Copy, Default)]
struct Applied {
    limit_cap: Option<usize>,
    ignore_where: bool,
    count_lag: u64,
}

fn take_quirks(st: &mut State, select: Option<&str>, has_where: bool) -> Applied {
    let is_count = select.is_some_and(|s| s.replace(' ', "").eq_ignore_ascii_case("count(*)"));
    let q = &mut st.quirks;
    let mut a = Applied {
        limit_cap: q.limit_cap,
        ..Applied::default()
    };
    if is_count {
        if let Some((lag, times)) = q.count_lag.as_mut() {
            if *times > 0 {
                a.count_lag = *lag;
                *times = times.saturating_sub(1);
            }
        }
    } else if let Some((skip, times)) = q.ignore_where.as_mut().filter(|_| has_where) {
        if *skip > 0 {
            *skip -= 1;
        } else if *times > 0 {
            *times -= 1;
            a.ignore_where = true;
        }
    }
    a
}

/// Evaluates a query and renders it; returns the body, the number of rows and `rowsUpdatedAt`.
fn answer(
    ds: &Dataset,
    raw: &str,
    csv: bool,
    quirks: &Applied,
) -> Result<(Vec<u8>, usize, i64), QueryError> {
    let mut p = parse_params(raw)?;
    if let Some(cap) = quirks.limit_cap {
        p.limit = p.limit.min(cap);
    }
    if quirks.ignore_where {
        p.where_ = None;
    }
    let selection = soql::parse_select(ds, &p.select)?;
    let filter = match &p.where_ {
        Some(w) => Some(soql::parse_where(ds, w)?),
        None => None,
    };
    let order = p
        .order
        .as_deref()
        .map(|o| soql::parse_order(ds, o))
        .transpose()?;
    let rows_updated_at = ds
        .view
        .get("rowsUpdatedAt")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let matches = |r: &&Row| {
        filter
            .as_ref()
            .is_none_or(|e| soql::eval(ds, r, e) == Some(true))
    };
    // The rows that may match, in :id order: from the lowest :id the filter allows.
    let first = filter.as_ref().and_then(soql::first_seq).unwrap_or(0);
    let candidates = || ds.rows.range(first..).map(|(_, r)| r);

    let fields = match selection {
        Selection::Count => {
            let n = (candidates().filter(matches).count() as u64).saturating_sub(quirks.count_lag);
            let body = if csv {
                format!("\"count\"\n\"{n}\"\n").into_bytes()
            } else {
                format!("[{{\"count\":\"{n}\"}}]\n").into_bytes()
            };
            return Ok((body, 1, rows_updated_at));
        }
        Selection::Fields(fields) => fields,
    };
    let page: Vec<&Row> = match order.as_deref() {
        // Rows are held in :id order: stop as soon as the page is full.
        Some([(Field::Id, false)]) => candidates()
            .filter(matches)
            .skip(p.offset)
            .take(p.limit)
            .collect(),
        Some(order) => {
            // The rows a stable sort would put first: ties keep the server's :id order. Only the page's
            // rows are sorted (the emulator's CPU is taken from the client's on one machine).
            let cmp = |a: &&Row, b: &&Row| {
                soql::cmp_rows(ds, a, b, order).then_with(|| a.seq.cmp(&b.seq))
            };
            let mut all: Vec<&Row> = candidates().filter(matches).collect();
            let end = p.offset.saturating_add(p.limit).min(all.len());
            if end < all.len() {
                if end > 0 {
                    all.select_nth_unstable_by(end - 1, cmp);
                }
                all.truncate(end);
            }
            all.sort_unstable_by(cmp);
            all.into_iter().skip(p.offset).collect()
        }
        None => {
            // No total order, no stable pages: the real portal's order without $order is arbitrary.
            use rand::seq::SliceRandom;
            let mut all: Vec<&Row> = candidates().filter(matches).collect();
            all.shuffle(&mut rand::rng());
            all.into_iter().skip(p.offset).take(p.limit).collect()
        }
    };
    let body = if csv {
        render_csv(ds, &fields, &page)
    } else {
        render_json(&fields, &page)
    };
    Ok((body, page.len(), rows_updated_at))
}

fn system_value(row: &Row, f: &Field) -> Option<String> {
    match f {
        Field::Id => Some(ids::encode(row.seq)),
        Field::CreatedAt => Some(format_time(row.created_at)),
        Field::UpdatedAt => Some(format_time(row.updated_at)),
        Field::Version => Some(row.version.clone()),
        Field::Column(_) => None,
    }
}

/// A cell as the resource CSV shows it: WKT for geometries, `description (url)` for urls, `true`/`false`.
pub fn cell_text(data_type_name: &str, v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => match data_type_name {
            "location" => {
                let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let addr = o
                    .get("human_address")
                    .and_then(Value::as_str)
                    .and_then(|h| serde_json::from_str::<Map<String, Value>>(h).ok())
                    .map(|m| {
                        ["address", "city", "state", "zip"]
                            .iter()
                            .filter_map(|k| {
                                m.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty())
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                format!("{addr}\n({}, {})", s("latitude"), s("longitude"))
            }
            "url" => {
                let url = o.get("url").and_then(Value::as_str).unwrap_or("");
                match o.get("description").and_then(Value::as_str) {
                    Some(d) if !d.is_empty() => format!("{d} ({url})"),
                    _ => url.to_string(),
                }
            }
            _ if o.get("type").and_then(Value::as_str) == Some("Point") => {
                let c = o.get("coordinates").and_then(Value::as_array);
                let n = |i: usize| {
                    c.and_then(|c| c.get(i))
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                };
                format!("POINT ({} {})", n(0), n(1))
            }
            _ => v.to_string(),
        },
        other => other.to_string(),
    }
}

fn render_csv(ds: &Dataset, fields: &[(String, Field)], rows: &[&Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    let quote = |out: &mut Vec<u8>, s: &str| {
        out.push(b'"');
        let mut rest = s.as_bytes();
        while let Some(i) = memchr::memchr(b'"', rest) {
            out.extend_from_slice(&rest[..=i]);
            out.push(b'"');
            rest = &rest[i + 1..];
        }
        out.extend_from_slice(rest);
        out.push(b'"');
    };
    for (i, (name, _)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        quote(&mut out, name);
    }
    out.push(b'\n');
    for r in rows {
        for (i, (_, f)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Every non-null cell is quoted; a null is an empty unquoted cell.
            match f {
                // Most cells are text: written without a copy.
                Field::Column(c) => match &r.cells[*c] {
                    Some(Value::String(s)) => quote(&mut out, s),
                    Some(v) => quote(&mut out, &cell_text(&ds.columns[*c].data_type_name, v)),
                    None => {}
                },
                sys => {
                    if let Some(t) = system_value(r, sys) {
                        quote(&mut out, &t);
                    }
                }
            }
        }
        out.push(b'\n');
    }
    out
}

fn render_json(fields: &[(String, Field)], rows: &[&Row]) -> Vec<u8> {
    let arr: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut o = Map::new();
            for (name, f) in fields {
                let v = match f {
                    Field::Column(c) => r.cells[*c].clone(),
                    sys => system_value(r, sys).map(Value::String),
                };
                // A null is an absent key.
                if let Some(v) = v {
                    o.insert(name.clone(), v);
                }
            }
            Value::Object(o)
        })
        .collect();
    let mut body = serde_json::to_vec(&arr).expect("JSON");
    body.push(b'\n');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The ids of a CSV page whose first column is `:id` (no cell in these pages spans lines).
    fn page_ids(body: &[u8]) -> Vec<String> {
        String::from_utf8(body.to_vec())
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().trim_matches('"').to_string())
            .collect()
    }

    /// Pages of an order with ties are slices of one stable sort (ties in the server's :id order), whatever
    /// the offset and limit: only the page's rows are sorted, and that must not show.
    #[test]
    fn ordered_pages_are_slices_of_one_stable_sort() {
        let view = json!({"columns": [{"fieldName": "name", "dataTypeName": "text"}]});
        let mut ds = Dataset::new("abcd-1234", view.as_object().unwrap().clone()).unwrap();
        for i in 0..50_i64 {
            let mut row = Map::new();
            row.insert("name".into(), json!(format!("o\"c {i}")));
            // Five distinct times, out of :id order: many ties.
            ds.push_row(&row, 1000, 1000 + (i * 7 % 5) * 1000).unwrap();
        }
        let mut reference: Vec<&Row> = ds.rows.values().collect();
        reference.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        let reference: Vec<String> = reference.iter().map(|r| ids::encode(r.seq)).collect();
        for limit in [1, 7, 50, 60] {
            for offset in [0, 3, 49, 50, 55] {
                let raw = format!(
                    "$select=:id,name&$order=:updated_at DESC&$limit={limit}&$offset={offset}"
                );
                let (body, n, _) = answer(&ds, &raw, true, &Applied::default()).unwrap();
                let want: Vec<String> =
                    reference.iter().skip(offset).take(limit).cloned().collect();
                assert_eq!(page_ids(&body), want, "limit {limit} offset {offset}");
                assert_eq!(n, want.len());
            }
        }
        let raw = "$select=:id,name&$order=:updated_at&$limit=0";
        assert_eq!(answer(&ds, raw, true, &Applied::default()).unwrap().1, 0);
        // A quote inside a cell is doubled, the cell quoted.
        let raw = "$select=name&$order=:id&$limit=1";
        let body = answer(&ds, raw, true, &Applied::default()).unwrap().0;
        assert_eq!(String::from_utf8(body).unwrap(), "\"name\"\n\"o\"\"c 0\"\n");
    }
}
