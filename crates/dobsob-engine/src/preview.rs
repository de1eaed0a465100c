//! The dry run (`dobsob sync --dry-run`): what a sync would do, changing nothing on disk. It decides with the
//! sync's own [`decide`], from the same facts: the warehouse's committed sync states (the working database,
//! opened read-only, when no run holds the data directory: after a kill only it knows an interrupted load;
//! else the last published snapshot), the ledger (read-only) for the change gate, each due dataset's
//! metadata, and, when the source changed, the two counts of the full-replace check. It fetches no rows,
//! creates no data directory, writes nothing. A portal it cannot reach is [`Error::Unreachable`], as for a
//! sync; a dataset whose metadata the portal refuses gets [`Would::Unknown`].

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::catalog::{Dataset, Priority};
use crate::error::Error;
use crate::layout::DataDir;
use crate::ledger::{DatasetRecord, Ledger};
use crate::soda::{AppToken, RetryPolicy, SodaClient, SodaError};
use crate::sync::decide::{decide, is_replace, Decision, Facts};
use crate::sync::{self, schedule, Mode};
use crate::warehouse::{StateReader, SyncState};

/// What the dry run is asked: the sync's flags that change a decision.
#[derive(Debug, Clone)]
pub struct PreviewOptions {
    pub mode: Mode,
    /// `--schedule-check`: the grace in seconds; `None`: every dataset is due.
    pub schedule_grace: Option<i64>,
    pub force: bool,
    pub incremental_only: bool,
    /// A dataset above this size is large (`--large-mb`).
    pub large_mb: u32,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    /// A PostgreSQL warehouse (`--warehouse`): the states, and every worker's last success, come from it.
    pub warehouse: Option<crate::warehouse::postgres::ConnInfo>,
}

/// Where the preview's states came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatesFrom {
    /// The working database: no run holds the data directory.
    Working,
    /// The last published snapshot: a sync is running (or nothing was ever loaded).
    Published { run_in_progress: bool },
    /// A PostgreSQL warehouse: its committed states, as every worker left them.
    Postgres,
}

/// What a sync would do with one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Would {
    /// Not synced: not due, unchanged at the source, or a full load under `--incremental-only`.
    Skip(String),
    /// A full load, and why.
    Full(String),
    /// An incremental pass from this watermark (`None`: from the start).
    Incremental(Option<String>),
    /// The dataset would fail before fetching (an unusable schema).
    Fail(String),
    /// The portal did not answer for it (a sync would fail it).
    Unknown(String),
}

impl fmt::Display for Would {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Would::Skip(why) => write!(f, "skip: {why}"),
            Would::Full(why) => write!(f, "full load ({why})"),
            Would::Incremental(Some(from)) => write!(f, "incremental from {from}"),
            Would::Incremental(None) => f.write_str("incremental from the start"),
            Would::Fail(why) => write!(f, "fail: {why}"),
            Would::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}

/// One dataset of the preview.
#[derive(Debug, Clone)]
pub struct PreviewRow {
    pub key: String,
    pub priority: Priority,
    /// With `--schedule-check`: why it is due or not.
    pub schedule: Option<String>,
    pub would: Would,
    /// The size that decides `--max-large`, and where it came from ("last full load" or "catalog").
    pub size_mb: u32,
    pub size_source: &'static str,
    pub large: bool,
    /// Rows in the table after the last sync.
    pub rows: Option<i64>,
}

/// The whole preview.
#[derive(Debug, Clone)]
pub struct Preview {
    pub states_from: StatesFrom,
    pub rows: Vec<PreviewRow>,
}

impl Preview {
    /// Datasets the portal did not answer for.
    pub fn unanswered(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r.would, Would::Unknown(_)))
            .count()
    }
}

