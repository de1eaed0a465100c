//! Property tests ("fuzzing") of the parsers dobsob owns: decimal shapes, timestamps, SoQL quoting, the page
//! checker and the catalog loader. `PROPTEST_CASES=100000 cargo test --release --test fuzz` runs them longer
//! (docs/testing.md).

use std::io::Write;

mod support;

use dobsob_engine::catalog::{Catalog, CatalogSource};
use dobsob_engine::internals::inspect_rows;
use dobsob_engine::internals::{parse_timestamp_ms, quote};
use dobsob_engine::warehouse::schema::{decimal_shape, NumberType};
use dobsob_engine::warehouse::TableSchema;
use proptest::prelude::*;
use socrata_emulator::soql::{parse_where, Expr, Val};
use socrata_emulator::{format_time, Dataset};

/// The shape of a decimal computed another way: build the plain-notation digits and count.
fn oracle(neg: bool, int: &str, frac: &str, exp: i32) -> (u32, u32) {
    let _ = neg;
    let digits: String = format!("{int}{frac}");
    let point = int.len() as i64 + exp as i64;
    // Place the point, padding with zeros as needed.
    let (mut ip, mut fp) = if point <= 0 {
        (
            String::new(),
            format!("{}{digits}", "0".repeat((-point) as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        (
            digits[..point as usize].to_string(),
            digits[point as usize..].to_string(),
        )
    };
    ip = ip.trim_start_matches('0').to_string();
    fp = fp.trim_end_matches('0').to_string();
    (ip.len() as u32, fp.len() as u32)
}

fn every_type() -> Dataset {
    let view = serde_json::json!({"columns": [
        {"fieldName": "name", "dataTypeName": "text"},
        {"fieldName": "amount", "dataTypeName": "number"}
    ]});
    Dataset::new("abcd-1234", view.as_object().unwrap().clone()).unwrap()
}

proptest! {
    #[test]
    fn decimal_shapes_match_the_plain_notation(
        neg in any::<bool>(),
        int in "[0-9]{0,30}",
        frac in "[0-9]{0,30}",
        point in any::<bool>(),
        exp in proptest::option::of(-60i32..60),
    ) {
        prop_assume!(!int.is_empty() || !frac.is_empty());
        let mut s = String::new();
        if neg { s.push('-'); }
        s.push_str(&int);
        if point || !frac.is_empty() { s.push('.'); s.push_str(&frac); }
        if let Some(e) = exp { s.push_str(&format!("e{e}")); }
        let want = oracle(neg, &int, &frac, exp.unwrap_or(0));
        prop_assert_eq!(decimal_shape(&s), Some(want), "{}", s);
        // The type a value of that shape gets holds it: at most 38 digits in all, integers without scale.
        let t = NumberType::for_shape(want);
        prop_assert_eq!(t == NumberType::Text, want.0.max(1).saturating_add(want.1) > 38);
        prop_assert!(t.holds_shape(want), "{:?} {:?}", t, want);
    }

    #[test]
    fn decimal_shape_never_panics_and_rejects_what_is_not_a_number(s in ".{0,40}") {
        if let Some(shape) = decimal_shape(&s) {
            // Whatever it accepts is digits with at most a sign, a point and an exponent.
            prop_assert!(s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)), "{} {:?}", s, shape);
        }
    }

    #[test]
    fn timestamps_round_trip_and_garbage_never_panics(ms in -2_000_000_000_000i64..8_000_000_000_000, junk in ".{0,30}") {
        let t = format_time(ms);
        prop_assert_eq!(parse_timestamp_ms(&t), Some(ms));
        prop_assert_eq!(parse_timestamp_ms(t.trim_end_matches('Z')), Some(ms));
        let _ = parse_timestamp_ms(&junk);
    }

    /// The hand-read fixed shape gives what chrono gives, for every string of about that shape.
    #[test]
    fn the_fast_timestamp_reader_agrees_with_chrono(t in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?Z?|[0-9+-]{1,6}-[0-9]{1,2}-[0-9]{1,2}T[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}.{0,4}") {
        let reference = dobsob_engine::internals::chrono_timestamp_ms(t.strip_suffix('Z').unwrap_or(&t));
        prop_assert_eq!(parse_timestamp_ms(&t), reference, "{}", t);
    }

    #[test]
    fn quoted_values_reach_the_portal_as_the_same_string(s in "\\PC{0,40}") {
        let ds = every_type();
        let e = parse_where(&ds, &format!("name = {}", quote(&s))).unwrap();
        prop_assert_eq!(e, Expr::Test(socrata_emulator::soql::Field::Column(0), socrata_emulator::soql::CmpOp::Eq, Some(Val::Text(s.clone()))));
        // Nothing in a quoted value can end the literal and add a condition.
        let e = parse_where(&ds, &format!("name = {} AND amount IS NULL", quote(&s))).unwrap();
        prop_assert!(matches!(e, Expr::And(_, _)));
    }

    #[test]
    fn the_page_checker_never_panics_and_counts_what_it_accepts(body in proptest::collection::vec(any::<u8>(), 0..600), rows in proptest::collection::vec(("\\PC{0,12}", proptest::option::of("\\PC{0,12}")), 0..20)) {
        let schema = TableSchema::from_view(&[dobsob_engine::soda::ViewColumn::new("a", "number")]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.csv");
        std::fs::write(&p, &body).unwrap();
        let _ = inspect_rows(&p, &schema);
        // A well-formed page in the portal's own form is accepted with the right count and last key.
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, "\":id\",\":created_at\",\":updated_at\",\"a\"").unwrap();
        for (i, (_, a)) in rows.iter().enumerate() {
            let cell = a.as_ref().map(|v| format!("\"{}\"", v.replace('"', "\"\""))).unwrap_or_default();
            writeln!(f, "\"row-{i}\",\"2026-01-01T00:00:00.000Z\",\"2026-01-0{}T00:00:00.000Z\",{cell}", 1 + i % 9).unwrap();
        }
        drop(f);
        let info = inspect_rows(&p, &schema).unwrap();
        prop_assert_eq!(info.rows as usize, rows.len());
        prop_assert_eq!(info.last.map(|w| w.id), rows.len().checked_sub(1).map(|i| format!("row-{i}")));
    }

    #[test]
    fn the_catalog_loader_never_panics(text in "\\PC{0,200}", key in "[a-z_]{0,12}", id in "[a-z0-9-]{0,10}") {
        let src = CatalogSource::Builtin;
        let _ = Catalog::parse(&text, &src);
        let doc = format!("[[dataset]]\nkey = \"{key}\"\nid = \"{id}\"\nname = \"x\"\ngroup = \"primary\"\nfrequency = \"daily\"\nsize_mb = 1\n");
        let _ = Catalog::parse(&doc, &src);
    }
}

/// The typed column kinds and the DuckDB types their columns are created with; a number column's type is the
/// one the page check's shapes widen it to ([`number_type_for`]).
const TYPED_KINDS: [(dobsob_engine::warehouse::ColumnKind, &str); 5] = [
    (dobsob_engine::warehouse::ColumnKind::Number, "BIGINT"),
    (dobsob_engine::warehouse::ColumnKind::Double, "DOUBLE"),
    (dobsob_engine::warehouse::ColumnKind::Timestamp, "TIMESTAMP"),
    (dobsob_engine::warehouse::ColumnKind::Instant, "TIMESTAMPTZ"),
    (dobsob_engine::warehouse::ColumnKind::Boolean, "BOOLEAN"),
];

/// Cells a Socrata page may hold in a typed column: the usual shapes and the odd ones.
fn typed_cell() -> impl Strategy<Value = String> {
    prop_oneof![
        // Decimals, plain and odd.
        "[+-]?[0-9]{0,22}(\\.[0-9]{0,20})?",
        "[+-]?[0-9]{1,3}(\\.[0-9]{1,4})?[eE][+-]?[0-9]{1,4}",
        "[0-9_,. ]{1,8}",
        // Timestamps, valid and not: every field may be out of range.
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z?",
        // ... and in range, as the portal sends them.
        "(1[89]|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?Z?",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2})?",
        // Booleans and anything else.
        "(true|false|TRUE|True|1|0|t|f|yes)",
        "\\PC{0,12}",
    ]
}

