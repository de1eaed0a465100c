//! Where the PostgreSQL warehouse is, from `--warehouse postgres://user[:password]@host[:port]/db?sslmode=...`
//! (or `DOBSOB_WAREHOUSE`), with the password from the URL, `PGPASSWORD`, or the password file
//! (`PGPASSFILE`, else `~/.pgpass`), looked up as libpq does. The password is a secret: this type never
//! shows it (`Display` and `Debug` leave it out), so no message, log line, report or ledger row can carry it.

use std::fmt;
use std::path::Path;

/// How the connection is secured (libpq's `sslmode` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS: for a unix socket or the loopback address only.
    Disable,
    /// TLS, the server's certificate checked against the trusted roots and its name against the host.
    VerifyFull,
}

/// A PostgreSQL warehouse's address and credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub user: String,
    /// A directory (a unix socket's) or a host name or address.
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub ssl: SslMode,
    /// The schema of the datasets' tables (`?schema=`, default `public`); dobsob's own are in `dobsob`.
    pub schema: String,
    /// The CA certificates a remote server's certificate is checked against (`?sslrootcert=`, a PEM file;
    /// default: the system's trusted roots and the Mozilla roots).
    pub sslrootcert: Option<std::path::PathBuf>,
    password: Option<String>,
}

impl ConnInfo {
    /// Parses `url`; the password, when the URL has none, is `env_password` (`PGPASSWORD`) or the matching
    /// line of `pgpass` (the password file, if it exists).
    pub fn parse(
        url: &str,
        env_password: Option<&str>,
        pgpass: Option<&Path>,
    ) -> Result<ConnInfo, String> {
        let shown = redact_url(url);
        // libpq allows an empty host (`postgres://user@/db?host=/socket/dir`); the URL parser does not, so
        // a placeholder stands in for it until `host=` names the socket's directory.
        let (parsed_from, no_host) = with_host_placeholder(url);
        let parsed =
            url::Url::parse(&parsed_from).map_err(|e| format!("--warehouse {shown}: {e}"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "--warehouse {shown}: the scheme must be postgres:// (or postgresql://)"
            ));
        }
        let mut host = if no_host {
            String::new()
        } else {
            parsed.host_str().unwrap_or_default().to_string()
        };
        let mut port = parsed.port().unwrap_or(5432);
        let mut user = percent_decode(parsed.username());
        let mut ssl = None;
        let mut schema = "public".to_string();
        let mut sslrootcert = None;
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                // libpq's way to name a unix socket's directory (and other hosts) in a URL.
                "host" => host = v.to_string(),
                "port" => {
                    port = v
                        .parse()
                        .map_err(|_| format!("--warehouse {shown}: port {v:?} is not a port"))?
                }
                "user" => user = v.to_string(),
                "sslmode" => {
                    ssl = Some(match v.as_ref() {
                        "disable" => SslMode::Disable,
                        "verify-full" => SslMode::VerifyFull,
                        "require" | "verify-ca" | "prefer" | "allow" => {
                            return Err(format!(
                                "--warehouse {shown}: sslmode={v} would accept a server it has not verified: \
                                 use sslmode=verify-full (the default for a remote server), or sslmode=disable \
                                 for a unix socket or the loopback address"
                            ))
                        }
                        other => {
                            return Err(format!(
                                "--warehouse {shown}: sslmode={other:?} is not one of disable, verify-full"
                            ))
                        }
                    })
                }
                "schema" => {
                    if v.is_empty() || v.len() > 63 || v.chars().any(char::is_control) {
                        return Err(format!(
                            "--warehouse {shown}: schema={v:?} is not a usable schema name (1 to 63 bytes)"
                        ));
                    }
                    if v == "dobsob" {
                        return Err(format!(
                            "--warehouse {shown}: schema=dobsob is dobsob's own; choose another for the data"
                        ));
                    }
                    schema = v.to_string();
                }
                "sslrootcert" => sslrootcert = Some(std::path::PathBuf::from(v.to_string())),
                other => {
                    return Err(format!(
                        "--warehouse {shown}: unknown parameter {other:?} (host, port, user, sslmode, \
                         sslrootcert, schema)"
                    ))
                }
            }
        }
        if host.is_empty() {
            return Err(format!(
                "--warehouse {shown}: no host (postgres://user@host/db, or ?host=/socket/dir)"
            ));
        }
        let dbname = percent_decode(parsed.path().trim_start_matches('/'));
        if dbname.is_empty() || dbname.contains('/') {
            return Err(format!(
                "--warehouse {shown}: name one database (postgres://user@host/DATABASE)"
            ));
        }
        if user.is_empty() {
            return Err(format!(
                "--warehouse {shown}: name the user (postgres://USER@host/db)"
            ));
        }
        let local = host.starts_with('/') || is_loopback(&host);
        let ssl = ssl.unwrap_or(if local {
            SslMode::Disable
        } else {
            SslMode::VerifyFull
        });
        if ssl == SslMode::Disable && !local {
            return Err(format!(
                "--warehouse {shown}: sslmode=disable would send the password and the data in the clear to \
                 {host}: only a unix socket or the loopback address may go without TLS"
            ));
        }
        let password = match parsed.password() {
            Some(p) => Some(percent_decode(p)),
            None => env_password.map(str::to_string).or_else(|| {
                pgpass
                    .filter(|f| private_file(f))
                    .and_then(|f| std::fs::read_to_string(f).ok())
                    .and_then(|text| pgpass_lookup(&text, &host, port, &dbname, &user))
            }),
        };
        Ok(ConnInfo {
            user,
            host,
            port,
            dbname,
            ssl,
            schema,
            sslrootcert,
            password,
        })
    }

    /// Parses `url` with the password, when the URL has none, from `PGPASSWORD` or the password file
    /// (`PGPASSFILE`, else `~/.pgpass`), as libpq finds it.
    pub fn from_env(url: &str) -> Result<ConnInfo, String> {
        let env_password = std::env::var("PGPASSWORD").ok();
        let pgpass = std::env::var_os("PGPASSFILE")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")));
        ConnInfo::parse(url, env_password.as_deref(), pgpass.as_deref())
    }

    /// The password, for the driver only.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Display for ConnInfo {
    /// The address without the password, e.g. `postgres://dobsob@db.example.org:5432/nyc`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.starts_with('/') {
            write!(
                f,
                "postgres://{}@/{}?host={}&port={}",
                self.user, self.dbname, self.host, self.port
            )
        } else {
            write!(
                f,
                "postgres://{}@{}:{}/{}",
                self.user, self.host, self.port, self.dbname
            )
        }
    }
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConnInfo({self}, {:?}, password: {})",
            self.ssl,
            if self.password.is_some() {
                "set"
            } else {
                "none"
            }
        )
    }
}

