//! Settings resolved in one place from flags, environment (clap reads `DOBSOB_*` and `SOCRATA_APP_TOKEN`) and
//! the catalog, and validated once.

use std::path::PathBuf;
use std::time::Duration;

use dobsob_engine::catalog::{validate_portal, Catalog, Dataset, Group};
use dobsob_engine::files::create_private_dir;
use dobsob_engine::layout::DataDir;
use dobsob_engine::soda::{AppToken, RetryPolicy};
use dobsob_engine::source::Source;
use url::Url;

use crate::cli::{GlobalArgs, Selection, SyncArgs};
use crate::error::Error;

pub const DEFAULT_PORTAL: &str = "https://data.cityofnewyork.us";

/// How a command uses the catalog and portal the data directory records (see [`dobsob_engine::source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceUse {
    /// It uses neither (`sql`, `report`): the record is not read, so a moved catalog file never stops it.
    Ignore,
    /// It shows them (`catalog`): the recorded ones by default, another one as given, without an error.
    Show,
    /// It syncs, compares, reports freshness or schedules against them (`sync`, `rebuild`, `status`,
    /// `verify`, `cron`): another one than the recorded needs `--switch-source`.
    Strict,
}

pub struct Settings {
    pub data_dir: PathBuf,
    pub catalog: Catalog,
    pub portal: Url,
    pub token: Option<AppToken>,
    /// The catalog and portal in force, as a sync records them for the data directory.
    pub source: Source,
    /// What the data directory recorded before this command, if anything.
    pub recorded: Option<Source>,
}

impl Settings {
    /// Resolves the catalog and portal: the flags (or their environment variables), else what the data
    /// directory records (see [`dobsob_engine::source`]), else the built-in catalog and its portal. Naming another
    /// catalog or portal than the recorded ones needs `--switch-source`, for the commands that work against
    /// them ([`SourceUse`]). `--catalog builtin` names the built-in catalog.
    pub fn from_args(g: &GlobalArgs, uses: SourceUse) -> Result<Settings, Error> {
        if g.data_dir.exists() && !g.data_dir.is_dir() {
            return Err(Error::Config(format!(
                "--data-dir {}: not a directory (DOBSOB_DATA_DIR sets it too); point it at the directory a \
                 sync fills, or at a new one",
                g.data_dir.display()
            )));
        }
        let recorded = if uses == SourceUse::Ignore {
            None
        } else {
            Source::read(&g.data_dir)?
        };
        let note = |s: String| {
            if !g.quiet {
                eprintln!("{s}");
            }
        };
        let builtin = |p: &PathBuf| p.as_os_str() == "builtin" && !p.exists();
        let catalog_path = match (&g.catalog, &recorded) {
            (Some(p), _) if builtin(p) => None,
            (Some(p), _) => Some(p.clone()),
            (None, Some(r)) => r.catalog.clone(),
            (None, None) => None,
        };
        let catalog = Catalog::load(catalog_path.as_deref()).map_err(|e| match (&g.catalog, &recorded) {
            (None, Some(r)) => Error::Config(format!(
                "{} was filled from {} (recorded in {}), which cannot be loaded now: {e}. Pass --catalog FILE \
                 (with --switch-source if it is another catalog)",
                g.data_dir.display(),
                r.catalog_name(),
                g.data_dir.join(dobsob_engine::source::FILE).display()
            )),
            _ => Error::from(e),
        })?;
        let catalog_abs = match &catalog_path {
            Some(p) => Some(std::path::absolute(p).map_err(|e| {
                Error::Config(format!("cannot make {} absolute: {e}", p.display()))
            })?),
            None => None,
        };
        let mut source = Source {
            catalog: catalog_abs,
            catalog_sha256: dobsob_engine::source::fingerprint(&catalog.text),
            portal: String::new(),
        };
        let same_catalog = recorded.as_ref().is_none_or(|r| r.same_catalog(&source));
        // The recorded portal goes with the recorded catalog; a switched catalog brings its own.
        let portal_str = match (&g.portal, &recorded) {
            (Some(p), _) => p.clone(),
            (None, Some(r)) if same_catalog => r.portal.clone(),
            _ => catalog
                .portal
                .clone()
                .unwrap_or_else(|| DEFAULT_PORTAL.to_string()),
        };
        let portal =
            validate_portal(&portal_str).map_err(|e| Error::Config(format!("--portal: {e}")))?;
        source.portal = portal.to_string();
        if let Some(r) = &recorded {
            let same_portal = r.same_portal(&source);
            let same = same_catalog && same_portal;
            if !same && !g.switch_source && uses == SourceUse::Strict {
                let what = match (same_catalog, same_portal) {
                    (false, false) => format!("this command names {}", source.describe()),
                    (false, true) => format!("this command names {}", source.catalog_name()),
                    _ => format!("this command names the portal {}", source.portal),
                };
                return Err(Error::Config(format!(
                    "{} was filled from {}; {what}. One warehouse would mix tables of two sources: use \
                     another --data-dir, or add --switch-source (a sync or rebuild with it then fills this \
                     one from the new source from now on)",
                    g.data_dir.display(),
                    r.describe()
                )));
            }
            if same_catalog && g.catalog.is_none() && r.catalog.is_some() {
                note(format!(
                    "using {}, recorded for {} (--catalog to choose another)",
                    r.catalog_name(),
                    g.data_dir.display()
                ));
            }
            if same_catalog && g.portal.is_none() {
                let default = catalog.portal.as_deref().unwrap_or(DEFAULT_PORTAL);
                if !r.same_portal(&Source {
                    portal: default.to_string(),
                    ..r.clone()
                }) {
                    note(format!(
                        "using the portal {}, recorded for {} (--portal to choose another)",
                        r.portal,
                        g.data_dir.display()
                    ));
                }
            }
        }
        Ok(Settings {
            data_dir: g.data_dir.clone(),
            catalog,
            portal,
            token: g.app_token.clone().and_then(AppToken::new),
            source,
            recorded,
        })
    }

