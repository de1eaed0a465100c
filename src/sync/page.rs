//! Checks a downloaded CSV page before it goes near the warehouse, streaming it once: the header names known
//! fields, every row has as many cells as the header, ids are unique within the page, and `:updated_at`
//! values are Socrata timestamps. It also finds the first and last row's `(:updated_at, :id)`, the keyset
//! cursor for the next page. Memory: one record plus the page's ids.

use std::collections::HashSet;
use std::path::Path;

use crate::soda::soql::parse_timestamp_ms;
use crate::soda::Watermark;
use crate::warehouse::TableSchema;

/// What a page holds.
#[derive(Debug, Clone)]
pub struct PageInfo {
    pub header: Vec<String>,
    pub rows: u64,
    pub first: Option<Watermark>,
    pub last: Option<Watermark>,
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

/// Inspects a page of `$select=:*,*` rows against the dataset's schema.
pub fn inspect_rows(path: &Path, schema: &TableSchema) -> Result<PageInfo, String> {
    let mut rdr = reader(path)?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(str::to_string)
        .collect();
    let mut seen = HashSet::new();
    for h in &header {
        if !seen.insert(h.as_str()) {
            return Err(format!("the header names {h:?} twice"));
        }
        if !h.starts_with(':') && !schema.columns.iter().any(|c| &c.name == h) {
            return Err(format!(
                "the page has a column {h:?} that the dataset's metadata does not list (the schema changed \
                 during the sync; run it again)"
            ));
        }
    }
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("the header has no {name} column (was $select=:*,* sent?)"))
    };
    let (id_col, upd_col) = (find(":id")?, find(":updated_at")?);
    find(":created_at")?;
    let mut info = PageInfo {
        header: header.clone(),
        rows: 0,
        first: None,
        last: None,
    };
    let mut ids = HashSet::new();
    // Two records swapped after each row: the last row is at hand at the end without copying every row.
    let (mut rec, mut prev) = (csv::StringRecord::new(), csv::StringRecord::new());
    let key = |r: &csv::StringRecord| Watermark {
        updated_at: r[upd_col].to_string(),
        id: r[id_col].to_string(),
    };
    while rdr.read_record(&mut rec).map_err(csv_error)? {
        info.rows += 1;
        let id = &rec[id_col];
        let upd = &rec[upd_col];
        if id.is_empty() {
            return Err(format!("row {} has an empty :id", info.rows));
        }
        if parse_timestamp_ms(upd).is_none() {
            return Err(format!(
                "row {} (:id {id}) has :updated_at {upd:?}, not a timestamp",
                info.rows
            ));
        }
        if !ids.insert(id.to_string()) {
            return Err(format!(
                "row {} repeats :id {id} within one page",
                info.rows
            ));
        }
        if info.rows == 1 {
            info.first = Some(key(&rec));
        }
        std::mem::swap(&mut rec, &mut prev);
    }
    if info.rows > 0 {
        info.last = Some(key(&prev));
    }
    Ok(info)
}

/// Inspects a page of `$select=:id` rows; returns the row count and the last id.
pub fn inspect_ids(path: &Path) -> Result<(u64, Option<String>), String> {
    let mut rdr = reader(path)?;
    let header = rdr.headers().map_err(csv_error)?;
    if header.len() != 1 || &header[0] != ":id" {
        return Err(format!("expected a single :id column, got {header:?}"));
    }
    let (mut rec, mut prev) = (csv::StringRecord::new(), csv::StringRecord::new());
    let mut n = 0;
    while rdr.read_record(&mut rec).map_err(csv_error)? {
        n += 1;
        if rec[0].is_empty() {
            return Err(format!("row {n} has an empty :id"));
        }
        std::mem::swap(&mut rec, &mut prev);
    }
    Ok((n, (n > 0).then(|| prev[0].to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soda::ViewColumn;

    fn schema() -> TableSchema {
        TableSchema::from_view(&[ViewColumn {
            field_name: "a".into(),
            data_type_name: "text".into(),
            name: "a".into(),
        }])
        .unwrap()
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
            (
                "\":id\",\":created_at\",\":updated_at\",\"b\"\n".to_string(),
                "does not list",
            ),
            ("\"a\"\n".to_string(), "no :id"),
        ] {
            let e = page(&body).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        assert_eq!(page(HEAD).unwrap().rows, 0);
    }
}
