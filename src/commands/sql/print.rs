//! Printing a result as it streams: CSV, JSON, NDJSON, Markdown, an aligned table, or EXPLAIN's plan.

use super::*;

/// The sink of a format, writing to `out`.
pub(super) fn make_sink<'w, W: Write + 'w>(
    style: &Style,
    names: Vec<String>,
    kinds: Vec<Kind>,
    explain: bool,
    out: W,
) -> Box<dyn Sink + 'w> {
    let right: Vec<bool> = kinds.iter().map(|k| k.is_number()).collect();
    match style.format {
        SqlFormat::Table if explain => Box::new(PlanText { out }),
        SqlFormat::Table => Box::new(Table {
            out,
            names,
            right,
            max_width: style.max_width,
            footer: style.footer,
            held: Vec::new(),
            widths: None,
        }),
        SqlFormat::Csv => Box::new(Csv { out, names }),
        SqlFormat::Json | SqlFormat::Ndjson => Box::new(Json::new(
            out,
            &names,
            kinds,
            style.format == SqlFormat::Json,
        )),
        SqlFormat::Markdown => Box::new(Markdown { out, names, right }),
    }
}

/// `--format csv`.
pub(super) struct Csv<W> {
    pub(super) out: W,
    pub(super) names: Vec<String>,
}

impl<W: Write> Sink for Csv<W> {
    fn start(&mut self) -> io::Result<()> {
        csv_record(&mut self.out, self.names.iter().map(|n| Some(n.as_str())))
    }

    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        csv_record(&mut self.out, (0..row.len()).map(|i| row.get(i)))
    }

    fn finish(&mut self, _rows: u64) -> io::Result<()> {
        self.out.flush()
    }
}

/// One CSV record (RFC 4180, `\n` line ends). A field is quoted when it holds a comma, a quote or a line
/// break, or is the empty string: so that it differs from NULL, an empty field, as DuckDB's and PostgreSQL's
/// CSV tell them apart. (The `csv` crate cannot quote one field and not another, hence this writer.)
pub(super) fn csv_record<'a>(
    out: &mut impl Write,
    cells: impl Iterator<Item = Option<&'a str>>,
) -> io::Result<()> {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        match cell {
            None => {}
            Some(s) if s.is_empty() || s.contains([',', '"', '\n', '\r']) => {
                out.write_all(b"\"")?;
                out.write_all(s.replace('"', "\"\"").as_bytes())?;
                out.write_all(b"\"")?;
            }
            Some(s) => out.write_all(s.as_bytes())?,
        }
    }
    out.write_all(b"\n")
}

/// `--format json` (an array, one object per line) and `--format ndjson` (one object per line).
pub(super) struct Json<W> {
    pub(super) out: W,
    /// Each column's key, encoded with its colon: `"name":`.
    pub(super) keys: Vec<String>,
    pub(super) kinds: Vec<Kind>,
    pub(super) array: bool,
    pub(super) written: u64,
}

impl<W: Write> Json<W> {
    pub(super) fn new(out: W, names: &[String], kinds: Vec<Kind>, array: bool) -> Json<W> {
        let keys = unique_names(names)
            .iter()
            .map(|n| format!("{}:", serde_json::to_string(n).expect("a string encodes")))
            .collect();
        Json {
            out,
            keys,
            kinds,
            array,
            written: 0,
        }
    }
}

impl<W: Write> Sink for Json<W> {
    fn start(&mut self) -> io::Result<()> {
        if self.array {
            self.out.write_all(b"[")?;
        }
        Ok(())
    }

    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        if self.array {
            let separator: &[u8] = if self.written == 0 { b"\n" } else { b",\n" };
            self.out.write_all(separator)?;
        }
        self.out.write_all(b"{")?;
        for i in 0..row.len() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            self.out.write_all(self.keys[i].as_bytes())?;
            json_value(&mut self.out, self.kinds[i], row.get(i))?;
        }
        self.out.write_all(b"}")?;
        if !self.array {
            self.out.write_all(b"\n")?;
        }
        self.written += 1;
        Ok(())
    }

    fn finish(&mut self, _rows: u64) -> io::Result<()> {
        if self.array {
            let end: &[u8] = if self.written == 0 { b"]\n" } else { b"\n]\n" };
            self.out.write_all(end)?;
        }
        self.out.flush()
    }
}

