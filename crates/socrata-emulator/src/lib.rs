//! A local Socrata portal for tests, benchmarks and offline trials: as awkward as the real one.
//!
//! It serves `/resource/{id}.csv|.json` (SODA 2.1 with `$select`, `$where`, `$order`, `$limit`, `$offset`) and
//! `/api/views/{id}.json` from datasets loaded from `fixtures/` or generated. Like the real portal it has
//! obfuscated ids whose alphabetical order is not the server's order, ties in `:updated_at`, a random order
//! when no `$order` is given, a default `$limit` of 1,000, quoted CSV with nulls as empty unquoted cells, both
//! error-body shapes, and injectable faults (error statuses, 429 with `Retry-After`, cut connections, delays).
//! Tests run it in-process ([`Emulator::start`]) and change its rows between syncs.

pub mod ids;
mod render;
pub mod soql;
mod time;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};

use time::portal_ms;

pub use render::cell_text;

/// The column types the emulator distinguishes (the portal's `dataTypeName`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Number,
    Checkbox,
    Other,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub field_name: String,
    pub data_type_name: String,
    pub kind: ColumnType,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
    pub version: String,
    /// One cell per column, in the JSON representation; `None` is null.
    pub cells: Vec<Option<Value>>,
}

/// One dataset as the portal holds it.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub id: String,
    /// The `/api/views/{id}.json` document; `columns` and `rowsUpdatedAt` are kept in step with the data.
    pub view: Map<String, Value>,
    pub columns: Vec<Column>,
    /// Rows by sequence number: the server's `:id` order.
    pub rows: BTreeMap<u64, Row>,
    next_seq: u64,
}

/// Formats epoch milliseconds as Socrata does: `2026-08-06T09:20:17.588Z`.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn column_kind(data_type_name: &str) -> ColumnType {
    match data_type_name {
        "number" | "money" | "double" | "percent" => ColumnType::Number,
        "checkbox" => ColumnType::Checkbox,
        _ => ColumnType::Other,
    }
}

impl Dataset {
    /// A dataset with the given view document (which must hold `columns[].fieldName/dataTypeName`).
    pub fn new(id: &str, mut view: Map<String, Value>) -> Result<Self, String> {
        let cols = view
            .get("columns")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("view of {id} has no columns array"))?;
        let mut columns = Vec::new();
        for c in cols {
            let field_name = c
                .get("fieldName")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a column of {id} has no fieldName"))?;
            let data_type_name = c
                .get("dataTypeName")
                .and_then(Value::as_str)
                .unwrap_or("text");
            // Computed region columns are served by `:*,*` as system-like fields but are not regular columns.
            if field_name.starts_with(':') {
                continue;
            }
            columns.push(Column {
                field_name: field_name.to_string(),
                data_type_name: data_type_name.to_string(),
                kind: column_kind(data_type_name),
            });
        }
        view.insert("id".into(), Value::String(id.to_string()));
        Ok(Dataset {
            id: id.to_string(),
            view,
            columns,
            rows: BTreeMap::new(),
            next_seq: 1,
        })
    }

    /// Loads `dir/view.json` and `dir/rows.jsonl` (one row per line in the SODA 2.1 JSON representation, with
    /// `:created_at` and `:updated_at`). Rows get sequence numbers, hence ids, in file order.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{} has no dataset id as its name", dir.display()))?
            .to_string();
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let view: Map<String, Value> = serde_json::from_str(&read("view.json")?)
            .map_err(|e| format!("{}/view.json: {e}", dir.display()))?;
        let mut ds = Dataset::new(&id, view)?;
        for (n, line) in read("rows.jsonl")?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let where_ = || format!("{}/rows.jsonl line {}", dir.display(), n + 1);
            let obj: Map<String, Value> =
                serde_json::from_str(line).map_err(|e| format!("{}: {e}", where_()))?;
            let time = |k: &str| {
                obj.get(k)
                    .and_then(Value::as_str)
                    .and_then(portal_ms)
                    .ok_or_else(|| format!("{}: missing or bad {k}", where_()))
            };
            let (created, updated) = (time(":created_at")?, time(":updated_at")?);
            ds.push_row(&obj, created, updated)?;
        }
        ds.touch_view(ds.rows.values().map(|r| r.updated_at).max().unwrap_or(0));
        Ok(ds)
    }

    fn push_row(
        &mut self,
        obj: &Map<String, Value>,
        created: i64,
        updated: i64,
    ) -> Result<String, String> {
        for k in obj.keys() {
            if !k.starts_with(':') && !self.columns.iter().any(|c| &c.field_name == k) {
                return Err(format!(
                    "row has a field {k:?} that dataset {} does not have",
                    self.id
                ));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let cells = self
            .columns
            .iter()
            .map(|c| obj.get(&c.field_name).filter(|v| !v.is_null()).cloned())
            .collect();
        self.rows.insert(
            seq,
            Row {
                seq,
                created_at: created,
                updated_at: updated,
                version: format!("rv-{seq}-{updated}"),
                cells,
            },
        );
        Ok(ids::encode(seq))
    }

    fn touch_view(&mut self, ms: i64) {
        self.view
            .insert("rowsUpdatedAt".into(), Value::from(ms / 1000));
        self.view
            .insert("viewLastModified".into(), Value::from(ms / 1000));
    }

    /// Ids in the server's order.
    pub fn ids(&self) -> Vec<String> {
        self.rows.keys().map(|&s| ids::encode(s)).collect()
    }

    pub fn column_index(&self, field: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.field_name == field)
    }

    /// Every row as `(id, created_at, updated_at, [cell as resource-CSV text or None])`, in `:id` order: what a
    /// complete and correct copy must hold.
    pub fn snapshot(&self) -> Vec<SourceRow> {
        self.rows
            .values()
            .map(|r| SourceRow {
                id: ids::encode(r.seq),
                created_at: format_time(r.created_at),
                updated_at: format_time(r.updated_at),
                version: r.version.clone(),
                cells: r
                    .cells
                    .iter()
                    .zip(&self.columns)
                    .map(|(v, c)| v.as_ref().map(|v| cell_text(&c.data_type_name, v)))
                    .collect(),
            })
            .collect()
    }
}