    /// Whether this command's portal differs from the one that filled the data directory (allowed by
    /// `--switch-source`): the datasets already loaded came from elsewhere and are reloaded in full.
    pub fn portal_switched(&self) -> bool {
        self.recorded
            .as_ref()
            .is_some_and(|r| !r.same_portal(&self.source))
    }

    /// For commands that read a data directory a sync filled (status, verify, report, sql): an error that
    /// says so when there is none.
    pub fn require_data_dir(&self) -> Result<(), Error> {
        if self.data_dir.is_dir() {
            return Ok(());
        }
        Err(Error::Config(format!(
            "no data directory at {} yet: run `dobsob sync` first, or point --data-dir (or DOBSOB_DATA_DIR) \
             at the directory a sync filled",
            self.data_dir.display()
        )))
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

    /// The datasets a selection names, in start order (see [`Catalog::select`]).
    pub fn select(&self, s: &Selection) -> Result<Vec<&Dataset>, Error> {
        let selection = if !s.datasets.is_empty() {
            dobsob_engine::catalog::Selection::Keys(s.datasets.clone())
        } else if s.primary {
            dobsob_engine::catalog::Selection::Group(Group::Primary)
        } else if s.secondary {
            dobsob_engine::catalog::Selection::Group(Group::Secondary)
        } else if s.tertiary {
            dobsob_engine::catalog::Selection::Group(Group::Tertiary)
        } else {
            dobsob_engine::catalog::Selection::All
        };
        self.catalog
            .select(&selection)
            .map_err(|e| Error::Config(format!("--datasets: {e}")))
    }
}

pub fn retry_policy(a: &SyncArgs) -> RetryPolicy {
    RetryPolicy {
        max_retries: a.max_retries,
        base_delay: Duration::from_millis(a.retry_base_ms),
        max_delay: Duration::from_secs(dobsob_engine::defaults::RETRY_MAX_DELAY_SECS),
    }
}

/// The PostgreSQL warehouse a `--warehouse` (or `DOBSOB_WAREHOUSE`) names, with its password's sources
/// (`None`: the DuckDB file of the data directory).
pub fn warehouse(
    url: Option<&str>,
) -> Result<Option<dobsob_engine::warehouse::postgres::ConnInfo>, Error> {
    url.map(dobsob_engine::warehouse::postgres::ConnInfo::from_env)
        .transpose()
        .map_err(Error::Config)
}
