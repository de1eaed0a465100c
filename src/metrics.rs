//! The Prometheus text exposition format (version 0.0.4) of the datasets' status and the last run: what
//! `dobsob serve` answers at /metrics and `dobsob status --prometheus` prints for node_exporter's textfile
//! collector. Gauges only: every value is a fact read from the ledger at scrape time, not a counter kept in
//! memory, so a scrape says the same whichever process ran the sync.

use std::fmt::Write;

use dobsob_engine::ledger::RunLine;
use dobsob_engine::sync::schedule::parse_time;

use crate::commands::status::DatasetStatus;

/// A label value, escaped as the format wants (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} gauge");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect::<Vec<_>>()
            .join(",");
        let value = if value.fract() == 0.0 && value.abs() < 1e15 {
            format!("{}", value as i64)
        } else {
            format!("{value}")
        };
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
}

const OUTCOMES: [&str; 5] = ["ok", "drift", "failed", "interrupted", "abandoned"];

/// The metrics of `statuses` and of the newest run (`None`: no run yet); `in_progress` is whether a run
/// holds the data directory now (`None`: not looked at).
pub fn render(
    statuses: &[DatasetStatus],
    last_run: Option<&RunLine>,
    in_progress: Option<bool>,
) -> String {
    let mut o = Out(String::new());
    type Get = fn(&DatasetStatus) -> Option<f64>;
    let per_dataset: [(&str, &str, Get); 9] = [
        (
            "dobsob_dataset_last_success_timestamp_seconds",
            "When the dataset last synced successfully (Unix time); absent if never.",
            |s| {
                s.last_success_at
                    .as_deref()
                    .and_then(parse_time)
                    .map(|t| t.timestamp_millis() as f64 / 1000.0)
            },
        ),
        (
            "dobsob_dataset_staleness_seconds",
            "Seconds since the dataset's last success; absent if never synced.",
            |s| s.age_seconds.map(|a| a as f64),
        ),
        (
            "dobsob_dataset_stale",
            "1 if the dataset was never synced or its last success is older than its publication frequency.",
            |s| Some(f64::from(u8::from(s.stale))),
        ),
        (
            "dobsob_dataset_rows",
            "Rows in the dataset's table at its last sync.",
            |s| s.rows.map(|r| r as f64),
        ),
        (
            "dobsob_dataset_source_rows",
            "Rows the portal counted at the dataset's last sync.",
            |s| s.source_rows.map(|r| r as f64),
        ),
        (
            "dobsob_dataset_uncastable_values",
            "Values kept verbatim in dobsob.uncastable because they are not of their column's type.",
            |s| s.uncastable.map(|r| r as f64),
        ),
        (
            "dobsob_dataset_drift",
            "1 if the last sync ended with the table still differing from the source.",
            |s| {
                Some(f64::from(u8::from(
                    s.last_outcome == Some(dobsob_engine::ledger::LastOutcome::Drift),
                )))
            },
        ),
        (
            "dobsob_dataset_consecutive_failures",
            "Failed attempts since the dataset's last success.",
            |s| Some(s.consecutive_failures as f64),
        ),
        (
            "dobsob_dataset_quality_anomalies",
            "Anomalies the last data-quality profile found (rows fell, a column emptied, ...).",
            |s| Some(s.quality.len() as f64),
        ),
    ];
    for (name, help, get) in per_dataset {
        o.family(name, help);
        for s in statuses {
            if let Some(v) = get(s) {
                o.sample(name, &[("dataset", &s.key)], v);
            }
        }
    }
    let name = "dobsob_dataset_last_outcome";
    o.family(
        name,
        "1 for how the dataset's last attempt ended (ok, drift, failed, interrupted, abandoned), 0 for the others.",
    );
    for s in statuses {
        let Some(last) = s.last_outcome else {
            continue;
        };
        for outcome in OUTCOMES {
            o.sample(
                name,
                &[("dataset", &s.key), ("outcome", outcome)],
                f64::from(u8::from(last.as_str() == outcome)),
            );
        }
    }
    if let Some(r) = last_run {
        let started = parse_time(&r.started_at);
        let finished = r.finished_at.as_deref().and_then(parse_time);
        o.family("dobsob_last_run_id", "The ledger's id of the newest run.");
        o.sample("dobsob_last_run_id", &[], r.run_id as f64);
        if let Some(t) = started {
            o.family(
                "dobsob_last_run_start_timestamp_seconds",
                "When the newest run started (Unix time).",
            );
            o.sample(
                "dobsob_last_run_start_timestamp_seconds",
                &[],
                t.timestamp_millis() as f64 / 1000.0,
            );
        }
        if let (Some(a), Some(b)) = (started, finished) {
            o.family(
                "dobsob_last_run_duration_seconds",
                "How long the newest run took; absent while it runs.",
            );
            o.sample(
                "dobsob_last_run_duration_seconds",
                &[],
                (b - a).num_milliseconds().max(0) as f64 / 1000.0,
            );
        }
        for (name, help, v) in [
            (
                "dobsob_last_run_requests",
                "Requests the newest run sent to the portal.",
                r.requests,
            ),
            (
                "dobsob_last_run_bytes",
                "Bytes the newest run downloaded.",
                r.bytes,
            ),
            (
                "dobsob_last_run_rows_fetched",
                "Rows the newest run downloaded.",
                r.rows_fetched,
            ),
        ] {
            o.family(name, help);
            o.sample(name, &[], v as f64);
        }
        let name = "dobsob_last_run_datasets";
        o.family(
            name,
            "The newest run's datasets by outcome (synced, unchanged, skipped, failed, interrupted, abandoned, running).",
        );
        let c = &r.counts;
        for (outcome, n) in [
            ("synced", c.synced),
            ("unchanged", c.unchanged),
            ("skipped", c.skipped),
            ("failed", c.failed),
            ("interrupted", c.interrupted),
            ("abandoned", c.abandoned),
            ("running", c.running),
        ] {
            o.sample(name, &[("outcome", outcome)], n as f64);
        }
    }
    if let Some(running) = in_progress {
        o.family(
            "dobsob_run_in_progress",
            "1 while a sync or rebuild holds the data directory.",
        );
        o.sample("dobsob_run_in_progress", &[], f64::from(u8::from(running)));
    }
    o.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