/// A source row in the form a CSV sync receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    pub id: String,
    pub created_at: String,
    pub updated_at: String,
    pub version: String,
    pub cells: Vec<Option<String>>,
}

/// Changes to one dataset made in one publisher transaction: every row touched gets the same `:updated_at`
/// (the ties bulk updates cause on the real portal).
pub struct Edit<'a> {
    ds: &'a mut Dataset,
    stamp: i64,
}

impl Edit<'_> {
    pub fn dataset(&self) -> &Dataset {
        self.ds
    }

    /// Inserts a row (SODA JSON representation) and returns its new id.
    pub fn insert(&mut self, row: Map<String, Value>) -> String {
        self.ds
            .push_row(&row, self.stamp, self.stamp)
            .expect("test rows use the dataset's fields")
    }

    /// Sets one field of the row with `id` (`None` = null) and re-stamps it.
    pub fn set(&mut self, id: &str, field: &str, value: Option<Value>) {
        let seq = ids::decode(id).expect("a row id");
        let col = self.ds.column_index(field).expect("a field of the dataset");
        let stamp = self.stamp;
        let row = self.ds.rows.get_mut(&seq).expect("an existing row");
        row.cells[col] = value;
        row.updated_at = stamp;
        row.version = format!("rv-{seq}-{stamp}");
    }

    pub fn delete(&mut self, id: &str) {
        let seq = ids::decode(id).expect("a row id");
        self.ds.rows.remove(&seq).expect("an existing row");
    }

    /// Inserts a row that becomes visible only now although its `:updated_at` is `behind_ms` older than this
    /// edit's stamp: a long publisher transaction committed after newer ones (a late row). A cursor already
    /// past that time never sees it.
    pub fn insert_late(&mut self, row: Map<String, Value>, behind_ms: i64) -> String {
        let t = self.stamp - behind_ms;
        self.ds
            .push_row(&row, t, t)
            .expect("test rows use the dataset's fields")
    }

    /// A full replace by the publisher: every row gets a new id and the same new `:updated_at`.
    pub fn replace_all(&mut self) {
        let old = std::mem::take(&mut self.ds.rows);
        for mut r in old.into_values() {
            let seq = self.ds.next_seq;
            self.ds.next_seq += 1;
            r.seq = seq;
            r.created_at = self.stamp;
            r.updated_at = self.stamp;
            self.ds.rows.insert(seq, r);
        }
    }

    /// Adds a column to the schema (existing rows hold null in it).
    pub fn add_column(&mut self, field_name: &str, data_type_name: &str) {
        self.ds.columns.push(Column {
            field_name: field_name.into(),
            data_type_name: data_type_name.into(),
            kind: column_kind(data_type_name),
        });
        for r in self.ds.rows.values_mut() {
            r.cells.push(None);
        }
        if let Some(Value::Array(cols)) = self.ds.view.get_mut("columns") {
            cols.push(serde_json::json!({
                "id": cols.len() + 1, "name": field_name, "fieldName": field_name,
                "dataTypeName": data_type_name, "position": cols.len() + 1
            }));
        }
    }
}

/// What a fault does to the request it hits.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer with this status and an error body (shape 1: `code`, shape 2: `errorCode`).
    Status {
        status: u16,
        errorcode_shape: bool,
        retry_after: Option<u64>,
    },
    /// Start a 200 answer, send this many bytes of the real body, then drop the connection.
    CutAfter(usize),
    /// Wait this long, then answer normally.
    DelayMs(u64),
    /// Answer 200 with this body instead of the real one (a malformed response).
    Body(String),
    /// Answer with exactly this status, content type, extra headers and body (HTML error pages from a proxy,
    /// a 202 "still processing", a 429 whose `Retry-After` is an HTTP date, JSON where CSV was asked for).
    Raw {
        status: u16,
        content_type: String,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Answer 200 with this CSV body, each U+FFFD in it sent as the lone byte 0xE9 (Latin-1 `é`): invalid
    /// UTF-8, as a misconfigured export produces.
    InvalidUtf8(String),
    /// Start a 200 answer, send this many bytes of the real body, then send nothing more for a minute (a
    /// stalled body: only a read timeout ends it).
    StallAfter(usize),
    /// Send the real body in chunks of this many bytes with a pause (ms) between them: slow but complete.
    Trickle { chunk: usize, pause_ms: u64 },
}