/// What a sync of `datasets` in `data_dir` would do, asking `portal` for metadata (and counts) only.
pub async fn preview(
    data_dir: &Path,
    portal: &url::Url,
    token: Option<AppToken>,
    datasets: &[&Dataset],
    options: &PreviewOptions,
) -> Result<Preview, Error> {
    let layout = DataDir(data_dir);
    let ledger = Ledger::open_read_only(&layout.ledger())?;
    // Held (a shared lock) while the states are read: a run starting meanwhile waits its turn (exit 75).
    let look = crate::lock::peek(data_dir);
    let (path, states_from) = match &look {
        crate::lock::Peek::Held => (
            layout.published(),
            StatesFrom::Published {
                run_in_progress: true,
            },
        ),
        crate::lock::Peek::Free(_) if layout.working().exists() => {
            (layout.working(), StatesFrom::Working)
        }
        crate::lock::Peek::Free(_) => (
            layout.published(),
            StatesFrom::Published {
                run_in_progress: false,
            },
        ),
    };
    let mut states: Vec<Option<SyncState>> = Vec::new();
    // Every worker's last success per dataset (a PostgreSQL warehouse only).
    let mut shared: Vec<Option<String>> = vec![None; datasets.len()];
    let mut states_from = states_from;
    if let Some(info) = &options.warehouse {
        states_from = StatesFrom::Postgres;
        let keys: Vec<String> = datasets.iter().map(|d| d.key.to_string()).collect();
        let read = crate::warehouse::postgres::off_runtime(|| {
            let mut wh = crate::warehouse::postgres::PgWarehouse::open(info)?;
            keys.iter()
                .map(|k| Ok((wh.state(k)?, wh.shared_last_success(k)?)))
                .collect::<Result<Vec<_>, crate::warehouse::WarehouseError>>()
        })?;
        for (i, (state, last)) in read.into_iter().enumerate() {
            states.push(state);
            shared[i] = last;
        }
    } else if path.exists() {
        let reader = StateReader::open(&path)?;
        for ds in datasets {
            states.push(reader.state(ds.key.as_str())?);
        }
    } else {
        states.resize(datasets.len(), None);
    }
    drop(look);
    let client = SodaClient::new(portal, token, options.retry, options.timeout)?;
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for ((ds, state), theirs) in datasets.iter().zip(&states).zip(&shared) {
        let rec = match &ledger {
            Some(l) => l.dataset(ds.key.as_str())?,
            None => None,
        };
        let last = rec
            .as_ref()
            .and_then(|r| r.last_success_at.as_deref())
            .and_then(schedule::parse_time)
            .max(theirs.as_deref().and_then(schedule::parse_time));
        let due = options
            .schedule_grace
            .map(|grace| schedule::due(ds.frequency, last, now, grace));
        let would = match &due {
            Some(due) if !due.is_due() => Would::Skip(due.reason()),
            _ => match would(&client, ds, rec.as_ref(), state.as_ref(), options).await {
                Ok(w) => w,
                Err(e) if e.is_unreachable() => {
                    return Err(Error::Unreachable(format!(
                        "cannot reach the portal {portal}: {e}. Check the network, or point --portal (or \
                         DOBSOB_PORTAL) at a reachable Socrata portal"
                    )))
                }
                Err(e) => Would::Unknown(e.to_string()),
            },
        };
        let loaded = match &ledger {
            Some(l) => l.last_full_load_bytes(ds.key.as_str())?,
            None => None,
        };
        let (size_mb, size_source) = sync::size_estimate_mb(loaded, ds);
        rows.push(PreviewRow {
            key: ds.key.to_string(),
            priority: ds.priority(),
            schedule: due.map(|d| d.reason()),
            would,
            size_mb,
            size_source,
            large: size_mb > options.large_mb,
            rows: rec.as_ref().and_then(|r| r.row_count),
        });
    }
    Ok(Preview { states_from, rows })
}

/// What a sync would do with a due dataset: [`decide`] on the facts the sync would have.
async fn would(
    client: &SodaClient,
    ds: &Dataset,
    rec: Option<&DatasetRecord>,
    state: Option<&SyncState>,
    options: &PreviewOptions,
) -> Result<Would, SodaError> {
    let meta = client.metadata(ds.id.as_str()).await?;
    let fingerprint = match sync::schema_of(ds, &meta.columns) {
        Ok(schema) => sync::fingerprint(ds, &schema),
        Err(e) => return Ok(Would::Fail(format!("unusable schema: {e}"))),
    };
    let mut facts = Facts {
        mode: options.mode,
        state,
        fingerprint: &fingerprint,
        force: options.force,
        gate: sync::gate_holds(
            meta.rows_updated_at,
            rec.and_then(|r| r.source_rows_updated_at),
        ),
        replaced: None,
    };
    let mut decision = decide(&facts);
    if decision == Decision::CheckReplace {
        let wm = state.and_then(|s| s.watermark.as_ref());
        let changed = client.count(ds.id.as_str(), wm).await?;
        let total = if changed == 0 {
            0
        } else {
            client.count(ds.id.as_str(), None).await?
        };
        facts.replaced = Some(is_replace(changed, total));
        decision = decide(&facts);
    }
    Ok(match decision {
        Decision::Unchanged => {
            Would::Skip(sync::unchanged_reason(meta.rows_updated_at).unwrap_or_default())
        }
        Decision::Full { why, .. } if options.incremental_only => Would::Skip(format!(
            "a full load is needed ({why}) and --incremental-only is set"
        )),
        Decision::Full { why, .. } => Would::Full(why.to_string()),
        Decision::Incremental | Decision::CheckReplace => Would::Incremental(
            state
                .and_then(|s| s.watermark.as_ref())
                .map(|w| w.updated_at.to_string()),
        ),
    })
}
