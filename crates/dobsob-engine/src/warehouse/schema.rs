//! From Socrata metadata to a DuckDB table: column names (validated, always quoted), type mapping, and the
//! SQL expressions that turn a page's text cells into typed values.
//!
//! Column names come from the portal and are untrusted: they are checked here ([`TableSchema::from_view`]) and
//! only ever reach SQL through [`quote_ident`]. Values that will not cast are not turned into NULL silently:
//! [`TableColumn::uncastable_sql`] finds them so the merge can keep them in `dobsob.uncastable`.

use sha2::{Digest, Sha256};

use crate::soda::ViewColumn;

/// The system columns every dataset table starts with.
pub const SYSTEM_COLUMNS: [&str; 4] = [
    "socrata_id",
    "socrata_created_at",
    "socrata_updated_at",
    "socrata_version",
];

/// Quotes an identifier for DuckDB: double quotes, embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for DuckDB (only for values that cannot be bound, like a `read_csv` path).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Bumped whenever the type mapping changes: it is part of every table's fingerprint, so a table built with
/// an older mapping is reloaded in full (once) rather than merged into with new types.
/// types-4: numbers as the integer or decimal type their values need (was DECIMAL(38,18)), catalog overrides.
pub const TYPE_MAPPING_VERSION: &str = "types-4";

/// The SoQL/JSON number grammar dobsob accepts in a number column (a regex for DuckDB, matching
/// [`decimal_shape`]): optional sign, digits with an optional point, an optional exponent.
const NUMBER_REGEX: &str = "[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?";

/// The type a `number` column has now: the narrowest that holds every value it has received exactly, widened
/// in place (never narrowed) when a page brings a value that needs more. A new column is [`NumberType::BigInt`].
///
/// Why not one DECIMAL(38,18) for all: BINs, counts and ids printed as `5816590.000000000000000000` and
/// compared with text identifiers through an implicit cast that fails on the first non-numeric text; and
/// 16-byte decimals cost memory and time where 8-byte integers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberType {
    /// Every value so far integral with at most 18 digits (so surely within BIGINT's range).
    BigInt,
    /// Integral with at most 38 digits.
    HugeInt,
    /// `DECIMAL(precision, scale)`: precision 18 (8 bytes) while integer digits and scale fit it, else 38.
    Decimal { precision: u32, scale: u32 },
    /// A value no number type holds exactly (more than 38 digits in all, or an exponent far out): VARCHAR
    /// holding the exact text, never rounded.
    Text,
}

impl NumberType {
    /// The narrowest type that holds a value of `shape` (integer digits, decimals; see [`decimal_shape`]).
    ///
    /// A decimal always keeps room for one integer digit (precision > scale): DuckDB 2.0's cast of an
    /// exponent form to a DECIMAL whose precision equals its scale gives NULL (`'1.1e-17'` to DECIMAL(18,18);
    /// found by `tests/fuzz.rs`).
    pub fn for_shape((int_digits, scale): (u32, u32)) -> NumberType {
        let digits = int_digits.max(1).saturating_add(scale);
        match (scale, digits) {
            (0, 0..=18) => NumberType::BigInt,
            (0, 19..=38) => NumberType::HugeInt,
            (1..=38, 0..=18) => NumberType::Decimal {
                precision: 18,
                scale,
            },
            (1..=38, 19..=38) => NumberType::Decimal {
                precision: 38,
                scale,
            },
            _ => NumberType::Text,
        }
    }

    /// The type of a column as DuckDB names it (`duckdb_columns().data_type`); `None` for a type that is
    /// not one of these (a column the catalog made text is VARCHAR: [`NumberType::Text`]).
    pub fn parse(duckdb_type: &str) -> Option<NumberType> {
        match duckdb_type {
            "BIGINT" => Some(NumberType::BigInt),
            "HUGEINT" => Some(NumberType::HugeInt),
            "VARCHAR" => Some(NumberType::Text),
            t => {
                let inner = t.strip_prefix("DECIMAL(")?.strip_suffix(')')?;
                let (p, s) = inner.split_once(',')?;
                Some(NumberType::Decimal {
                    precision: p.trim().parse().ok()?,
                    scale: s.trim().parse().ok()?,
                })
            }
        }
    }