/// A fault on requests whose path contains `path_contains`: the first `skip` matching requests pass, the next `times` get the fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub path_contains: String,
    pub skip: u32,
    pub times: u32,
    pub kind: FaultKind,
}

impl Fault {
    pub fn on(path_contains: &str, kind: FaultKind) -> Self {
        Fault {
            path_contains: path_contains.into(),
            skip: 0,
            times: 1,
            kind,
        }
    }
    pub fn skip(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }
}

/// One request the emulator answered, for tests to count what was fetched.
#[derive(Debug, Clone)]
pub struct Served {
    pub path: String,
    pub select: Option<String>,
    /// The `$where` of a successful resource request.
    pub where_: Option<String>,
    /// When it was answered: milliseconds since the emulator started.
    pub at_ms: u64,
    pub status: u16,
    /// Rows in the answer (0 for errors and metadata).
    pub rows: usize,
}

/// Ways the portal misbehaves without an error status, all seen on real deployments or their proxies.
#[derive(Debug, Clone, Default)]
pub struct Quirks {
    /// `$limit` is capped silently at this many rows (SODA 2.0 endpoints cap at 50,000, proxies lower).
    pub limit_cap: Option<usize>,
    /// `$where` is ignored on row requests (not counts) after `skip` of them have been answered, for `times`
    /// of them: a replica or cache that drops the filter.
    pub ignore_where: Option<(u32, u32)>,
    /// `count(*)` answers this many rows fewer than the dataset has (a lagging replica), for `times` counts
    /// (`u32::MAX`: always).
    pub count_lag: Option<(u64, u32)>,
    /// The portal's clock runs this many milliseconds ahead of ours (negative: behind): `:updated_at` stamps,
    /// `rowsUpdatedAt` and the HTTP `Date` header all follow it.
    pub clock_offset_ms: i64,
    /// The portal's clock stands still at this time (epoch ms); each edit still moves stamps 1 ms on.
    pub frozen_clock_ms: Option<i64>,
}

#[derive(Default)]
pub struct State {
    pub datasets: BTreeMap<String, Dataset>,
    pub faults: Vec<Fault>,
    pub quirks: Quirks,
    pub log: Vec<Served>,
    /// Every request as it arrived: path and milliseconds since the emulator started (before any fault's
    /// delay), for tests of request budgets and start spacing.
    pub arrivals: Vec<(String, u64)>,
    /// Requests being handled now, and the most there ever were at once.
    pub in_flight: usize,
    pub peak_in_flight: usize,
    /// When the emulator started (arrival times count from it).
    pub epoch: Option<std::time::Instant>,
    /// The last `:updated_at` stamp handed out; stamps only move forward.
    clock: i64,
    /// When set, requests without the token get 403.
    pub required_token: Option<String>,
}