/// The type a number column holding `cells` has after the merge widened it for them (the largest integer
/// digits and decimals among the cells that are numbers), as `warehouse::widen_numbers` computes it.
fn number_type_for<'a>(cells: impl IntoIterator<Item = &'a String>) -> String {
    let shape = cells
        .into_iter()
        .filter_map(|c| decimal_shape(c))
        .fold((0, 0), |(i, d), (ci, cd)| (i.max(ci), d.max(cd)));
    NumberType::BigInt.widened(0, shape).sql()
}

/// The stored type of `kind` for `cells`.
fn stored_for<'a>(
    kind: dobsob_engine::warehouse::ColumnKind,
    stored: &str,
    cells: impl IntoIterator<Item = &'a String>,
) -> String {
    if kind == dobsob_engine::warehouse::ColumnKind::Number {
        number_type_for(cells)
    } else {
        stored.to_string()
    }
}

proptest! {
    /// A number is stored exactly: cast to the type its own shape picks, it reads back as the same number,
    /// never rounded, never NULL (the oracle is the test support's own plain notation).
    #[test]
    fn a_number_in_the_type_its_shape_picks_is_exact(
        neg in any::<bool>(),
        int in "[0-9]{0,40}",
        frac in "[0-9]{0,40}",
        exp in proptest::option::of(-45i32..45),
    ) {
        prop_assume!(!int.is_empty() || !frac.is_empty());
        let mut s = String::new();
        if neg { s.push('-'); }
        s.push_str(&int);
        if !frac.is_empty() { s.push('.'); s.push_str(&frac); }
        if let Some(e) = exp { s.push_str(&format!("e{e}")); }
        let kind = dobsob_engine::warehouse::ColumnKind::Number;
        let stored = number_type_for([&s]);
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let sql = format!("SELECT CAST(({}) AS VARCHAR) FROM (SELECT ?::VARCHAR AS c)", kind.cast_sql("c", &stored, s.contains(['e', 'E'])));
        let got: Option<String> = conn.query_row(&sql, [&s], |r| r.get(0)).unwrap();
        let got = got.unwrap_or_else(|| panic!("{s} as {stored} is NULL"));
        prop_assert_eq!(support::plain_decimal(&got), support::plain_decimal(&s), "{} as {}", s, stored);
    }

    /// The straight load of a full-load page (no staging, no search for uncastable cells) is taken only when
    /// the page check says every typed cell is certain to cast: whenever it says so, DuckDB's cast of that
    /// cell gives a value, so no value becomes NULL unrecorded.
    #[test]
    fn a_cell_called_certainly_castable_always_casts(cells in proptest::collection::vec(typed_cell(), 1..40)) {
        use dobsob_engine::internals::certainly_castable;
        let conn = duckdb::Connection::open_in_memory().unwrap();
        for cell in cells.iter().filter(|c| !c.is_empty()) {
            for (kind, stored) in TYPED_KINDS {
                if certainly_castable(kind, cell) {
                    let stored = stored_for(kind, stored, [cell]);
                    let sql = format!("SELECT ({}) IS NOT NULL FROM (SELECT ?::VARCHAR AS c)", kind.cast_sql("c", &stored, false));
                    let ok: bool = conn.query_row(&sql, [cell], |r| r.get(0)).unwrap();
                    prop_assert!(ok, "{kind:?} called {cell:?} certainly castable, DuckDB's cast gives NULL");
                }
            }
        }
    }

    /// The straight load has DuckDB's CSV reader parse certain cells as typed columns
    /// (`ColumnKind::read_type`); the careful load casts their text (`ColumnKind::cast_sql`). Both must
    /// store the same value.
    #[test]
    fn a_certain_cell_read_typed_from_csv_equals_its_cast(cells in proptest::collection::vec(typed_cell(), 1..40)) {
        use dobsob_engine::internals::certainly_castable;
        let conn = duckdb::Connection::open_in_memory().unwrap();
        conn.execute_batch("SET threads = 1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (kind, stored) in TYPED_KINDS {
            let certain: Vec<&String> = cells.iter().filter(|c| !c.is_empty() && certainly_castable(kind, c)).collect();
            if certain.is_empty() {
                continue;
            }
            let stored = &stored_for(kind, stored, certain.iter().copied());
            let path = dir.path().join("page.csv");
            let mut body = String::from("\"c\"\n");
            for c in &certain {
                body.push_str(&format!("\"{}\"\n", c.replace('"', "\"\"")));
            }
            std::fs::write(&path, &body).unwrap();
            // dobsob's own reader of page files, the column named c0.
            let read = |t: &str| format!(
                "SELECT row_number() OVER () AS n, c0 AS c FROM {}",
                dobsob_engine::warehouse::read_csv_sql(&[path.as_path()], &[t])
            );
            let sql = format!(
                "SELECT count(*), count(*) FILTER (WHERE typed.v IS DISTINCT FROM careful.v) \
                 FROM (SELECT n, {} AS v FROM ({})) typed JOIN (SELECT n, {} AS v FROM ({})) careful USING (n)",
                kind.from_read_sql("c", stored),
                read(kind.read_type(stored)),
                kind.cast_sql("c", stored, false),
                read("VARCHAR"),
            );
            let (n, differ): (i64, i64) = conn.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            prop_assert_eq!(n as usize, certain.len());
            prop_assert_eq!(differ, 0, "{:?}: {:?}", kind, certain);
        }
    }
}

