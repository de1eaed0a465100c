//! SoQL query building. The only place where values are spliced into SoQL, always through [`quote`].
//!
//! Paging is keyset paging, never offsets: a full load walks `$order=:id` with `:id > 'LAST'`, an incremental
//! pass walks `$order=:updated_at,:id` from a [`Watermark`]. Both values are strings the server sent us and go
//! back exactly as received: `:id` order is the server's (the ids are obfuscated, their alphabetical order means
//! nothing) and `:updated_at` must not be reformatted.

use std::fmt;

/// The `$select` of every row fetch: system fields (`:id`, `:created_at`, `:updated_at`, ...) and all columns.
/// Always explicit: adding `$order` without a `$select` has been seen to drop computed columns.
pub const SELECT_ALL: &str = ":*,*";

/// A position in the `(:updated_at, :id)` order of a dataset: the last row already committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// `:updated_at` exactly as the portal sent it, e.g. `2026-08-06T09:20:17.588Z`.
    pub updated_at: String,
    /// `:id` exactly as the portal sent it, e.g. `row-yfqn_bkdi~7x27`.
    pub id: String,
}

impl fmt::Display for Watermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {}", self.updated_at, self.id)
    }
}

/// Parses a Socrata timestamp (`2026-08-06T09:20:17.588Z`, or floating without the `Z`; fractions optional)
/// to epoch milliseconds.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let t = s.strip_suffix('Z').unwrap_or(s);
    // The page check reads every timestamp cell: the portal's fixed shape is read by hand (chrono's format
    // interpreter was a tenth of the check), anything else, a leap second included, by chrono.
    if let Some(ms) = fixed_shape_ms(t.as_bytes()) {
        return ms;
    }
    chrono_timestamp_ms(t)
}

/// [`parse_timestamp_ms`] by chrono alone, for anything but the fixed shape (and the tests' reference).
pub fn chrono_timestamp_ms(t: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|d| d.and_utc().timestamp_millis())
}

/// `YYYY-MM-DDTHH:MM:SS` with an optional `.` and 1 to 9 digits: Some(the answer chrono gives), None if `t`
/// is not in that shape or its second is 60 (chrono's leap second: left to chrono).
fn fixed_shape_ms(t: &[u8]) -> Option<Option<i64>> {
    fn num(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    }
    if t.len() < 19
        || t[4] != b'-'
        || t[7] != b'-'
        || t[10] != b'T'
        || t[13] != b':'
        || t[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(&t[0..4])?, num(&t[5..7])?, num(&t[8..10])?);
    let (hour, minute, second) = (num(&t[11..13])?, num(&t[14..16])?, num(&t[17..19])?);
    let nanos = match &t[19..] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(digits)? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    if second >= 60 {
        return None;
    }
    Some(
        chrono::NaiveDate::from_ymd_opt(year as i32, month, day)
            .and_then(|d| d.and_hms_nano_opt(hour, minute, second, nanos))
            .map(|d| d.and_utc().timestamp_millis()),
    )
}

/// `ts` (a Socrata timestamp) moved by `delta_ms`, in the same shape: with `Z` if it had one, milliseconds.
/// Only for the overlap window's start, which is a time of our making; cursors are echoed verbatim.
pub fn shift_timestamp(ts: &str, delta_ms: i64) -> Option<String> {
    let ms = parse_timestamp_ms(ts)?.checked_add(delta_ms)?;
    let t = chrono::DateTime::from_timestamp_millis(ms)?;
    let zone = if ts.ends_with('Z') { "Z" } else { "" };
    Some(format!("{}{zone}", t.format("%Y-%m-%dT%H:%M:%S%.3f")))
}

/// Quotes a value as a SoQL string literal: single quotes, with embedded quotes doubled.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The query parameters of one request to `/resource/{id}.{csv,json}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub select: String,
    pub where_: Option<String>,
    pub order: Option<String>,
    pub limit: Option<u64>,
}

