//! Carriers: everything that differs between Twilio and Telnyx, behind one trait, [`Carrier`],
//! with one implementation per carrier ([`twilio::Twilio`], [`telnyx::Telnyx`]). The carrier is a
//! property of the phone number and its account, so one deployment runs both: the public routes
//! are `POST /voice/{carrier}/incoming|status` and [`CarrierKind`] names the `{carrier}` segment.
//!
//! A carrier here is pure: it reads its webhooks into typed facts ([`IncomingCall`],
//! [`StatusReport`]), maps its call statuses to the call's progress ([`CallProgress`]), names its
//! signature scheme ([`SignatureScheme`]), renders its answer document (TwiML or TeXML) and builds
//! the REST request that places an outbound call as a value ([`outbound::CarrierRequest`]) that
//! voice-router sends. Each route is one trait method: `incoming`, `status`; the `<Connect action>`
//! callback (issue 14) is meant to become a third.
//!
//! Call ids: the edge's call id travels in URL paths, Durable Object names, Redis keys and logs,
//! so it obeys the one id rule (`identifier::is_resource_id`). A Twilio `CallSid` (`CA` + 32 hex)
//! already does and is used as it is; a Telnyx `CallSid` (`v3:…`, a call control id with a colon)
//! does not, so the edge maps it to an id of its own ([`Carrier::call_id`]) and keeps the
//! carrier's id beside it (`carrier_call_sid`). The id rule stays as narrow as it was.

use serde::{Deserialize, Serialize};

use crate::agent::AgentSpec;
use crate::call_session::EndReason;
use crate::principal::AuthMethod;
use crate::twilio::CallWebhook;

pub mod account;
pub mod outbound;
pub mod telnyx;
pub mod twilio;

pub use outbound::{CarrierRequest, MachineDetection, PlaceCall, Placed, PlacementError};

/// The carriers the edge speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CarrierKind {
    /// Twilio Programmable Voice (TwiML, ConversationRelay).
    Twilio,
    /// Telnyx TeXML (its ConversationRelay-compatible `<ConversationRelay>`).
    Telnyx,
}

impl CarrierKind {
    /// Every carrier.
    pub const ALL: [CarrierKind; 2] = [CarrierKind::Twilio, CarrierKind::Telnyx];

    /// The route segment and the stored name (`twilio`, `telnyx`).
    pub fn as_str(self) -> &'static str {
        match self {
            CarrierKind::Twilio => "twilio",
            CarrierKind::Telnyx => "telnyx",
        }
    }

    /// The carrier a route segment names.
    pub fn parse(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == segment)
    }

    /// The carrier's implementation.
    pub fn carrier(self) -> &'static dyn Carrier {
        match self {
            CarrierKind::Twilio => &twilio::Twilio,
            CarrierKind::Telnyx => &telnyx::Telnyx,
        }
    }
}

/// Where a call is, as its carrier reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallProgress {
    /// Accepted, not yet ringing (`queued`, `initiated`).
    Queued,
    /// The called phone rings.
    Ringing,
    /// Answered (`in-progress`).
    Answered,
    /// Over, for this reason (`completed`, `busy`, `no-answer`, `failed`, `canceled`).
    Ended(EndReason),
}

impl CallProgress {
    /// A carrier's `CallStatus` as Twilio defines the values and Telnyx's TeXML repeats them:
    /// `queued`, `initiated`, `ringing`, `in-progress`, `completed`, `busy`, `failed`,
    /// `no-answer`, `canceled` (<https://www.twilio.com/docs/voice/api/call-resource#call-status-values>;
    /// Telnyx: <https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/hangup>,
    /// "Status callback attributes"). `None` for a value neither defines.
    pub fn from_call_status(status: &str) -> Option<Self> {
        Some(match status.trim().to_ascii_lowercase().as_str() {
            "queued" | "initiated" => CallProgress::Queued,
            "ringing" => CallProgress::Ringing,
            "in-progress" | "answered" => CallProgress::Answered,
            "completed" => CallProgress::Ended(EndReason::Completed),
            "busy" => CallProgress::Ended(EndReason::Busy),
            "failed" => CallProgress::Ended(EndReason::Failed),
            "no-answer" => CallProgress::Ended(EndReason::NoAnswer),
            "canceled" => CallProgress::Ended(EndReason::Canceled),
            _ => return None,
        })
    }
}

/// Who or what answered an outbound call, as answering-machine detection says. The values are
/// Twilio's `AnsweredBy` (<https://www.twilio.com/docs/voice/answering-machine-detection>,
/// "Webhook parameters"), which Telnyx's TeXML AMD callback repeats
/// (<https://developers.telnyx.com/api-reference/callbacks/texml-call-amd>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    /// A person.
    Human,
    /// A machine, detected as its greeting started (`MachineDetection=Enable`).
    MachineStart,
    /// A machine whose greeting ended with a beep (`DetectMessageEnd`).
    MachineEndBeep,
    /// A machine whose greeting ended in silence (`DetectMessageEnd`).
    MachineEndSilence,
    /// A machine whose greeting ended otherwise (`DetectMessageEnd`).
    MachineEndOther,
    /// A fax machine.
    Fax,
    /// Detection could not tell.
    Unknown,
}

