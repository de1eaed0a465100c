//! Where everything lives in a data directory: one place, used by the CLI's settings and by the
//! orchestrator alike.
//!
//! ```text
//! <data>/warehouse.duckdb        the published snapshot analysts open (read-only, replaced by rename)
//! <data>/work/warehouse.duckdb   the working database a sync writes (nobody else opens it)
//! <data>/ledger.sqlite           watermarks, pages, attempts, runs
//! <data>/tmp/                    page files and DuckDB's spill
//! <data>/reports/                run reports (unless --report-path)
//! <data>/logs/                   daily log files
//! ```

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub struct DataDir<'a>(pub &'a Path);

impl DataDir<'_> {
    pub fn published(&self) -> PathBuf {
        self.0.join("warehouse.duckdb")
    }
    pub fn work_dir(&self) -> PathBuf {
        self.0.join("work")
    }
    pub fn working(&self) -> PathBuf {
        self.work_dir().join("warehouse.duckdb")
    }
    pub fn ledger(&self) -> PathBuf {
        self.0.join("ledger.sqlite")
    }
    pub fn tmp(&self) -> PathBuf {
        self.0.join("tmp")
    }
    pub fn reports(&self) -> PathBuf {
        self.0.join("reports")
    }
    pub fn logs(&self) -> PathBuf {
        self.0.join("logs")
    }
}