/// A value in JSON by its column's kind: numbers and booleans as such, timestamps in ISO 8601, the rest (and
/// what is no JSON number, such as `inf`) as strings of DuckDB's text.
pub(super) fn json_value(out: &mut impl Write, kind: Kind, cell: Option<&str>) -> io::Result<()> {
    let Some(text) = cell else {
        return out.write_all(b"null");
    };
    match kind {
        Kind::Boolean if text == "true" || text == "false" => out.write_all(text.as_bytes()),
        Kind::Integer | Kind::Float if is_json_number(text) => out.write_all(text.as_bytes()),
        Kind::Timestamp | Kind::TimestampTz => {
            json_string(out, &iso_timestamp(text, kind == Kind::TimestampTz))
        }
        _ => json_string(out, text),
    }
}

pub(super) fn json_string(out: &mut impl Write, s: &str) -> io::Result<()> {
    serde_json::to_writer(out, s).map_err(io::Error::from)
}

/// Whether `s` is a number as JSON writes one (RFC 8259).
pub(super) fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = usize::from(b.first() == Some(&b'-'));
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i),
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return false;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return false;
        }
        i = end;
    }
    i == b.len()
}

/// DuckDB's text of a timestamp (`2024-05-01 13:45:00[.123456][+00]`) in ISO 8601: `T` between the date and
/// the time, and a zone as `+00:00`. Infinities and BC dates stay as DuckDB writes them.
pub(super) fn iso_timestamp(text: &str, zoned: bool) -> Cow<'_, str> {
    let b = text.as_bytes();
    let Some(space) = text.find(' ').filter(|&i| {
        i >= 10 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit)
    }) else {
        return Cow::Borrowed(text);
    };
    let mut iso = String::with_capacity(text.len() + 3);
    iso.push_str(&text[..space]);
    iso.push('T');
    iso.push_str(&text[space + 1..]);
    let z = iso.as_bytes();
    let n = z.len();
    let hour_offset = n >= 3
        && matches!(z[n - 3], b'+' | b'-')
        && z[n - 2].is_ascii_digit()
        && z[n - 1].is_ascii_digit();
    if zoned && hour_offset {
        iso.push_str(":00");
    }
    Cow::Owned(iso)
}

/// Column names made unique for JSON keys, as DuckDB names duplicates: `a`, `a_1`, `a_2`.
pub(super) fn unique_names(names: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .map(|n| {
            let mut name = n.clone();
            let mut k = 1;
            while !seen.insert(name.clone()) {
                name = format!("{n}_{k}");
                k += 1;
            }
            name
        })
        .collect()
}

/// `--format markdown`: a GitHub table.
pub(super) struct Markdown<W> {
    pub(super) out: W,
    pub(super) names: Vec<String>,
    /// Numbers are right-aligned.
    pub(super) right: Vec<bool>,
}

impl<W: Write> Sink for Markdown<W> {
    fn start(&mut self) -> io::Result<()> {
        let header: Vec<String> = self.names.iter().map(|n| markdown_cell(n)).collect();
        let rule: Vec<&str> = self
            .right
            .iter()
            .map(|&r| if r { "---:" } else { "---" })
            .collect();
        writeln!(self.out, "| {} |", header.join(" | "))?;
        writeln!(self.out, "| {} |", rule.join(" | "))
    }

    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        let cells: Vec<String> = (0..row.len())
            .map(|i| markdown_cell(row.get(i).unwrap_or("NULL")))
            .collect();
        writeln!(self.out, "| {} |", cells.join(" | "))
    }

    fn finish(&mut self, _rows: u64) -> io::Result<()> {
        self.out.flush()
    }
}

/// A Markdown table cell: `|` escaped, line breaks as `<br>`.
pub(super) fn markdown_cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace(['\n', '\r'], "<br>")
}