impl PageQuery {
    /// A page of a full load: every field, in `:id` order, after the last id already loaded.
    pub fn full_page(after_id: Option<&str>, limit: u64) -> Self {
        PageQuery {
            select: SELECT_ALL.into(),
            where_: after_id.map(|id| format!(":id > {}", quote(id))),
            order: Some(":id".into()),
            limit: Some(limit),
        }
    }

    /// A page of an incremental pass: every field of rows changed after `wm` (all rows without one), in
    /// `(:updated_at, :id)` order. Ties on `:updated_at` are common (bulk updates), so the id breaks them.
    pub fn incremental_page(wm: Option<&Watermark>, limit: u64) -> Self {
        PageQuery {
            select: SELECT_ALL.into(),
            where_: wm.map(|wm| {
                let t = quote(&wm.updated_at);
                format!(
                    ":updated_at > {t} OR (:updated_at = {t} AND :id > {})",
                    quote(&wm.id)
                )
            }),
            order: Some(":updated_at,:id".into()),
            limit: Some(limit),
        }
    }

    /// The first page of an incremental pass that re-reads an overlap window: every row changed at or after
    /// `since` (a time behind the watermark), in `(:updated_at, :id)` order.
    pub fn incremental_from(since: &str, limit: u64) -> Self {
        PageQuery {
            select: SELECT_ALL.into(),
            where_: Some(format!(":updated_at >= {}", quote(since))),
            order: Some(":updated_at,:id".into()),
            limit: Some(limit),
        }
    }

    /// The rows with these ids (rows the source has and the warehouse lacks), in `:id` order.
    pub fn rows_with_ids(ids: &[String]) -> Self {
        let list: Vec<String> = ids.iter().map(|id| quote(id)).collect();
        PageQuery {
            select: SELECT_ALL.into(),
            where_: Some(format!(":id IN ({})", list.join(", "))),
            order: Some(":id".into()),
            limit: Some(ids.len().max(1) as u64),
        }
    }

    /// The number of rows a pass starting with `first` covers: the same `$where`, `count(*)`.
    pub fn count_like(first: &PageQuery) -> Self {
        PageQuery {
            select: "count(*)".into(),
            where_: first.where_.clone(),
            order: None,
            limit: None,
        }
    }

    /// A page of the id set (for deletion detection): ids only, in `:id` order.
    pub fn id_page(after_id: Option<&str>, limit: u64) -> Self {
        Self::id_page_since(after_id, None, limit)
    }

    /// A page of the ids of rows changed at or after `since` (all rows without it), in `:id` order.
    pub fn id_page_since(after_id: Option<&str>, since: Option<&str>, limit: u64) -> Self {
        let conds: Vec<String> = since
            .map(|t| format!(":updated_at >= {}", quote(t)))
            .into_iter()
            .chain(after_id.map(|id| format!(":id > {}", quote(id))))
            .collect();
        PageQuery {
            select: ":id".into(),
            where_: (!conds.is_empty()).then(|| conds.join(" AND ")),
            order: Some(":id".into()),
            limit: Some(limit),
        }
    }

    /// The newest row's position: where an incremental pass starts after a full load that began now.
    pub fn newest() -> Self {
        PageQuery {
            select: ":id,:updated_at".into(),
            where_: None,
            order: Some(":updated_at DESC,:id DESC".into()),
            limit: Some(1),
        }
    }

    /// The number of rows in the dataset (`[{"count":"314245"}]`), or of those changed after `since`.
    pub fn count(since: Option<&Watermark>) -> Self {
        PageQuery {
            select: "count(*)".into(),
            where_: Self::incremental_page(since, 1).where_,
            order: None,
            limit: None,
        }
    }

    /// The parameters in request order, ready for URL encoding.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![("$select", self.select.clone())];
        if let Some(w) = &self.where_ {
            p.push(("$where", w.clone()));
        }
        if let Some(o) = &self.order {
            p.push(("$order", o.clone()));
        }
        if let Some(l) = self.limit {
            p.push(("$limit", l.to_string()));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_with_and_without_zone_and_fraction() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01"), Some(1000));
        assert_eq!(parse_timestamp_ms("yesterday"), None);
        assert_eq!(parse_timestamp_ms("20190312"), None);
    }