/// `url` with `placeholder-host` in an empty host's place, and whether it had to.
fn with_host_placeholder(url: &str) -> (String, bool) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), false);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_part = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if !host_part.is_empty() && !host_part.starts_with(':') {
        return (url.to_string(), false);
    }
    let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    (
        format!(
            "{scheme}://{}placeholder-host{host_part}{tail}",
            userinfo.unwrap_or_default()
        ),
        true,
    )
}

/// `url` with any password replaced by `***`, for messages about a URL that did not parse. The user part
/// ends at the last `@` (a password may hold an unencoded `/`, `?` or `@`), so nothing of a password is
/// ever shown, whatever it holds.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, hostpart)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{hostpart}")
        }
        None => url.to_string(),
    }
}

/// Whether the password file is readable by its owner alone; libpq ignores one that is not (and so does
/// dobsob, with a warning).
fn private_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            tracing::warn!(
                "the password file {} is readable by others: ignored (chmod 0600 it)",
                path.display()
            );
            false
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// `%XX` escapes decoded (a `+` stays a `+`: this is a URL's user, password or path, not a form).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The password of the first line of a password file that matches, as libpq reads the file:
/// `hostname:port:database:username:password`, `*` matching anything, `\:` and `\\` escaped, `#` comments.
/// A unix socket's directory matches `localhost`, as in libpq.
pub fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_pgpass(line);
            if fields.len() < 5 {
                return None;
            }
            let ok = |field: &str, value: &str| field == "*" || field == value;
            (ok(&fields[0], host)
                && ok(&fields[1], &port)
                && ok(&fields[2], db)
                && ok(&fields[3], user))
            .then(|| fields[4..].join(":"))
        })
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field at least").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field at least").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_from_the_url_the_environment_or_the_password_file_and_is_never_shown() {
        let c =
            ConnInfo::parse("postgres://ana:s3cr%40t+x@db.example.org/nyc", None, None).unwrap();
        assert_eq!(c.password(), Some("s3cr@t+x"));
        assert_eq!(c.ssl, SslMode::VerifyFull);
        let shown = format!("{c} {c:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert_eq!(c.to_string(), "postgres://ana@db.example.org:5432/nyc");

        let c =
            ConnInfo::parse("postgres://ana@127.0.0.1:6543/nyc", Some("fromenv"), None).unwrap();
        assert_eq!(
            (c.password(), c.port, c.ssl),
            (Some("fromenv"), 6543, SslMode::Disable)
        );

        let dir = tempfile::tempdir().unwrap();
        let pgpass = dir.path().join("pgpass");
        std::fs::write(
            &pgpass,
            "# comment\nother:*:*:*:no\ndb.example.org:5432:nyc:ana:from\\:file\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        // Readable by others: ignored, as libpq ignores it.
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = ConnInfo::parse("postgres://ana@db.example.org/nyc", None, Some(&pgpass)).unwrap();
        assert_eq!(c.password(), None);
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = ConnInfo::parse("postgres://ana@db.example.org/nyc", None, Some(&pgpass)).unwrap();
        assert_eq!(c.password(), Some("from:file"));
        let c = ConnInfo::parse("postgres://bob@db.example.org/nyc", None, Some(&pgpass)).unwrap();
        assert_eq!(c.password(), None);
    }

    /// A password holding an unencoded `/`, `?` or `@` breaks the URL, and the message about it still
    /// shows none of it.
    #[test]
    fn a_url_that_does_not_parse_is_shown_without_any_of_its_password() {
        for (url, secret) in [
            ("postgres://u:pa/ss@h/db", "pa/ss"),
            ("postgres://u:p?w@h/db", "p?w"),
            ("postgres://u:a@b@h:99999/db", "a@b"),
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains(secret) && shown.contains("u:***@"),
                "{shown}"
            );
            if let Err(e) = ConnInfo::parse(url, None, None) {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }

    #[test]
    fn a_unix_socket_is_named_by_its_directory_and_needs_no_tls() {
        let c =
            ConnInfo::parse("postgres://dobsob@/nyc?host=/tmp/pg&port=5999", None, None).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.ssl),
            ("/tmp/pg", 5999, SslMode::Disable)
        );
        assert_eq!(
            c.to_string(),
            "postgres://dobsob@/nyc?host=/tmp/pg&port=5999"
        );
    }

    #[test]
    fn unverified_tls_and_clear_text_to_a_remote_server_are_refused_without_showing_the_password() {
        for (url, says) in [
            (
                "postgres://a:pw@db.example.org/x?sslmode=require",
                "verify-full",
            ),
            (
                "postgres://a:pw@db.example.org/x?sslmode=disable",
                "in the clear",
            ),
            ("mysql://a:pw@db.example.org/x", "scheme"),
            ("postgres://a:pw@db.example.org/", "one database"),
            (
                "postgres://a:pw@db.example.org/x?bogus=1",
                "unknown parameter",
            ),
        ] {
            let e = ConnInfo::parse(url, None, None).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("pw@") && !e.contains(":pw"), "{e}");
        }
        assert_eq!(
            redact_url("postgres://a:pw@h:1/d?x=1"),
            "postgres://a:***@h:1/d?x=1"
        );
    }

    #[test]
    fn the_password_file_reads_as_libpq_reads_it() {
        let text = "h:5432:db:u:p1\n*:*:*:u:p\\\\2\nh:5432:db:other:p3";
        assert_eq!(
            pgpass_lookup(text, "h", 5432, "db", "u").as_deref(),
            Some("p1")
        );
        assert_eq!(
            pgpass_lookup(text, "x", 1, "y", "u").as_deref(),
            Some("p\\2")
        );
        assert_eq!(pgpass_lookup(text, "/run/pg", 5432, "db", "z"), None);
        assert_eq!(
            pgpass_lookup("localhost:*:*:z:sock", "/run/pg", 5432, "db", "z").as_deref(),
            Some("sock")
        );
    }
}
