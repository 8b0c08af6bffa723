//! Listing a tenant's calls: `GET /api/v1/calls` at the edge, `GET /v1/calls`
//! ([`crate::origin_path::CALLS`]) at the origin.
//! Both sides parse the query with [`CallListQuery::parse`] (the edge refuses a bad one before
//! forwarding [`CallListQuery::to_query`], its canonical form), and the order is one rule:
//! newest first — `started_at_ms` descending, then `id` descending — so a [`Cursor`] (the last
//! listed call's start and id) names a place no later call can move, and paging never skips
//! or repeats a call. [`CallListQuery::admits`] and [`newest_first`] state the rule; the
//! origin's SQL must agree with them (its tests compare).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::call::{Call, CallSource, CallStatus};
use crate::error_body::ErrorCode;
use crate::identifier::is_resource_id;

/// Query parameter: `active` or `ended`.
pub const PARAM_STATUS: &str = "status";
/// Query parameter: the agent's id.
pub const PARAM_AGENT_ID: &str = "agent_id";
/// Query parameter: `phone` or `api`.
pub const PARAM_SOURCE: &str = "source";
/// Query parameter: calls that started strictly after this Unix millisecond.
pub const PARAM_STARTED_AFTER: &str = "started_after_ms";
/// Query parameter: calls that started strictly before this Unix millisecond.
pub const PARAM_STARTED_BEFORE: &str = "started_before_ms";
/// Query parameter: the `next_cursor` of the previous page.
pub const PARAM_CURSOR: &str = "cursor";
/// Query parameter: page size, 1 to [`MAX_LIMIT`].
pub const PARAM_LIMIT: &str = "limit";

/// Page size when none is asked.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page.
pub const MAX_LIMIT: u32 = 100;

/// Largest time accepted (the database stores signed 64-bit milliseconds).
const MAX_MS: u64 = i64::MAX as u64;
/// Marks the cursor format, so a later format can be told apart.
const CURSOR_VERSION: &str = "c1";

/// Why a list query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallListError {
    /// A parameter the list does not take (a typo would otherwise be silently ignored).
    #[error(
        "unknown query parameter {0:?}; the list takes status, agent_id, source, started_after_ms, started_before_ms, cursor and limit"
    )]
    UnknownParameter(String),
    /// A parameter given twice.
    #[error("query parameter {0:?} is given more than once")]
    Repeated(String),
    /// `status` is not `active` or `ended`.
    #[error("status must be active or ended")]
    BadStatus,
    /// `source` is not `phone` or `api`.
    #[error("source must be phone or api")]
    BadSource,
    /// `agent_id` is not an id.
    #[error("agent_id must be 1 to 64 letters, digits, '-' or '_'")]
    BadAgentId,
    /// A time is not a Unix millisecond.
    #[error("{0} must be a Unix time in milliseconds")]
    BadTime(&'static str),
    /// `started_after_ms` is not before `started_before_ms`: nothing could match.
    #[error("started_after_ms must be less than started_before_ms")]
    EmptyWindow,
    /// `limit` out of range.
    #[error("limit must be 1 to {MAX_LIMIT}")]
    BadLimit,
    /// The cursor is not one this API gave.
    #[error("cursor is not a next_cursor this API gave")]
    BadCursor,
}

impl CallListError {
    /// The error code a client branches on.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadCursor => ErrorCode::InvalidCursor,
            _ => ErrorCode::InvalidQuery,
        }
    }
}

/// A place in the list: the last call of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// That call's start.
    pub started_at_ms: u64,
    /// That call's id.
    pub id: String,
}

impl Cursor {
    /// The cursor just after `call`.
    pub fn after(call: &Call) -> Self {
        Self {
            started_at_ms: call.started_at_ms,
            id: call.id.clone(),
        }
    }

