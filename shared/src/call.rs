//! Calls: one conversation between a caller and an agent. The origin's `/v1/calls` speaks these.

use serde::{Deserialize, Serialize};

use crate::carrier::{AnsweredBy, CarrierKind};
use crate::identifier::{self, MAX_LEN as MAX_ID_LEN};

/// Longest end reason.
pub const MAX_REASON_CHARS: usize = 200;
/// Longest carrier field (numbers).
pub const MAX_CARRIER_FIELD_CHARS: usize = 64;
/// Longest carrier call id (a Telnyx call control id is 57 characters; room to spare).
pub const MAX_CARRIER_CALL_ID_CHARS: usize = 256;
/// Largest `metadata` of a call, as JSON text.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;

/// Who dialled whom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    /// The caller dialled one of the tenant's numbers (or an API client started a call).
    #[default]
    Inbound,
    /// The platform dialled out (`POST /api/v1/calls/outbound`).
    Outbound,
}

impl CallDirection {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }

    /// Reads the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            _ => None,
        }
    }
}
/// Longest caller detail stored (CNAM names are 15 characters; SIP URIs are longer).
pub const MAX_CALLER_DETAIL_CHARS: usize = 128;

/// How the call reached us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallSource {
    /// A phone call through a carrier (ConversationRelay).
    Phone,
    /// An API client (SSE turns or its own relay socket).
    #[default]
    Api,
}

impl CallSource {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::Api => "api",
        }
    }

    /// Reads the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "phone" => Some(Self::Phone),
            "api" => Some(Self::Api),
            _ => None,
        }
    }
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Turns may be taken.
    Active,
    /// Over; no more turns.
    Ended,
}

impl CallStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }

    /// Reads the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// `POST /v1/calls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCall {
    /// The call's id (e.g. the carrier's call sid); absent means a new UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The agent answering; absent means the agent owning `to` (a phone number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// How the call reached us.
    #[serde(default)]
    pub source: CallSource,
    /// The carrier's call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_call_sid: Option<String>,
    /// Caller's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Called number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Who dialled whom.
    #[serde(default)]
    pub direction: CallDirection,
    /// The carrier of a phone call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierKind>,
    /// The API client's own data about an outbound call (a JSON object), kept with the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// A call as stored and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The call's id.
    pub id: String,
    /// The owning tenant.
    pub tenant_id: String,
    /// The agent answering.
    pub agent_id: String,
    /// How it reached us.
    pub source: CallSource,
    /// The carrier's call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_call_sid: Option<String>,
    /// Caller's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Called number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The AWS region that served it.
    pub region: String,
    /// Active or ended.
    pub status: CallStatus,
    /// Caller turns so far: the caller's words and key presses
    /// (`crate::turn::TurnRole::is_caller_turn`), as the edge counts them too.
    pub turn_count: u32,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    /// Unix milliseconds, once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// Why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// Who is calling, from the carrier's relay `setup` (shown as top-level fields).
    #[serde(flatten)]
    pub caller: CallerDetails,
    /// Who dialled whom.
    #[serde(default)]
    pub direction: CallDirection,
    /// The carrier of a phone call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierKind>,
    /// What answering-machine detection found (outbound calls that asked for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
    /// The voicemail message the agent left on an answering machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_message: Option<String>,
    /// Unix milliseconds the voicemail message was spoken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_left_at_ms: Option<u64>,
    /// The API client's own data about an outbound call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// `POST /v1/calls/{id}/answered-by`: what answering-machine detection found, from the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnsweredByReport {
    /// The finding.
    pub answered_by: AnsweredBy,
}

/// What the carrier's `setup` says about the caller, stored with the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerDetails {
    /// Caller ID name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<String>,
    /// The number that forwarded the call here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_from: Option<String>,
    /// `PSTN`, `SIP`, `CLIENT`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_type: Option<String>,
}

impl CallerDetails {
    /// Whether there is anything to store.
    pub fn is_empty(&self) -> bool {
        self.caller_name.is_none() && self.forwarded_from.is_none() && self.call_type.is_none()
    }
}

/// `POST /v1/calls/{id}/end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndCall {
    /// Why, e.g. `completed`, `caller_hung_up`, `transferred`.
    pub reason: String,
    /// Passed to the carrier in the relay's `end` message (`handoffData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_data: Option<serde_json::Value>,
}

/// Why a call request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The id fails [`identifier::is_resource_id`].
    #[error("the call id must be 1 to {MAX_ID_LEN} letters, digits, '-' or '_'")]
    BadId,
    /// Neither an agent nor a number to find one by.
    #[error("a call needs agent_id, or `to` naming an agent's phone number")]
    NoAgent,
    /// A carrier field too long.
    #[error("carrier_call_sid, from and to are at most {MAX_CARRIER_FIELD_CHARS} characters")]
    CarrierFieldTooLong,
    /// Empty or too long reason.
    #[error("reason must be 1 to {MAX_REASON_CHARS} characters")]
    BadReason,
    /// A carrier call id too long.
    #[error("carrier_call_sid is at most {MAX_CARRIER_CALL_ID_CHARS} characters")]
    CarrierCallIdTooLong,
    /// Metadata that is not a JSON object of at most [`MAX_METADATA_BYTES`].
    #[error("metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes")]
    BadMetadata,
}

/// Checks a call's `metadata`: a JSON object of at most [`MAX_METADATA_BYTES`] as text.
pub fn check_metadata(metadata: &serde_json::Value) -> Result<(), CallError> {
    if metadata.is_object() && metadata.to_string().len() <= MAX_METADATA_BYTES {
        Ok(())
    } else {
        Err(CallError::BadMetadata)
    }
}

