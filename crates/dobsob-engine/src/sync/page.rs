//! Checks a downloaded CSV page before it goes near the warehouse, streaming it once: the header names its
//! fields once and carries the system fields, every row has as many cells as the header, ids are unique
//! within the page, `:updated_at` values are Socrata timestamps, and whether the rows come in
//! `:updated_at` order. It also finds the first and last row's `(:updated_at, :id)`, the keyset cursor for
//! the next page, and the size of the largest value of each number column (the merge widens a column whose
//! type cannot hold it first). [`check_step`] then checks that the page moved past the cursor. Memory: one record plus the
//! page's keys.

use std::collections::HashMap;
use std::path::Path;

use crate::soda::soql::parse_timestamp_ms;
use crate::soda::Watermark;
use crate::warehouse::schema::decimal_shape;
use crate::warehouse::{ColumnKind, TableSchema};

/// What a page holds.
#[derive(Debug, Clone, Default)]
pub struct PageInfo {
    pub header: Vec<String>,
    pub rows: u64,
    pub first: Option<Watermark>,
    pub last: Option<Watermark>,
    /// Every row's `:id` and `:updated_at` (for the check that consecutive pages do not repeat rows).
    pub keys: HashMap<String, String>,
    /// The first row (1-based) whose `:updated_at` is older than the row before it, with its id.
    pub time_order_break: Option<(u64, String)>,
    /// Each number column with a value, and the most integer digits and decimals its values have
    /// (`schema::decimal_shape`): what the column's type must hold.
    pub number_shapes: Vec<(String, (u32, u32))>,
    /// Number columns with a value in exponent form (`1.5e3`), which the merge reads through plain notation.
    pub exponent_numbers: Vec<String>,
    /// Fields in the page that the metadata does not list (not stored; reported).
    pub unknown_columns: Vec<String>,
    /// Metadata columns the page does not carry (stored as NULL; reported).
    pub missing_columns: Vec<String>,
    /// Every typed cell is certain to cast (see [`certainly_castable`]) and no field is a quoted empty
    /// string: the page can be loaded straight from the CSV, with no uncastable cells to look for.
    pub castable: bool,
}

fn reader(path: &Path) -> Result<csv::Reader<std::fs::File>, String> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_path(path)
        .map_err(|e| format!("cannot read the page: {e}"))
}

fn csv_error(e: csv::Error) -> String {
    match e.position() {
        Some(p) => format!(
            "malformed CSV at line {}, row {}: {e}",
            p.line(),
            p.record()
        ),
        None => format!("malformed CSV: {e}"),
    }
}

/// A CSV body whose quote characters do not pair up was cut inside a quoted field (the CSV reader would take
/// the rest of the file as that field's text).
/// Checks that quotes pair up; returns whether the page may hold a field that is a quoted empty string
/// (`""` between delimiters: never true of a null, which is an empty unquoted field). Conservative: an escaped
/// quote inside a text field can look like one, which only costs the slower load.
fn check_quotes(path: &Path) -> Result<bool, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read the page: {e}"))?;
    scan_quotes(f, 1 << 16)
}