    /// Opaque text: clients pass it back, never build it.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{CURSOR_VERSION}.{}.{}",
            self.started_at_ms, self.id
        ))
    }

    /// Reads a cursor [`Cursor::encode`] made.
    pub fn decode(text: &str) -> Result<Self, CallListError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| CallListError::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| CallListError::BadCursor)?;
        let mut parts = text.splitn(3, '.');
        let (Some(CURSOR_VERSION), Some(ms), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CallListError::BadCursor);
        };
        let started_at_ms = unix_ms(ms).ok_or(CallListError::BadCursor)?;
        if !is_resource_id(id) {
            return Err(CallListError::BadCursor);
        }
        Ok(Self {
            started_at_ms,
            id: id.to_owned(),
        })
    }
}

/// One request for a page of calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallListQuery {
    /// Only calls in this status.
    pub status: Option<CallStatus>,
    /// Only calls answered by this agent.
    pub agent_id: Option<String>,
    /// Only calls that came this way.
    pub source: Option<CallSource>,
    /// Only calls that started strictly after this Unix millisecond.
    pub started_after_ms: Option<u64>,
    /// Only calls that started strictly before this Unix millisecond.
    pub started_before_ms: Option<u64>,
    /// Only calls after this place (the previous page's last call).
    pub cursor: Option<Cursor>,
    /// Page size.
    pub limit: u32,
}

impl Default for CallListQuery {
    fn default() -> Self {
        Self {
            status: None,
            agent_id: None,
            source: None,
            started_after_ms: None,
            started_before_ms: None,
            cursor: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl CallListQuery {
    /// Parses a query string (without the `?`; form-encoded). Unknown or repeated parameters,
    /// empty values and out-of-range ones are refused, every one with its reason.
    pub fn parse(query: &str) -> Result<Self, CallListError> {
        let mut parsed = Self::default();
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if seen.iter().any(|s| *s == name) {
                return Err(CallListError::Repeated(name.chars().take(40).collect()));
            }
            seen.push(name.to_string());
            let value = value.as_ref();
            match name.as_ref() {
                PARAM_STATUS => {
                    parsed.status = Some(CallStatus::parse(value).ok_or(CallListError::BadStatus)?)
                }
                PARAM_AGENT_ID => {
                    if !is_resource_id(value) {
                        return Err(CallListError::BadAgentId);
                    }
                    parsed.agent_id = Some(value.to_owned());
                }
                PARAM_SOURCE => {
                    parsed.source = Some(CallSource::parse(value).ok_or(CallListError::BadSource)?)
                }
                PARAM_STARTED_AFTER => {
                    parsed.started_after_ms =
                        Some(unix_ms(value).ok_or(CallListError::BadTime(PARAM_STARTED_AFTER))?)
                }
                PARAM_STARTED_BEFORE => {
                    parsed.started_before_ms =
                        Some(unix_ms(value).ok_or(CallListError::BadTime(PARAM_STARTED_BEFORE))?)
                }
                PARAM_CURSOR => parsed.cursor = Some(Cursor::decode(value)?),
                PARAM_LIMIT => {
                    parsed.limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                        .ok_or(CallListError::BadLimit)?
                }
                other => {
                    return Err(CallListError::UnknownParameter(
                        other.chars().take(40).collect(),
                    ));
                }
            }
        }
        if let (Some(after), Some(before)) = (parsed.started_after_ms, parsed.started_before_ms)
            && after >= before
        {
            return Err(CallListError::EmptyWindow);
        }
        Ok(parsed)
    }

    /// The canonical query string (with its `?`, or empty): every parameter that is set, in a
    /// fixed order — what the edge forwards, and what `parse` reads back unchanged.
    pub fn to_query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(status) = self.status {
            query.append_pair(PARAM_STATUS, status.as_str());
        }
        if let Some(agent_id) = &self.agent_id {
            query.append_pair(PARAM_AGENT_ID, agent_id);
        }
        if let Some(source) = self.source {
            query.append_pair(PARAM_SOURCE, source.as_str());
        }
        if let Some(after) = self.started_after_ms {
            query.append_pair(PARAM_STARTED_AFTER, &after.to_string());
        }
        if let Some(before) = self.started_before_ms {
            query.append_pair(PARAM_STARTED_BEFORE, &before.to_string());
        }
        if let Some(cursor) = &self.cursor {
            query.append_pair(PARAM_CURSOR, &cursor.encode());
        }
        if self.limit != DEFAULT_LIMIT {
            query.append_pair(PARAM_LIMIT, &self.limit.to_string());
        }
        let query = query.finish();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }

    /// Whether `call` belongs on a page of this query (filters and cursor; the tenant is the
    /// caller's business).
    pub fn admits(&self, call: &Call) -> bool {
        self.status.is_none_or(|status| call.status == status)
            && self.agent_id.as_ref().is_none_or(|id| call.agent_id == *id)
            && self.source.is_none_or(|source| call.source == source)
            && self
                .started_after_ms
                .is_none_or(|after| call.started_at_ms > after)
            && self
                .started_before_ms
                .is_none_or(|before| call.started_at_ms < before)
            && self.cursor.as_ref().is_none_or(|cursor| {
                (call.started_at_ms, call.id.as_str()) < (cursor.started_at_ms, cursor.id.as_str())
            })
    }
}

/// The list's order: newest start first, then the greater id first.
pub fn newest_first(a: &Call, b: &Call) -> std::cmp::Ordering {
    (b.started_at_ms, b.id.as_str()).cmp(&(a.started_at_ms, a.id.as_str()))
}

/// `GET /v1/calls` (and `GET /api/v1/calls`) answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallPage {
    /// At most `limit` calls, newest first.
    pub calls: Vec<Call>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl CallPage {
    /// A page from up to `limit + 1` calls in list order (the store reads one more than the
    /// page, so the last page is known to be last and has no cursor).
    pub fn of(mut calls: Vec<Call>, limit: u32) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = calls.len() > limit;
        calls.truncate(limit);
        let next_cursor = more
            .then(|| calls.last().map(|call| Cursor::after(call).encode()))
            .flatten();
        Self { calls, next_cursor }
    }
}

