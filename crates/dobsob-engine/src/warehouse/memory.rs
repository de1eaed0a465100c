//! DuckDB's memory cap: fixed by `--memory-limit`, or automatic (starting at [`DEFAULT_MEMORY_LIMIT_MB`] and
//! raised, up to [`MAX_AUTO_MEMORY_LIMIT_MB`], when DuckDB refuses a batch for memory).

use super::*;

/// DuckDB's memory cap at the start of a run unless `--memory-limit` fixes one, in MB. What a full load
/// needs pinned at once grows with the table's width (two threads each fill a row group's column segments):
/// DuckDB refused a 46-column load at 64 MB and a 60-column one at 80 MB (which the automatic cap then
/// raises). Peak resident memory of a 46-column full load: 163-189 MB at 80 MB, 187-202 MB at 96 MB, for
/// a few percent of speed; docs/performance.md has the measurements.
pub const DEFAULT_MEMORY_LIMIT_MB: u32 = 80;

/// The highest cap [`MemoryLimit::Auto`] raises DuckDB's to, in MB.
pub const MAX_AUTO_MEMORY_LIMIT_MB: u32 = 1024;

/// DuckDB's memory cap for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// Starts at `start_mb` ([`DEFAULT_MEMORY_LIMIT_MB`] from the CLI) and doubles, up to
    /// [`MAX_AUTO_MEMORY_LIMIT_MB`], each time DuckDB refuses a batch of a full load for memory (a wide
    /// dataset); a raised cap stays for the rest of the run.
    Auto { start_mb: u32 },
    /// `--memory-limit`: never raised; a batch refused for memory is loaded page by page.
    Fixed(u32),
}

impl MemoryLimit {
    /// Whether dobsob may raise the cap.
    pub fn is_auto(self) -> bool {
        matches!(self, MemoryLimit::Auto { .. })
    }

    /// The cap the run starts with, in MB.
    pub fn start_mb(self) -> u32 {
        match self {
            MemoryLimit::Auto { start_mb } | MemoryLimit::Fixed(start_mb) => start_mb,
        }
    }
}

impl Default for MemoryLimit {
    fn default() -> Self {
        MemoryLimit::Auto {
            start_mb: DEFAULT_MEMORY_LIMIT_MB,
        }
    }
}

impl Warehouse {
    /// DuckDB's memory cap now, MB.
    /// DuckDB's worker threads (`--cpu-threads`): fewer leave cores to others; a load then takes longer.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), WarehouseError> {
        self.raw
            .conn
            .execute_batch(&format!("SET threads = {}", threads.max(1)))
            .ctx(|| format!("setting DuckDB's threads to {threads}"))
    }

    pub fn memory_limit_mb(&self) -> u32 {
        self.memory_limit_mb
    }

    /// Doubles DuckDB's memory cap after it refused a batch of `key` for memory, when the cap is dobsob's to
    /// choose and below [`MAX_AUTO_MEMORY_LIMIT_MB`]; whether it did.
    pub(super) fn raise_memory_limit(&mut self, key: &str) -> Result<bool, WarehouseError> {
        if !self.memory.is_auto() || self.memory_limit_mb >= MAX_AUTO_MEMORY_LIMIT_MB {
            return Ok(false);
        }
        let raised = self
            .memory_limit_mb
            .saturating_mul(2)
            .min(MAX_AUTO_MEMORY_LIMIT_MB);
        self.raw
            .conn
            .execute_batch(&format!("SET memory_limit = '{raised}MB'"))
            .ctx(|| "raising DuckDB's memory cap".into())?;
        tracing::info!(
            dataset = key,
            "DuckDB needed more than {} MB to load a batch of pages of this dataset; its memory cap is {raised} MB \
             for the rest of the run (--memory-limit fixes a cap)",
            self.memory_limit_mb
        );
        self.memory_limit_mb = raised;
        Ok(true)
    }
}
