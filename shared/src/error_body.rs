//! The one JSON error envelope every service answers with:
//! `{"error":{"code":"rate_limited","message":"…","request_id":"…"}}`, plus `"field"` when the
//! error is about one field of the request body (a client shows it next to that field); and the
//! stable codes the public edge (voice-router and its `CallSession` object) chooses from.

use serde::{Deserialize, Serialize};

/// Declares [`ErrorCode`] with its wire spelling, once.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)+) => {
        /// A stable, documented error code of the public edge: clients branch on it, and the
        /// edge decides on it (never on a message's text).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as it travels on the wire (`snake_case`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)+
                }
            }

            /// The code a wire string names; `None` for a code the edge does not choose (a
            /// service's own, passed on as it is).
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(ErrorCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// No route has this method and path.
    NotFound => "not_found",
    /// The path exists, not for this method.
    MethodNotAllowed => "method_not_allowed",
    /// A path segment that must be an id is not one.
    InvalidId => "invalid_id",
    /// The body or a parameter is not what the route takes.
    InvalidRequest => "invalid_request",
    /// A query parameter is unknown, repeated or out of range.
    InvalidQuery => "invalid_query",
    /// A pagination cursor that this API did not give.
    InvalidCursor => "invalid_cursor",
    /// The body is larger than the route accepts.
    PayloadTooLarge => "payload_too_large",
    /// A WebSocket route was called without an upgrade.
    UpgradeRequired => "upgrade_required",
    /// A browser origin that is not configured.
    CorsRefused => "cors_refused",
    /// The client's address is on the deny list.
    IpDenied => "ip_denied",
    /// The API is not offered in the client's country.
    CountryNotAllowed => "country_not_allowed",
    /// The request looks automated.
    BotScoreTooLow => "bot_score_too_low",
    /// Over a rate limit.
    RateLimited => "rate_limited",
    /// The tenant is at its concurrent-call limit.
    ConcurrentCallsExceeded => "concurrent_calls_exceeded",
    /// No call with this id (for this tenant).
    UnknownCall => "unknown_call",
    /// The call already ended.
    CallEnded => "call_ended",
    /// A call with this id already exists.
    CallExists => "call_exists",
    /// A call was started with no region to run in.
    NoRegion => "no_region",
    /// No agent with this id (for this tenant).
    UnknownAgent => "unknown_agent",
    /// A carrier callback names another carrier call than the one the call is bound to.
    CarrierCallMismatch => "carrier_call_mismatch",
    /// A request signed by one carrier on another carrier's route.
    WrongCarrier => "wrong_carrier",
    /// An outbound call's caller id is not one of the tenant's numbers.
    CallerIdNotAllowed => "caller_id_not_allowed",
    /// No carrier account of the tenant places calls from this caller id.
    OutboundNotConfigured => "outbound_not_configured",
    /// The carrier refused the number to call.
    CarrierRefusedDestination => "carrier_refused_destination",
    /// The carrier refused the caller id.
    CarrierRefusedCallerId => "carrier_refused_caller_id",
    /// The carrier refused the call for another reason.
    CarrierRefused => "carrier_refused",
    /// The carrier failed, could not be reached, or refused the edge's credentials.
    CarrierUnavailable => "carrier_unavailable",
    /// No region's origin answered.
    OriginUnavailable => "origin_unavailable",
    /// The origin's database is down: new work is refused until it returns (`Retry-After`).
    DatabaseUnavailable => "database_unavailable",
    /// An internal service of the edge did not answer.
    ServiceUnavailable => "service_unavailable",
    /// The edge's configuration is broken.
    Misconfigured => "misconfigured",
    /// Something failed underneath; the cause is in the log under the request id.
    Internal => "internal",
}

/// Whether `text` reads as an error code (snake_case, 1–64 bytes): what the edge accepts to pass
/// on from an origin's answer.
pub fn is_code(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error envelope as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// What went wrong, in a machine-readable code and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, snake_case, documented: clients branch on this.
    pub code: String,
    /// For humans; never carries secrets or internal causes.
    pub message: String,
    /// Correlates the answer with the logs of every hop.
    pub request_id: String,
    /// The body field the error is about, as a JSON path (`inference.temperature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    /// Builds the envelope.
    pub fn new(
        code: impl Into<String>,
        message: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                request_id: request_id.into(),
                field: None,
            },
        }
    }

    /// Names the body field the error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }

    /// Serialises the envelope; infallible for this plain-string shape.
    pub fn to_json(&self) -> String {
        // Serialising a struct of three `String`s cannot fail; fall back to a fixed body anyway.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"error":{"code":"internal","message":"internal error","request_id":""}}"#.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_to_the_documented_shape() {
        let body = ErrorBody::new("rate_limited", "slow down", "req-1");
        let value: serde_json::Value = serde_json::from_str(&body.to_json()).expect("valid json");
        assert_eq!(
            value,
            serde_json::json!({"error":{"code":"rate_limited","message":"slow down","request_id":"req-1"}})
        );
    }

    #[test]
    fn every_code_parses_back_from_its_wire_spelling() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code), "{code}");
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code} is snake_case"
            );
        }
        assert_eq!(ErrorCode::parse("twilio_bad_signature"), None);
        assert!(is_code("database_unavailable"));
        for text in ["", "Bad", "a-b", "x<script>", &"a".repeat(65)] {
            assert!(!is_code(text), "{text:?}");
        }
    }

    #[test]
    fn names_the_field_only_when_there_is_one() {
        let body = ErrorBody::new("invalid_agent", "bad", "r").with_field("inference.top_p");
        let value: serde_json::Value = serde_json::from_str(&body.to_json()).expect("valid json");
        assert_eq!(value["error"]["field"], "inference.top_p");
        let back: ErrorBody = serde_json::from_str(&body.to_json()).expect("round trip");
        assert_eq!(back, body);
        let plain: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"c","message":"m","request_id":"r"}}"#)
                .expect("an envelope without a field still parses");
        assert_eq!(plain.error.field, None);
    }

    #[test]
    fn escapes_quotes_in_messages() {
        let body = ErrorBody::new("bad_request", r#"field "x" is "odd""#, "r");
        let back: ErrorBody = serde_json::from_str(&body.to_json()).expect("round trip");
        assert_eq!(back, body);
    }
}
