//! `--notify-webhook`: a JSON summary of the run POSTed when it ends. Its `text` field is one line, so that
//! Slack, Mattermost and Teams incoming webhooks show it as is; the rest is for scripts. A notification that
//! fails is a warning, never a failed run. The webhook gets its own HTTP client: the portal's app token is
//! never sent to it, and its URL (a secret, for most chat services) is never logged beyond its host.

use std::time::Duration;

use serde_json::json;
use url::Url;

use crate::report::RunReport;

/// "dobsob sync run 12 (data.cityofnewyork.us): failed. 18 datasets: 3 synced, 1 failed (dob_violations),
/// 13 unchanged, 1 skipped. 12.3 MB in 41.2s." Interrupted, unchanged and skipped datasets are counted when
/// there are any.
pub fn one_line(r: &RunReport) -> String {
    let host = Url::parse(&r.portal)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| r.portal.clone());
    let named = |what: &str, keys: Vec<&str>| match keys.len() {
        0 => format!("0 {what}"),
        n if n <= 5 => format!("{n} {what} ({})", keys.join(", ")),
        n => format!("{n} {what} ({}, ...)", keys[..5].join(", ")),
    };
    let unchanged = r
        .skipped()
        .filter(|d| d.progress.mode == Some(crate::sync::SyncMode::Unchanged))
        .count();
    let mut counts = vec![
        format!("{} synced", r.completed().count()),
        named("failed", r.failed().map(|d| d.key.as_str()).collect()),
    ];
    let interrupted: Vec<&str> = r.interrupted().map(|d| d.key.as_str()).collect();
    if !interrupted.is_empty() {
        counts.push(named("interrupted", interrupted));
    }
    let skipped = r.skipped().count() - unchanged;
    for (n, what) in [(unchanged, "unchanged"), (skipped, "skipped")] {
        if n > 0 {
            counts.push(format!("{n} {what}"));
        }
    }
    let mut line = format!(
        "dobsob {} run {} ({host}): {}. {}: {}. {:.1} MB in {:.1}s.",
        r.command,
        r.run_id,
        r.outcome.as_str(),
        crate::report::count(r.datasets.len(), "dataset"),
        counts.join(", "),
        r.bytes() as f64 / 1e6,
        r.seconds,
    );
    let flagged: Vec<&str> = r
        .datasets
        .iter()
        .filter(|d| !d.progress.quality.is_empty())
        .map(|d| d.key.as_str())
        .collect();
    if !flagged.is_empty() {
        line.push_str(&format!(" Data quality: {}.", named("to look at", flagged)));
    }
    if let Some(e) = &r.error {
        line.push_str(&format!(" The run stopped early: {e}"));
    }
    line.replace(['\n', '\r'], " ")
}

/// The body POSTed to the webhook.
pub fn payload(r: &RunReport) -> serde_json::Value {
    let full = r.to_json();
    let entries =
        |jobs: Vec<&crate::sync::DatasetReport>| -> serde_json::Map<String, serde_json::Value> {
            jobs.into_iter()
                .map(|d| {
                    (
                        d.key.clone(),
                        json!({ "outcome": d.outcome, "error": d.error }),
                    )
                })
                .collect()
        };
    let failed = entries(r.failed().collect());
    let interrupted = entries(r.interrupted().collect());
    let quality: serde_json::Map<String, serde_json::Value> = r
        .datasets
        .iter()
        .filter(|d| !d.progress.quality.is_empty())
        .map(|d| (d.key.clone(), json!(d.progress.quality)))
        .collect();
    json!({
        "text": one_line(r),
        "run_id": r.run_id,
        "command": r.command,
        "outcome": r.outcome,
        "portal": r.portal,
        "report_path": r.path.as_ref().map(|p| p.display().to_string()),
        "execution_summary": full["execution_summary"],
        "failed_jobs": failed,
        "interrupted_jobs": interrupted,
        "quality_warnings": quality,
    })
}

/// POSTs the run's summary to `url`; logs a warning if that fails.
pub async fn post(url: &Url, r: &RunReport) {
    let shown = format!("{}://{}/...", url.scheme(), url.host_str().unwrap_or("?"));
    let client = match reqwest::Client::builder()
        .user_agent(concat!("dobsob/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("webhook notification not sent: cannot build an HTTP client: {e}");
            return;
        }
    };
    let body = serde_json::to_vec(&payload(r)).expect("a summary serializes");
    let request = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    match request.send().await {
        Ok(resp) if resp.status().is_success() => {
            tracing::info!("run summary sent to the webhook at {shown}");
        }
        Ok(resp) => tracing::warn!(
            "webhook notification to {shown} failed: HTTP {} (the run's outcome is unaffected)",
            resp.status()
        ),
        Err(e) => tracing::warn!(
            "webhook notification to {shown} failed: {} (the run's outcome is unaffected)",
            e.without_url()
        ),
    }
}
