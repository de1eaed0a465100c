//! The live display of a run on a terminal (indicatif): a line for the run as a whole and one per dataset in
//! flight, with rows, MB, rate, pages, retries and, when the source's count for the pass is known, a bar and
//! an ETA. Shown only when stderr is a terminal and not with `-q` or `--no-progress`; cron never sees it.
//!
//! Log lines go to stderr through [`Stderr`], which lifts the bars while a line is written, so the two never
//! garble each other.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dobsob_engine::catalog::Priority;
use dobsob_engine::sync::{DatasetReport, Observer, Outcome, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The display in use, if any, for [`Stderr`] to write around.
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// stderr for the log, written around the live display when there is one.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match active {
            Some(m) => m.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

struct Job {
    bar: ProgressBar,
    started: Instant,
}

#[derive(Default)]
struct Totals {
    done: u64,
    failed: u64,
    skipped: u64,
    bytes_done: u64,
    /// Bytes of the datasets in flight, by key.
    bytes_running: HashMap<String, u64>,
}

/// The live display. Cheap to share: the orchestrator calls it from every dataset job.
pub struct Display {
    multi: MultiProgress,
    total: ProgressBar,
    started: Instant,
    jobs: Mutex<HashMap<String, Job>>,
    totals: Mutex<Totals>,
}

impl Display {
    /// A display for a run of `jobs` datasets, or None when stderr is not a terminal.
    pub fn on_terminal(jobs: usize) -> Option<Arc<Display>> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let total = multi.add(ProgressBar::new(jobs as u64));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{elapsed_precise}] {bar:24.cyan/blue} {pos}/{len} datasets  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        total.set_prefix("run");
        total.enable_steady_tick(Duration::from_millis(200));
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(multi.clone());
        let d = Arc::new(Display {
            multi,
            total,
            started: Instant::now(),
            jobs: Mutex::default(),
            totals: Mutex::default(),
        });
        d.refresh_total();
        Some(d)
    }

    /// Removes the display before the summary is printed.
    pub fn clear(&self) {
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = None;
        for (_, j) in self.jobs.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            j.bar.finish_and_clear();
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }

    fn refresh_total(&self) {
        let t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        let in_flight = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).len();
        let bytes = t.bytes_done + t.bytes_running.values().sum::<u64>();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        self.total.set_message(format!(
            "{in_flight} in flight, {} done, {} failed, {} skipped, {}, {}/s",
            t.done,
            t.failed,
            t.skipped,
            mb(bytes),
            mb((bytes as f64 / secs) as u64)
        ));
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>24} {spinner} {msg}").expect("a valid template")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>24} {bar:20.green/white} {msg} ETA {eta}")
        .expect("a valid template")
        .progress_chars("=> ")
}

impl Observer for Display {
    fn started(&self, key: &str, priority: Priority) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(spinner_style());
        bar.set_prefix(key.to_string());
        bar.set_message(format!("{priority}: starting"));
        bar.enable_steady_tick(Duration::from_millis(200));
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key.to_string(),
            Job {
                bar,
                started: Instant::now(),
            },
        );
        self.refresh_total();
    }

    fn progress(&self, key: &str, p: &Progress) {
        if let Some(j) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            let secs = j.started.elapsed().as_secs_f64().max(0.001);
            let rows = match p.pass_expected {
                Some(e) if e > 0 => {
                    if j.bar.length() != Some(e) {
                        j.bar.set_style(bar_style());
                        j.bar.set_length(e);
                    }
                    j.bar.set_position(p.pass_received.min(e));
                    format!("{}/{e} rows", p.pass_received)
                }
                _ => format!("{} rows", p.rows_fetched),
            };
            j.bar.set_message(format!(
                "{}: {rows}, {}, {}/s, {} pages, {} retries",
                p.mode.map_or("sync", |m| m.as_str()),
                mb(p.bytes),
                mb((p.bytes as f64 / secs) as u64),
                p.pages,
                p.retries
            ));
        }
        self.totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bytes_running
            .insert(key.to_string(), p.bytes);
        self.refresh_total();
    }

    fn finished(&self, r: &DatasetReport) {
        if let Some(j) = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&r.key)
        {
            j.bar.finish_and_clear();
        }
        {
            let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            t.bytes_running.remove(&r.key);
            t.bytes_done += r.progress.bytes;
            match r.outcome {
                Outcome::Ok => t.done += 1,
                Outcome::Skipped => t.skipped += 1,
                Outcome::Failed | Outcome::Drift | Outcome::Interrupted => t.failed += 1,
            }
        }
        self.total.inc(1);
        self.refresh_total();
    }
}
