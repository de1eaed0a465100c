//! The Socrata client: SoQL building and escaping ([`soql`]), the HTTP client with retries and streaming page
//! downloads ([`client`]), and the portal's error shapes with their retry classes ([`error`]).
//!
//! Every rule here comes from `../shared/SOCRATA.md`: explicit `$select`, keyset paging on `(:updated_at, :id)`,
//! watermark strings echoed back verbatim, ids never compared locally.

pub mod client;
pub mod error;
pub(crate) mod soql;

pub use client::{
    AppToken, Budget, Download, RequestStats, RetryPolicy, SodaClient, ViewColumn, ViewMetadata,
};
pub use error::SodaError;
pub use soql::{PageQuery, Watermark};
