//! Integration tests of `dobsob sql`: every format read back and compared with what DuckDB itself reads from
//! the published snapshot, writes refused with the snapshot unchanged, queries while a sync writes and
//! publishes, DuckDB's errors, `--tables` and `--describe`, the query's three sources, a large export that
//! streams in bounded memory, and Ctrl-C. The real binary against the emulator.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// `dobsob sql ARGS`.
fn sql(env: &TestEnv, args: &[&str]) -> Output {
    let mut all = vec!["sql"];
    all.extend_from_slice(args);
    env.run(&all)
}

/// `dobsob sql ARGS` with `input` on its standard input.
fn sql_with_stdin(env: &TestEnv, args: &[&str], input: &str) -> Output {
    let mut all = vec!["sql"];
    all.extend_from_slice(args);
    let mut child = env
        .cmd(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dobsob starts");
    // A usage error may end dobsob before it reads: a closed pipe is no failure here.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// A table's columns and their DuckDB types, in order, as DuckDB reports them.
fn columns(env: &TestEnv, table: &str) -> Vec<(String, String)> {
    let conn = env.warehouse();
    let mut stmt = conn
        .prepare(
            "SELECT column_name, data_type FROM duckdb_columns()
             WHERE schema_name = 'main' AND table_name = ? ORDER BY column_index",
        )
        .unwrap();
    let cols: Vec<(String, String)> = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    cols
}

fn count(env: &TestEnv, table: &str) -> i64 {
    env.warehouse()
        .query_row(&format!("SELECT count(*) FROM main.\"{table}\""), [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// A CSV output's header and records, parsed by the `csv` crate.
fn csv_records(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let records = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, records)
}

/// A table dump as a CSV reader gives it back: NULL is an empty field.
fn as_csv(dump: Vec<Vec<Option<String>>>) -> Vec<Vec<String>> {
    dump.into_iter()
        .map(|row| row.into_iter().map(Option::unwrap_or_default).collect())
        .collect()
}

/// The JSON value `dobsob sql` promises (its --help) for a value of DuckDB type `t` whose text (CAST AS
/// VARCHAR) is `v`. Written apart from dobsob's own code on purpose.
fn expected_json(t: &str, v: Option<&str>) -> Value {
    let Some(v) = v else {
        return Value::Null;
    };
    let finite = v.parse::<f64>().is_ok_and(f64::is_finite);
    match t {
        "BOOLEAN" => Value::Bool(v == "true"),
        "TINYINT" | "SMALLINT" | "INTEGER" | "BIGINT" | "UTINYINT" | "USMALLINT" | "UINTEGER"
        | "UBIGINT" | "FLOAT" | "DOUBLE"
            if finite =>
        {
            serde_json::from_str(v).unwrap()
        }
        "TIMESTAMP" => Value::String(v.replacen(' ', "T", 1)),
        "TIMESTAMP WITH TIME ZONE" => Value::String(format!("{}:00", v.replacen(' ', "T", 1))),
        _ => Value::String(v.to_string()),
    }
}

/// Waits for `child`, killing it (and failing) after `limit`.
fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running process's resident memory, in kB (Linux).
fn resident_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .expect("VmRSS in /proc/PID/status")
}

/// A running process's CPU time so far (user + system), from /proc/PID/stat (Linux).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, in parentheses): state is field 3, utime 14.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().map(|t| t.parse::<u64>().unwrap_or(0)).sum())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

#[test]
fn csv_gives_every_row_as_duckdb_reads_it_and_is_the_default_when_piped() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    for table in ["every_type", "dob_violations"] {
        let q = format!("SELECT * FROM {table} ORDER BY socrata_id");
        // No --format: stdout is a pipe here, so CSV.
        let out = sql(&env, &[q.as_str()]);
        assert_exit(&out, 0);
        let (header, records) = csv_records(&out.stdout);
        let names: Vec<String> = columns(&env, table).into_iter().map(|(n, _)| n).collect();
        assert_eq!(header, names, "{table}");
        let dump = env.table_dump(table);
        assert!(!dump.is_empty());
        assert_eq!(records, as_csv(dump), "{table}");
        let explicit = sql(&env, &["--format", "csv", q.as_str()]);
        assert_eq!(explicit.stdout, out.stdout);
    }
}

#[test]
fn csv_quotes_as_rfc_4180_and_tells_null_from_the_empty_string() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let out = sql(
        &env,
        &[
            "--format",
            "csv",
            "SELECT NULL AS a, '' AS b, 'x,\"y\"' AS c, 'two' || chr(10) || 'lines' AS d, 42 AS e",
        ],
    );
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "a,b,c,d,e\n,\"\",\"x,\"\"y\"\"\",\"two\nlines\",42\n"
    );
}