    pub fn sql(self) -> String {
        match self {
            NumberType::BigInt => "BIGINT".into(),
            NumberType::HugeInt => "HUGEINT".into(),
            NumberType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            NumberType::Text => "VARCHAR".into(),
        }
    }

    /// Decimals this type holds.
    pub fn scale(self) -> u32 {
        match self {
            NumberType::Decimal { scale, .. } => scale,
            NumberType::Text => u32::MAX,
            _ => 0,
        }
    }

    /// The type a column of this type becomes to also hold values of `shape`, given that the largest
    /// value it holds now has `held_int_digits` integer digits: the scale never drops (values keep their
    /// decimals), the integer digits are what the values need, not what the old type could have held.
    pub fn widened(self, held_int_digits: u32, shape: (u32, u32)) -> NumberType {
        if self == NumberType::Text {
            return NumberType::Text;
        }
        let needed =
            NumberType::for_shape((held_int_digits.max(shape.0), self.scale().max(shape.1)));
        if self.holds(needed) {
            self
        } else {
            needed
        }
    }

    /// Whether every value of `other` fits this type exactly.
    fn holds(self, other: NumberType) -> bool {
        self.holds_shape(other.capacity())
    }

    /// Whether a value of `shape` (integer digits, decimals) fits this type exactly.
    pub fn holds_shape(self, (int_digits, scale): (u32, u32)) -> bool {
        let (i, s) = self.capacity();
        i >= int_digits && s >= scale
    }

    /// The most integer digits and decimals a value of this type can have.
    fn capacity(self) -> (u32, u32) {
        match self {
            NumberType::BigInt => (18, 0),
            NumberType::HugeInt => (38, 0),
            NumberType::Decimal { precision, scale } => (precision.saturating_sub(scale), scale),
            NumberType::Text => (u32::MAX, u32::MAX),
        }
    }
}

/// How a Socrata type is stored (see docs/warehouse.md for the reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `text`, and every type kept as the resource CSV has it (point, location, url, phone, ...), and any
    /// column the catalog makes text: VARCHAR.
    Text,
    /// `number`, `money`, `percent` (arbitrary-precision decimals at the source): the integer or decimal
    /// type its values need ([`NumberType`]), widened in place, never rounded or NULLed.
    Number,
    /// `double`: DOUBLE (the source is a binary double already).
    Double,
    /// `calendar_date` (floating: New York wall time with no zone): TIMESTAMP.
    Timestamp,
    /// `date` (a fixed instant, sent with `Z`): TIMESTAMPTZ.
    Instant,
    /// `checkbox`: BOOLEAN.
    Boolean,
}

/// The type names a catalog may give a column (`[columns]`, `[dataset.columns]`), as Socrata names them.
pub const OVERRIDE_TYPES: [&str; 6] = [
    "text",
    "number",
    "double",
    "calendar_date",
    "date",
    "checkbox",
];

impl ColumnKind {
    pub fn from_socrata(data_type_name: &str) -> ColumnKind {
        match data_type_name {
            "number" | "money" | "percent" => ColumnKind::Number,
            "double" => ColumnKind::Double,
            "calendar_date" => ColumnKind::Timestamp,
            "date" => ColumnKind::Instant,
            "checkbox" => ColumnKind::Boolean,
            _ => ColumnKind::Text,
        }
    }

