//! The PostgreSQL warehouse target (issue 18), being built: where the server is ([`conninfo`]: the password
//! never shown), the connection ([`connect`]), and the tables' PostgreSQL types ([`types`]). The target
//! itself implements [`super::Target`] next; until then `--warehouse postgres://...` is not offered.

pub mod connect;
pub mod conninfo;
pub mod types;
