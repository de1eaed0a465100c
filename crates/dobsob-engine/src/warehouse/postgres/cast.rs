//! From a staged page (every column text, `c0..cN` in header order) to typed rows in PostgreSQL: the cast
//! of each column's text, and the cells that do not fit their column's type, found so they are kept in
//! `dobsob.uncastable` rather than silently NULL.
//!
//! A value that does not fit must not fail the page (PostgreSQL's casts raise errors), and the casts must
//! accept exactly what the DuckDB target accepts, so both warehouses hold the same values. Each cast is a
//! grammar check (a regular expression, the same grammar as DuckDB's), then the cast: straight where the
//! grammar guarantees it succeeds, else through `dobsob.try_*` (NULL instead of an error; see
//! `sql/postgres/try_cast_*.sql`).

use crate::warehouse::schema::{quote_ident, quote_literal, ColumnKind, TableSchema};
use crate::warehouse::WarehouseError;

/// A plain decimal (no exponent): `numeric`'s input takes any of them of modest length.
const PLAIN_NUMBER: &str = "^[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)$";
/// The SoQL/JSON number grammar dobsob accepts in a number column (as for DuckDB).
const NUMBER: &str = "^[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?$";
/// A Socrata date or time, floating or with `Z`, as DuckDB's target reads them.
const DATE: &str =
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?)?Z?$";
/// A date and time that surely exists (years 1000-9999, every month's days but February 29th, hours to
/// 23): cast straight; the rest of [`DATE`] goes through the safe cast (February 29th and 30th, year 0,
/// 24:00).
const SURE_DATE: &str = "^[1-9][0-9]{3}-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)\
                         |(0[13578]|1[02])-31)([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,6})?)?)?Z?$";

/// The typed value of text `raw` for a column of `kind`, NULL when it does not fit.
pub fn cast_sql(kind: ColumnKind, raw: &str) -> String {
    let (plain, number, date, sure) = (
        quote_literal(PLAIN_NUMBER),
        quote_literal(NUMBER),
        quote_literal(DATE),
        quote_literal(SURE_DATE),
    );
    match kind {
        ColumnKind::Text => raw.to_string(),
        ColumnKind::Number => format!(
            "CASE WHEN {raw} ~ {plain} AND length({raw}) <= 1000 THEN {raw}::numeric \
             WHEN {raw} ~ {number} THEN dobsob.try_numeric({raw}) END"
        ),
        ColumnKind::Double => {
            format!("CASE WHEN {raw} ~ {number} THEN dobsob.try_double({raw}) END")
        }
        ColumnKind::Timestamp => format!(
            "CASE WHEN {raw} ~ {sure} THEN {raw}::timestamp \
             WHEN {raw} ~ {date} THEN dobsob.try_timestamp({raw}) END"
        ),
        // dobsob's sessions are in UTC: a time without `Z` is UTC, as for DuckDB.
        ColumnKind::Instant => format!(
            "CASE WHEN {raw} ~ {sure} THEN {raw}::timestamptz \
             WHEN {raw} ~ {date} THEN dobsob.try_timestamptz({raw}) END"
        ),
        ColumnKind::Boolean => {
            format!("CASE {raw} WHEN 'true' THEN true WHEN 'false' THEN false END")
        }
    }
}

/// The typed value of text `raw` by PostgreSQL's own cast, which raises on a value that does not fit: for
/// pages the page check found certain to cast (see [`insert_sql`]'s `straight`). A page that raises after
/// all is loaded again with [`cast_sql`] (`PgWarehouse`'s insert does so under a savepoint).
pub fn straight_cast_sql(kind: ColumnKind, raw: &str) -> String {
    match kind {
        ColumnKind::Text => raw.to_string(),
        ColumnKind::Number => format!("{raw}::numeric"),
        ColumnKind::Double => format!("{raw}::double precision"),
        ColumnKind::Timestamp => format!("{raw}::timestamp"),
        ColumnKind::Instant => format!("{raw}::timestamptz"),
        // PostgreSQL's boolean input takes more than the portal's two words: the careful form always.
        ColumnKind::Boolean => cast_sql(kind, raw),
    }
}

/// A coordinate from a point's or location's text (`POINT (lon lat)`, `... (lat, lon)`), NULL when absent.
/// The pattern admits only numbers a double holds (at most 30 digits on each side of the point and an
/// exponent of at most two digits: between 1e-129 and 1e129), so the cast is straight; anything else reads
/// as no coordinate (the text stays).
fn coordinate_sql(socrata_type: &str, longitude: bool, raw: &str) -> String {
    const ANY: &str = "[-+0-9.eE]+";
    const NUM: &str = "[+-]?(?:[0-9]{1,30}\\.?[0-9]{0,30}|\\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,2})?";
    let pattern = match (socrata_type, longitude) {
        ("point", true) => format!("^POINT \\(({NUM}) {ANY}\\)$"),
        ("point", false) => format!("^POINT \\({ANY} ({NUM})\\)$"),
        (_, false) => format!("\\(({NUM}), {ANY}\\)$"),
        (_, true) => format!("\\({ANY}, ({NUM})\\)$"),
    };
    format!(
        "substring({raw} from {})::double precision",
        quote_literal(&pattern)
    )
}

