//! When a dataset is due: its publication frequency since the last success, less a grace, so that a nightly
//! run at a fixed time never skips a daily dataset because yesterday's run ended a few minutes later.

use chrono::{DateTime, Utc};

use crate::catalog::Frequency;

/// The default grace (seconds): a dataset is due this long before its period is over.
pub const DEFAULT_GRACE_SECS: i64 = crate::defaults::GRACE_SECS as i64;

/// Whether a dataset is due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Never synced successfully.
    Never,
    /// Due since this time.
    Since(DateTime<Utc>),
    /// Not due until this time.
    NotUntil(DateTime<Utc>),
}

impl Due {
    pub fn is_due(&self) -> bool {
        !matches!(self, Due::NotUntil(_))
    }

    /// The reason in words, for the plan, the summary, the report and the ledger.
    pub fn reason(&self) -> String {
        let f = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
        match self {
            Due::Never => "never synced".into(),
            Due::Since(t) => format!("due since {}", f(t)),
            Due::NotUntil(t) => format!("not due until {}", f(t)),
        }
    }

    /// When it is (or was) next due; None if never synced.
    pub fn next_due_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Due::Never => None,
            Due::Since(t) | Due::NotUntil(t) => Some(*t),
        }
    }
}

/// When a dataset of `frequency`, last synced successfully at `last_success`, is due, with `grace_secs`.
pub fn due(
    frequency: Frequency,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    grace_secs: i64,
) -> Due {
    let Some(last) = last_success else {
        return Due::Never;
    };
    let period = chrono::Duration::seconds(frequency.period().as_secs() as i64);
    let at = last + period - chrono::Duration::seconds(grace_secs);
    if now >= at {
        Due::Since(at)
    } else {
        Due::NotUntil(at)
    }
}

/// An RFC 3339 time from the ledger.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn due_after_the_period_less_the_grace() {
        let last = Some(t("2026-11-30T02:35:00Z"));
        // A nightly run at 02:30 is due although yesterday's ended at 02:35.
        assert_eq!(
            due(Frequency::Daily, last, t("2026-12-01T02:30:00Z"), 3600),
            Due::Since(t("2026-12-01T01:35:00Z"))
        );
        // Without the grace it would be skipped.
        let d = due(Frequency::Daily, last, t("2026-12-01T02:30:00Z"), 0);
        assert_eq!(d, Due::NotUntil(t("2026-12-01T02:35:00Z")));
        assert_eq!(d.reason(), "not due until 2026-12-01 02:35 UTC");
        assert!(!due(Frequency::Weekly, last, t("2026-12-03T00:00:00Z"), 3600).is_due());
        assert!(due(Frequency::Weekly, last, t("2026-12-07T02:00:00Z"), 3600).is_due());
        assert!(!due(Frequency::Quarterly, last, t("2027-01-15T00:00:00Z"), 3600).is_due());
        assert_eq!(
            due(Frequency::Daily, None, t("2026-12-01T00:00:00Z"), 0),
            Due::Never
        );
        assert!(Due::Never.is_due());
    }
}
