//! What voice-router says to a call's `CallSession` Durable Object, and what it answers: the
//! object's internal routes (reached only through the `CALL_SESSION` binding), their bodies, and
//! its refusals. Success answers are the [`CallSession`](super::CallSession) as JSON; refusals
//! are the one error envelope (`crate::error_body::ErrorBody`) with a [`SessionRefusal`]'s code.
//!
//! | route | body | answer |
//! | --- | --- | --- |
//! | `POST /start` | [`StartSession`] | 201; 409 `call_exists`; 400 `no_region` |
//! | `GET /state` | — | 200; 404 `unknown_call` |
//! | `POST /touch` | [`Touch`] | 200; 404; 409 `call_ended` |
//! | `POST /end` | [`EndRequest`] | 200; 404; 409 `call_ended` |
//! | `POST /carrier` | [`CarrierReport`] | 200; 404; 409 `call_ended`, `carrier_call_mismatch` |
//! | `GET /relay` | WebSocket upgrade, tenant in [`TENANT_HEADER`] | 101; 404; 409 |
//! | `GET /health` | — | 200 |

use serde::{Deserialize, Serialize};

use super::{EndReason, StartCall};
use crate::carrier::{AnsweredBy, CallProgress};
use crate::error_body::ErrorCode;
use crate::geo::Target;
use crate::principal::Principal;

/// Base of every internal URL (the host is not used: a stub routes by object).
pub const BASE_URL: &str = "https://call-session";
/// `POST`: create the session.
pub const START_PATH: &str = "/start";
/// `GET`: the session's state.
pub const STATE_PATH: &str = "/state";
/// `POST`: activity from the API (a turn).
pub const TOUCH_PATH: &str = "/touch";
/// `POST`: end the call.
pub const END_PATH: &str = "/end";
/// `POST`: what the carrier reported about the call.
pub const CARRIER_PATH: &str = "/carrier";
/// `GET` + upgrade: the caller's relay socket.
pub const RELAY_PATH: &str = "/relay";
/// `GET`: the class answers (every service's health path).
pub use crate::health::HEALTH_PATH;
/// Header carrying the authenticated tenant on [`RELAY_PATH`].
pub const TENANT_HEADER: &str = "x-session-tenant";

/// `POST /start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSession {
    /// The call.
    pub call: StartCall,
    /// Who started it; its tenant owns the call, and it signs origin requests made for it.
    pub principal: Principal,
    /// The origin of the call's region first, then the others in failover order.
    pub targets: Vec<Target>,
    /// The caller's country, for `X-CF-Country`.
    pub country: Option<String>,
    /// The request that started the call (for logs).
    pub request_id: String,
    /// The trace of that request (`shared::trace_context`): the call's own requests to its
    /// origin (the relay, the end) continue it, so one call is one trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// `POST /touch`: activity on the call (an API turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    /// Whether a caller turn started.
    pub turn: bool,
}

/// `POST /end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRequest {
    /// Why, as the edge records it.
    pub reason: EndReason,
    /// The reason an API client gave (`POST /api/v1/calls/{id}/end` `reason`), told to the
    /// origin instead of `reason`'s name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub said_reason: Option<String>,
    /// What the client wants the carrier to get in the relay's `end` (`handoffData.data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_data: Option<serde_json::Value>,
}

/// Largest `handoff_data` an API client may pass, serialised.
pub const MAX_HANDOFF_DATA_BYTES: usize = 4_096;

/// Why an API client's end request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndBodyError {
    /// Not the JSON the route takes.
    #[error("the body must be empty or {{\"reason\": \"…\", \"handoff_data\": {{…}}}}: {0}")]
    NotJson(String),
    /// An empty or too long reason.
    #[error("reason must be 1 to {} characters", crate::call::MAX_REASON_CHARS)]
    BadReason,
    /// `handoff_data` over [`MAX_HANDOFF_DATA_BYTES`].
    #[error("handoff_data must be at most {MAX_HANDOFF_DATA_BYTES} bytes of JSON")]
    HandoffTooLarge,
}

impl EndRequest {
    /// An end for `reason`, with nothing more to tell.
    pub fn new(reason: EndReason) -> Self {
        Self {
            reason,
            said_reason: None,
            handoff_data: None,
        }
    }

    /// The end an API client asks for with `body` (`POST /api/v1/calls/{id}/end`): empty, or
    /// `{"reason"?: "…", "handoff_data"?: any JSON}`. Recorded as `requested` at the edge; the
    /// reason and handoff data go to the origin, which puts them in the relay's `end`.
    pub fn from_api_body(body: &[u8]) -> Result<Self, EndBodyError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[serde(default)]
            reason: Option<String>,
            #[serde(default)]
            handoff_data: Option<serde_json::Value>,
        }
        let mut request = Self::new(EndReason::Requested);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(request);
        }
        let body: Body = serde_json::from_slice(body)
            .map_err(|error| EndBodyError::NotJson(error.to_string()))?;
        if let Some(reason) = body.reason {
            let reason = reason.trim();
            if reason.is_empty() || reason.chars().count() > crate::call::MAX_REASON_CHARS {
                return Err(EndBodyError::BadReason);
            }
            request.said_reason = Some(reason.to_owned());
        }
        if let Some(data) = body.handoff_data.filter(|data| !data.is_null()) {
            if data.to_string().len() > MAX_HANDOFF_DATA_BYTES {
                return Err(EndBodyError::HandoffTooLarge);
            }
            request.handoff_data = Some(data);
        }
        Ok(request)
    }
}