/// [`check_quotes`] over any reader, `buf_size` bytes at a time: only the quote characters are visited
/// (found with memchr), each looked at with the two bytes before it and the one after.
fn scan_quotes(mut r: impl std::io::Read, buf_size: usize) -> Result<bool, String> {
    let boundary = |b: u8| matches!(b, b',' | b'\n' | b'\r');
    // Two bytes of context before each read's first byte; a field boundary before the file starts.
    let mut buf = vec![b'\n'; 2 + buf_size];
    let (mut quotes, mut offset, mut last_open) = (0u64, 0u64, 0u64);
    let mut quoted_empty = false;
    // A `""` after a boundary ended the last read: quoted empty if the next byte is a boundary (or EOF).
    let mut pending = false;
    loop {
        let n = r
            .read(&mut buf[2..])
            .map_err(|e| format!("cannot read the page: {e}"))?;
        if n == 0 {
            break;
        }
        let data = &buf[..2 + n];
        if pending && boundary(data[2]) {
            quoted_empty = true;
        }
        pending = false;
        for i in memchr::memchr_iter(b'"', &data[2..]).map(|i| i + 2) {
            quotes += 1;
            if quotes % 2 == 1 {
                last_open = offset + (i - 2) as u64;
            }
            if !quoted_empty && data[i - 1] == b'"' && boundary(data[i - 2]) {
                match data.get(i + 1) {
                    Some(&next) => quoted_empty |= boundary(next),
                    None => pending = true,
                }
            }
        }
        offset += n as u64;
        let (a, b) = (data[n], data[n + 1]);
        buf[0] = a;
        buf[1] = b;
    }
    quoted_empty |= pending;
    if quotes % 2 == 1 {
        return Err(format!(
            "malformed CSV: unterminated quoted field opened at byte {last_open}"
        ));
    }
    Ok(quoted_empty)
}

/// Whether the SQL cast of a non-empty `cell` to a column of `kind` (`ColumnKind::cast_sql`) is certain to
/// give a value. Deliberately narrow: the shapes Socrata sends. Anything else (an exponent, an odd
/// timestamp, text in a number column) answers false and the page takes the path that looks for
/// uncastable cells.
pub fn certainly_castable(kind: ColumnKind, cell: &str) -> bool {
    match kind {
        ColumnKind::Text => true,
        ColumnKind::Number => number_certain(cell, decimal_shape(cell)),
        ColumnKind::Double => {
            cell.len() <= 300 && !cell.contains(['e', 'E']) && decimal_shape(cell).is_some()
        }
        ColumnKind::Timestamp | ColumnKind::Instant => {
            let t = cell.strip_suffix('Z').unwrap_or(cell);
            // Four-digit years from 0001, at most microseconds: what DuckDB's TIMESTAMP surely reads.
            (19..=26).contains(&t.len())
                && t.as_bytes()[4] == b'-'
                && t.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                && &t[..4] != "0000"
                // chrono reads a leap second (:60); DuckDB does not.
                && t.get(17..19) != Some("60")
                && parse_timestamp_ms(cell).is_some()
        }
        ColumnKind::Boolean => cell == "true" || cell == "false",
    }
}

/// [`certainly_castable`] for a number cell whose [`decimal_shape`] is `shape` (the page check has it at
/// hand): a plain number (DuckDB's CSV reader reads it as the column's type, which the merge first widens to
/// hold it; exponents take the careful path).
fn number_certain(cell: &str, shape: Option<(u32, u32)>) -> bool {
    !cell.contains(['e', 'E']) && shape.is_some()
}