impl State {
    /// Loads every dataset folder under `dir`.
    pub fn from_fixtures(dir: &Path) -> Result<Self, String> {
        let mut st = State::default();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .filter(|e| e.path().join("view.json").exists())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ds = Dataset::load(&e.path())?;
            st.clock = st
                .clock
                .max(ds.rows.values().map(|r| r.updated_at).max().unwrap_or(0));
            st.datasets.insert(ds.id.clone(), ds);
        }
        Ok(st)
    }

    pub fn add_dataset(&mut self, ds: Dataset) {
        self.clock = self
            .clock
            .max(ds.rows.values().map(|r| r.updated_at).max().unwrap_or(0));
        self.datasets.insert(ds.id.clone(), ds);
    }

    /// The portal's clock now (epoch ms), with the quirks' offset or freeze.
    pub fn portal_now_ms(&self) -> i64 {
        self.quirks
            .frozen_clock_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis() + self.quirks.clock_offset_ms)
    }

    /// Applies `f` as one publisher transaction on dataset `id`.
    pub fn edit<R>(&mut self, id: &str, f: impl FnOnce(&mut Edit) -> R) -> R {
        let now = self.portal_now_ms();
        self.clock = now.max(self.clock + 1);
        let stamp = self.clock;
        let ds = self
            .datasets
            .get_mut(id)
            .expect("a dataset the emulator serves");
        let mut e = Edit { ds, stamp };
        let r = f(&mut e);
        e.ds.touch_view(stamp);
        r
    }
}

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Emulator {
    /// Serves `state` on `127.0.0.1:port` (0 = any free port) from a thread of its own.
    pub fn start(state: State, port: u16) -> std::io::Result<Emulator> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let mut state = state;
        state.epoch = Some(std::time::Instant::now());
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("socrata-emulator".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("listener");
                    let app = render::router(st);
                    // Not a graceful shutdown: a test's stalled request (a delay fault) must not hold it up.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {},
                        _ = rx => {},
                    }
                });
            })?;
        Ok(Emulator {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until the server thread ends (for the emulator binary).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The rows' clock of the generated datasets: `:updated_at` ties every 100 rows, 50 minutes apart, spread
/// over about a year as a real dataset's changes are (a late-row window of a day then holds a day's rows, not
/// the whole dataset).
const GENERATED_EPOCH_MS: i64 = 1_700_000_000_000;

/// Street names of the generated datasets: an apostrophe, a comma, a non-ASCII letter.
const STREETS: [&str; 5] = [
    "BROADWAY",
    "5 AVENUE",
    "O'CONNOR ST",
    "GRAND CONCOURSE",
    "Ñ STREET, REAR",
];

/// A generated dataset named `name` with columns `fields` (fieldName, dataTypeName) and `rows` rows, row `i`
/// holding `cells(i)`.
fn generated<F: AsRef<str>>(
    id: &str,
    name: String,
    fields: &[(F, &str)],
    rows: u64,
    cells: impl Fn(u64) -> Vec<Option<Value>>,
) -> Dataset {
    let cols: Vec<Value> = fields
        .iter()
        .enumerate()
        .map(|(i, (f, t))| {
            let f = f.as_ref();
            serde_json::json!({"id": i + 1, "name": f, "fieldName": f, "dataTypeName": t, "position": i + 1})
        })
        .collect();
    let mut view = Map::new();
    view.insert("name".into(), Value::String(name));
    view.insert("columns".into(), Value::Array(cols));
    let mut ds = Dataset::new(id, view).expect("a valid generated view");
    let base = GENERATED_EPOCH_MS;
    for i in 0..rows {
        let seq = ds.next_seq;
        ds.next_seq += 1;
        let t = base + (i as i64 / 100) * 3_000_000;
        ds.rows.insert(
            seq,
            Row {
                seq,
                created_at: t,
                updated_at: t,
                version: format!("rv-{seq}"),
                cells: cells(i),
            },
        );
    }
    ds.touch_view(base + (rows as i64 / 100 + 1) * 3_000_000);
    ds
}

/// A generated dataset of `rows` rows with NYC-like columns of every type (for benchmarks and the emulator's
/// `--synthetic` flag). Deterministic for a given `rows`; `:updated_at` has ties every 100 rows, 50 minutes
/// apart.
pub fn synthetic(id: &str, rows: u64) -> Dataset {
    let fields = [
        ("isn_dob_bis_viol", "text"),
        ("boro", "text"),
        ("bin", "text"),
        ("block", "text"),
        ("lot", "text"),
        ("issue_date", "text"),
        ("violation_type_code", "text"),
        ("violation_number", "text"),
        ("house_number", "text"),
        ("street", "text"),
        ("disposition_date", "calendar_date"),
        ("description", "text"),
        ("penalty", "number"),
        ("is_open", "checkbox"),
    ];
    generated(id, format!("Synthetic {rows}"), &fields, rows, |i| {
        let s = |v: String| Some(Value::String(v));
        vec![
            s(format!("{}", 100_000 + i)),
            s(format!("{}", 1 + i % 5)),
            s(format!("{}", 1_000_000 + (i * 7919) % 4_000_000)),
            s(format!("{:05}", i % 99_999)),
            s(format!("{:04}", i % 9_999)),
            s(format!("2019{:02}{:02}", 1 + i % 12, 1 + i % 28)),
            s(["C", "E", "LL", "V"][(i % 4) as usize].to_string()),
            s(format!("{:06}", i)),
            s(format!("{}", 1 + i % 400)),
            s(STREETS[(i % 5) as usize].to_string()),
            s(format!(
                "2020-{:02}-{:02}T00:00:00.000",
                1 + i % 12,
                1 + i % 28
            )),
            if i % 10 == 0 {
                None
            } else {
                s(format!("DEFECTIVE \"ITEM\" {i}, SEE\nNOTES"))
            },
            s(format!("{}.{:02}", i % 10_000, i % 100)),
            Some(Value::Bool(i % 3 == 0)),
        ]
    })
}

/// A generated dataset shaped like NYC's wide ones (HPD violations has 46 columns): `width` columns cycling
/// through ids and codes, free text with quotes, commas and newlines, decimals with up to 15 places
/// (coordinates), calendar dates, checkboxes and points; about one cell in twelve null. Deterministic;
/// `:updated_at` ties every 100 rows as in [`synthetic`].
pub fn synthetic_wide(id: &str, rows: u64, width: usize) -> Dataset {
    const KINDS: [(&str, &str); 12] = [
        ("violationid", "text"),
        ("boroid", "number"),
        ("housenumber", "text"),
        ("streetname", "text"),
        ("novdescription", "text"),
        ("inspectiondate", "calendar_date"),
        ("latitude", "number"),
        ("longitude", "number"),
        ("rentimpairing", "checkbox"),
        ("class", "text"),
        ("location", "point"),
        ("bbl", "text"),
    ];
    let fields: Vec<(String, &str)> = (0..width.max(1))
        .map(|i| {
            let (name, t) = KINDS[i % KINDS.len()];
            let name = if i < KINDS.len() {
                name.to_string()
            } else {
                format!("{name}_{}", i / KINDS.len())
            };
            (name, t)
        })
        .collect();
    generated(
        id,
        format!("Synthetic wide {rows}x{width}"),
        &fields,
        rows,
        |i| {
            (0..fields.len())
        .map(|c| {
            if (i + c as u64) % 12 == 5 {
                return None;
            }
            let v = i.wrapping_mul(2_654_435_761).wrapping_add(c as u64 * 40_503) % 1_000_000;
            let s = |v: String| Some(Value::String(v));
            match c % KINDS.len() {
                0 => s(format!("{}", 10_000_000 + i * 7 + c as u64)),
                1 => s(format!("{}", 1 + v % 5)),
                2 => s(format!("{}-{}", 1 + v % 300, v % 40)),
                3 => s(STREETS[(v % 5) as usize].to_string()),
                4 => s(format!(
                    "SECTION 27-2005 ADM CODE \"REPAIR\" THE BROKEN {} IN THE ENTIRE APARTMENT, LOCATED AT                          APT {}{}\nSEE NOTICE {v}",
                    ["WINDOW", "DOOR", "PLASTER, PAINT"][(v % 3) as usize],
                    v % 30,
                    ["A", "B", "C"][(v % 3) as usize]
                )),
                5 => s(format!(
                    "20{:02}-{:02}-{:02}T00:00:00.000",
                    10 + v % 15,
                    1 + v % 12,
                    1 + v % 28
                )),
                6 => s(format!("40.{:015}", 500_000_000_000_000 + v * 123_456_789)),
                7 => s(format!("-73.{:015}", 700_000_000_000_000 + v * 987_654_321)),
                8 => Some(Value::Bool(v % 4 == 0)),
                9 => s(["A", "B", "C", "I"][(v % 4) as usize].to_string()),
                10 => s(format!(
                    "POINT (-73.{:06} 40.{:06})",
                    900_000 + v % 99_999,
                    600_000 + v % 99_999
                )),
                _ => s(format!("{}{:05}{:04}", 1 + v % 5, v % 99_999, v % 9_999)),
            }
        })
        .collect()
        },
    )
}

/// The 46 columns of [`synthetic_hpd`]: HPD violations' own fields (wvxf-dwi5) and their portal types.
pub const HPD_COLUMNS: [(&str, &str); 46] = [
    ("violationid", "number"),
    ("buildingid", "number"),
    ("registrationid", "number"),
    ("boroid", "text"),
    ("borough", "text"),
    ("housenumber", "text"),
    ("lowhousenumber", "text"),
    ("highhousenumber", "text"),
    ("streetname", "text"),
    ("streetcode", "text"),
    ("postcode", "text"),
    ("apartment", "text"),
    ("story", "text"),
    ("block", "number"),
    ("lot", "number"),
    ("class", "text"),
    ("inspectiondate", "calendar_date"),
    ("approveddate", "calendar_date"),
    ("originalcertifybydate", "calendar_date"),
    ("originalcorrectbydate", "calendar_date"),
    ("newcertifybydate", "calendar_date"),
    ("newcorrectbydate", "calendar_date"),
    ("certifieddate", "calendar_date"),
    ("ordernumber", "text"),
    ("novid", "number"),
    ("novdescription", "text"),
    ("novissueddate", "calendar_date"),
    ("currentstatusid", "number"),
    ("currentstatus", "text"),
    ("currentstatusdate", "calendar_date"),
    ("novtype", "text"),
    ("violationstatus", "text"),
    ("rentimpairing", "text"),
    ("latitude", "number"),
    ("longitude", "number"),
    ("communityboard", "text"),
    ("councildistrict", "text"),
    ("censustract", "text"),
    ("bin", "number"),
    ("bbl", "text"),
    ("nta", "text"),
    ("location", "point"),
    ("inspectiontype", "text"),
    ("violationcode", "text"),
    ("penaltyamount", "number"),
    ("isopen", "checkbox"),
];

/// A generated dataset with HPD violations' 46 columns and the value shapes of the real rows: short codes
/// and integers, a 80-250 character description (with `§`, quotes, commas, a newline now and then), dates
/// with the certify-by dates mostly empty, 6-place coordinates and a point, a few money amounts; about 700
/// bytes a row with the system fields, as the portal's own CSV of the dataset. Deterministic; `:updated_at`
/// ties every 100 rows as in [`synthetic`]. For measuring what a real dataset costs (the wide generator's
/// 15-place decimals in a third of its columns make even DuckDB's own `read_csv` several times dearer).
pub fn synthetic_hpd(id: &str, rows: u64) -> Dataset {
    const BOROUGHS: [&str; 5] = ["MANHATTAN", "BRONX", "BROOKLYN", "QUEENS", "STATEN ISLAND"];
    const STREET_NAMES: [&str; 10] = [
        "GRAND CONCOURSE",
        "BROADWAY",
        "EAST  167 STREET",
        "WEST  140 STREET",
        "OCEAN AVENUE",
        "NOSTRAND AVENUE",
        "ST NICHOLAS AVENUE",
        "JEROME AVENUE",
        "37 AVENUE",
        "VICTORY BOULEVARD",
    ];
    const STATUSES: [&str; 6] = [
        "VIOLATION CLOSED",
        "NOV SENT OUT",
        "VIOLATION OPEN",
        "NOV CERTIFIED LATE",
        "INFO NOV SENT OUT",
        "VIOLATION DISMISSED",
    ];
    const NTAS: [&str; 6] = [
        "Mott Haven-Port Morris",
        "Crown Heights North",
        "Washington Heights South",
        "Jackson Heights",
        "Flatbush",
        "West New Brighton-New Brighton-St. George",
    ];
    const DESCRIPTIONS: [&str; 6] = [
        "§ 27-2005 ADM CODE REPAIR THE BROKEN OR DEFECTIVE PLASTERED SURFACES AND PAINT IN A UNIFORM COLOR CEILING IN THE KITCHEN LOCATED AT APT",
        "§ 27-2017.3 HMC: TRACE AND ABATE THE NUISANCE CONSISTING OF MICE IN THE ENTIRE APARTMENT LOCATED AT APT",
        "§ 27-2046.1 HMC: REPAIR OR REPLACE THE SMOKE DETECTING DEVICE, \"DEFECTIVE\" OR MISSING, IN THE ENTIRE APARTMENT LOCATED AT APT",
        "D26-41.03 ADM CODE FILE WITH THIS DEPARTMENT A REGISTRATION STATEMENT FOR BUILDING.",
        "§ 27-2026 ADM CODE REPAIR THE LEAKY AND/OR DEFECTIVE FAUCETS AT BATHROOM WASH BASIN LOCATED AT APT",
        "§ 27-2031 ADM CODE PROVIDE HOT WATER AT ALL HOURS, NO HOT WATER\nIN THE ENTIRE APARTMENT LOCATED AT APT",
    ];
    generated(
        id,
        format!("Synthetic HPD violations {rows}"),
        &HPD_COLUMNS,
        rows,
        |i| {
            let v = i.wrapping_mul(2_654_435_761) % 1_000_003;
            let s = |v: String| Some(Value::String(v));
            let date = |k: u64| {
                s(format!(
                    "20{:02}-{:02}-{:02}T00:00:00.000",
                    10 + (v + k) % 15,
                    1 + (v / 7 + k) % 12,
                    1 + (v / 3 + k) % 28
                ))
            };
            let maybe = |keep: bool, value: Option<Value>| if keep { value } else { None };
            let (lat, lng) = (
                40_500_000 + v * 397 % 400_000,
                73_700_000 + v * 613 % 300_000,
            );
            let boro = 1 + v % 5;
            vec![
                s(format!("{}", 10_000_000 + i)),
                s(format!("{}", 1 + v % 900_000)),
                maybe(v % 10 != 0, s(format!("{}", 100_000 + v % 900_000))),
                s(boro.to_string()),
                s(BOROUGHS[(boro - 1) as usize].to_string()),
                s(if v % 6 == 0 {
                    format!("{}-{:02}", 1 + v % 250, v % 99)
                } else {
                    format!("{}", 1 + v % 3000)
                }),
                s(format!("{}", 1 + v % 3000)),
                s(format!("{}", 1 + v % 3000)),
                s(STREET_NAMES[(v % 10) as usize].to_string()),
                s(format!("{:05}", v % 99_999)),
                s(format!("{}", 10_001 + v % 1_400)),
                maybe(
                    v % 3 != 0,
                    s(format!(
                        "{}{}",
                        1 + v % 20,
                        ["A", "B", "C", "D", "F"][(v % 5) as usize]
                    )),
                ),
                s(if v % 15 == 0 {
                    "BSMT".into()
                } else {
                    format!("{}", 1 + v % 12)
                }),
                s(format!("{}", 1 + v % 16_000)),
                s(format!("{}", 1 + v % 2_000)),
                s(["A", "B", "C", "I"][(v % 4) as usize].to_string()),
                date(0),
                date(1),
                maybe(v % 2 == 0, date(30)),
                maybe(v % 2 == 0, date(40)),
                maybe(v % 9 == 0, date(60)),
                maybe(v % 9 == 0, date(70)),
                maybe(v % 4 == 0, date(45)),
                s(format!("{}", 500 + v % 400)),
                s(format!("{}", 1_000_000 + v % 9_000_000)),
                s(format!(
                    "{} {}{}",
                    DESCRIPTIONS[(v % 6) as usize],
                    1 + v % 20,
                    ["A", "B", "C"][(v % 3) as usize]
                )),
                date(2),
                s(format!("{}", 1 + v % 30)),
                s(STATUSES[(v % 6) as usize].to_string()),
                date(5),
                s(if v % 20 == 0 {
                    "Reissued".into()
                } else {
                    "Original".into()
                }),
                s(if v % 3 == 0 {
                    "Open".into()
                } else {
                    "Close".into()
                }),
                s(if v % 7 == 0 { "Y".into() } else { "N".into() }),
                maybe(v % 50 != 0, s(format!("40.{:06}", lat % 1_000_000))),
                maybe(v % 50 != 0, s(format!("-73.{:06}", lng % 1_000_000))),
                s(format!("{}", 1 + v % 18)),
                s(format!("{}", 1 + v % 51)),
                s(format!("{}", 1 + v % 1_800)),
                maybe(v % 40 != 0, s(format!("{}", boro * 1_000_000 + v % 99_999))),
                s(format!("{}{:05}{:04}", boro, v % 99_999, v % 9_999)),
                s(NTAS[(v % 6) as usize].to_string()),
                maybe(
                    v % 50 != 0,
                    s(format!(
                        "POINT (-73.{:06} 40.{:06})",
                        lng % 1_000_000,
                        lat % 1_000_000
                    )),
                ),
                s(
                    ["Heat", "Complaint", "Self-Certification", "Litigation"][(v % 4) as usize]
                        .to_string(),
                ),
                s(format!("{}", 500 + v % 300)),
                maybe(v % 8 == 0, s(format!("{}.{:02}", 100 + v % 5_000, v % 100))),
                Some(Value::Bool(v % 3 == 0)),
            ]
        },
    )
}

#[cfg(test)]
mod tests {
    use super::soql::{eval, parse_order, parse_select, parse_where, Field, Selection};
    use super::*;
    use serde_json::json;

    fn dataset() -> Dataset {
        let view = json!({"columns": [
            {"fieldName": "name", "dataTypeName": "text"},
            {"fieldName": "amount", "dataTypeName": "number"},
            {"fieldName": ":@computed_region_x", "dataTypeName": "number"}
        ]});
        let mut ds = Dataset::new("abcd-1234", view.as_object().unwrap().clone()).unwrap();
        for (i, (name, amount)) in [("a", Some("10")), ("b", None), ("o'c", Some("2.5"))]
            .iter()
            .enumerate()
        {
            let mut row = Map::new();
            row.insert("name".into(), json!(name));
            if let Some(a) = amount {
                row.insert("amount".into(), json!(a));
            }
            ds.push_row(&row, 1000, 1000 + (i as i64 % 2) * 1000)
                .unwrap();
        }
        ds
    }

    /// The realistic generator: HPD violations' 46 fields, deterministic, the real value shapes (6-place
    /// coordinates, mostly empty certify-by dates), about 600 bytes of cells a row.
    #[test]
    fn the_realistic_generator_has_hpds_fields_and_shapes() {
        let a = synthetic_hpd("abcd-1234", 1000);
        let b = synthetic_hpd("abcd-1234", 1000);
        assert_eq!(a.columns.len(), 46);
        assert_eq!(a.rows.len(), 1000);
        let cells = |d: &Dataset| -> Vec<Vec<Option<Value>>> {
            d.rows.values().map(|r| r.cells.clone()).collect()
        };
        assert_eq!(cells(&a), cells(&b), "deterministic");
        let col = |name: &str| a.columns.iter().position(|c| c.field_name == name).unwrap();
        let text = |r: &Row, c: usize| {
            r.cells[c]
                .as_ref()
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let lat = a
            .rows
            .values()
            .find_map(|r| text(r, col("latitude")))
            .unwrap();
        assert_eq!(lat.split('.').nth(1).unwrap().len(), 6, "{lat}");
        let empty = a
            .rows
            .values()
            .filter(|r| r.cells[col("newcertifybydate")].is_none())
            .count();
        assert!(empty > 800, "certify-by dates mostly empty: {empty}");
        let bytes: usize = a
            .rows
            .values()
            .flat_map(|r| r.cells.iter().flatten())
            .map(|v| v.as_str().map_or(5, str::len))
            .sum();
        let per_row = bytes / 1000;
        assert!(
            (450..750).contains(&per_row),
            "{per_row} bytes of cells a row"
        );
    }

    fn matching(ds: &Dataset, w: &str) -> Vec<String> {
        let e = parse_where(ds, w).unwrap();
        ds.rows
            .values()
            .filter(|r| eval(ds, r, &e) == Some(true))
            .map(|r| ids::encode(r.seq))
            .collect()
    }

    #[test]
    fn keyset_where_walks_ties_by_server_id_order() {
        let ds = dataset();
        let ids = ds.ids();
        let t = format_time(1000);
        // Rows 1 and 3 share :updated_at 1000; after row 1 in (:updated_at, :id) order come row 3 and row 2.
        let w = format!(
            ":updated_at > '{t}' OR (:updated_at = '{t}' AND :id > '{}')",
            ids[0]
        );
        assert_eq!(matching(&ds, &w), vec![ids[1].clone(), ids[2].clone()]);
        assert_eq!(
            matching(&ds, &format!(":id > '{}'", ids[1])),
            vec![ids[2].clone()]
        );
    }

    #[test]
    fn a_query_starts_at_the_lowest_id_its_filter_allows_and_misses_no_row() {
        let ds = synthetic("bnds-0001", 40);
        let ids = ds.ids();
        let (a, b) = (&ids[9], &ids[30]);
        let t = format_time(ds.rows.values().nth(20).unwrap().updated_at);
        let cases = [
            (format!(":id > '{a}'"), Some(10)),
            (format!(":id >= '{a}'"), Some(9)),
            (format!(":id = '{b}'"), Some(30)),
            (format!("'{a}' < :id"), Some(10)),
            (format!(":id > '{a}' AND :id > '{b}'"), Some(31)),
            (format!(":id > '{b}' AND :updated_at >= '{t}'"), Some(31)),
            (format!(":id > '{a}' OR :id = '{b}'"), Some(10)),
            (
                format!(":id > '{b}' OR (:updated_at = '{t}' AND :id > '{a}')"),
                Some(10),
            ),
            (
                format!(":updated_at > '{t}' OR (:updated_at = '{t}' AND :id > '{a}')"),
                None,
            ),
            (format!("NOT (:id < '{b}')"), None),
            (format!(":id < '{b}'"), None),
            (format!(":id != '{a}'"), None),
        ];
        let seq = ds.rows.keys().copied().collect::<Vec<_>>();
        for (w, want) in cases {
            let e = parse_where(&ds, &w).unwrap();
            let bound = soql::first_seq(&e);
            assert_eq!(bound, want.map(|i: usize| seq[i]), "{w}");
            let from = bound.unwrap_or(0);
            let all: Vec<u64> = ds
                .rows
                .values()
                .filter(|r| eval(&ds, r, &e) == Some(true))
                .map(|r| r.seq)
                .collect();
            assert!(!all.is_empty(), "{w} matches nothing: a weak case");
            assert!(
                all.iter().all(|s| *s >= from),
                "{w}: a match before the bound"
            );
        }
    }

    #[test]
    fn nulls_follow_three_valued_logic_and_literals_are_typed() {
        let ds = dataset();
        let ids = ds.ids();
        assert_eq!(matching(&ds, "amount > 5"), vec![ids[0].clone()]);
        assert_eq!(matching(&ds, "NOT (amount > 5)"), vec![ids[2].clone()]);
        assert_eq!(matching(&ds, "amount IS NULL"), vec![ids[1].clone()]);
        assert_eq!(matching(&ds, "name = 'o''c'"), vec![ids[2].clone()]);
        assert_eq!(
            matching(&ds, "amount >= '2.5' AND name != 'a'"),
            vec![ids[2].clone()]
        );
    }

    #[test]
    fn errors_name_the_problem_like_the_query_coordinator() {
        let ds = dataset();
        let e = parse_where(&ds, "nope = 1").unwrap_err();
        assert_eq!(e.code, "query.soql.no-such-column");
        let e = parse_where(&ds, ":id > 'not-an-id'").unwrap_err();
        assert_eq!(e.code, "query.soql.type-mismatch");
        assert!(parse_where(&ds, "name = 'open").is_err());
        assert!(parse_order(&ds, ":id sideways").is_err());
    }

    #[test]
    fn select_star_forms() {
        let ds = dataset();
        let Selection::Fields(f) = parse_select(&ds, ":*,*").unwrap() else {
            panic!()
        };
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                ":id",
                ":version",
                ":created_at",
                ":updated_at",
                "name",
                "amount"
            ]
        );
        assert_eq!(parse_select(&ds, "count(*)").unwrap(), Selection::Count);
        assert_eq!(
            parse_order(&ds, ":updated_at DESC,:id").unwrap(),
            vec![(Field::UpdatedAt, true), (Field::Id, false)]
        );
    }

    #[test]
    fn csv_cells_take_the_resource_csv_form() {
        assert_eq!(
            cell_text(
                "point",
                &json!({"type": "Point", "coordinates": [-73.9, 40.7]})
            ),
            "POINT (-73.9 40.7)"
        );
        assert_eq!(
            cell_text("url", &json!({"url": "https://x", "description": "X"})),
            "X (https://x)"
        );
        assert_eq!(cell_text("url", &json!({"url": "https://x"})), "https://x");
        let loc = json!({"latitude": "40.7", "longitude": "-73.9", "human_address": "{\"address\":\"1 BROADWAY\",\"city\":\"NEW YORK\",\"state\":\"NY\",\"zip\":\"\"}"});
        assert_eq!(
            cell_text("location", &loc),
            "1 BROADWAY\nNEW YORK\nNY\n(40.7, -73.9)"
        );
        assert_eq!(cell_text("checkbox", &json!(true)), "true");
    }

    #[test]
    fn fixtures_load() {
        let st = State::from_fixtures(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
        )
        .unwrap();
        assert_eq!(st.datasets.len(), 5);
        assert!(st.datasets["wvxf-dwi5"].rows.len() >= 40);
    }
}
