//! `dobsob report [RUN_ID | --last] [--json]`: a past run from the ledger, for a person or a script. Reads
//! the ledger without changing it, so it works while a sync runs.

use crate::cli::ReportArgs;
use crate::error::{Error, ExitStatus};
use crate::ledger::Ledger;
use crate::printer::Printer;
use crate::settings::Settings;

pub fn run(settings: &Settings, args: &ReportArgs, printer: Printer) -> Result<ExitStatus, Error> {
    let Some(ledger) = Ledger::open_read_only(&settings.ledger_path())? else {
        return Err(Error::Config(format!(
            "no runs yet: there is no ledger at {}",
            settings.ledger_path().display()
        )));
    };
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
    printer.data(&format!(
        "run {}: {} started {}, finished {}: {} ({} ok, {} not ok)",
        view.run_id,
        view.command,
        view.started_at,
        view.finished_at.as_deref().unwrap_or("-"),
        view.outcome,
        view.datasets_ok,
        view.datasets_failed
    ));
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
