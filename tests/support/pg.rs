//! A private PostgreSQL server for one test binary: `initdb` into a temporary directory, a free port, a
//! unix socket in that directory only (no TCP), stopped when dropped. As root (initdb refuses to run as
//! root) the server runs as the machine's `postgres` user. `None`, said loudly, when no server binary is
//! found: `.ci/run` installs PostgreSQL where it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgServer {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

/// Where the server binaries are: Debian's layout first, then the PATH.
fn server_bin() -> Option<PathBuf> {
    for v in ["17", "16", "15", "14", "13"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if p.join("initdb").exists() && p.join("pg_ctl").exists() {
            return Some(p);
        }
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!path.is_empty()).then(|| Path::new(&path).parent().unwrap().to_path_buf())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    pub fn start() -> Option<PgServer> {
        Self::start_with(false)
    }

    /// A server that also listens on 127.0.0.1 with TLS: its certificate, for the name `localhost`, is
    /// signed by a CA of its own (`ca_pem()`); `other_ca_pem()` is a CA that signed nothing of it.
    pub fn start_tls() -> Option<PgServer> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Option<PgServer> {
        let Some(bin) = server_bin() else {
            eprintln!(
                "\n*** SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl) on this machine: install \
                 postgresql (.ci/run does) to run the PostgreSQL tests ***\n"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let server = PgServer {
            dir,
            port: free_port(),
            bin,
            as_postgres,
        };
        server.chown();
        let data = server.dir.path().join("pg");
        let out = server
            .run("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "dobsob", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut opts = format!(
            "-p {} -k {} -c fsync=off",
            server.port,
            server.dir.path().display()
        );
        if tls {
            server.make_certificates();
            let d = server.dir.path().display();
            opts.push_str(&format!(
                " -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={d}/server.pem -c ssl_key_file={d}/server.key"
            ));
        } else {
            opts.push_str(" -c listen_addresses=''");
        }
        let out = server
            .run("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-w", "-l"])
            .arg(server.dir.path().join("log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(server.dir.path().join("log")).unwrap_or_default()
        );
        Some(server)
    }

    /// The server's directory to the postgres user (when the tests run as root).
    fn chown(&self) {
        if self.as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(self.dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the server's directory to postgres");
        }
    }

    /// A CA, a server certificate for `localhost` signed by it, and a second CA, with openssl.
    fn make_certificates(&self) {
        let d = self.dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=dobsob test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        self.chown();
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn other_ca_pem(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    fn run(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// The socket's directory.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `--warehouse` URL for database `db` (created first), as user dobsob over the unix socket.
    pub fn url(&self, db: &str) -> String {
        let out = self
            .run("createdb")
            .args(["-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "dobsob", db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "postgres://dobsob@/{db}?host={}&port={}",
            self.socket_dir().display(),
            self.port
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .run("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("pg"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A connection to `url` as dobsob makes it (UTC, no statement timeout).
pub fn client(url: &str) -> postgres::Client {
    let info = dobsob_engine::warehouse::postgres::ConnInfo::parse(url, None, None).unwrap();
    dobsob_engine::warehouse::postgres::connect::connect(&info).unwrap()
}

impl super::TestEnv {
    /// The PostgreSQL table `schema.key` equals the source `id`, value for value (the same comparison as
    /// [`super::TestEnv::assert_equal_to_source`] for DuckDB), its uncastable values included.
    pub fn assert_pg_equal_to_source(&self, url: &str, schema: &str, key: &str, id: &str) {
        let mut c = client(url);
        let (cols, _) = self.source_of(id);
        let q = |n: &str| format!("\"{}\"", n.replace('"', "\"\""));
        let instant = |col: &str| {
            format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
        };
        let mut select = vec![
            "socrata_id".to_string(),
            instant("socrata_created_at"),
            instant("socrata_updated_at"),
            "socrata_version".to_string(),
        ];
        for (name, t) in &cols {
            select.push(match t.as_str() {
                "date" => format!(
                    "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS')",
                    q(name)
                ),
                "calendar_date" => {
                    format!("to_char({}, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS')", q(name))
                }
                _ => format!("{}::text", q(name)),
            });
        }
        let sql = format!("SELECT {} FROM {}.{}", select.join(", "), q(schema), q(key));
        let mut local = std::collections::BTreeMap::new();
        for r in c.query(&sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")) {
            let vals: Vec<Option<String>> = (0..select.len()).map(|i| r.get(i)).collect();
            let id = vals[0].clone().expect("socrata_id is never null");
            assert!(
                local.insert(id.clone(), vals).is_none(),
                "{key}: duplicate row {id}"
            );
        }
        let mut uncastable = std::collections::BTreeMap::new();
        for r in c
            .query(
                "SELECT socrata_id, column_name, raw_value FROM dobsob.uncastable WHERE table_name = $1",
                &[&key],
            )
            .unwrap()
        {
            uncastable.insert((r.get(0), r.get(1)), r.get(2));
        }
        self.compare_with_source(key, id, &local, &uncastable);
    }

    /// Every fixture dataset in PostgreSQL equals its source.
    pub fn assert_all_pg_equal_to_source(&self, url: &str, schema: &str) {
        for (key, id) in super::FIXTURES {
            self.assert_pg_equal_to_source(url, schema, key, id);
        }
    }
}
