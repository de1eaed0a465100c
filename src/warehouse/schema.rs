//! From Socrata metadata to a DuckDB table: column names (validated, always quoted), type mapping, and the
//! SQL expressions that turn a page's text cells into typed values.
//!
//! Column names come from the portal and are untrusted: they are checked here ([`TableSchema::from_view`]) and
//! only ever reach SQL through [`quote_ident`]. Values that will not cast are not turned into NULL silently:
//! [`TableColumn::uncastable_sql`] finds them so the merge can keep them in `dobsob.uncastable`.

use sha2::{Digest, Sha256};

use crate::soda::ViewColumn;

/// The system columns every dataset table starts with.
pub const SYSTEM_COLUMNS: [&str; 3] = ["socrata_id", "socrata_created_at", "socrata_updated_at"];

/// Quotes an identifier for DuckDB: double quotes, embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for DuckDB (only for values that cannot be bound, like a `read_csv` path).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// How a Socrata type is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `text` and every type kept as received (geometry, location, url, ...): VARCHAR.
    Text,
    /// `number`, `money`, `percent`, `double`: DECIMAL(38,10). Values with more than 28 integer digits or
    /// more than 10 decimals cannot be held exactly and go to `dobsob.uncastable`.
    Number,
    /// `calendar_date` (floating) and `date` (fixed, `Z`): TIMESTAMP, UTC for fixed timestamps.
    Timestamp,
    /// `checkbox`: BOOLEAN.
    Boolean,
}

impl ColumnKind {
    pub fn from_socrata(data_type_name: &str) -> ColumnKind {
        match data_type_name {
            "number" | "money" | "percent" | "double" => ColumnKind::Number,
            "calendar_date" | "date" => ColumnKind::Timestamp,
            "checkbox" => ColumnKind::Boolean,
            _ => ColumnKind::Text,
        }
    }

    pub fn duckdb_type(self) -> &'static str {
        match self {
            ColumnKind::Text => "VARCHAR",
            ColumnKind::Number => "DECIMAL(38,10)",
            ColumnKind::Timestamp => "TIMESTAMP",
            ColumnKind::Boolean => "BOOLEAN",
        }
    }

    /// The typed value of the text cell in `raw` (a quoted column of the staging table); NULL if it will not
    /// cast exactly.
    pub fn cast_sql(self, raw: &str) -> String {
        match self {
            ColumnKind::Text => raw.to_string(),
            // A plain cast would round extra decimals away; only exact values are cast.
            ColumnKind::Number => format!(
                "CASE WHEN regexp_full_match({raw}, '[+-]?[0-9]{{1,28}}(\\.[0-9]{{1,10}})?') \
                 THEN CAST({raw} AS DECIMAL(38,10)) END"
            ),
            ColumnKind::Timestamp => timestamp_sql(raw),
            ColumnKind::Boolean => {
                format!("CASE {raw} WHEN 'true' THEN true WHEN 'false' THEN false END")
            }
        }
    }
}

/// A Socrata timestamp (`2026-08-06T09:20:17.588Z` or floating `2023-06-03T00:00:00.000`) as a TIMESTAMP.
pub fn timestamp_sql(raw: &str) -> String {
    format!("TRY_CAST(regexp_replace({raw}, 'Z$', '') AS TIMESTAMP)")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// The Socrata fieldName, used as the DuckDB column name.
    pub name: String,
    pub socrata_type: String,
    pub kind: ColumnKind,
}

impl TableColumn {
    /// A predicate true when the cell in `raw` holds a value its type cannot hold.
    pub fn uncastable_sql(&self, raw: &str) -> Option<String> {
        (self.kind != ColumnKind::Text).then(|| {
            format!(
                "{raw} IS NOT NULL AND ({}) IS NULL",
                self.kind.cast_sql(raw)
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub columns: Vec<TableColumn>,
}

impl TableSchema {
    /// Validates the portal's columns. Fields starting with `:` (computed regions) are not stored.
    pub fn from_view(view_columns: &[ViewColumn]) -> Result<TableSchema, String> {
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
            columns.push(TableColumn {
                name: name.to_string(),
                socrata_type: c.data_type_name.clone(),
                kind: ColumnKind::from_socrata(&c.data_type_name),
            });
        }
        Ok(TableSchema { columns })
    }

    /// A digest of names and types: when it changes, the table is reloaded.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for c in &self.columns {
            h.update(c.name.as_bytes());
            h.update([0]);
            h.update(c.socrata_type.as_bytes());
            h.update([b'\n']);
        }
        crate::soda::client::hex(&h.finalize())[..16].to_string()
    }

    pub fn create_table_sql(&self, table: &str) -> String {
        let mut cols = vec![
            "socrata_id VARCHAR NOT NULL".to_string(),
            "socrata_created_at TIMESTAMP".to_string(),
            "socrata_updated_at TIMESTAMP".to_string(),
        ];
        cols.extend(
            self.columns
                .iter()
                .map(|c| format!("{} {}", quote_ident(&c.name), c.kind.duckdb_type())),
        );
        format!("CREATE TABLE {} ({})", quote_ident(table), cols.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> ViewColumn {
        ViewColumn {
            field_name: name.into(),
            data_type_name: t.into(),
            name: name.into(),
        }
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
            col(":@computed_region_efsh_h5xi", "number"),
        ])
        .unwrap();
        let kinds: Vec<_> = s.columns.iter().map(|c| c.kind.duckdb_type()).collect();
        assert_eq!(
            kinds,
            [
                "VARCHAR",
                "DECIMAL(38,10)",
                "TIMESTAMP",
                "BOOLEAN",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "TIMESTAMP"
            ]
        );
    }

    #[test]
    fn hostile_names_are_quoted_or_rejected() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        let s = TableSchema::from_view(&[col("x\"; DROP TABLE t; --", "text")]).unwrap();
        assert_eq!(
            s.create_table_sql("t"),
            "CREATE TABLE \"t\" (socrata_id VARCHAR NOT NULL, socrata_created_at TIMESTAMP, \
             socrata_updated_at TIMESTAMP, \"x\"\"; DROP TABLE t; --\" VARCHAR)"
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
