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
}

/// `POST /touch`: activity on the call (an API turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    /// Whether a caller turn started.
    pub turn: bool,
}

/// `POST /end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRequest {
    /// Why.
    pub reason: EndReason,
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
}