/// `POST /carrier`: a carrier's status callback (or its answer to placing the call), as facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierReport {
    /// The carrier's call id it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_call_id: Option<String>,
    /// `CallStatus` as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_status: Option<String>,
    /// `CallStatus` as the call's progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<CallProgress>,
    /// What answering-machine detection found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
}

/// Why the object refused a request. Each has one code; voice-router's one status map gives it
/// its status, for the object's own answers and for the client alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefusal {
    /// No call with this id — or one of another tenant, which must look the same so call ids
    /// cannot be probed.
    #[error("no such call")]
    UnknownCall,
    /// The call already ended.
    #[error("the call already ended")]
    CallEnded,
    /// `/start` for a call that exists (a carrier retrying its webhook).
    #[error("a call with this id already exists")]
    CallExists,
    /// `/start` with no region to run in.
    #[error("a call needs at least one region")]
    NoRegion,
    /// `/carrier` naming another carrier call than the one the call is bound to.
    #[error("the callback names another carrier call than this one")]
    CarrierMismatch,
}

impl SessionRefusal {
    /// The stable code.
    pub fn code(self) -> ErrorCode {
        match self {
            SessionRefusal::UnknownCall => ErrorCode::UnknownCall,
            SessionRefusal::CallEnded => ErrorCode::CallEnded,
            SessionRefusal::CallExists => ErrorCode::CallExists,
            SessionRefusal::NoRegion => ErrorCode::NoRegion,
            SessionRefusal::CarrierMismatch => ErrorCode::CarrierCallMismatch,
        }
    }

    /// The refusal an answer's code names; `None` when the code is not one of the object's.
    pub fn from_code(code: ErrorCode) -> Option<Self> {
        [
            SessionRefusal::UnknownCall,
            SessionRefusal::CallEnded,
            SessionRefusal::CallExists,
            SessionRefusal::NoRegion,
            SessionRefusal::CarrierMismatch,
        ]
        .into_iter()
        .find(|refusal| refusal.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_round_trip_through_their_codes() {
        for refusal in [
            SessionRefusal::UnknownCall,
            SessionRefusal::CallEnded,
            SessionRefusal::CallExists,
            SessionRefusal::NoRegion,
            SessionRefusal::CarrierMismatch,
        ] {
            assert_eq!(SessionRefusal::from_code(refusal.code()), Some(refusal));
        }
        assert_eq!(SessionRefusal::from_code(ErrorCode::RateLimited), None);
    }

    #[test]
    fn an_api_clients_end_body() {
        let requested = EndRequest::new(EndReason::Requested);
        assert_eq!(EndRequest::from_api_body(b""), Ok(requested.clone()));
        assert_eq!(EndRequest::from_api_body(b" \n"), Ok(requested.clone()));
        assert_eq!(EndRequest::from_api_body(b"{}"), Ok(requested.clone()));
        assert_eq!(
            EndRequest::from_api_body(
                br#"{"reason":" transfer ","handoff_data":{"target":"+14155550123"}}"#
            ),
            Ok(EndRequest {
                reason: EndReason::Requested,
                said_reason: Some("transfer".into()),
                handoff_data: Some(serde_json::json!({"target": "+14155550123"})),
            })
        );
        assert_eq!(
            EndRequest::from_api_body(br#"{"handoff_data":null}"#),
            Ok(requested)
        );
        assert_eq!(
            EndRequest::from_api_body(br#"{"reason":""}"#),
            Err(EndBodyError::BadReason)
        );
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(201));
        assert_eq!(
            EndRequest::from_api_body(long.as_bytes()),
            Err(EndBodyError::BadReason)
        );
        let big = format!(
            r#"{{"handoff_data":"{}"}}"#,
            "x".repeat(MAX_HANDOFF_DATA_BYTES)
        );
        assert_eq!(
            EndRequest::from_api_body(big.as_bytes()),
            Err(EndBodyError::HandoffTooLarge)
        );
        assert!(matches!(
            EndRequest::from_api_body(br#"{"reson":"typo"}"#),
            Err(EndBodyError::NotJson(_))
        ));
        assert!(matches!(
            EndRequest::from_api_body(b"reason=x"),
            Err(EndBodyError::NotJson(_))
        ));
        // The request travels to the object and back unchanged; a plain one stays small.
        let json = serde_json::to_string(&EndRequest::new(EndReason::Completed)).expect("json");
        assert_eq!(json, r#"{"reason":"completed"}"#);
    }
}