impl AnsweredBy {
    /// Every value.
    pub const ALL: [AnsweredBy; 7] = [
        AnsweredBy::Human,
        AnsweredBy::MachineStart,
        AnsweredBy::MachineEndBeep,
        AnsweredBy::MachineEndSilence,
        AnsweredBy::MachineEndOther,
        AnsweredBy::Fax,
        AnsweredBy::Unknown,
    ];

    /// The value as the carriers send it (and as it is stored).
    pub fn as_str(self) -> &'static str {
        match self {
            AnsweredBy::Human => "human",
            AnsweredBy::MachineStart => "machine_start",
            AnsweredBy::MachineEndBeep => "machine_end_beep",
            AnsweredBy::MachineEndSilence => "machine_end_silence",
            AnsweredBy::MachineEndOther => "machine_end_other",
            AnsweredBy::Fax => "fax",
            AnsweredBy::Unknown => "unknown",
        }
    }

    /// Reads a carrier's `AnsweredBy`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Self::ALL.into_iter().find(|value| value.as_str() == text)
    }

    /// Whether a machine (answering machine or fax) answered.
    pub fn is_machine(self) -> bool {
        !matches!(self, AnsweredBy::Human | AnsweredBy::Unknown)
    }

    /// Whether the machine's greeting is over, so a message left now is recorded whole.
    pub fn greeting_ended(self) -> bool {
        matches!(
            self,
            AnsweredBy::MachineEndBeep
                | AnsweredBy::MachineEndSilence
                | AnsweredBy::MachineEndOther
        )
    }
}

/// What the incoming-call webhook says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// The carrier's call id (`CallSid`).
    pub carrier_call_id: String,
    /// The carrier account (`AccountSid`).
    pub account_id: Option<String>,
    /// Caller's number.
    pub from: Option<String>,
    /// Called number.
    pub to: Option<String>,
}

/// What a status callback (or an answering-machine detection callback) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The carrier's call id (`CallSid`).
    pub carrier_call_id: String,
    /// The carrier account (`AccountSid`).
    pub account_id: Option<String>,
    /// `CallStatus` as sent (kept verbatim in the call's state).
    pub carrier_status: Option<String>,
    /// `CallStatus` as the call's progress; `None` when absent or unknown.
    pub progress: Option<CallProgress>,
    /// `AnsweredBy`, when detection ran.
    pub answered_by: Option<AnsweredBy>,
}

impl IncomingCall {
    /// The facts of an incoming-call webhook in Twilio's field names (which Telnyx's TeXML
    /// repeats), its `CallSid` checked by `usable`.
    pub fn of(webhook: CallWebhook, usable: impl Fn(&str) -> bool) -> Result<Self, WebhookError> {
        Ok(Self {
            carrier_call_id: webhook
                .call_sid
                .filter(|id| usable(id))
                .ok_or(WebhookError::BadCallId)?,
            account_id: webhook.account_sid,
            from: webhook.from,
            to: webhook.to,
        })
    }
}

impl StatusReport {
    /// The facts of a status (or AMD) callback in Twilio's field names, its `CallSid` checked by
    /// `usable`.
    pub fn of(webhook: CallWebhook, usable: impl Fn(&str) -> bool) -> Result<Self, WebhookError> {
        Ok(Self {
            carrier_call_id: webhook
                .call_sid
                .filter(|id| usable(id))
                .ok_or(WebhookError::BadCallId)?,
            progress: webhook
                .call_status
                .as_deref()
                .and_then(CallProgress::from_call_status),
            answered_by: webhook.answered_by.as_deref().and_then(AnsweredBy::parse),
            carrier_status: webhook.call_status,
            account_id: webhook.account_sid,
        })
    }
}

/// Why a webhook could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No `CallSid`, or one the edge cannot use.
    #[error("CallSid is missing or not an id")]
    BadCallId,
}

/// How the carrier's ConversationRelay WebSocket handshake is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayAuth {
    /// The carrier signs the handshake (Twilio's `X-Twilio-Signature` over the URL).
    SignedHandshake,
    /// The carrier does not sign it (Telnyx documents no signature on the handshake): the edge
    /// puts a call-bound session token in the relay URL it hands out.
    SessionToken,
}