/// `--format table`: columns as wide as their widest cell among the first [`TABLE_SIZING_ROWS`] rows (held
/// until then), cut at `max_width`; later rows are cut to those widths, so memory stays bounded.
pub(super) struct Table<W> {
    pub(super) out: W,
    pub(super) names: Vec<String>,
    pub(super) right: Vec<bool>,
    /// 0: never cut.
    pub(super) max_width: usize,
    pub(super) footer: bool,
    /// The rows read before the widths are fixed, as shown.
    pub(super) held: Vec<Vec<String>>,
    pub(super) widths: Option<Vec<usize>>,
}

impl<W: Write> Table<W> {
    /// Fixes the widths from the header and the rows held, and prints them.
    pub(super) fn fix_widths(&mut self) -> io::Result<()> {
        let header: Vec<String> = self
            .names
            .iter()
            .map(|n| cut(&shown(Some(n.as_str())), self.max_width))
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|h| chars(h)).collect();
        for row in &self.held {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(chars(cell));
            }
        }
        table_line(&mut self.out, &header, &widths, &self.right)?;
        for row in std::mem::take(&mut self.held) {
            table_line(&mut self.out, &row, &widths, &self.right)?;
        }
        self.widths = Some(widths);
        Ok(())
    }
}

impl<W: Write> Sink for Table<W> {
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        if self.widths.is_none() {
            let cells = (0..row.len())
                .map(|i| cut(&shown(row.get(i)), self.max_width))
                .collect();
            self.held.push(cells);
            if self.held.len() >= TABLE_SIZING_ROWS {
                self.fix_widths()?;
            }
            return Ok(());
        }
        let widths = self.widths.as_deref().unwrap_or_default();
        let cells: Vec<String> = (0..row.len())
            .map(|i| {
                let limit = match self.max_width {
                    0 => 0,
                    _ => widths.get(i).copied().unwrap_or(0).max(1),
                };
                cut(&shown(row.get(i)), limit)
            })
            .collect();
        table_line(&mut self.out, &cells, widths, &self.right)
    }

    fn finish(&mut self, rows: u64) -> io::Result<()> {
        if self.widths.is_none() {
            self.fix_widths()?;
        }
        if self.footer {
            writeln!(
                self.out,
                "{rows} {}",
                if rows == 1 { "row" } else { "rows" }
            )?;
        }
        self.out.flush()
    }
}

/// A table line: cells two spaces apart, padded to their widths (numbers on the right); the last cell not
/// padded when left-aligned.
pub(super) fn table_line(
    out: &mut impl Write,
    cells: &[String],
    widths: &[usize],
    right: &[bool],
) -> io::Result<()> {
    let mut line = String::new();
    let last = cells.len().saturating_sub(1);
    for (i, cell) in cells.iter().enumerate() {
        let pad = " ".repeat(
            widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(chars(cell)),
        );
        if i > 0 {
            line.push_str("  ");
        }
        if right.get(i).copied().unwrap_or(false) {
            line.push_str(&pad);
            line.push_str(cell);
        } else {
            line.push_str(cell);
            if i != last {
                line.push_str(&pad);
            }
        }
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// A cell as the table shows it: NULL for NULL, control characters escaped so that a row stays on one line.
pub(super) fn shown(cell: Option<&str>) -> String {
    let Some(s) = cell else {
        return "NULL".into();
    };
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to `limit` characters, the last one `…`; 0: not cut. (Characters, not terminal columns: a wide
/// CJK character counts one.)
pub(super) fn cut(s: &str, limit: usize) -> String {
    if limit == 0 || chars(s) <= limit {
        return s.to_string();
    }
    let mut out: String = s.chars().take(limit - 1).collect();
    out.push('…');
    out
}

pub(super) fn chars(s: &str) -> usize {
    s.chars().count()
}

/// EXPLAIN in the table format: the plan as DuckDB drew it (its last column), not squeezed into a table.
pub(super) struct PlanText<W> {
    pub(super) out: W,
}

impl<W: Write> Sink for PlanText<W> {
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        match row.len().checked_sub(1).and_then(|last| row.get(last)) {
            Some(plan) => writeln!(self.out, "{}", plan.trim_end_matches('\n')),
            None => Ok(()),
        }
    }

    fn finish(&mut self, _rows: u64) -> io::Result<()> {
        self.out.flush()
    }
}
