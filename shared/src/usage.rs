//! Usage per tenant and UTC day (`GET /v1/usage`), and the calendar arithmetic it needs.

use serde::{Deserialize, Serialize};

/// Longest range one usage request may cover.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Range when the request names none: the last 30 days, today included.
pub const DEFAULT_RANGE_DAYS: i64 = 30;

const MS_PER_DAY: u64 = 86_400_000;

/// One tenant's usage on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Calls started.
    pub calls: u64,
    /// Replies completed (interrupted ones included).
    pub turns: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Reply tokens.
    pub output_tokens: u64,
    /// Minutes of the calls that started this day and have ended: each call's length rounded
    /// up to a whole minute, as carriers bill a call (a call still live counts once it ends).
    #[serde(default)]
    pub minutes: u64,
    /// Tool calls the agents made (the tenant's tools and built-ins).
    #[serde(default)]
    pub tool_calls: u64,
}

/// `GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The tenant.
    pub tenant_id: String,
    /// First day, inclusive.
    pub from: String,
    /// Last day, inclusive.
    pub to: String,
    /// Days with any usage, in order.
    pub days: Vec<UsageDay>,
    /// Sums over `days` (its `day` is `total`).
    pub totals: UsageDay,
}

impl UsageReport {
    /// Builds the report, summing the days.
    pub fn new(tenant_id: &str, range: DayRange, days: Vec<UsageDay>) -> Self {
        let mut totals = UsageDay {
            day: "total".into(),
            calls: 0,
            turns: 0,
            input_tokens: 0,
            output_tokens: 0,
            minutes: 0,
            tool_calls: 0,
        };
        for day in &days {
            totals.calls += day.calls;
            totals.turns += day.turns;
            totals.input_tokens += day.input_tokens;
            totals.output_tokens += day.output_tokens;
            totals.minutes += day.minutes;
            totals.tool_calls += day.tool_calls;
        }
        Self {
            tenant_id: tenant_id.to_owned(),
            from: format_day(range.first),
            to: format_day(range.last),
            days,
            totals,
        }
    }
}

/// Why a usage request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// Not `YYYY-MM-DD`, or no such date.
    #[error("{0:?} is not a date like 2026-11-21")]
    BadDate(String),
    /// `from` after `to`.
    #[error("from is after to")]
    Reversed,
    /// More than [`MAX_RANGE_DAYS`].
    #[error("a usage range covers at most {MAX_RANGE_DAYS} days")]
    TooLong,
}

/// Days since 1970-01-01 (UTC).
pub type EpochDay = i64;

/// An inclusive range of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    /// First day.
    pub first: EpochDay,
    /// Last day.
    pub last: EpochDay,
}

/// The range a request asks for; missing ends default to the last [`DEFAULT_RANGE_DAYS`]
/// ending today (`now_ms`).
pub fn day_range(
    from: Option<&str>,
    to: Option<&str>,
    now_ms: u64,
) -> Result<DayRange, UsageError> {
    let today = day_of(now_ms);
    let last = match to {
        Some(text) => parse_day(text)?,
        None => today,
    };
    let first = match from {
        Some(text) => parse_day(text)?,
        None => last - (DEFAULT_RANGE_DAYS - 1),
    };
    if first > last {
        return Err(UsageError::Reversed);
    }
    if last - first + 1 > MAX_RANGE_DAYS {
        return Err(UsageError::TooLong);
    }
    Ok(DayRange { first, last })
}

/// The UTC day of a Unix millisecond.
pub fn day_of(unix_ms: u64) -> EpochDay {
    i64::try_from(unix_ms / MS_PER_DAY).unwrap_or(i64::MAX)
}

/// `YYYY-MM-DD` of a day.
pub fn format_day(day: EpochDay) -> String {
    let (year, month, date) = civil_from_days(day);
    format!("{year:04}-{month:02}-{date:02}")
}

/// Parses `YYYY-MM-DD` (years 1970–9999).
pub fn parse_day(text: &str) -> Result<EpochDay, UsageError> {
    let bad = || UsageError::BadDate(text.chars().take(40).collect());
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, UsageError> {
        let part = &text[range];
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (year, month, date) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if year < 1970 || !(1..=12).contains(&month) || date < 1 || date > days_in_month(year, month) {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, date))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms (public domain): http://howardhinnant.github.io/date_algorithms.html
fn days_from_civil(year: i64, month: i64, day: i64) -> EpochDay {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: EpochDay) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(parse_day("1970-01-01"), Ok(0));
        assert_eq!(parse_day("2000-03-01"), Ok(11_017));
        assert_eq!(parse_day("2026-11-21"), Ok(20_778));
        assert_eq!(format_day(20_778), "2026-11-21");
        // 2026-11-21T08:35:24Z
        assert_eq!(day_of(1_795_250_124_000), 20_778);
    }

    #[test]
    fn impossible_dates_are_refused() {
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-1",
            "26-11-21",
            "1969-12-31",
            "2026/11/21",
            "2026-11-2x",
        ] {
            assert!(
                matches!(parse_day(bad), Err(UsageError::BadDate(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_day("2024-02-29"), Ok(19_782));
    }

    #[test]
    fn ranges_default_and_are_bounded() {
        let now = 1_795_250_124_000;
        let range = day_range(None, None, now).expect("default");
        assert_eq!(range.last, 20_778);
        assert_eq!(range.last - range.first + 1, DEFAULT_RANGE_DAYS);
        assert_eq!(
            day_range(Some("2026-11-21"), Some("2026-11-20"), now),
            Err(UsageError::Reversed)
        );
        assert_eq!(
            day_range(Some("2024-01-01"), Some("2026-01-01"), now),
            Err(UsageError::TooLong)
        );
    }

    #[test]
    fn totals_sum_the_days() {
        let day = |d: &str, n: u64| UsageDay {
            day: d.into(),
            calls: n,
            turns: n * 2,
            input_tokens: n * 100,
            output_tokens: n * 10,
            minutes: n * 3,
            tool_calls: n,
        };
        let report = UsageReport::new(
            "t1",
            DayRange {
                first: 20_777,
                last: 20_778,
            },
            vec![day("2026-11-20", 1), day("2026-11-21", 2)],
        );
        assert_eq!(report.from, "2026-11-20");
        assert_eq!(report.totals.calls, 3);
        assert_eq!(report.totals.turns, 6);
        assert_eq!(report.totals.input_tokens, 300);
        assert_eq!(report.totals.minutes, 9);
        assert_eq!(report.totals.tool_calls, 3);
    }

    #[test]
    fn minutes_and_tool_calls_are_additive_fields() {
        // A day written before they existed still reads.
        let day: UsageDay = serde_json::from_str(
            r#"{"day":"2026-11-21","calls":1,"turns":2,"input_tokens":3,"output_tokens":4}"#,
        )
        .expect("parses");
        assert_eq!((day.minutes, day.tool_calls), (0, 0));
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(day in 0_i64..2_932_896) {
            prop_assert_eq!(parse_day(&format_day(day)), Ok(day));
        }
    }
}
