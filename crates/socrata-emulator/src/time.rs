//! The emulator's own reading of the portal's timestamps, written from what the portal sends and accepts
//! (`../shared/SOCRATA.md`: `:created_at` / `:updated_at` are UTC with millisecond precision, e.g.
//! `2026-08-06T09:20:17.588Z`), and deliberately not the client's parser: a test double that shared the
//! client's assumption about the format could not catch the client getting it wrong.

/// Epoch milliseconds of `YYYY-MM-DDTHH:MM:SS`, with `.` and one to three fraction digits and a `Z`
/// optional (a SoQL timestamp literal may omit both; the portal stores no finer than milliseconds, so a
/// fourth digit is refused as the portal's typechecker would). `None` for anything else.
pub fn portal_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (d.next()?, d.next()?, d.next()?);
    let (clock, frac) = match time.split_once('.') {
        Some((c, f)) => (c, Some(f)),
        None => (time, None),
    };
    let mut c = clock.splitn(3, ':');
    let (h, mi, se) = (c.next()?, c.next()?, c.next()?);
    let digits = |v: &str, n: usize| v.len() == n && v.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y, 4)
        && digits(mo, 2)
        && digits(da, 2)
        && digits(h, 2)
        && digits(mi, 2)
        && digits(se, 2))
    {
        return None;
    }
    let ms = match frac {
        None => 0,
        Some(f) if (1..=3).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<i64>().ok()? * 10i64.pow(3 - f.len() as u32)
        }
        Some(_) => return None,
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(y.parse().ok()?, mo.parse().ok()?, da.parse().ok()?)?;
    let time =
        chrono::NaiveTime::from_hms_opt(h.parse().ok()?, mi.parse().ok()?, se.parse().ok()?)?;
    Some(date.and_time(time).and_utc().timestamp_millis() + ms)
}

#[cfg(test)]
mod tests {
    use super::portal_ms;

    #[test]
    fn reads_the_portals_shapes_and_refuses_the_rest() {
        let t = 1_786_008_017_000; // 2026-08-06T09:20:17Z
        assert_eq!(portal_ms("2026-08-06T09:20:17.588Z"), Some(t + 588));
        assert_eq!(portal_ms("2026-08-06T09:20:17.588"), Some(t + 588));
        assert_eq!(portal_ms("2026-08-06T09:20:17.5"), Some(t + 500));
        assert_eq!(portal_ms("2026-08-06T09:20:17.05Z"), Some(t + 50));
        assert_eq!(portal_ms("2026-08-06T09:20:17"), Some(t));
        for bad in [
            "2026-08-06T09:20:17.5881Z",
            "2026-08-06 09:20:17",
            "2026-08-06",
            "2026-13-06T09:20:17",
            "2026-08-06T24:00:00",
            "2026-08-06T09:20:17.",
            "20260806T092017",
            "",
        ] {
            assert_eq!(portal_ms(bad), None, "{bad}");
        }
    }
}