    /// The DuckDB type a new table gets (a number column starts as BIGINT and widens as its values need).
    pub fn duckdb_type(self) -> &'static str {
        match self {
            ColumnKind::Text => "VARCHAR",
            ColumnKind::Number => "BIGINT",
            ColumnKind::Double => "DOUBLE",
            ColumnKind::Timestamp => "TIMESTAMP",
            ColumnKind::Instant => "TIMESTAMPTZ",
            ColumnKind::Boolean => "BOOLEAN",
        }
    }

    /// The typed value of the text cell in `raw` (a column of the staging table) for a column stored as
    /// `stored` (its type in the table now); NULL if it will not cast. `exponents`: some cells of a number
    /// column are in exponent form (the page check says which columns), and are read through plain notation.
    pub fn cast_sql(self, raw: &str, stored: &str, exponents: bool) -> String {
        if stored == "VARCHAR" {
            return raw.to_string();
        }
        match self {
            ColumnKind::Text => raw.to_string(),
            // DuckDB's own cast accepts more than numbers (`1_000`); the grammar is checked here. The page
            // check has widened the column to hold every value of the page exactly, so the cast neither
            // rounds nor overflows (an integer column receives only integral values).
            ColumnKind::Number if exponents => format!(
                "CASE WHEN regexp_full_match({raw}, '{NUMBER_REGEX}') THEN TRY_CAST(CASE WHEN \
                 regexp_matches({raw}, '[eE]') THEN {} ELSE {raw} END AS {stored}) END",
                plain_number_sql(raw)
            ),
            ColumnKind::Number => format!(
                "CASE WHEN regexp_full_match({raw}, '{NUMBER_REGEX}') THEN TRY_CAST({raw} AS {stored}) END"
            ),
            ColumnKind::Double => format!("TRY_CAST({raw} AS DOUBLE)"),
            ColumnKind::Timestamp => timestamp_sql(raw),
            ColumnKind::Instant => instant_sql(raw),
            ColumnKind::Boolean => {
                format!("CASE {raw} WHEN 'true' THEN true WHEN 'false' THEN false END")
            }
        }
    }

    /// The type the straight load has DuckDB's CSV reader parse a cell of this column as, for a column
    /// stored as `stored` (a page whose every cell the page check found certain to cast; see
    /// `sync::page::certainly_castable`). Instants are read as their UTC wall time; numbers as the type the
    /// column has.
    pub fn read_type(self, stored: &str) -> &str {
        if stored == "VARCHAR" {
            return "VARCHAR";
        }
        match self {
            ColumnKind::Instant => "TIMESTAMP",
            ColumnKind::Number => stored,
            kind => kind.duckdb_type(),
        }
    }

    /// The stored value of a cell read as [`ColumnKind::read_type`] into `raw`: the same value
    /// [`ColumnKind::cast_sql`] gives the cell's text (`tests/fuzz.rs` checks it).
    pub fn from_read_sql(self, raw: &str, stored: &str) -> String {
        match self.read_type(stored) {
            "TIMESTAMP" if self == ColumnKind::Instant => format!("CAST({raw} AS TIMESTAMPTZ)"),
            _ => raw.to_string(),
        }
    }
}

/// A number in exponent form (`1.5e3`, `10000000000000000000000000.0000e-8`) in plain notation (`1500`,
/// `100000000000000000`), as SQL over the text in `raw`. DuckDB's own cast of an exponent form reads the
/// mantissa into the target type first, so a long mantissa overflows a type that holds the value
/// (`tests/fuzz.rs` found `10000000000000000000000000.0000e-8` as BIGINT NULL); plain notation casts exactly.
/// Only the significant digits are kept, so the text is at most as long as the type the value needs.
///
/// The lambdas bind each part once; written out, the expression took 60 ms to plan per statement against
/// 22 ms, and a plain cast 3 ms, so it is used only for the columns where a page has an exponent form
/// ([`ColumnKind::cast_sql`]'s `exponents`).
fn plain_number_sql(raw: &str) -> String {
    format!(
        "list_transform([regexp_extract({raw}, '^([+-]?)([0-9]*)\\.?([0-9]*)[eE]([+-]?[0-9]+)$', \
         ['s', 'i', 'f', 'x'])], lambda m: list_transform([{{'s': m.s, 'd': rtrim(ltrim(m.i || m.f, '0'), '0'), \
         'p': length(m.i) + TRY_CAST(m.x AS BIGINT) - (length(m.i || m.f) - length(ltrim(m.i || m.f, '0')))}}], \
         lambda v: CASE WHEN v.d = '' THEN '0' WHEN v.p <= 0 THEN v.s || '0.' || repeat('0', -v.p) || v.d \
         WHEN v.p >= length(v.d) THEN v.s || v.d || repeat('0', v.p - length(v.d)) \
         ELSE v.s || left(v.d, v.p) || '.' || substr(v.d, v.p + 1) END)[1])[1]"
    )
}