#[test]
fn a_quoted_empty_string_sends_a_page_the_careful_way() {
    let schema =
        TableSchema::from_view(&[dobsob_engine::soda::ViewColumn::new("n", "number")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page = |body: &str| {
        let p = dir.path().join("p.csv");
        std::fs::write(&p, body).unwrap();
        inspect_rows(&p, &schema).unwrap().castable
    };
    let head = "\":id\",\":created_at\",\":updated_at\",\"n\"\n";
    let row = |id: &str, n: &str| {
        format!("\"{id}\",\"2024-01-01T00:00:00.000Z\",\"2024-01-01T00:00:00.000Z\",{n}\n")
    };
    assert!(
        page(&format!("{head}{}{}", row("a", "\"1.5\""), row("b", ""))),
        "a null is fine"
    );
    assert!(
        !page(&format!("{head}{}", row("a", "\"\""))),
        "a quoted empty string in the last field"
    );
    assert!(
        !page(&format!("{head}{}", row("a", "\"x\""))),
        "text in a number column"
    );
    assert!(
        !page(&format!("{head}{}", row("a", "\"1e3\""))),
        "an exponent takes the careful way"
    );
    let first = "\"n\",\":id\",\":created_at\",\":updated_at\"\n\"\",\"a\",\"2024-01-01T00:00:00.000Z\",\"2024-01-01T00:00:00.000Z\"\n";
    assert!(!page(first), "a quoted empty string in the first field");
}