/// Validates a call id from a path or body.
pub fn check_id(id: &str) -> Result<(), CallError> {
    if identifier::is_resource_id(id) {
        Ok(())
    } else {
        Err(CallError::BadId)
    }
}

impl CreateCall {
    /// Checks the request's fields.
    pub fn validate(&self) -> Result<(), CallError> {
        if let Some(id) = &self.id {
            check_id(id)?;
        }
        if self.agent_id.is_none() && self.to.is_none() {
            return Err(CallError::NoAgent);
        }
        if self
            .carrier_call_sid
            .as_ref()
            .is_some_and(|sid| sid.chars().count() > MAX_CARRIER_CALL_ID_CHARS)
        {
            return Err(CallError::CarrierCallIdTooLong);
        }
        if let Some(metadata) = &self.metadata {
            check_metadata(metadata)?;
        }
        let fields = [&self.from, &self.to];
        if fields.iter().any(|f| {
            f.as_ref()
                .is_some_and(|v| v.chars().count() > MAX_CARRIER_FIELD_CHARS)
        }) {
            return Err(CallError::CarrierFieldTooLong);
        }
        Ok(())
    }
}

impl EndCall {
    /// Checks the reason.
    pub fn validate(&self) -> Result<(), CallError> {
        let chars = self.reason.trim().chars().count();
        if chars == 0 || chars > MAX_REASON_CHARS {
            return Err(CallError::BadReason);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_call_needs_an_agent_or_a_number() {
        let call = CreateCall::default();
        assert_eq!(call.validate(), Err(CallError::NoAgent));
        let by_number = CreateCall {
            to: Some("+14155550100".into()),
            ..CreateCall::default()
        };
        assert_eq!(by_number.validate(), Ok(()));
        let bad_id = CreateCall {
            id: Some("a/b".into()),
            agent_id: Some("a".into()),
            ..CreateCall::default()
        };
        assert_eq!(bad_id.validate(), Err(CallError::BadId));
        let long = CreateCall {
            agent_id: Some("a".into()),
            from: Some("1".repeat(65)),
            ..CreateCall::default()
        };
        assert_eq!(long.validate(), Err(CallError::CarrierFieldTooLong));
        let telnyx = CreateCall {
            agent_id: Some("a".into()),
            carrier_call_sid: Some(
                "v3:9X2vxPDFY2RHSJ1EdMS0RHRksMTg7ldNxdjWbVr9zBjbGjGsSe-aiQ".into(),
            ),
            ..CreateCall::default()
        };
        assert_eq!(telnyx.validate(), Ok(()));
        let too_long = CreateCall {
            carrier_call_sid: Some("v".repeat(MAX_CARRIER_CALL_ID_CHARS + 1)),
            ..telnyx.clone()
        };
        assert_eq!(too_long.validate(), Err(CallError::CarrierCallIdTooLong));
        for bad in [
            serde_json::json!([1]),
            serde_json::json!("x"),
            serde_json::json!({ "pad": "x".repeat(MAX_METADATA_BYTES) }),
        ] {
            let call = CreateCall {
                metadata: Some(bad),
                ..telnyx.clone()
            };
            assert_eq!(call.validate(), Err(CallError::BadMetadata));
        }
        let call = CreateCall {
            metadata: Some(serde_json::json!({ "campaign": "renewals" })),
            ..telnyx
        };
        assert_eq!(call.validate(), Ok(()));
    }

    #[test]
    fn directions_round_trip_and_old_calls_read_as_inbound() {
        for direction in [CallDirection::Inbound, CallDirection::Outbound] {
            assert_eq!(CallDirection::parse(direction.as_str()), Some(direction));
        }
        let call: CreateCall = serde_json::from_str(r#"{"agent_id":"a"}"#).expect("parses");
        assert_eq!(call.direction, CallDirection::Inbound);
    }

    #[test]
    fn statuses_and_sources_round_trip_their_stored_forms() {
        for status in [CallStatus::Active, CallStatus::Ended] {
            assert_eq!(CallStatus::parse(status.as_str()), Some(status));
        }
        for source in [CallSource::Phone, CallSource::Api] {
            assert_eq!(CallSource::parse(source.as_str()), Some(source));
        }
        assert_eq!(CallStatus::parse("paused"), None);
    }

    #[test]
    fn caller_details_read_as_fields_of_the_call() {
        let call: Call = serde_json::from_value(serde_json::json!({
            "id": "CA1", "tenant_id": "t", "agent_id": "a", "source": "phone", "region": "us-east-1",
            "status": "active", "turn_count": 0, "started_at_ms": 1,
            "caller_name": "Ada", "call_type": "PSTN",
        }))
        .expect("parses");
        assert_eq!(call.caller.caller_name.as_deref(), Some("Ada"));
        assert!(!call.caller.is_empty());
        let json = serde_json::to_value(&call).expect("json");
        assert_eq!(json["call_type"], "PSTN");
        assert!(
            json.get("forwarded_from").is_none(),
            "absent details are left out"
        );
        assert!(CallerDetails::default().is_empty());
    }

    #[test]
    fn end_reason_is_required() {
        let end: EndCall = serde_json::from_str(r#"{"reason":" "}"#).expect("parses");
        assert_eq!(end.validate(), Err(CallError::BadReason));
        let end: EndCall =
            serde_json::from_str(r#"{"reason":"completed","handoff_data":{"queue":"sales"}}"#)
                .expect("parses");
        assert_eq!(end.validate(), Ok(()));
    }
}
