//! `dobsob catalog`: the datasets of the catalog in force (the one `--catalog` names, else the one that
//! filled the data directory, else the built-in one), as a table, JSON, or (`--toml`) the catalog file
//! itself, to start a custom catalog from.

use dobsob_engine::catalog::CatalogSource;
use serde::Serialize;

use crate::cli::CatalogArgs;
use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::Settings;

#[derive(Serialize)]
struct Entry<'a> {
    key: &'a str,
    id: &'a str,
    name: &'a str,
    group: String,
    frequency: String,
    priority: dobsob_engine::catalog::Priority,
    size_mb: u32,
    /// Columns the catalog types itself (`[columns]` or `[dataset.columns]`), with their types.
    column_types: &'a std::collections::BTreeMap<String, String>,
}

pub fn run(settings: &Settings, args: &CatalogArgs, printer: Printer) -> Result<ExitStatus, Error> {
    let catalog = &settings.catalog;
    if args.toml {
        printer.data(catalog.text.trim_end());
        return Ok(ExitStatus::Ok);
    }
    // Start order: priority, then group, then smallest first, as a sync starts them.
    let all = crate::cli::Selection::default();
    let datasets = settings.select(&all)?;
    if args.json {
        let entries: Vec<Entry> = datasets
            .iter()
            .map(|d| Entry {
                key: d.key.as_str(),
                id: d.id.as_str(),
                name: &d.name,
                group: d.group.to_string(),
                frequency: d.frequency.to_string(),
                priority: d.priority(),
                size_mb: d.size_mb,
                column_types: &d.column_types,
            })
            .collect();
        printer.data(&serde_json::to_string_pretty(&entries).expect("entries serialize"));
        return Ok(ExitStatus::Ok);
    }
    let rows: Vec<Vec<String>> = datasets
        .iter()
        .map(|d| {
            vec![
                d.key.to_string(),
                d.id.to_string(),
                d.group.to_string(),
                d.frequency.to_string(),
                d.priority().to_string(),
                d.size_mb.to_string(),
                d.name.clone(),
            ]
        })
        .collect();
    let from = match &catalog.source {
        CatalogSource::Builtin => "the built-in NYC catalog".to_string(),
        CatalogSource::File(p) => p.display().to_string(),
    };
    printer.line(&format!(
        "{} from {from}, portal {}, in start order",
        crate::printer::count(datasets.len(), "dataset"),
        settings.portal
    ));
    printer.data(&crate::printer::table(
        &[
            "KEY",
            "ID",
            "GROUP",
            "FREQUENCY",
            "PRIORITY",
            "SIZE MB",
            "NAME",
        ],
        &rows,
    ));
    printer.line(
        "(`dobsob catalog --toml > my.toml` starts a catalog of your own; see docs/datasets.md)",
    );
    Ok(ExitStatus::Ok)
}