/// A floating Socrata timestamp (`2023-06-03T00:00:00.000`) as a TIMESTAMP.
pub fn timestamp_sql(raw: &str) -> String {
    format!("TRY_CAST(regexp_replace({raw}, 'Z$', '') AS TIMESTAMP)")
}

/// A fixed Socrata timestamp (`2026-08-06T09:20:17.588Z`, UTC) as a TIMESTAMPTZ. The zone-less wall time is
/// cast to TIMESTAMP and then to TIMESTAMPTZ, which DuckDB's core (no ICU in this build) reads as UTC.
pub fn instant_sql(raw: &str) -> String {
    format!("CAST(TRY_CAST(regexp_replace({raw}, 'Z$', '') AS TIMESTAMP) AS TIMESTAMPTZ)")
}

/// The exact size of a decimal literal: `(integer digits, decimals)` once leading zeros, trailing zeros and
/// any exponent are accounted for (`-073.8600` is `(2, 2)`, `1.5E-3` is `(0, 4)`, `0` is `(0, 0)`). `None` if
/// `s` is not a number in the grammar a decimal column accepts. Exponents saturate: `1e999999` is huge.
pub fn decimal_shape(s: &str) -> Option<(u32, u32)> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_part = &b[int_start..i];
    let mut frac_part: &[u8] = &[];
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let f = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_part = &b[f..i];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let mut exp: i64 = 0;
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        let neg = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let e = i;
        while i < b.len() && b[i].is_ascii_digit() {
            exp = exp
                .saturating_mul(10)
                .saturating_add(i64::from(b[i] - b'0'));
            i += 1;
        }
        if i == e {
            return None;
        }
        if neg {
            exp = -exp;
        }
    }
    if i != b.len() {
        return None;
    }
    // All digits, with the point after `point` of them (no copy: this runs for every decimal cell).
    let digits = || int_part.iter().chain(frac_part);
    let total = int_part.len() + frac_part.len();
    let lead = digits().take_while(|&&d| d == b'0').count();
    if lead == total {
        return Some((0, 0));
    }
    let trail = digits().rev().take_while(|&&d| d == b'0').count();
    let n = (total - lead - trail) as i64;
    let point = (int_part.len() as i64 - lead as i64).saturating_add(exp);
    let clamp = |v: i64| v.clamp(0, u32::MAX as i64) as u32;
    Some((clamp(point), clamp(n - point)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// The Socrata fieldName, used as the DuckDB column name.
    pub name: String,
    /// The portal's `dataTypeName`.
    pub socrata_type: String,
    /// How it is stored: from the portal's type, or the type the catalog gives the column.
    pub kind: ColumnKind,
    /// The catalog's type for the column, when it overrides the portal's.
    pub overridden: Option<String>,
}

impl TableColumn {
    /// A predicate true when the cell in `raw` holds a value the column (stored as `stored`) cannot hold
    /// (`exponents` as for [`ColumnKind::cast_sql`]).
    pub fn uncastable_sql(&self, raw: &str, stored: &str, exponents: bool) -> Option<String> {
        (self.kind != ColumnKind::Text && stored != "VARCHAR").then(|| {
            format!(
                "{raw} IS NOT NULL AND ({}) IS NULL",
                self.kind.cast_sql(raw, stored, exponents)
            )
        })
    }
}

/// A coordinate dobsob derives from a `point` (WKT) or `location` column, stored beside the original text
/// as `{column}_longitude` / `{column}_latitude` DOUBLE so that analysts can filter and join on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedColumn {
    pub name: String,
    /// The portal column it is read from.
    pub source: String,
    pub longitude: bool,
    /// `point` (WKT `POINT (lng lat)`) or `location` (text ending `(lat, lng)`).
    pub socrata_type: String,
}