/// Inspects a page of `$select=:*,*` rows against the dataset's schema.
pub fn inspect_rows(path: &Path, schema: &TableSchema) -> Result<PageInfo, String> {
    let quoted_empty = check_quotes(path)?;
    let mut rdr = reader(path)?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(str::to_string)
        .collect();
    let mut info = PageInfo::default();
    let mut seen = std::collections::HashSet::new();
    for h in &header {
        if !seen.insert(h.as_str()) {
            return Err(format!("the header names {h:?} twice"));
        }
        if !h.starts_with(':') && !schema.columns.iter().any(|c| &c.name == h) {
            info.unknown_columns.push(h.clone());
        }
    }
    info.missing_columns = schema
        .columns
        .iter()
        .filter(|c| !seen.contains(c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("the header has no {name} column (was $select=:*,* sent?)"))
    };
    let (id_col, upd_col) = (find(":id")?, find(":updated_at")?);
    find(":created_at")?;
    // Number columns by position in the page, and the largest shape of their values so far.
    let numbers: Vec<(usize, &str)> = schema
        .columns
        .iter()
        .filter(|c| c.kind == ColumnKind::Number)
        .filter_map(|c| Some((header.iter().position(|h| h == &c.name)?, c.name.as_str())))
        .collect();
    let mut shapes: Vec<Option<(u32, u32)>> = vec![None; numbers.len()];
    let mut exponents = vec![false; numbers.len()];
    // The other typed columns by position, for the straight load (a number cell is looked at once, for its
    // shape and its cast, in the row loop below).
    let typed: Vec<(usize, ColumnKind)> = schema
        .columns
        .iter()
        .filter(|c| !matches!(c.kind, ColumnKind::Text | ColumnKind::Number))
        .filter_map(|c| Some((header.iter().position(|h| h == &c.name)?, c.kind)))
        .collect();
    let mut castable = !quoted_empty;
    // Two records swapped after each row: the last row is at hand at the end without copying every row.
    let (mut rec, mut prev) = (csv::StringRecord::new(), csv::StringRecord::new());
    let key = |r: &csv::StringRecord| Watermark {
        updated_at: r[upd_col].to_string(),
        id: r[id_col].to_string(),
    };
    let mut prev_ms = i64::MIN;
    while rdr.read_record(&mut rec).map_err(csv_error)? {
        info.rows += 1;
        let id = &rec[id_col];
        let upd = &rec[upd_col];
        if id.is_empty() {
            return Err(format!("row {} has an empty :id", info.rows));
        }
        let Some(ms) = parse_timestamp_ms(upd) else {
            return Err(format!(
                "row {} (:id {id}) has :updated_at {upd:?}, not a timestamp",
                info.rows
            ));
        };
        if ms < prev_ms && info.time_order_break.is_none() {
            info.time_order_break = Some((info.rows, id.to_string()));
        }
        prev_ms = ms;
        if info.keys.insert(id.to_string(), upd.to_string()).is_some() {
            return Err(format!(
                "row {} repeats :id {id} within one page",
                info.rows
            ));
        }
        // Each number cell's shape, read once: what the column must hold, and certain to cast.
        for ((most, exponent), (pos, _)) in shapes.iter_mut().zip(&mut exponents).zip(&numbers) {
            let cell = &rec[*pos];
            if cell.is_empty() {
                continue;
            }
            let shape = decimal_shape(cell);
            if let Some((i, d)) = shape {
                *most = Some(most.map_or((i, d), |(mi, md)| (mi.max(i), md.max(d))));
                *exponent |= cell.contains(['e', 'E']);
            }
            castable &= number_certain(cell, shape);
        }
        if castable {
            castable = typed.iter().all(|(pos, kind)| {
                let cell = &rec[*pos];
                cell.is_empty() || certainly_castable(*kind, cell)
            });
        }
        if info.rows == 1 {
            info.first = Some(key(&rec));
        }
        std::mem::swap(&mut rec, &mut prev);
    }
    if info.rows > 0 {
        info.last = Some(key(&prev));
    }
    info.exponent_numbers = numbers
        .iter()
        .zip(&exponents)
        .filter(|(_, e)| **e)
        .map(|((_, name), _)| name.to_string())
        .collect();
    info.number_shapes = numbers
        .iter()
        .zip(&shapes)
        .filter_map(|((_, name), shape)| Some((name.to_string(), (*shape)?)))
        .collect();
    info.header = header;
    info.castable = castable;
    Ok(info)
}

/// Where a pass stands before a page: what the page must come after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// The first page of a pass from the beginning.
    Start,
    /// Strictly after this row (in the pass's order).
    After(Watermark),
    /// At or after this `:updated_at` (an incremental pass that re-reads an overlap window).
    From(String),
}

/// How a pass orders its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `$order=:id`: ids cannot be compared here (the server's order is not alphabetical), only told apart.
    Id,
    /// `$order=:updated_at,:id`: times can be compared.
    UpdatedAt,
}