fn unix_ms(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|ms| *ms <= MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::call;

    #[test]
    fn parses_every_filter_and_round_trips_its_canonical_form() {
        let cursor = Cursor {
            started_at_ms: 1_700_000_000_000,
            id: "CA1".into(),
        };
        let query = format!(
            "status=ended&agent_id=front_desk&source=phone&started_after_ms=10&started_before_ms=20&limit=7&cursor={}",
            cursor.encode()
        );
        let parsed = CallListQuery::parse(&query).expect("valid");
        assert_eq!(
            parsed,
            CallListQuery {
                status: Some(CallStatus::Ended),
                agent_id: Some("front_desk".into()),
                source: Some(CallSource::Phone),
                started_after_ms: Some(10),
                started_before_ms: Some(20),
                cursor: Some(cursor),
                limit: 7,
            }
        );
        let canonical = parsed.to_query();
        assert!(canonical.starts_with("?status=ended&agent_id=front_desk&source=phone"));
        assert_eq!(
            CallListQuery::parse(canonical.trim_start_matches('?')),
            Ok(parsed)
        );
        assert_eq!(CallListQuery::parse(""), Ok(CallListQuery::default()));
        assert_eq!(CallListQuery::default().to_query(), "");
    }

    #[test]
    fn refuses_what_it_does_not_take_each_with_its_reason() {
        let cases = [
            (
                "stauts=active",
                CallListError::UnknownParameter("stauts".into()),
            ),
            (
                "status=active&status=ended",
                CallListError::Repeated("status".into()),
            ),
            ("status=paused", CallListError::BadStatus),
            ("status=", CallListError::BadStatus),
            ("source=sip", CallListError::BadSource),
            ("agent_id=a%2Fb", CallListError::BadAgentId),
            ("agent_id=", CallListError::BadAgentId),
            (
                "started_after_ms=-1",
                CallListError::BadTime(PARAM_STARTED_AFTER),
            ),
            (
                "started_after_ms=1e3",
                CallListError::BadTime(PARAM_STARTED_AFTER),
            ),
            (
                "started_before_ms=99999999999999999999",
                CallListError::BadTime(PARAM_STARTED_BEFORE),
            ),
            (
                "started_after_ms=5&started_before_ms=5",
                CallListError::EmptyWindow,
            ),
            ("limit=0", CallListError::BadLimit),
            ("limit=101", CallListError::BadLimit),
            ("limit=ten", CallListError::BadLimit),
            ("cursor=", CallListError::BadCursor),
            ("cursor=not-base64!", CallListError::BadCursor),
        ];
        for (query, expected) in cases {
            assert_eq!(CallListQuery::parse(query), Err(expected), "{query}");
        }
        assert_eq!(CallListError::BadCursor.code(), ErrorCode::InvalidCursor);
        assert_eq!(CallListError::BadLimit.code(), ErrorCode::InvalidQuery);
    }

    #[test]
    fn a_cursor_is_only_what_this_api_made() {
        let made = Cursor {
            started_at_ms: 42,
            id: "call_x-1".into(),
        };
        assert_eq!(Cursor::decode(&made.encode()), Ok(made));
        for forged in [
            "c1.42",
            "c2.42.call",
            "c1.x.call",
            "c1.42.a/b",
            "c1.42.",
            "c1.9223372036854775808.call",
        ] {
            assert_eq!(
                Cursor::decode(&URL_SAFE_NO_PAD.encode(forged)),
                Err(CallListError::BadCursor),
                "{forged}"
            );
        }
    }

    #[test]
    fn pages_walk_every_call_once_newest_first_even_with_equal_start_times() {
        let mut calls: Vec<Call> = (0..23)
            .map(|i| call(&format!("c{i:02}"), 1_000 + (i / 4) * 10))
            .collect();
        calls.sort_by(newest_first);
        for limit in [1, 4, 5, 22, 23, 24, 100] {
            let mut query = CallListQuery {
                limit,
                ..CallListQuery::default()
            };
            let mut seen = Vec::new();
            for _ in 0..30 {
                let matching: Vec<Call> = calls
                    .iter()
                    .filter(|c| query.admits(c))
                    .take(limit as usize + 1)
                    .cloned()
                    .collect();
                let page = CallPage::of(matching, limit);
                assert!(page.calls.len() <= limit as usize);
                seen.extend(page.calls.iter().map(|c| c.id.clone()));
                match page.next_cursor {
                    Some(next) => {
                        assert!(!page.calls.is_empty(), "no empty page before the last");
                        query.cursor = Some(Cursor::decode(&next).expect("own cursor"));
                    }
                    None => break,
                }
            }
            let expected: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
            assert_eq!(seen, expected, "limit {limit}");
        }
        assert_eq!(calls[0].id, "c22", "newest first");
        assert_eq!(
            (calls[1].id.as_str(), calls[2].id.as_str()),
            ("c21", "c20"),
            "the greater id first among equal starts"
        );
    }

    #[test]
    fn filters_are_strict_bounds_and_exact_matches() {
        let mut ended = call("e", 100);
        ended.status = CallStatus::Ended;
        ended.source = CallSource::Phone;
        ended.agent_id = "b".into();
        let active = call("a", 200);
        let query = |text: &str| CallListQuery::parse(text).expect("valid");
        assert!(query("status=ended").admits(&ended));
        assert!(!query("status=ended").admits(&active));
        assert!(query("source=api").admits(&active));
        assert!(!query("agent_id=a").admits(&ended));
        assert!(!query("started_after_ms=100").admits(&ended));
        assert!(query("started_after_ms=99").admits(&ended));
        assert!(!query("started_before_ms=200").admits(&active));
        assert!(query("started_before_ms=201").admits(&active));
    }
}