/// The inputs of a carrier's request signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureScheme {
    /// How auth-validator reports a principal this scheme authenticated.
    pub method: AuthMethod,
    /// The request headers the scheme reads.
    pub headers: &'static [&'static str],
    /// Whether the URL as called is signed (Twilio: yes; Telnyx: no, only timestamp and body).
    pub covers_url: bool,
}

/// One carrier. Pure: every input is an argument, every output a value.
pub trait Carrier: Sync {
    /// Which carrier this is.
    fn kind(&self) -> CarrierKind;

    /// How its requests are signed.
    fn signature(&self) -> SignatureScheme;

    /// `POST /voice/{carrier}/incoming`: the incoming-call webhook's facts.
    fn incoming(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<IncomingCall, WebhookError>;

    /// `POST /voice/{carrier}/status`: a status callback's (or AMD callback's) facts.
    fn status(&self, content_type: Option<&str>, body: &[u8])
    -> Result<StatusReport, WebhookError>;

    /// The edge's call id for one of the carrier's call ids; `None` when it cannot be one.
    fn call_id(&self, carrier_call_id: &str) -> Option<String>;

    /// How the relay handshake is authenticated.
    fn relay_auth(&self) -> RelayAuth;

    /// The answer connecting a call to the agent's ConversationRelay at `relay_url`, with
    /// `parameters` as `<Parameter>`s (they reach the origin in `setup.customParameters`) and,
    /// where the carrier calls back when the relay session ends, `action` as that callback
    /// (where a transfer is dialled).
    fn connect_agent(
        &self,
        agent: &AgentSpec,
        relay_url: &str,
        action: Option<&str>,
        parameters: &[(String, String)],
    ) -> String;

    /// A polite refusal: `message` said, then the call hung up.
    fn say_and_hang_up(&self, message: &str, language: Option<&str>) -> String;

    /// The REST request placing an outbound call from `account`.
    fn place_call(
        &self,
        account: &account::OutboundAccount,
        call: &PlaceCall<'_>,
    ) -> CarrierRequest;

    /// What the REST API's answer (`status`, `body`) to [`Carrier::place_call`] means.
    fn placement(&self, status: u16, body: &[u8]) -> Result<Placed, PlacementError>;
}

/// `Content-Type` of every answer document (TwiML and TeXML are both XML).
pub const ANSWER_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// Query parameter naming the edge's call id on the status callback URL of an outbound call: the
/// carrier's own call id is not known when the call is placed (Telnyx does not return it).
pub const CALL_ID_PARAM: &str = "call_id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_segments_name_each_carrier_once() {
        for kind in CarrierKind::ALL {
            assert_eq!(CarrierKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.carrier().kind(), kind);
            assert_eq!(
                serde_json::to_value(kind).expect("json"),
                serde_json::Value::from(kind.as_str())
            );
        }
        assert_eq!(CarrierKind::parse("relay"), None);
        assert_eq!(CarrierKind::parse("Twilio"), None);
    }

    #[test]
    fn call_statuses_map_to_progress() {
        let cases = [
            ("queued", Some(CallProgress::Queued)),
            ("initiated", Some(CallProgress::Queued)),
            ("ringing", Some(CallProgress::Ringing)),
            ("in-progress", Some(CallProgress::Answered)),
            ("completed", Some(CallProgress::Ended(EndReason::Completed))),
            ("busy", Some(CallProgress::Ended(EndReason::Busy))),
            ("failed", Some(CallProgress::Ended(EndReason::Failed))),
            ("no-answer", Some(CallProgress::Ended(EndReason::NoAnswer))),
            ("canceled", Some(CallProgress::Ended(EndReason::Canceled))),
            (
                " Completed ",
                Some(CallProgress::Ended(EndReason::Completed)),
            ),
            ("weird", None),
            ("", None),
        ];
        for (status, expected) in cases {
            assert_eq!(CallProgress::from_call_status(status), expected, "{status}");
        }
    }

    #[test]
    fn answered_by_values_and_what_they_mean() {
        for value in AnsweredBy::ALL {
            assert_eq!(AnsweredBy::parse(value.as_str()), Some(value));
            assert_eq!(
                serde_json::to_value(value).expect("json"),
                serde_json::Value::from(value.as_str())
            );
        }
        assert_eq!(AnsweredBy::parse("robot"), None);
        let machines: Vec<AnsweredBy> = AnsweredBy::ALL
            .into_iter()
            .filter(|v| v.is_machine())
            .collect();
        assert_eq!(
            machines,
            [
                AnsweredBy::MachineStart,
                AnsweredBy::MachineEndBeep,
                AnsweredBy::MachineEndSilence,
                AnsweredBy::MachineEndOther,
                AnsweredBy::Fax
            ]
        );
        assert!(AnsweredBy::MachineEndBeep.greeting_ended());
        assert!(!AnsweredBy::MachineStart.greeting_ended());
        assert!(!AnsweredBy::Human.greeting_ended());
    }
}
