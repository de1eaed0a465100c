//! `dobsob report [RUN_ID | --last] [--json]`: a past run from the ledger, for a person or a script. Reads
//! the ledger without changing it, so it works while a sync runs.

use dobsob_engine::ledger::Ledger;

use crate::cli::ReportArgs;
use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::Settings;

pub fn run(settings: &Settings, args: &ReportArgs, printer: Printer) -> Result<ExitStatus, Error> {
    settings.require_data_dir()?;
    let Some(ledger) = Ledger::open_read_only(&settings.ledger_path())? else {
        return Err(Error::Config(format!(
            "no runs yet: there is no ledger at {}",
            settings.ledger_path().display()
        )));
    };
    if args.list {
        let runs = ledger.runs(args.limit)?;
        if args.json {
            printer.data(&serde_json::to_string_pretty(&runs).expect("runs serialize"));
            return Ok(ExitStatus::Ok);
        }
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                vec![
                    r.run_id.to_string(),
                    r.command.clone(),
                    r.started_at.clone(),
                    duration(&r.started_at, r.finished_at.as_deref()),
                    r.outcome.clone(),
                    r.counts.summary(),
                ]
            })
            .collect();
        printer.data(&crate::printer::table(
            &["RUN", "COMMAND", "STARTED", "TOOK", "OUTCOME", "DATASETS"],
            &rows,
        ));
        return Ok(ExitStatus::Ok);
    }
    let view = ledger.run_view(args.run)?.ok_or_else(|| {
        Error::Config(match args.run {
            Some(id) => {
                format!("no run {id} in the ledger (`dobsob report --last` shows the newest)")
            }
            None => "no runs yet in the ledger".to_string(),
        })
    })?;
    if args.json {
        printer.data(&serde_json::to_string_pretty(&view).expect("a run serializes"));
        return Ok(ExitStatus::Ok);
    }
    printer.data(&match view.finished_at.as_deref() {
        Some(finished) => format!(
            "run {}: {} started {}, finished {}: {} ({})",
            view.run_id,
            view.command,
            view.started_at,
            finished,
            view.outcome,
            view.counts.summary()
        ),
        None => format!(
            "run {}: {} started {}, still running ({} so far)",
            view.run_id,
            view.command,
            view.started_at,
            view.counts.summary()
        ),
    });
    let rows: Vec<Vec<String>> = view
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.dataset.clone(),
                a.outcome.clone(),
                a.mode.clone(),
                a.rows_fetched.to_string(),
                a.rows_deleted.to_string(),
                format!("{:.1}", a.bytes as f64 / 1e6),
                a.pages.to_string(),
                a.error
                    .clone()
                    .or_else(|| a.reason.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    printer.data(&crate::printer::table(
        &[
            "DATASET", "OUTCOME", "MODE", "FETCHED", "DELETED", "MB", "PAGES", "NOTE",
        ],
        &rows,
    ));
    Ok(ExitStatus::Ok)
}

/// How long a run took ("12.3s", "4m 05s"), or "running".
fn duration(started: &str, finished: Option<&str>) -> String {
    use dobsob_engine::sync::schedule::parse_time;
    let Some(finished) = finished else {
        return "running".into();
    };
    match (parse_time(started), parse_time(finished)) {
        (Some(a), Some(b)) => {
            let ms = (b - a).num_milliseconds().max(0);
            if ms < 60_000 {
                format!("{:.1}s", ms as f64 / 1000.0)
            } else {
                format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000)
            }
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_durations_read_well() {
        let d = super::duration;
        assert_eq!(d("2026-12-07T01:00:00.000Z", None), "running");
        assert_eq!(
            d("2026-12-07T01:00:00.000Z", Some("2026-12-07T01:00:12.340Z")),
            "12.3s"
        );
        assert_eq!(
            d("2026-12-07T01:00:00.000Z", Some("2026-12-07T01:04:05.000Z")),
            "4m 05s"
        );
    }
}