impl DerivedColumn {
    /// The coordinate out of the cell in `raw`; NULL when the cell has none.
    pub fn sql(&self, raw: &str) -> String {
        const NUM: &str = "[-+0-9.eE]+";
        let (pattern, group) = match (self.socrata_type.as_str(), self.longitude) {
            ("point", true) => (format!("^POINT \\(({NUM}) {NUM}\\)$"), 1),
            ("point", false) => (format!("^POINT \\({NUM} ({NUM})\\)$"), 1),
            (_, false) => (format!("\\(({NUM}), ({NUM})\\)$"), 1),
            (_, true) => (format!("\\(({NUM}), ({NUM})\\)$"), 2),
        };
        format!("TRY_CAST(NULLIF(regexp_extract({raw}, '{pattern}', {group}), '') AS DOUBLE)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub columns: Vec<TableColumn>,
    /// Coordinates derived from point and location columns, after the portal's columns.
    pub derived: Vec<DerivedColumn>,
}

impl TableSchema {
    /// Validates the portal's columns, each stored as its portal type says. Fields starting with `:`
    /// (computed regions) are not stored.
    pub fn from_view(view_columns: &[ViewColumn]) -> Result<TableSchema, String> {
        Self::with_types(view_columns, &Default::default())
    }

    /// [`TableSchema::from_view`], with the catalog's types for some columns (`field name -> one of
    /// [`OVERRIDE_TYPES`]`, validated by the catalog) in place of the portal's. Names the portal does not
    /// have are ignored (see [`TableSchema::overrides_missing`]).
    pub fn with_types(
        view_columns: &[ViewColumn],
        types: &std::collections::BTreeMap<String, String>,
    ) -> Result<TableSchema, String> {
        let mut seen: Vec<String> = SYSTEM_COLUMNS.iter().map(|s| s.to_string()).collect();
        let mut columns = Vec::new();
        for c in view_columns {
            let name = c.field_name.as_str();
            if name.starts_with(':') {
                continue;
            }
            if name.is_empty() || name.len() > 255 || name.chars().any(|ch| ch.is_control()) {
                return Err(format!(
                    "the portal's column name {name:?} is not usable (empty, longer than 255 bytes, or with control characters)"
                ));
            }
            // DuckDB identifiers are case-insensitive: two fields differing only in case would collide.
            let lower = name.to_lowercase();
            if seen.contains(&lower) {
                return Err(format!(
                    "the portal's column name {name:?} collides with another column (DuckDB names ignore case; \
                     socrata_id, socrata_created_at and socrata_updated_at are dobsob's)"
                ));
            }
            seen.push(lower);
            let overridden = types.get(name).cloned();
            columns.push(TableColumn {
                name: name.to_string(),
                socrata_type: c.data_type_name.clone(),
                kind: ColumnKind::from_socrata(overridden.as_deref().unwrap_or(&c.data_type_name)),
                overridden,
            });
        }
        // Coordinates beside point and location columns, unless the name is taken (then the text alone).
        let mut derived = Vec::new();
        for c in &columns {
            if !matches!(c.socrata_type.as_str(), "point" | "location") {
                continue;
            }
            for longitude in [true, false] {
                let name = format!(
                    "{}_{}",
                    c.name,
                    if longitude { "longitude" } else { "latitude" }
                );
                if seen.contains(&name.to_lowercase()) {
                    continue;
                }
                seen.push(name.to_lowercase());
                derived.push(DerivedColumn {
                    name,
                    source: c.name.clone(),
                    longitude,
                    socrata_type: c.socrata_type.clone(),
                });
            }
        }
        Ok(TableSchema { columns, derived })
    }

    /// The names among `types` that are not columns of this table (a catalog's typo, or a column the portal
    /// dropped).
    pub fn overrides_missing<'a>(
        &self,
        types: &'a std::collections::BTreeMap<String, String>,
    ) -> Vec<&'a str> {
        types
            .keys()
            .filter(|k| !self.columns.iter().any(|c| &c.name == *k))
            .map(String::as_str)
            .collect()
    }