#[test]
fn json_and_ndjson_give_every_row_with_the_documented_types() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let cols = columns(&env, "every_type");
    let expected: Vec<Value> = env
        .table_dump("every_type")
        .iter()
        .map(|row| {
            let mut object = serde_json::Map::new();
            for ((name, t), v) in cols.iter().zip(row) {
                object.insert(name.clone(), expected_json(t, v.as_deref()));
            }
            Value::Object(object)
        })
        .collect();
    assert!(!expected.is_empty());
    let q = "SELECT * FROM every_type ORDER BY socrata_id";
    let out = sql(&env, &["--format", "json", q]);
    assert_exit(&out, 0);
    let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(got, Value::Array(expected.clone()));
    let out = sql(&env, &["--format", "ndjson", q]);
    assert_exit(&out, 0);
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines, expected);

    // Each kind of value, spelled out.
    let out = sql(
        &env,
        &[
            "--format",
            "json",
            "SELECT 42 AS i, -7::BIGINT AS big, 1.5::DOUBLE AS d, 12.300::DECIMAL(10,3) AS m, \
             170141183460469231731687303715884105727::HUGEINT AS h, true AS b, NULL AS n, \
             TIMESTAMP '2024-05-01 13:45:00' AS t, \
             CAST(TIMESTAMP '2024-05-01 13:45:00' AS TIMESTAMPTZ) AS tz, DATE '2024-05-01' AS day, \
             'say \"hi\"' AS s, [1, 2] AS l, 'inf'::DOUBLE AS inf, 1 AS dup, 2 AS dup",
        ],
    );
    assert_exit(&out, 0);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got,
        json!([{
            "i": 42, "big": -7, "d": 1.5, "m": "12.300", "h": "170141183460469231731687303715884105727",
            "b": true, "n": null, "t": "2024-05-01T13:45:00", "tz": "2024-05-01T13:45:00+00:00",
            "day": "2024-05-01", "s": "say \"hi\"", "l": "[1, 2]", "inf": "inf", "dup": 1, "dup_1": 2
        }])
    );
    // No rows: an empty array.
    let out = sql(&env, &["--format", "json", "SELECT 1 AS x WHERE false"]);
    assert_exit(&out, 0);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
}

#[test]
fn table_and_markdown_show_the_header_every_row_and_the_count() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let n = count(&env, "dob_violations") as usize;
    let out = sql(
        &env,
        &[
            "--format",
            "table",
            "SELECT socrata_id, street FROM dob_violations ORDER BY socrata_id",
        ],
    );
    assert_exit(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("socrata_id") && lines[0].contains("street"),
        "{text}"
    );
    assert_eq!(lines.len(), n + 2, "header, {n} rows, count: {text}");
    assert_eq!(lines[n + 1], format!("{n} rows"));

    // Long cells are cut (to 40 characters by default), NULL shows as NULL, numbers align right.
    let q = "SELECT repeat('x', 100) AS long_text, NULL AS nothing, 12 AS n";
    let out = sql(&env, &["--format", "table", q]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains(&format!("{}…", "x".repeat(39))), "{text}");
    assert!(!text.contains(&"x".repeat(40)), "{text}");
    assert!(text.contains("NULL"), "{text}");
    assert!(text.ends_with("1 row\n"), "{text}");
    let out = sql(&env, &["--format", "table", "--max-width", "0", q]);
    assert!(stdout(&out).contains(&"x".repeat(100)));
    let out = env.run(&["-q", "sql", "--format", "table", q]);
    assert_exit(&out, 0);
    assert!(!stdout(&out).contains("1 row"), "-q drops the count");

    // Markdown: a GitHub table, numbers right-aligned, | escaped.
    let out = sql(
        &env,
        &[
            "--format",
            "markdown",
            "SELECT key, \"rows\" FROM dobsob_datasets ORDER BY key",
        ],
    );
    assert_exit(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "| key | rows |");
    assert_eq!(lines[1], "| --- | ---: |");
    assert_eq!(lines.len(), 2 + FIXTURES.len(), "{text}");
    assert!(
        lines.contains(&format!("| dob_violations | {n} |").as_str()),
        "{text}"
    );
    let out = sql(
        &env,
        &[
            "--format",
            "markdown",
            "SELECT 'a|b' AS \"x|y\", NULL::VARCHAR AS z, 1 AS n",
        ],
    );
    assert_eq!(
        stdout(&out),
        "| x\\|y | z | n |\n| --- | --- | ---: |\n| a\\|b | NULL | 1 |\n"
    );
}

