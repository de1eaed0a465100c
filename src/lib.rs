//! dobsob: an incremental sync engine that keeps a local DuckDB copy of Socrata open data in step with the
//! portal, with a SQLite ledger of watermarks, pages and runs.
//!
//! Data flows catalog → plan → fetch → stage → merge → ledger → report:
//! [`catalog`] says which datasets; [`sync`] plans and drives each one; [`soda`] fetches pages from the portal
//! into files; [`warehouse`] stages and merges them into DuckDB; [`ledger`] records what was committed;
//! [`commands`] turn it into `sync`, `status` and `rebuild`. [`emulator`] is a local Socrata for tests.
//! Nothing in the library prints to stdout except through [`printer::Printer`].

pub mod catalog;
pub mod cli;
pub mod commands;
pub mod defaults;
pub mod emulator;
pub mod error;
pub mod files;
pub mod layout;
pub mod ledger;
pub mod lock;
pub mod notify;
pub mod orchestrator;
pub mod printer;
pub mod progress;
pub mod report;
pub mod settings;
pub mod soda;
pub mod source;
pub mod sync;
pub mod warehouse;