    #[test]
    fn shifted_timestamps_keep_the_shape() {
        assert_eq!(
            shift_timestamp("2026-08-06T09:20:17.588Z", -300_000).as_deref(),
            Some("2026-08-06T09:15:17.588Z")
        );
        assert_eq!(
            shift_timestamp("2026-01-01T00:00:00", -1).as_deref(),
            Some("2025-12-31T23:59:59.999")
        );
        assert_eq!(shift_timestamp("soon", 1), None);
    }

    #[test]
    fn ids_and_overlap_queries() {
        let q = PageQuery::rows_with_ids(&["row-a".into(), "row-b'c".into()]);
        assert_eq!(q.where_.as_deref(), Some(":id IN ('row-a', 'row-b''c')"));
        assert_eq!(q.limit, Some(2));
        let o = PageQuery::incremental_from("2026-01-01T00:00:00.000Z", 7);
        assert_eq!(
            o.where_.as_deref(),
            Some(":updated_at >= '2026-01-01T00:00:00.000Z'")
        );
        assert_eq!(PageQuery::count_like(&o).where_, o.where_);
        assert_eq!(PageQuery::count_like(&o).select, "count(*)");
        let r = PageQuery::id_page_since(Some("row-a"), Some("2026-01-01T00:00:00.000Z"), 9);
        assert_eq!(
            r.where_.as_deref(),
            Some(":updated_at >= '2026-01-01T00:00:00.000Z' AND :id > 'row-a'")
        );
        assert_eq!(PageQuery::id_page(None, 9).where_, None);
    }

    #[test]
    fn quote_doubles_single_quotes() {
        assert_eq!(quote("row-ab~cd"), "'row-ab~cd'");
        assert_eq!(quote("o'brien"), "'o''brien'");
        assert_eq!(quote("' OR 1=1 --"), "''' OR 1=1 --'");
    }

    #[test]
    fn incremental_page_breaks_ties_with_the_id_and_echoes_the_time_verbatim() {
        let wm = Watermark {
            updated_at: "2026-08-06T09:20:17.588Z".into(),
            id: "row-yfqn_bkdi~7x27".into(),
        };
        let q = PageQuery::incremental_page(Some(&wm), 500);
        assert_eq!(
            q.where_.as_deref(),
            Some(
                ":updated_at > '2026-08-06T09:20:17.588Z' OR (:updated_at = '2026-08-06T09:20:17.588Z' \
                 AND :id > 'row-yfqn_bkdi~7x27')"
            )
        );
        assert_eq!(q.order.as_deref(), Some(":updated_at,:id"));
        assert_eq!(PageQuery::incremental_page(None, 5).where_, None);
        assert_eq!(
            q.params(),
            vec![
                ("$select", ":*,*".to_string()),
                ("$where", q.where_.clone().unwrap()),
                ("$order", ":updated_at,:id".to_string()),
                ("$limit", "500".to_string())
            ]
        );
    }

    #[test]
    fn full_page_starts_without_where_then_pages_by_id() {
        let first = PageQuery::full_page(None, 50_000);
        assert_eq!(first.where_, None);
        assert_eq!(first.order.as_deref(), Some(":id"));
        assert_eq!(first.select, ":*,*");
        let next = PageQuery::full_page(Some("row-x'y"), 10);
        assert_eq!(next.where_.as_deref(), Some(":id > 'row-x''y'"));
    }

    #[test]
    fn count_and_newest_shapes() {
        assert_eq!(
            PageQuery::count(None).params(),
            vec![("$select", "count(*)".to_string())]
        );
        let wm = Watermark {
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            id: "row-a".into(),
        };
        assert_eq!(
            PageQuery::count(Some(&wm)).where_,
            PageQuery::incremental_page(Some(&wm), 9).where_
        );
        assert_eq!(
            PageQuery::newest().order.as_deref(),
            Some(":updated_at DESC,:id DESC")
        );
        assert_eq!(PageQuery::id_page(None, 5).select, ":id");
    }
}
