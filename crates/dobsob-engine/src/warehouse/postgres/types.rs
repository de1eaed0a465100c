//! The PostgreSQL types of a dataset's columns, chosen for PostgreSQL (docs/warehouse.md has them beside
//! DuckDB's): `numeric` without a declared scale holds every portal number exactly, so no column is ever
//! widened; instants are `timestamptz`, floating dates `timestamp`; points and locations keep their text and
//! gain `double precision` coordinates. Every name is quoted ([`quote_ident`]): names come from the portal.

use crate::warehouse::schema::{quote_ident, ColumnKind, TableSchema};

/// The PostgreSQL type that stores a column of `kind`.
pub fn pg_type(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Text => "text",
        ColumnKind::Number => "numeric",
        ColumnKind::Double => "double precision",
        ColumnKind::Timestamp => "timestamp",
        ColumnKind::Instant => "timestamptz",
        ColumnKind::Boolean => "boolean",
    }
}

/// `schema.table`, both quoted.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// The dataset's table: the system columns, the portal's columns, the derived coordinates.
pub fn create_table_sql(schema: &TableSchema, pg_schema: &str, table: &str) -> String {
    let mut cols = vec![
        "socrata_id text NOT NULL".to_string(),
        "socrata_created_at timestamptz".to_string(),
        "socrata_updated_at timestamptz".to_string(),
        "socrata_version text".to_string(),
    ];
    cols.extend(
        schema
            .columns
            .iter()
            .map(|c| format!("{} {}", quote_ident(&c.name), pg_type(c.kind))),
    );
    cols.extend(
        schema
            .derived
            .iter()
            .map(|d| format!("{} double precision", quote_ident(&d.name))),
    );
    format!(
        "CREATE TABLE {} ({})",
        qualified(pg_schema, table),
        cols.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soda::ViewColumn;

    #[test]
    fn every_portal_type_has_its_postgres_type_and_names_are_quoted() {
        let s = TableSchema::from_view(&[
            ViewColumn::new("a", "text"),
            ViewColumn::new("b", "number"),
            ViewColumn::new("c", "calendar_date"),
            ViewColumn::new("d", "checkbox"),
            ViewColumn::new("e", "point"),
            ViewColumn::new("f", "date"),
            ViewColumn::new("g", "double"),
            ViewColumn::new("h\"x", "money"),
        ])
        .unwrap();
        let sql = create_table_sql(&s, "nyc", "t");
        assert_eq!(
            sql,
            "CREATE TABLE \"nyc\".\"t\" (socrata_id text NOT NULL, socrata_created_at timestamptz, \
             socrata_updated_at timestamptz, socrata_version text, \"a\" text, \"b\" numeric, \"c\" timestamp, \
             \"d\" boolean, \"e\" text, \"f\" timestamptz, \"g\" double precision, \"h\"\"x\" numeric, \
             \"e_longitude\" double precision, \"e_latitude\" double precision)"
        );
    }
}
