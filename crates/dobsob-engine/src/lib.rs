//! dobsob's engine: keeps a local DuckDB copy of Socrata open data in step with the portal, with a SQLite
//! ledger of watermarks, pages and runs. A library that knows no command line and never prints: it reports
//! through return values, [`sync::Observer`] and `tracing`.
//!
//! Data flows catalog → plan → fetch → check → merge → ledger → publish → report:
//! [`catalog`] says which datasets; [`orchestrator`] plans a run and drives it; [`sync`] decides each
//! dataset ([`sync::decide`]), fetches its pages through [`soda`], checks them ([`sync::page`]) and merges
//! them into the [`warehouse`]; [`ledger`] records what was committed; the warehouse publishes a snapshot
//! for analysts; [`report`] turns the run into its report (JSON, files, webhook).
//!
//! The facade: [`Config`], [`Selection`], [`Plan`], [`Job`], [`Orchestrator`], [`RunReport`], [`Observer`],
//! [`Error`], and the one set of [`defaults`].

pub mod catalog;
pub mod defaults;
pub mod error;
pub mod files;
pub mod layout;
pub mod ledger;
pub mod lock;
pub mod orchestrator;
pub mod preview;
pub mod quality;
pub mod query;
pub mod report;
pub mod soda;
pub mod source;
pub mod status;
pub mod sync;
pub mod verify;
pub mod warehouse;

pub use catalog::Selection;
pub use error::Error;
pub use orchestrator::{Config, Job, Orchestrator, Plan};
pub use report::RunReport;
pub use sync::Observer;

/// What the benchmark and the property tests reach inside for that the engine keeps crate-private: the page
/// checks, the full load's page and batch sizes, the SoQL text helpers. Not part of the facade: it changes
/// with the engine. (The warehouse's writer-level types are public in [`warehouse`] already.)
#[doc(hidden)]
pub mod internals {
    pub use crate::soda::soql::{chrono_timestamp_ms, parse_timestamp_ms, quote};
    pub use crate::sync::page::{certainly_castable, inspect_rows, PageInfo};
    pub use crate::sync::pass::{full_batch_ready, full_page_size};
}
