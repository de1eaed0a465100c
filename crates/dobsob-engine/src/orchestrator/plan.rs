//! A run's [`Plan`]: its jobs in start order (priority, then size), from the catalog or made by hand, and
//! the plan of `--retry-failed` (the datasets whose last attempt did not succeed).

use super::*;

/// The jobs of a run, in start order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub jobs: Vec<Job>,
}

impl Plan {
    /// A plan of these jobs, sorted into start order (priority, then group, then smallest first).
    pub fn new(mut jobs: Vec<Job>) -> Plan {
        start_order(&mut jobs);
        Plan { jobs }
    }

    /// A plan of catalog datasets (see [`crate::catalog::Catalog::select`]), each with its catalog priority.
    pub fn from_datasets<'a>(datasets: impl IntoIterator<Item = &'a Dataset>) -> Plan {
        Plan::new(datasets.into_iter().cloned().map(Job::new).collect())
    }

    /// Only the jobs whose last attempt failed, drifted, was interrupted or abandoned (its process killed),
    /// by the ledger of `data_dir` (none without one): what `--retry-failed` runs.
    pub fn retry_failed(mut self, data_dir: &Path) -> Result<Plan, Error> {
        let path = DataDir(data_dir).ledger();
        if !path.exists() {
            self.jobs.clear();
            return Ok(self);
        }
        let ledger = Ledger::open(&path)?;
        for j in std::mem::take(&mut self.jobs) {
            let r = ledger.dataset(j.dataset.key.as_str())?;
            let last = r.and_then(|r| r.last_outcome);
            if last.is_some_and(|o| o.is_failing() || o.was_stopped()) {
                self.jobs.push(j);
            }
        }
        Ok(self)
    }
}
