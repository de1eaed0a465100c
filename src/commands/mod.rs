//! One module per command. Each takes validated settings and a printer and returns an exit status.

pub mod catalog;
pub mod cron;
pub mod plan;
pub mod postgres;
pub mod report;
pub mod serve;
pub mod sql;
pub mod status;
pub mod sync;
pub mod verify;
