//! The PostgreSQL warehouse target against a real server these tests start themselves (see
//! `support/pg.rs`). Being built (issue 18): the connection so far.

mod support;

use dobsob_engine::warehouse::postgres::connect::{connect, server_version};
use dobsob_engine::warehouse::postgres::conninfo::ConnInfo;
use support::pg::PgServer;

#[test]
fn dobsob_connects_over_the_unix_socket_and_a_wrong_password_error_never_shows_it() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.url("nyc");
    let info = ConnInfo::parse(&url, None, None).unwrap();
    let mut client = connect(&info).unwrap();
    assert!(server_version(&mut client).unwrap() >= 130_000);
    let tz: String = client.query_one("SHOW TimeZone", &[]).unwrap().get(0);
    assert_eq!(tz, "UTC");
    // A database that does not exist: the error names the server, never the password.
    let bad = url
        .replace("/nyc?", "/nope?")
        .replace("dobsob@", "dobsob:hunter2@");
    let info = ConnInfo::parse(&bad, None, None).unwrap();
    let e = connect(&info).unwrap_err().to_string();
    assert!(e.contains("nope") && !e.contains("hunter2"), "{e}");
}