#[test]
fn the_other_kinds_of_query_run_too() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    for (q, shows) in [
        ("DESCRIBE dob_violations", "socrata_id"),
        ("SHOW TABLES", "dob_violations"),
        ("SUMMARIZE every_type", "socrata_id"),
        ("PRAGMA table_info('dob_violations')", "socrata_id"),
        ("PRAGMA show_tables", "every_type"),
        ("FROM dob_violations LIMIT 3", "socrata_id"),
        ("VALUES (1, 'one'), (2, 'two')", "two"),
        (
            "WITH t AS (SELECT 'with' AS x) SELECT * FROM t; -- a trailing comment",
            "with",
        ),
        (
            "EXPLAIN SELECT street FROM dob_violations WHERE boro = '1'",
            "dob_violations",
        ),
    ] {
        for format in ["csv", "table", "json"] {
            let out = sql(&env, &["--format", format, q]);
            assert_exit(&out, 0);
            assert!(
                stdout(&out).contains(shows),
                "{q} ({format}): {}",
                stdout(&out)
            );
            assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        }
    }
    // EXPLAIN on a terminal's format: the plan as DuckDB draws it, not a table of it.
    let out = sql(
        &env,
        &[
            "--format",
            "table",
            "EXPLAIN SELECT street FROM dob_violations WHERE boro = '1'",
        ],
    );
    assert_exit(&out, 0);
    assert!(!stdout(&out).contains("explain_key"), "{}", stdout(&out));
}

#[test]
fn writes_are_refused_by_kind_and_nothing_changes() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let published = env.data_dir().join("warehouse.duckdb");
    let bytes_before = std::fs::read(&published).unwrap();
    let listing = || {
        let mut files = files_under(&env.data_dir());
        files.sort();
        files
    };
    let files_before = listing();
    let rows_before = count(&env, "dob_violations");
    let export = env.dir.path().join("export.csv");
    let other = env.dir.path().join("other.duckdb");
    let cases = [
        (
            "INSERT INTO dob_violations (socrata_id) VALUES ('row-x')".to_string(),
            "INSERT",
        ),
        (
            "-- a comment first\n  insert into dob_violations (socrata_id) values ('row-y')".into(),
            "INSERT",
        ),
        ("DELETE FROM dob_violations".into(), "DELETE"),
        ("UPDATE dob_violations SET street = 'X'".into(), "UPDATE"),
        (
            "CREATE TABLE scratch AS SELECT 42 AS answer".into(),
            "CREATE",
        ),
        ("DROP TABLE dob_violations".into(), "DROP"),
        (
            format!("COPY dob_violations TO '{}'", export.display()),
            "COPY",
        ),
        (
            format!(
                "COPY (SELECT 1 AS one) TO '{}' (FORMAT csv)",
                export.display()
            ),
            "COPY",
        ),
        (format!("ATTACH '{}' AS other", other.display()), "ATTACH"),
        ("SET threads = 1".into(), "SET"),
    ];
    for (q, kind) in &cases {
        let out = sql(&env, &[q.as_str()]);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("read-only") && err.contains(kind),
            "{q}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!export.exists(), "COPY TO wrote nothing");
    assert!(!other.exists(), "ATTACH created nothing");
    // A write hidden behind a query in one text is not run either.
    let out = sql(
        &env,
        &["SELECT 1; INSERT INTO dob_violations (socrata_id) VALUES ('row-z')"],
    );
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("one statement"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&published).unwrap(),
        bytes_before,
        "the snapshot is unchanged"
    );
    assert_eq!(listing(), files_before, "nothing new in the data directory");
    assert_eq!(count(&env, "dob_violations"), rows_before);
}

