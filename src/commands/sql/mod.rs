//! `dobsob sql`: one read-only query on the published snapshot (`<data-dir>/warehouse.duckdb`), printed as a
//! table, CSV, JSON or Markdown. `--tables` and `--describe` are two such queries of dobsob's own.
//!
//! The engine runs the query (`dobsob_engine::query`: read-only, one statement, streamed, cancellable);
//! this module reads the flags and writes the rows as they come.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Read, Write};

use dobsob_engine::query::{spill_dir, with_interrupts, Kind, Request, Row, Sink, Snapshot, Stop};
use dobsob_engine::sync::Shutdown;

use crate::cli::{SqlArgs, SqlFormat};
use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::Settings;

mod print;

use print::*;

/// Rows the table format reads before it fixes its column widths (and so the most it holds).
const TABLE_SIZING_ROWS: usize = 1000;

pub fn run(
    settings: &Settings,
    args: &SqlArgs,
    printer: Printer,
    shutdown: Shutdown,
) -> Result<ExitStatus, Error> {
    let request = request(args)?;
    let format = args.format.unwrap_or(if io::stdout().is_terminal() {
        SqlFormat::Table
    } else {
        SqlFormat::Csv
    });
    let path = settings.warehouse_path();
    if !path.exists() {
        return Err(Error::Config(format!(
            "no published warehouse at {}: run `dobsob sync` first",
            path.display()
        )));
    }
    let spill = spill_dir(&settings.tmp_dir())?;
    let snapshot = Snapshot::open(&path, spill.path())
        .map_err(|e| Error::Query(format!("cannot open {} read-only: {e}", path.display())))?;
    let style = Style {
        format,
        max_width: args.max_width,
        footer: !printer.quiet,
    };
    let outcome = with_interrupts(
        snapshot.interruptible(),
        &shutdown,
        || -> Result<(), Error> {
            let query = snapshot.query(&request, &shutdown)?;
            let names = query.columns.iter().map(|c| c.name.clone()).collect();
            let kinds = query.columns.iter().map(|c| c.kind()).collect();
            // Straight to stdout, not through the `Printer`: that takes whole strings, and a result is
            // written as it streams.
            let out = io::BufWriter::new(io::stdout().lock());
            let mut sink = make_sink(&style, names, kinds, query.explain, out);
            let streamed = query.stream(sink.as_mut(), &shutdown);
            match streamed {
                Ok(_) => Ok(()),
                // `dobsob sql ... | head`: the reader has what it wanted.
                Err(Stop::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                Err(stop) => Err(stop.into_error(&shutdown)),
            }
        },
    );
    // DuckDB closes (removing its spill files) before their directory goes.
    drop(snapshot);
    drop(spill);
    match outcome {
        // Interrupted while DuckDB prepared a statement, say: DuckDB's "Interrupted!" is no failure.
        Err(Error::Query(_)) if shutdown.is_triggered() => {
            Err(Error::Interrupted("the query was cancelled".into()))
        }
        outcome => outcome.map(|()| ExitStatus::Ok),
    }
}

/// The request the flags make; the text from the argument, `--file` or standard input (clap lets only one
/// of them through).
fn request(args: &SqlArgs) -> Result<Request, Error> {
    if args.tables {
        return Ok(Request::Tables);
    }
    if let Some(table) = &args.describe {
        return Ok(Request::Describe(table.clone()));
    }
    let from_stdin = || -> Result<String, Error> {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map_err(|e| {
            Error::Config(format!("cannot read the query from standard input: {e}"))
        })?;
        Ok(text)
    };
    let text = match (&args.query, &args.file) {
            (Some(q), _) if q != "-" => q.clone(),
            (_, Some(f)) if f.as_os_str() != "-" => std::fs::read_to_string(f).map_err(|e| {
                Error::Config(format!("cannot read --file {}: {e}", f.display()))
            })?,
            (None, None) if io::stdin().is_terminal() => {
                return Err(Error::Config(
                    "no query: give it as an argument (dobsob sql \"SELECT ...\"), with --file, or on standard \
                     input; dobsob sql --tables lists the tables"
                        .into(),
                ))
            }
            _ => from_stdin()?,
        };
    Ok(Request::Sql(text))
}

/// How a result is printed.
struct Style {
    format: SqlFormat,
    max_width: usize,
    /// The table's "N rows" line (not with --quiet).
    footer: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `format` prints for these columns and rows.
    fn render(
        format: SqlFormat,
        columns: &[(&str, Kind)],
        rows: &[Vec<Option<&str>>],
        max_width: usize,
    ) -> String {
        let mut out = Vec::new();
        {
            let style = Style {
                format,
                max_width,
                footer: true,
            };
            let names = columns.iter().map(|(n, _)| n.to_string()).collect();
            let kinds = columns.iter().map(|(_, k)| *k).collect();
            let mut sink = make_sink(&style, names, kinds, false, &mut out);
            sink.start().unwrap();
            for r in rows {
                let texts: Vec<String> = r.iter().map(|c| c.unwrap_or("").to_string()).collect();
                let nulls: Vec<bool> = r.iter().map(Option::is_none).collect();
                sink.row(&Row {
                    texts: &texts,
                    nulls: &nulls,
                })
                .unwrap();
            }
            sink.finish(rows.len() as u64).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_only_what_needs_it_and_tells_null_from_the_empty_string() {
        let text = render(
            SqlFormat::Csv,
            &[("a", Kind::Other), ("b", Kind::Other), ("c", Kind::Integer)],
            &[
                vec![None, Some(""), Some("7")],
                vec![Some("x,y"), Some("say \"hi\""), Some("-1")],
                vec![Some("two\nlines"), Some("plain"), None],
            ],
            40,
        );
        assert_eq!(
            text,
            "a,b,c\n,\"\",7\n\"x,y\",\"say \"\"hi\"\"\",-1\n\"two\nlines\",plain,\n"
        );
    }

    #[test]
    fn json_types_values_by_their_column() {
        let columns = [
            ("i", Kind::Integer),
            ("d", Kind::Float),
            ("m", Kind::Exact),
            ("b", Kind::Boolean),
            ("t", Kind::Timestamp),
            ("tz", Kind::TimestampTz),
            ("s", Kind::Other),
            ("s", Kind::Other),
        ];
        let rows = [
            vec![
                Some("42"),
                Some("1.5"),
                Some("12.300"),
                Some("true"),
                Some("2024-05-01 13:45:00"),
                Some("2024-05-01 13:45:00.123+00"),
                Some("a \"quote\"\n"),
                None,
            ],
            vec![
                None,
                Some("inf"),
                Some("-0.5"),
                Some("false"),
                Some("infinity"),
                None,
                Some(""),
                Some("x"),
            ],
        ];
        let array = render(SqlFormat::Json, &columns, &rows, 40);
        let ndjson = render(SqlFormat::Ndjson, &columns, &rows, 40);
        let first = serde_json::json!({"i": 42, "d": 1.5, "m": "12.300", "b": true,
            "t": "2024-05-01T13:45:00", "tz": "2024-05-01T13:45:00.123+00:00", "s": "a \"quote\"\n", "s_1": null});
        let second = serde_json::json!({"i": null, "d": "inf", "m": "-0.5", "b": false,
            "t": "infinity", "tz": null, "s": "", "s_1": "x"});
        let parsed: serde_json::Value = serde_json::from_str(&array).unwrap();
        assert_eq!(parsed, serde_json::json!([first.clone(), second.clone()]));
        assert_eq!(array.lines().count(), 4, "{array}");
        let lines: Vec<serde_json::Value> = ndjson
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, vec![first, second]);
        assert_eq!(render(SqlFormat::Json, &columns, &[], 40), "[]\n");
        assert_eq!(render(SqlFormat::Ndjson, &columns, &[], 40), "");
    }

    #[test]
    fn json_numbers_are_recognized_exactly() {
        for good in ["0", "-0", "42", "-7", "1.5", "1e+20", "2.5E-3", "0.000001"] {
            assert!(is_json_number(good), "{good}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "+1", "inf", "-inf", "nan", "1 ", "0x10",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn timestamps_become_iso_8601() {
        assert_eq!(
            iso_timestamp("2024-05-01 13:45:00", false),
            "2024-05-01T13:45:00"
        );
        assert_eq!(
            iso_timestamp("2024-05-01 13:45:00.5+00", true),
            "2024-05-01T13:45:00.5+00:00"
        );
        assert_eq!(
            iso_timestamp("2024-05-01 13:45:00-05", true),
            "2024-05-01T13:45:00-05:00"
        );
        assert_eq!(
            iso_timestamp("2024-05-01 13:45:00+05:30", true),
            "2024-05-01T13:45:00+05:30"
        );
        assert_eq!(iso_timestamp("infinity", true), "infinity");
        assert_eq!(
            iso_timestamp("0044-03-15 (BC) 12:00:00", false),
            "0044-03-15 (BC) 12:00:00"
        );
    }

    #[test]
    fn the_table_cuts_long_cells_shows_null_and_counts_rows() {
        let long = "x".repeat(100);
        let text = render(
            SqlFormat::Table,
            &[("name", Kind::Other), ("n", Kind::Integer)],
            &[
                vec![Some(long.as_str()), Some("7")],
                vec![None, Some("12345")],
                vec![Some("two\nlines"), None],
            ],
            10,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "name            n",
                "xxxxxxxxx…      7",
                "NULL        12345",
                "two\\nlines   NULL",
                "3 rows"
            ]
        );
        let uncut = render(
            SqlFormat::Table,
            &[("name", Kind::Other)],
            &[vec![Some(long.as_str())]],
            0,
        );
        assert_eq!(uncut, format!("name\n{long}\n1 row\n"));
    }

    #[test]
    fn the_table_fixes_its_widths_after_the_first_rows_and_cuts_later_ones_to_them() {
        let mut rows: Vec<Vec<Option<&str>>> = vec![vec![Some("ab")]; TABLE_SIZING_ROWS];
        rows.push(vec![Some("abcdef")]);
        let text = render(SqlFormat::Table, &[("c", Kind::Other)], &rows, 40);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "c");
        assert_eq!(lines[TABLE_SIZING_ROWS + 1], "a…");
        assert_eq!(
            lines.last().copied(),
            Some(format!("{} rows", TABLE_SIZING_ROWS + 1).as_str())
        );
    }

    #[test]
    fn markdown_escapes_pipes_and_line_breaks() {
        let text = render(
            SqlFormat::Markdown,
            &[("a|b", Kind::Other), ("n", Kind::Float)],
            &[vec![Some("x|y\nz"), None]],
            40,
        );
        assert_eq!(
            text,
            "| a\\|b | n |\n| --- | ---: |\n| x\\|y<br>z | NULL |\n"
        );
    }

    #[test]
    fn duplicate_names_get_suffixes() {
        let names: Vec<String> = ["a", "a", "b", "a_1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(unique_names(&names), vec!["a", "a_1", "b", "a_1_1"]);
    }

    #[test]
    fn the_arguments_parse_as_the_help_says() {
        use crate::cli::{Cli, Command};
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let sql = |args: &[&str]| {
            let all: Vec<&str> = ["dobsob", "sql"].iter().chain(args).copied().collect();
            Cli::try_parse_from(all).map(|cli| match cli.command {
                Command::Sql(a) => a,
                other => panic!("{other:?}"),
            })
        };
        let a = sql(&["--format", "ndjson", "SELECT 1"]).unwrap();
        assert_eq!(
            (a.format, a.query.as_deref(), a.max_width),
            (Some(SqlFormat::Ndjson), Some("SELECT 1"), 40)
        );
        assert_eq!(sql(&["-"]).unwrap().query.as_deref(), Some("-"));
        assert!(sql(&[]).unwrap().query.is_none());
        for conflicting in [
            &["SELECT 1", "--file", "q.sql"][..],
            &["--tables", "--describe", "t"],
            &["SELECT 1", "--tables"],
            &["--format", "yaml", "SELECT 1"],
        ] {
            assert!(sql(conflicting).is_err(), "{conflicting:?}");
        }
    }
}