/// Checks that a page moved the pass forward: its first row is after the cursor, its rows are in the pass's
/// order as far as they can be compared, and it repeats no row of the page before (`prev`: id to
/// `:updated_at`). A portal that ignores `$where` or `$order` fails here instead of looping or loading rows
/// twice. In `:updated_at` order a row may come back with a newer time (it changed during the pass); the
/// same id with the same time is a repeat.
pub fn check_step(
    order: Order,
    cursor: &Cursor,
    info: &PageInfo,
    prev: &HashMap<String, String>,
) -> Result<(), String> {
    let Some(first) = &info.first else {
        return Ok(());
    };
    let ms = |t: &str| parse_timestamp_ms(t).unwrap_or(i64::MIN);
    match cursor {
        Cursor::Start => {}
        Cursor::After(c) => {
            if first.id == c.id {
                return Err(format!(
                    "the page starts with the cursor's own row {} instead of the row after it (the portal ignored $where?)",
                    c.id
                ));
            }
            if order == Order::UpdatedAt && ms(&first.updated_at) < ms(&c.updated_at) {
                return Err(format!(
                    "the page starts at {} (:id {}), before the cursor {} (the portal ignored $where?)",
                    first.updated_at, first.id, c.updated_at
                ));
            }
        }
        Cursor::From(t) => {
            if ms(&first.updated_at) < ms(t) {
                return Err(format!(
                    "the page starts at {} (:id {}), before {t} that was asked for (the portal ignored $where?)",
                    first.updated_at, first.id
                ));
            }
        }
    }
    if order == Order::UpdatedAt {
        if let Some((row, id)) = &info.time_order_break {
            return Err(format!(
                "row {row} (:id {id}) is older than the row before it: the page is not in :updated_at order \
                 (the portal ignored $order?)"
            ));
        }
    }
    for (id, t) in &info.keys {
        if let Some(pt) = prev.get(id) {
            if order == Order::Id || pt == t {
                return Err(format!(
                    "the page repeats :id {id} of the page before (the portal ignored $where?)"
                ));
            }
        }
    }
    Ok(())
}

/// A page of the id set.
#[derive(Debug, Clone, Default)]
pub struct IdPage {
    pub rows: u64,
    pub first: Option<String>,
    pub last: Option<String>,
    pub ids: std::collections::HashSet<String>,
}