#[test]
fn a_query_runs_while_a_sync_writes_and_publishes() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let before = count(&env, "dob_violations");
    let mut child = env.spawn_slow_sync(30);
    let mut during = 0;
    while child.try_wait().unwrap().is_none() {
        let out = sql(
            &env,
            &[
                "--format",
                "csv",
                "SELECT count(*) AS n FROM dob_violations",
            ],
        );
        assert_exit(&out, 0);
        let n: i64 = stdout(&out).lines().nth(1).unwrap().parse().unwrap();
        assert!(
            n >= before && n <= before + 30,
            "{n} rows (before: {before})"
        );
        if child.try_wait().unwrap().is_none() {
            during += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
    assert!(during >= 2, "only {during} queries ran during the sync");
    let out = sql(
        &env,
        &[
            "--format",
            "csv",
            "SELECT count(*) AS n FROM dob_violations",
        ],
    );
    assert_eq!(stdout(&out), format!("n\n{}\n", before + 30));
}

#[test]
fn a_malformed_query_fails_with_duckdbs_message_and_position() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    for (q, names) in [
        ("SELEC * FROM dob_violations", "SELEC"),
        (
            "SELECT no_such_column FROM dob_violations",
            "no_such_column",
        ),
        ("SELECT * FROM no_such_table", "no_such_table"),
    ] {
        let out = sql(&env, &[q]);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains(names), "{q}: {err}");
        assert!(err.contains("LINE 1"), "{q}: DuckDB's position: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.stdout.is_empty(), "nothing printed: {}", stdout(&out));
    }
    // An error while the rows stream (here a cast that fails on the third row) is DuckDB's error too.
    let out = sql(
        &env,
        &["SELECT CAST(x AS INTEGER) FROM (VALUES ('1'), ('2'), ('three')) t(x)"],
    );
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("three"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
}

#[test]
fn tables_and_describe_explain_the_warehouse() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let out = sql(&env, &["--tables", "--format", "json"]);
    assert_exit(&out, 0);
    let tables: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables = tables.as_array().unwrap();
    let keys: Vec<&str> = tables
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = FIXTURES.iter().map(|(k, _)| *k).collect();
    want.sort();
    assert_eq!(keys, want);
    for t in tables {
        let key = t["table"].as_str().unwrap();
        assert_eq!(t["rows"], json!(count(&env, key)), "{key}");
        assert!(t["name"].is_string(), "{t}");
        assert!(
            t["last_synced"].as_str().is_some_and(|s| s.ends_with('Z')),
            "{t}"
        );
    }
    let dob = tables
        .iter()
        .find(|t| t["table"] == "dob_violations")
        .unwrap();
    assert_eq!(dob["name"], "DOB Violations");
    let out = sql(&env, &["--tables", "--format", "table"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("table"), "{text}");
    assert!(text.contains("dob_violations"), "{text}");
    assert!(
        text.ends_with(&format!("{} rows\n", FIXTURES.len())),
        "{text}"
    );

    let out = sql(&env, &["--describe", "dob_violations", "--format", "json"]);
    assert_exit(&out, 0);
    let described: Value = serde_json::from_slice(&out.stdout).unwrap();
    let described = described.as_array().unwrap();
    let got: Vec<(String, String)> = described
        .iter()
        .map(|c| {
            (
                c["column"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, columns(&env, "dob_violations"));
    let id = described
        .iter()
        .find(|c| c["column"] == "socrata_id")
        .unwrap();
    assert!(
        id["description"].as_str().unwrap().contains("Socrata :id"),
        "{id}"
    );
    // A view, and a table of another schema.
    let out = sql(&env, &["--describe", "dobsob_datasets"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last_success_at"));
    let out = sql(&env, &["--describe", "dobsob.uncastable"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("raw_value"));
    // No such table; the name is a bound value, never SQL.
    for bad in [
        "no_such_table",
        "dob_violations' OR '1'='1",
        "\"dob_violations\"",
    ] {
        let out = sql(&env, &["--describe", bad]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains("no table"), "{}", stderr(&out));
    }
}

#[test]
fn the_query_comes_from_the_argument_standard_input_or_a_file() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    let out = sql_with_stdin(&env, &["--format", "csv"], "SELECT 42 AS answer;\n");
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "answer\n42\n");
    let out = sql_with_stdin(&env, &["--format", "csv", "-"], "SELECT 43 AS answer");
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "answer\n43\n");
    let file = env.dir.path().join("weekly.sql");
    std::fs::write(
        &file,
        "-- the weekly question\nSELECT 'from a file' AS source\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = sql(&env, &["--format", "csv", "--file", path]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "source\nfrom a file\n");

    // Usage errors: exit 2 and what to do.
    let missing = env.dir.path().join("missing.sql");
    for (args, input, says) in [
        (
            vec!["--file", missing.to_str().unwrap()],
            "",
            "cannot read --file",
        ),
        (vec!["SELECT 1", "--file", path], "", "cannot be used with"),
        (
            vec!["--tables", "--describe", "dob_violations"],
            "",
            "cannot be used with",
        ),
        (vec![], "  -- nothing but a comment\n", "empty"),
        (vec![], "SELECT 1; SELECT 2", "one statement"),
        (
            vec![],
            "SELECT * FROM dob_violations WHERE socrata_id = ?",
            "parameter",
        ),
    ] {
        let out = sql_with_stdin(&env, &args, input);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn without_a_published_warehouse_it_says_to_sync_first() {
    let env = TestEnv::new();
    let out = sql(&env, &["SELECT 1"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("run `dobsob sync` first"),
        "{}",
        stderr(&out)
    );
    assert!(
        !env.data_dir().join("warehouse.duckdb").exists(),
        "nothing created"
    );
}

#[test]
fn a_large_export_is_exact_and_streams_in_bounded_memory() {
    let env = TestEnv::new();
    let catalog = env.generated_catalog("big", "bigg-0001", 50_000);
    let cat = catalog.to_str().unwrap();
    env.run_ok(&["--catalog", cat, "sync"]);
    let out = env.run(&[
        "--catalog",
        cat,
        "sql",
        "--format",
        "csv",
        "SELECT * FROM big ORDER BY socrata_id",
    ]);
    assert_exit(&out, 0);
    let (header, records) = csv_records(&out.stdout);
    let names: Vec<String> = columns(&env, "big").into_iter().map(|(n, _)| n).collect();
    assert_eq!(header, names);
    assert_eq!(records.len(), 50_000);
    // DuckDB's own export of the same query, from a read-only connection of the test's own.
    let copy = env.dir.path().join("copy.csv");
    env.warehouse()
        .execute_batch(&format!(
            "COPY (SELECT * FROM big ORDER BY socrata_id) TO '{}' (HEADER)",
            copy.display()
        ))
        .unwrap();
    let (copy_header, copy_records) = csv_records(&std::fs::read(&copy).unwrap());
    assert_eq!(header, copy_header);
    assert_eq!(
        records, copy_records,
        "dobsob sql --format csv gives what COPY ... TO gives"
    );
    assert_eq!(records, as_csv(env.table_dump("big")));

    // 10 million rows (some 1.5 GB of CSV): held in memory, they could not pass the bound below.
    let mut child = env
        .cmd(&[
            "--catalog",
            cat,
            "sql",
            "--format",
            "csv",
            "SELECT b.*, r.range AS copy FROM big b, range(200) r",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dobsob starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..200_000 {
        lines.next().expect("more output").unwrap();
    }
    let resident = resident_kb(child.id());
    assert!(
        resident < 400 * 1024,
        "{resident} kB resident while streaming"
    );
    // `| head`: the reader goes away; dobsob stops the query and exits quietly.
    drop(lines);
    let status = wait_at_most(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn ctrl_c_cancels_a_long_query_with_exit_130() {
    let env = TestEnv::new();
    env.run_ok(&["sync"]);
    // Hours of work: a sum over 10^15 rows.
    let mut child = env
        .cmd(&[
            "sql",
            "SELECT sum(hash(range)) FROM range(1000000000000000)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dobsob starts");
    // Running the query (not starting up): it has used some CPU.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cpu_time(child.id()) < Duration::from_millis(500) {
        assert!(child.try_wait().unwrap().is_none(), "the query ended early");
        assert!(Instant::now() < deadline, "the query never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Instant::now();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = wait_at_most(&mut child, Duration::from_secs(30));
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        sent.elapsed()
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("cancel"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    // At most the CSV header: the sum never came.
    assert!(out.lines().count() <= 1, "no result: {out}");
}