    /// A digest of names, types (the catalog's included) and the type mapping: when it changes, the table
    /// is reloaded.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(TYPE_MAPPING_VERSION.as_bytes());
        h.update([b'\n']);
        for c in &self.columns {
            h.update(c.name.as_bytes());
            h.update([0]);
            h.update(c.socrata_type.as_bytes());
            if let Some(t) = &c.overridden {
                h.update([0]);
                h.update(t.as_bytes());
            }
            h.update([b'\n']);
        }
        crate::soda::client::hex(&h.finalize())[..16].to_string()
    }

    pub fn create_table_sql(&self, table: &str) -> String {
        let mut cols = vec![
            "socrata_id VARCHAR NOT NULL".to_string(),
            "socrata_created_at TIMESTAMPTZ".to_string(),
            "socrata_updated_at TIMESTAMPTZ".to_string(),
            "socrata_version VARCHAR".to_string(),
        ];
        cols.extend(
            self.columns
                .iter()
                .map(|c| format!("{} {}", quote_ident(&c.name), c.kind.duckdb_type())),
        );
        cols.extend(
            self.derived
                .iter()
                .map(|d| format!("{} DOUBLE", quote_ident(&d.name))),
        );
        format!("CREATE TABLE {} ({})", quote_ident(table), cols.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> ViewColumn {
        ViewColumn::new(name, t)
    }

    #[test]
    fn type_mapping() {
        let s = TableSchema::from_view(&[
            col("a", "text"),
            col("b", "number"),
            col("c", "calendar_date"),
            col("d", "checkbox"),
            col("e", "point"),
            col("f", "location"),
            col("g", "url"),
            col("h", "date"),
            col("i", "double"),
            col("j", "money"),
            col(":@computed_region_efsh_h5xi", "number"),
        ])
        .unwrap();
        let kinds: Vec<_> = s.columns.iter().map(|c| c.kind.duckdb_type()).collect();
        assert_eq!(
            kinds,
            [
                "VARCHAR",
                "BIGINT",
                "TIMESTAMP",
                "BOOLEAN",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "TIMESTAMPTZ",
                "DOUBLE",
                "BIGINT"
            ],
            "a number column starts as BIGINT and widens as its values need"
        );
    }

    #[test]
    fn the_catalog_types_a_column_and_the_fingerprint_knows() {
        let view = [
            col("bin", "number"),
            col("amount", "number"),
            col("when", "text"),
        ];
        let types: std::collections::BTreeMap<String, String> = [
            ("bin".to_string(), "text".to_string()),
            ("when".to_string(), "calendar_date".to_string()),
            ("not_there".to_string(), "text".to_string()),
        ]
        .into();
        let s = TableSchema::with_types(&view, &types).unwrap();
        let kinds: Vec<_> = s.columns.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [ColumnKind::Text, ColumnKind::Number, ColumnKind::Timestamp]
        );
        assert_eq!(
            s.columns[0].socrata_type, "number",
            "the portal's type is kept beside"
        );
        assert_eq!(s.overrides_missing(&types), ["not_there"]);
        assert_ne!(
            s.fingerprint(),
            TableSchema::from_view(&view).unwrap().fingerprint()
        );
    }

    #[test]
    fn number_types_are_the_narrowest_that_hold_the_values_and_only_ever_widen() {
        use NumberType::*;
        let dec = |precision, scale| Decimal { precision, scale };
        for (shape, want) in [
            ((0, 0), BigInt),
            ((7, 0), BigInt),
            ((18, 0), BigInt),
            ((19, 0), HugeInt),
            ((38, 0), HugeInt),
            ((39, 0), Text),
            ((2, 15), dec(18, 15)),
            ((3, 15), dec(18, 15)),
            ((4, 15), dec(38, 15)),
            ((0, 17), dec(18, 17)),
            ((0, 18), dec(38, 18)),
            ((20, 18), dec(38, 18)),
            ((21, 18), Text),
            ((0, 37), dec(38, 37)),
            ((0, 38), Text),
            ((u32::MAX, 0), Text),
        ] {
            assert_eq!(NumberType::for_shape(shape), want, "{shape:?}");
            if want != Text {
                assert_eq!(NumberType::parse(&want.sql()), Some(want));
            }
        }
        assert_eq!(NumberType::parse("VARCHAR"), Some(Text));
        assert_eq!(NumberType::parse("DOUBLE"), None);
        // An integer column meeting its first decimal: the integer digits it holds, not BIGINT's 18.
        assert_eq!(BigInt.widened(7, (2, 2)), dec(18, 2));
        assert_eq!(BigInt.widened(7, (5, 0)), BigInt);
        assert_eq!(BigInt.widened(7, (20, 0)), HugeInt);
        // Decimals never drop scale; integer digits grow.
        assert_eq!(dec(18, 4).widened(3, (9, 1)), dec(18, 4));
        assert_eq!(dec(18, 4).widened(3, (15, 1)), dec(38, 4));
        assert_eq!(dec(18, 2).widened(3, (0, 6)), dec(18, 6));
        // 30 integer digits and 15 decimals: no decimal holds both exactly.
        assert_eq!(HugeInt.widened(30, (2, 15)), Text);
        assert_eq!(Text.widened(3, (1, 1)), Text);
        assert!(dec(18, 4).holds_shape((14, 4)) && !dec(18, 4).holds_shape((15, 0)));
        assert!(BigInt.holds_shape((18, 0)) && !BigInt.holds_shape((1, 1)));
    }

    #[test]
    fn points_and_locations_get_coordinates_beside_them_unless_the_name_is_taken() {
        let s = TableSchema::from_view(&[
            col("the_geom", "point"),
            col("location", "location"),
            col("location_latitude", "number"),
        ])
        .unwrap();
        let names: Vec<&str> = s.derived.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "the_geom_longitude",
                "the_geom_latitude",
                "location_longitude"
            ]
        );
        assert!(s
            .create_table_sql("t")
            .ends_with("\"the_geom_longitude\" DOUBLE, \"the_geom_latitude\" DOUBLE, \"location_longitude\" DOUBLE)"));
    }

    #[test]
    fn decimal_shapes_are_exact() {
        for (s, want) in [
            ("0", Some((0, 0))),
            ("-0.000", Some((0, 0))),
            ("42.50", Some((2, 1))),
            ("-73.863754707308345", Some((2, 15))),
            ("+007", Some((1, 0))),
            (".5", Some((0, 1))),
            ("5.", Some((1, 0))),
            ("1.5E-3", Some((0, 4))),
            ("1e5", Some((6, 0))),
            ("12.5e+1", Some((3, 0))),
            ("1000", Some((4, 0))),
            ("0.0001000", Some((0, 4))),
            ("123456789012345678901", Some((21, 0))),
            ("", None),
            (".", None),
            ("-", None),
            ("1e", None),
            ("1_000", None),
            (" 5", None),
            ("1,000", None),
            ("NaN", None),
            ("0x10", None),
        ] {
            assert_eq!(decimal_shape(s), want, "{s:?}");
        }
        assert_eq!(
            decimal_shape("1e999999999999999999999"),
            Some((u32::MAX, 0))
        );
        assert_eq!(
            NumberType::for_shape(decimal_shape("-73.863754707308345").unwrap()),
            NumberType::Decimal {
                precision: 18,
                scale: 15
            }
        );
    }

    #[test]
    fn hostile_names_are_quoted_or_rejected() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        let s = TableSchema::from_view(&[col("x\"; DROP TABLE t; --", "text")]).unwrap();
        assert_eq!(
            s.create_table_sql("t"),
            "CREATE TABLE \"t\" (socrata_id VARCHAR NOT NULL, socrata_created_at TIMESTAMPTZ, \
             socrata_updated_at TIMESTAMPTZ, socrata_version VARCHAR, \"x\"\"; DROP TABLE t; --\" VARCHAR)"
        );
        for bad in ["", "a\nb", "Socrata_ID"] {
            assert!(
                TableSchema::from_view(&[col(bad, "text")]).is_err(),
                "{bad:?}"
            );
        }
        assert!(TableSchema::from_view(&[col("Boro", "text"), col("boro", "text")]).is_err());
    }

    #[test]
    fn fingerprint_changes_with_names_and_types_only() {
        let a = TableSchema::from_view(&[col("a", "text"), col("b", "number")]).unwrap();
        let b = TableSchema::from_view(&[col("a", "text"), col("b", "text")]).unwrap();
        let c = TableSchema::from_view(&[col("a", "text"), col("b", "number")]).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), c.fingerprint());
    }
}