/// Inspects a page of `$select=:id` rows: one `:id` column, no empty or repeated id.
pub fn inspect_ids(path: &Path) -> Result<IdPage, String> {
    check_quotes(path)?;
    let mut rdr = reader(path)?;
    let header = rdr.headers().map_err(csv_error)?;
    if header.len() != 1 || &header[0] != ":id" {
        return Err(format!("expected a single :id column, got {header:?}"));
    }
    let mut page = IdPage::default();
    let mut rec = csv::StringRecord::new();
    while rdr.read_record(&mut rec).map_err(csv_error)? {
        page.rows += 1;
        let id = &rec[0];
        if id.is_empty() {
            return Err(format!("row {} has an empty :id", page.rows));
        }
        if !page.ids.insert(id.to_string()) {
            return Err(format!(
                "row {} repeats :id {id} within one page",
                page.rows
            ));
        }
        if page.rows == 1 {
            page.first = Some(id.to_string());
        }
        page.last = Some(id.to_string());
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soda::ViewColumn;

    /// The byte-by-byte scan [`scan_quotes`] replaced, reading 7 bytes at a time.
    fn reference_quotes(body: &[u8]) -> Result<bool, String> {
        use std::io::Read;
        let mut f = body;
        let mut buf = vec![0u8; 7];
        let (mut quotes, mut offset, mut last_open) = (0u64, 0u64, 0u64);
        // The last three bytes seen, across buffer boundaries; a field boundary before the file starts.
        let mut window = [b'\n'; 3];
        let mut quoted_empty = false;
        let boundary = |b: u8| matches!(b, b',' | b'\n' | b'\r');
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("cannot read the page: {e}"))?;
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                if *b == b'"' {
                    quotes += 1;
                    if quotes % 2 == 1 {
                        last_open = offset + i as u64;
                    }
                }
                if boundary(*b) && window[1] == b'"' && window[2] == b'"' && boundary(window[0]) {
                    quoted_empty = true;
                }
                window = [window[1], window[2], *b];
            }
            offset += n as u64;
        }
        if window[1] == b'"' && window[2] == b'"' && boundary(window[0]) {
            quoted_empty = true;
        }
        if quotes % 2 == 1 {
            return Err(format!(
                "malformed CSV: unterminated quoted field opened at byte {last_open}"
            ));
        }
        Ok(quoted_empty)
    }

    proptest::proptest! {
        /// The memchr scan finds what the byte-by-byte one did (quotes that pair up, the offset of an
        /// unterminated one, a quoted empty string), whatever the read size.
        #[test]
        fn the_quote_scan_agrees_with_the_byte_by_byte_one(body in "[\",\n\ra]{0,40}", size in 1usize..6) {
            let expected = reference_quotes(body.as_bytes());
            proptest::prop_assert_eq!(scan_quotes(body.as_bytes(), size), expected.clone(), "{:?}", body);
            proptest::prop_assert_eq!(scan_quotes(body.as_bytes(), 1 << 16), expected, "{:?}", body);
        }
    }

    fn schema() -> TableSchema {
        TableSchema::from_view(&[ViewColumn::new("a", "text")]).unwrap()
    }

    fn page(body: &str) -> Result<PageInfo, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.csv");
        std::fs::write(&p, body).unwrap();
        inspect_rows(&p, &schema())
    }

    const HEAD: &str = "\":id\",\":created_at\",\":updated_at\",\"a\"\n";

    #[test]
    fn finds_first_and_last_keys_across_quoted_newlines() {
        let info = page(&format!(
            "{HEAD}\"row-b\",\"2026-01-01T00:00:00.000Z\",\"2026-01-02T00:00:00.000Z\",\"x\ny, \"\"z\"\"\"\n\
             \"row-a\",\"2026-01-01T00:00:00.000Z\",\"2026-01-03T00:00:00.000Z\",\n"
        ))
        .unwrap();
        assert_eq!(info.rows, 2);
        assert_eq!(info.first.unwrap().id, "row-b");
        let last = info.last.unwrap();
        assert_eq!(
            (last.id.as_str(), last.updated_at.as_str()),
            ("row-a", "2026-01-03T00:00:00.000Z")
        );
    }

    #[test]
    fn rejects_bad_pages_naming_the_row() {
        let ts = "\"2026-01-01T00:00:00.000Z\"";
        for (body, needle) in [
            (format!("{HEAD}\"row-a\",{ts},{ts}\n"), "line 2"),
            (
                format!("{HEAD}\"row-a\",{ts},\"yesterday\",\"x\"\n"),
                "not a timestamp",
            ),
            (
                format!("{HEAD}\"row-a\",{ts},{ts},\"x\"\n\"row-a\",{ts},{ts},\"y\"\n"),
                "repeats :id row-a",
            ),
            ("\"a\"\n".to_string(), "no :id"),
        ] {
            let e = page(&body).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        assert_eq!(page(HEAD).unwrap().rows, 0);
        // A field the metadata lacks is reported, not fatal; a metadata column the page lacks too.
        let info = page("\":id\",\":created_at\",\":updated_at\",\"b\"\n").unwrap();
        assert_eq!(info.unknown_columns, ["b"]);
        assert_eq!(info.missing_columns, ["a"]);
    }

    fn wm(t: &str, id: &str) -> Watermark {
        Watermark {
            updated_at: t.into(),
            id: id.into(),
        }
    }

    fn info_of(rows: &[(&str, &str)]) -> PageInfo {
        let mut info = PageInfo {
            rows: rows.len() as u64,
            first: rows.first().map(|(t, id)| wm(t, id)),
            last: rows.last().map(|(t, id)| wm(t, id)),
            ..PageInfo::default()
        };
        let mut prev = i64::MIN;
        for (i, (t, id)) in rows.iter().enumerate() {
            let ms = parse_timestamp_ms(t).unwrap();
            if ms < prev && info.time_order_break.is_none() {
                info.time_order_break = Some((i as u64 + 1, id.to_string()));
            }
            prev = ms;
            info.keys.insert(id.to_string(), t.to_string());
        }
        info
    }

    #[test]
    fn a_page_must_move_past_the_cursor() {
        let (t1, t2) = ("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z");
        let none = HashMap::new();
        let page = info_of(&[(t1, "row-b"), (t2, "row-c")]);
        assert!(check_step(
            Order::UpdatedAt,
            &Cursor::After(wm(t1, "row-a")),
            &page,
            &none
        )
        .is_ok());
        // The cursor's own row again: $where ignored.
        let again = info_of(&[(t1, "row-a"), (t2, "row-c")]);
        let e = check_step(
            Order::UpdatedAt,
            &Cursor::After(wm(t1, "row-a")),
            &again,
            &none,
        )
        .unwrap_err();
        assert!(e.contains("cursor's own row"), "{e}");
        // Older than the cursor.
        let e = check_step(
            Order::UpdatedAt,
            &Cursor::After(wm(t2, "row-z")),
            &page,
            &none,
        )
        .unwrap_err();
        assert!(e.contains("before the cursor"), "{e}");
        let e = check_step(Order::UpdatedAt, &Cursor::From(t2.into()), &page, &none).unwrap_err();
        assert!(e.contains("before"), "{e}");
        // Out of :updated_at order.
        let shuffled = info_of(&[(t2, "row-b"), (t1, "row-c")]);
        let e = check_step(Order::UpdatedAt, &Cursor::Start, &shuffled, &none).unwrap_err();
        assert!(e.contains("row 2 (:id row-c)"), "{e}");
        // In :id order, time order means nothing.
        assert!(check_step(Order::Id, &Cursor::Start, &shuffled, &none).is_ok());
        // A repeat of the page before: any shared id by :id, the same (id, time) by :updated_at.
        let prev = page.keys.clone();
        let next = info_of(&[(t2, "row-c"), (t2, "row-d")]);
        assert!(check_step(Order::Id, &Cursor::After(wm(t2, "row-x")), &next, &prev).is_err());
        assert!(check_step(
            Order::UpdatedAt,
            &Cursor::After(wm(t2, "row-x")),
            &next,
            &prev
        )
        .is_err());
        let changed = info_of(&[(t2, "row-d"), ("2026-01-01T00:00:09.000Z", "row-b")]);
        assert!(
            check_step(
                Order::UpdatedAt,
                &Cursor::After(wm(t2, "row-c")),
                &changed,
                &prev
            )
            .is_ok(),
            "a row that changed during the pass comes back with a newer time"
        );
    }

    #[test]
    fn the_largest_shape_of_each_number_column_is_found() {
        let schema = TableSchema::from_view(&[
            ViewColumn::new("lat", "number"),
            ViewColumn::new("n", "number"),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.csv");
        let ts = "\"2026-01-01T00:00:00.000Z\"";
        std::fs::write(
            &p,
            format!(
                "\":id\",\":created_at\",\":updated_at\",\"lat\",\"n\"\n\
                 \"row-a\",{ts},{ts},\"40.123456789012345678901\",\"1\"\n\
                 \"row-b\",{ts},{ts},\"-73.863754707308345\",\"N/A\"\n"
            ),
        )
        .unwrap();
        let info = inspect_rows(&p, &schema).unwrap();
        // Integer digits and decimals of the largest values, not of one value; text is not a number.
        assert_eq!(
            info.number_shapes,
            [("lat".to_string(), (2, 21)), ("n".to_string(), (1, 0))]
        );
        assert!(!info.castable, "N/A takes the careful path");
    }
}
