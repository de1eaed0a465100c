//! Settings resolved in one place from flags, environment (clap reads `DOBSOB_*` and `SOCRATA_APP_TOKEN`) and
//! the catalog, and validated once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::catalog::{validate_portal, Catalog, Dataset, Group};
use crate::cli::{GlobalArgs, Selection, SyncArgs};
use crate::error::Error;
use crate::layout::DataDir;
use crate::soda::{AppToken, RetryPolicy};

pub const DEFAULT_PORTAL: &str = "https://data.cityofnewyork.us";

pub struct Settings {
    pub data_dir: PathBuf,
    pub catalog: Catalog,
    pub portal: Url,
    pub token: Option<AppToken>,
}

impl Settings {
    pub fn from_args(g: &GlobalArgs) -> Result<Settings, Error> {
        let catalog = Catalog::load(g.catalog.as_deref())?;
        let portal_str = g
            .portal
            .clone()
            .or_else(|| catalog.portal.clone())
            .unwrap_or_else(|| DEFAULT_PORTAL.to_string());
        let portal =
            validate_portal(&portal_str).map_err(|e| Error::Config(format!("--portal: {e}")))?;
        Ok(Settings {
            data_dir: g.data_dir.clone(),
            catalog,
            portal,
            token: g.app_token.clone().and_then(AppToken::new),
        })
    }

    /// The data directory's layout.
    pub fn layout(&self) -> DataDir<'_> {
        DataDir(&self.data_dir)
    }
    pub fn ledger_path(&self) -> PathBuf {
        self.layout().ledger()
    }
    /// The published warehouse analysts open (and `verify` reads).
    pub fn warehouse_path(&self) -> PathBuf {
        self.layout().published()
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.layout().tmp()
    }
    pub fn reports_dir(&self) -> PathBuf {
        self.layout().reports()
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.layout().logs()
    }

    /// Creates the data directory and its subdirectories, private to the user.
    pub fn prepare_data_dir(&self) -> Result<(), Error> {
        for d in [
            self.data_dir.clone(),
            self.tmp_dir(),
            self.reports_dir(),
            self.logs_dir(),
        ] {
            create_private_dir(&d).map_err(|e| {
                Error::Config(format!("cannot create data directory {}: {e}", d.display()))
            })?;
        }
        Ok(())
    }

    /// The datasets a selection names, in priority order (CRITICAL, HIGH, MEDIUM, LOW), then by group, then
    /// smallest first (so the most needed and quickest data is fresh first).
    pub fn select(&self, s: &Selection) -> Result<Vec<&Dataset>, Error> {
        let group = if s.primary {
            Some(Group::Primary)
        } else if s.secondary {
            Some(Group::Secondary)
        } else if s.tertiary {
            Some(Group::Tertiary)
        } else {
            None
        };
        let mut out: Vec<&Dataset> = if !s.datasets.is_empty() {
            let mut v = Vec::new();
            for k in &s.datasets {
                let k = k.trim();
                let d = self.catalog.get(k).ok_or_else(|| {
                    let known: Vec<&str> = self
                        .catalog
                        .datasets
                        .iter()
                        .map(|d| d.key.as_str())
                        .collect();
                    Error::Config(format!(
                        "--datasets: no dataset {k:?} in the catalog; known: {}",
                        known.join(", ")
                    ))
                })?;
                if !v.iter().any(|x: &&Dataset| x.key == d.key) {
                    v.push(d);
                }
            }
            v
        } else {
            self.catalog
                .datasets
                .iter()
                .filter(|d| group.is_none_or(|g| d.group == g))
                .collect()
        };
        out.sort_by_key(|d| (d.priority(), d.group, d.size_mb));
        Ok(out)
    }
}

pub fn retry_policy(a: &SyncArgs) -> RetryPolicy {
    RetryPolicy {
        max_retries: a.max_retries,
        base_delay: Duration::from_millis(a.retry_base_ms),
        max_delay: Duration::from_secs(120),
    }
}

/// Writes `bytes` to a new file at `path` (replacing one there), readable by the user only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates a directory (and its parents), private to the user.
pub fn create_private_dir(p: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(p)
}