/// `INSERT INTO table (...) SELECT <typed columns> FROM pg_temp._dobsob_page` for a page with `header`.
///
/// `straight`: PostgreSQL's own casts ([`straight_cast_sql`]), for a page the page check found certain to
/// cast (about three times faster: no grammar checks, and no search for uncastable cells after); else the
/// careful casts ([`cast_sql`]), which never raise.
pub fn insert_sql(
    table: &str,
    schema: &TableSchema,
    header: &[String],
    straight: bool,
) -> Result<String, WarehouseError> {
    let cast = |kind: ColumnKind, raw: &str| {
        if straight {
            straight_cast_sql(kind, raw)
        } else {
            cast_sql(kind, raw)
        }
    };
    let pos = |name: &str| header.iter().position(|h| h == name);
    let sys = |name: &str| {
        pos(name)
            .map(|i| format!("c{i}"))
            .ok_or_else(|| WarehouseError::State(format!("page has no {name} column")))
    };
    let mut columns: Vec<String> = [
        "socrata_id",
        "socrata_created_at",
        "socrata_updated_at",
        "socrata_version",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut select = vec![
        sys(":id")?,
        cast(ColumnKind::Instant, &sys(":created_at")?),
        cast(ColumnKind::Instant, &sys(":updated_at")?),
        pos(":version")
            .map(|i| format!("c{i}"))
            .unwrap_or_else(|| "NULL".into()),
    ];
    for c in &schema.columns {
        columns.push(quote_ident(&c.name));
        select.push(match pos(&c.name) {
            Some(i) => cast(c.kind, &format!("c{i}")),
            None => "NULL".into(),
        });
    }
    for d in &schema.derived {
        columns.push(quote_ident(&d.name));
        select.push(match pos(&d.source) {
            Some(i) => coordinate_sql(&d.socrata_type, d.longitude, &format!("c{i}")),
            None => "NULL".into(),
        });
    }
    Ok(format!(
        "INSERT INTO {table} ({}) SELECT {} FROM pg_temp._dobsob_page",
        columns.join(", "),
        select.join(", ")
    ))
}

/// For each typed column the page carries: the statement that keeps its uncastable cells (parameters:
/// the table's name, the column's name, its Socrata type), the column, and its Socrata type.
pub fn uncastable_sql(
    schema: &TableSchema,
    header: &[String],
) -> Result<Vec<(String, String, String)>, WarehouseError> {
    let id = header
        .iter()
        .position(|h| h == ":id")
        .ok_or_else(|| WarehouseError::State("page has no :id column".into()))?;
    Ok(schema
        .columns
        .iter()
        .filter(|c| c.kind != ColumnKind::Text)
        .filter_map(|c| {
            let i = header.iter().position(|h| h == &c.name)?;
            let raw = format!("c{i}");
            Some((
                format!(
                    "INSERT INTO dobsob.uncastable SELECT $1, c{id}, $2, $3, {raw} \
                     FROM pg_temp._dobsob_page WHERE {raw} IS NOT NULL AND ({}) IS NULL",
                    cast_sql(c.kind, &raw)
                ),
                c.name.clone(),
                c.socrata_type.clone(),
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soda::ViewColumn;

    fn header(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|s| s.to_string()).collect()
    }

    /// The portal's names reach SQL quoted only; a column the page lacks is NULL; fields the table does
    /// not have (computed regions) are left out; the page's columns are found by name, in any order.
    #[test]
    fn the_insert_quotes_every_name_and_maps_fields_by_name() {
        let schema = TableSchema::from_view(&[
            ViewColumn::new("n\"; DROP TABLE x; --", "number"),
            ViewColumn::new("gone", "text"),
            ViewColumn::new("p", "point"),
        ])
        .unwrap();
        let h = header(&[
            ":updated_at",
            "p",
            ":id",
            ":@computed_region_x",
            ":created_at",
            "n\"; DROP TABLE x; --",
        ]);
        let sql = insert_sql("\"nyc\".\"t\"", &schema, &h, false).unwrap();
        assert!(sql.starts_with(
            "INSERT INTO \"nyc\".\"t\" (socrata_id, socrata_created_at, socrata_updated_at, socrata_version, \
             \"n\"\"; DROP TABLE x; --\", \"gone\", \"p\", \"p_longitude\", \"p_latitude\") SELECT c2, "
        ), "{sql}");
        assert!(sql.contains(", NULL, c1, substring(c1 from '^POINT \\(([+-]?(?:[0-9]{1,30}\\.?[0-9]{0,30}|\\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,2})?) [-+0-9.eE]+\\)$')::double precision"), "{sql}");
        assert!(!sql.contains("c3"), "{sql}");
        let kept = uncastable_sql(&schema, &h).unwrap();
        assert_eq!(kept.len(), 1, "only the typed column the page carries");
        assert_eq!(kept[0].1, "n\"; DROP TABLE x; --");
        assert!(
            kept[0].0.contains("SELECT $1, c2, $2, $3, c5"),
            "{}",
            kept[0].0
        );
        // A page without :id is refused, not loaded without ids.
        assert!(insert_sql(
            "t",
            &schema,
            &header(&[":created_at", ":updated_at"]),
            false
        )
        .is_err());
        // Straight: PostgreSQL's own casts, no grammar checks.
        let straight = insert_sql("t", &schema, &h, true).unwrap();
        assert!(
            straight.contains("c5::numeric") && !straight.contains("CASE"),
            "{straight}"
        );
    }
}
