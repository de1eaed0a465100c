//! The `dobsob` command line: parse arguments, set up logging, run the command, map the result to an exit
//! code. A thin shell over the engine (`dobsob_engine`): flags to engine calls to output. It has no SQL and
//! no sync rules of its own (it does not even depend on duckdb or rusqlite).

mod cli;
mod commands;
mod error;
mod metrics;
mod printer;
mod progress;
mod settings;

use std::process::ExitCode;

use clap::Parser;
use dobsob_engine::sync::{Mode, Shutdown};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::error::{exit_status, Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::{Settings, SourceUse};

fn main() -> ExitCode {
    // Everything dobsob creates (warehouse, ledger, pages, reports, logs) is the user's data: private.
    #[cfg(unix)]
    unsafe {
        libc::umask(0o077);
    }
    // glibc gives each thread that allocates its own arena (up to 8 per core), and each keeps the memory
    // freed into it: a full load's peak resident memory was 230 MB with DuckDB held to 96 MB, 185 MB with
    // two arenas, at the same speed (docs/performance.md). Set before any thread starts.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    let status = match run(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            exit_status(&e)
        }
    };
    ExitCode::from(status as u8)
}

fn run(cli: Cli) -> Result<ExitStatus, Error> {
    let uses = match cli.command {
        Command::Sql(_) | Command::Report(_) | Command::Postgres(_) => SourceUse::Ignore,
        Command::Catalog(_) => SourceUse::Show,
        _ => SourceUse::Strict,
    };
    // `sql` reads the DuckDB snapshot: with a PostgreSQL warehouse there is none to read.
    if matches!(cli.command, Command::Sql(_))
        && std::env::var_os("DOBSOB_WAREHOUSE").is_some_and(|v| !v.is_empty())
    {
        return Err(Error::Config(
            "DOBSOB_WAREHOUSE names a PostgreSQL warehouse, and `dobsob sql` reads only the DuckDB snapshot: \
             query PostgreSQL with psql (docs/postgres.md), or unset DOBSOB_WAREHOUSE for a DuckDB data \
             directory"
                .into(),
        ));
    }
    let settings = Settings::from_args(&cli.global, uses)?;
    let printer = Printer {
        quiet: cli.global.quiet,
    };
    // Read-only commands (and a dry run) leave the data directory as it is: no log file.
    let log_to_file = match &cli.command {
        Command::Status(_)
        | Command::Verify(_)
        | Command::Cron(_)
        | Command::Report(_)
        | Command::Sql(_)
        | Command::Catalog(_)
        | Command::Postgres(_) => false,
        Command::Serve(_) => true,
        Command::Sync(a) => !a.run.dry_run && !a.only.generate_cron,
        Command::Rebuild(a) => !a.dry_run,
    };
    init_logging(&cli, &settings, log_to_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    if let Command::Serve(a) = &cli.command {
        return runtime.block_on(async {
            let shutdown = Shutdown::default();
            watch_signals(
                shutdown.clone(),
                "interrupted: stopping the dashboard (a run it started stops at its next page boundary)",
            );
            commands::serve::run(settings, a, printer, shutdown).await
        });
    }
    runtime.block_on(async {
        let shutdown = Shutdown::default();
        let notice = match &cli.command {
            Command::Sql(_) => "interrupted: cancelling the query (Ctrl-C again to exit now)",
            _ => {
                "interrupted: finishing the current page, then stopping (Ctrl-C again to exit now)"
            }
        };
        watch_signals(shutdown.clone(), notice);
        match &cli.command {
            Command::Sync(a) if a.only.generate_cron => cron(
                &settings,
                "02:30",
                false,
                a.run.warehouse.is_some(),
                printer,
            ),
            Command::Sync(a) => {
                commands::sync::run(&settings, &a.run, &a.only, Mode::Sync, printer, shutdown).await
            }
            Command::Rebuild(a) => {
                let only = cli::SyncOnly::default();
                commands::sync::run(&settings, a, &only, Mode::Rebuild, printer, shutdown).await
            }
            Command::Catalog(a) => commands::catalog::run(&settings, a, printer),
            Command::Status(a) => commands::status::run(&settings, a, printer),
            Command::Cron(a) => cron(
                &settings,
                &a.at,
                a.systemd,
                std::env::var_os("DOBSOB_WAREHOUSE").is_some_and(|v| !v.is_empty()),
                printer,
            ),
            Command::Report(a) => commands::report::run(&settings, a, printer),
            Command::Verify(a) => commands::verify::run(&settings, a, printer).await,
            Command::Sql(a) => commands::sql::run(&settings, a, printer, shutdown),
            Command::Postgres(cli::PostgresCommand::GrantRead(a)) => {
                commands::postgres::grant_read(a, printer)
            }
            Command::Serve(_) => unreachable!("served above"),
        }
    })
}

/// `dobsob cron` and `sync --generate-cron`: the same lines, with the paths of this run.
fn cron(
    settings: &Settings,
    at: &str,
    systemd: bool,
    postgres: bool,
    printer: Printer,
) -> Result<ExitStatus, Error> {
    // The catalog and portal in force, recorded ones included, so that the nightly job fills the data
    // directory from the source that filled it.
    let mut spec = commands::cron::CronSpec::from_settings(
        settings,
        settings.source.catalog.as_deref(),
        Some(settings.portal.as_str().trim_end_matches('/')),
        at,
    )?;
    spec.postgres = postgres;
    commands::cron::run(&spec, systemd, printer)
}

/// First Ctrl-C or SIGTERM: stop at the next safe point. Second Ctrl-C: exit now (the warehouse and ledger
/// are transactional, so even that loses nothing committed).
fn watch_signals(shutdown: Shutdown, notice: &'static str) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            let got_term = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let got_term = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = got_term => {},
            }
            if shutdown.is_triggered() {
                eprintln!("interrupted again: exiting now");
                std::process::exit(ExitStatus::Interrupted as i32);
            }
            eprintln!("{notice}");
            shutdown.trigger();
        }
    });
}

fn init_logging(cli: &Cli, settings: &Settings, to_file: bool) -> Result<(), Error> {
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = |default: &str| {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("warn,dobsob={default}")))
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(|| progress::Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter(level));
    // A file a day, logs/dobsob.YYYY-MM-DD.log (UTC), the oldest beyond --log-retention-days removed when a
    // run starts (tracing-appender does both).
    let file = if to_file {
        settings.prepare_data_dir()?;
        let dir = settings.logs_dir();
        let appender = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("dobsob")
            .filename_suffix("log")
            .max_log_files(cli.global.log_retention_days as usize)
            .build(&dir)
            .map_err(|e| {
                Error::Config(format!("cannot open a log file in {}: {e}", dir.display()))
            })?;
        Some(
            tracing_subscriber::fmt::layer()
                .with_writer(appender)
                .with_ansi(false)
                .with_filter(filter("info")),
        )
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .init();
    Ok(())
}
