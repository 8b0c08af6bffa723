//! Telnyx TeXML: form webhooks signed with Ed25519 (`crate::telnyx`), TeXML answers with its
//! `<ConversationRelay>` (`crate::twiml`, Telnyx dialect), and outbound calls through
//! `POST /v2/texml/Accounts/{account_sid}/Calls`
//! (<https://developers.telnyx.com/api-reference/texml-rest-commands/initiate-an-outbound-call>).
//!
//! TeXML's callbacks carry Twilio's field names (`CallSid`, `AccountSid`, `CallStatus`, `From`,
//! `To`, `AnsweredBy`), form-encoded: the call-progress callbacks
//! (<https://developers.telnyx.com/api-reference/callbacks/texml-call-initiated>, `…-ringing`,
//! `…-answered`, `…-completed`) and the AMD callback
//! (<https://developers.telnyx.com/api-reference/callbacks/texml-call-amd>). Its `CallSid` is a
//! call control id, `v3:…` (older calls `v2:…`).

use sha2::{Digest, Sha256};

use super::account::OutboundAccount;
use super::outbound::{self, CarrierRequest, PlaceCall, Placed, PlacementError};
use super::{
    Carrier, CarrierKind, IncomingCall, RelayAuth, SignatureScheme, StatusReport, WebhookError,
};
use crate::agent::AgentSpec;
use crate::principal::AuthMethod;
use crate::telnyx::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::twilio::CallWebhook;
use crate::twiml::{self, Dialect};

/// Prefix of the edge's id for a Telnyx call.
pub const CALL_ID_PREFIX: &str = "tx-";
/// Longest carrier call id accepted (a `v3:` id is 57 characters).
pub const MAX_CALL_CONTROL_ID: usize = 256;
/// `StatusCallbackEvent`: space-separated, as the API documents it.
pub const STATUS_EVENTS: &str = "ringing answered completed";

/// Telnyx.
#[derive(Debug, Clone, Copy, Default)]
pub struct Telnyx;

impl Carrier for Telnyx {
    fn kind(&self) -> CarrierKind {
        CarrierKind::Telnyx
    }

    fn signature(&self) -> SignatureScheme {
        SignatureScheme {
            method: AuthMethod::TelnyxSignature,
            headers: &[SIGNATURE_HEADER, TIMESTAMP_HEADER],
            covers_url: false,
        }
    }

    fn incoming(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<IncomingCall, WebhookError> {
        IncomingCall::of(CallWebhook::from_body(content_type, body), |id| {
            Telnyx.call_id(id).is_some()
        })
    }

    fn status(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<StatusReport, WebhookError> {
        StatusReport::of(CallWebhook::from_body(content_type, body), |id| {
            Telnyx.call_id(id).is_some()
        })
    }

    /// `tx-` and the first 40 hex digits of the SHA-256 of the call control id: deterministic
    /// (a retried webhook and every later callback name the same call), within the id rule, and
    /// free of the `:` the carrier's id has. 160 bits: no two calls meet by chance.
    fn call_id(&self, carrier_call_id: &str) -> Option<String> {
        let usable = !carrier_call_id.is_empty()
            && carrier_call_id.len() <= MAX_CALL_CONTROL_ID
            && carrier_call_id.bytes().all(|b| b.is_ascii_graphic());
        usable.then(|| {
            let digest = Sha256::digest(carrier_call_id.as_bytes());
            let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
            format!("{CALL_ID_PREFIX}{hex}")
        })
    }

    /// Telnyx documents no signature on the ConversationRelay handshake.
    fn relay_auth(&self) -> RelayAuth {
        RelayAuth::SessionToken
    }

    fn connect_agent(
        &self,
        agent: &AgentSpec,
        relay_url: &str,
        _action: Option<&str>,
        parameters: &[(String, String)],
    ) -> String {
        // TeXML's `<Connect>` takes an `action` too
        // (<https://developers.telnyx.com/docs/voice/programmable-voice/conversation-relay>), but
        // the edge's action route reads Twilio's callback only: a Telnyx call's end is a hang-up.
        twiml::connect_agent_in(Dialect::Telnyx, agent, relay_url, None, parameters)
    }

    /// TeXML has `<Say>` and `<Hangup>` as TwiML does
    /// (<https://developers.telnyx.com/docs/voice/programmable-voice/texml-twiml-compatibility>).
    fn say_and_hang_up(&self, message: &str, language: Option<&str>) -> String {
        twiml::say_and_hang_up(message, language)
    }

    /// JSON as documented: `ApplicationSid` (the account's TeXML application), `To`, `From`,
    /// `Texml` (the answer, inline), `StatusCallback`, `StatusCallbackEvent` (space-separated),
    /// and for detection `MachineDetection`, `AsyncAmd`, `AsyncAmdStatusCallback` (field names of
    /// the API reference and of Telnyx's SDKs' `CallCallsParams`). Bearer API key.
    fn place_call(&self, account: &OutboundAccount, call: &PlaceCall<'_>) -> CarrierRequest {
        let mut body = serde_json::json!({
            "ApplicationSid": account.application_id.clone().unwrap_or_default(),
            "To": call.to,
            "From": call.from,
            "Texml": call.answer,
            "StatusCallback": call.status_url,
            "StatusCallbackMethod": "POST",
            "StatusCallbackEvent": STATUS_EVENTS,
        });
        if let Some(mode) = call.machine_detection.carrier_value() {
            body["MachineDetection"] = mode.into();
            body["AsyncAmd"] = true.into();
            body["AsyncAmdStatusCallback"] = call.status_url.into();
            body["AsyncAmdStatusCallbackMethod"] = "POST".into();
        }
        let key = String::from_utf8_lossy(account.credential.expose()).into_owned();
        CarrierRequest {
            method: "POST",
            url: format!(
                "{}/v2/texml/Accounts/{}/Calls",
                account.api_base, account.account_id
            ),
            headers: vec![
                ("authorization", format!("Bearer {key}")),
                ("content-type", "application/json".to_owned()),
                ("accept", "application/json".to_owned()),
            ],
            body: body.to_string(),
        }
    }

    /// The documented success answer is `{"from","to","status":"queued"}` (no call id: it comes
    /// with the first status callback; a `call_sid` or `sid` is taken if one is there). Errors
    /// follow Telnyx's API error format, `{"errors":[{"code","title","detail","source":
    /// {"pointer":"/To"}}]}`; the refused number is told by the pointer.
    fn placement(&self, status: u16, body: &[u8]) -> Result<Placed, PlacementError> {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        if (200..300).contains(&status) {
            let id = ["call_sid", "sid", "CallSid"]
                .iter()
                .find_map(|name| json.get(name).and_then(|v| v.as_str()))
                .map(str::to_owned);
            return Ok(Placed {
                carrier_call_id: id,
            });
        }
        if let Some(error) = outbound::by_status(status) {
            return Err(error);
        }
        let first = json
            .get("errors")
            .and_then(|errors| errors.get(0))
            .cloned()
            .unwrap_or_default();
        let text = |name: &str| first.get(name).and_then(|v| v.as_str()).unwrap_or_default();
        let detail = outbound::detail(if text("detail").is_empty() {
            text("title")
        } else {
            text("detail")
        });
        let pointer = first
            .pointer("/source/pointer")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_ascii_lowercase();
        Err(match pointer.as_str() {
            "to" => PlacementError::Destination(detail),
            "from" => PlacementError::CallerId(detail),
            _ => PlacementError::Refused { status, detail },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call_session::EndReason;
    use crate::carrier::{AnsweredBy, CallProgress, MachineDetection};
    use crate::identifier::is_resource_id;
    use crate::secret::Secret;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    }

    /// The examples of Telnyx's callback reference pages, as form bodies.
    #[test]
    fn callbacks_read_as_telnyx_publishes_them() {
        let sid = "v3:9X2vxPDFY2RHSJ1EdMS0RHRksMTg7ldNxdjWbVr9zBjbGjGsSe-aiQ";
        let answered = form(&[
            ("AccountSid", "f5586561-8ff0-4291-a51b-c7dfe4139ff9"),
            ("CallInitiatedAt", "2024-01-15T10:30:26.028Z"),
            ("CallSid", sid),
            ("CallSidLegacy", sid),
            ("CallStatus", "in-progress"),
            ("CallbackSource", "call-progress-events"),
            ("ConnectionId", "1234567890"),
            ("From", "+35319605860"),
            ("SequenceNumber", "2"),
            ("To", "+13129457420"),
        ]);
        let report = Telnyx.status(FORM, &answered).expect("answered");
        assert_eq!(report.carrier_call_id, sid);
        assert_eq!(
            report.account_id.as_deref(),
            Some("f5586561-8ff0-4291-a51b-c7dfe4139ff9")
        );
        assert_eq!(report.progress, Some(CallProgress::Answered));
        let no_answer = form(&[("CallSid", sid), ("CallStatus", "no-answer")]);
        assert_eq!(
            Telnyx.status(FORM, &no_answer).expect("ended").progress,
            Some(CallProgress::Ended(EndReason::NoAnswer))
        );
        let amd = form(&[
            ("AccountSid", "f5586561-8ff0-4291-a51b-c7dfe4139ff9"),
            ("AnsweredBy", "human"),
            ("CallSid", sid),
            ("ConnectionId", "1234567890"),
            ("MachineDetectionDuration", "2500"),
        ]);
        let amd = Telnyx.status(FORM, &amd).expect("amd");
        assert_eq!(
            (amd.progress, amd.answered_by),
            (None, Some(AnsweredBy::Human))
        );
        let incoming = Telnyx
            .incoming(FORM, &form(&[("CallSid", sid), ("To", "+13129457420")]))
            .expect("incoming");
        assert_eq!(incoming.to.as_deref(), Some("+13129457420"));
        assert_eq!(
            Telnyx.status(FORM, &form(&[("CallStatus", "busy")])),
            Err(WebhookError::BadCallId)
        );
    }

    #[test]
    fn call_control_ids_map_to_stable_ids_within_the_id_rule() {
        let v3 = "v3:9X2vxPDFY2RHSJ1EdMS0RHRksMTg7ldNxdjWbVr9zBjbGjGsSe-aiQ";
        let v2 = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ";
        let id = Telnyx.call_id(v3).expect("an id");
        assert!(is_resource_id(&id), "{id}");
        assert!(id.starts_with(CALL_ID_PREFIX) && id.len() == 43, "{id}");
        assert_eq!(
            Telnyx.call_id(v3),
            Some(id.clone()),
            "the same call, the same id"
        );
        assert_ne!(Telnyx.call_id(v2), Some(id));
        for bad in ["", "v3:a b", &"x".repeat(MAX_CALL_CONTROL_ID + 1)] {
            assert_eq!(Telnyx.call_id(bad), None, "{bad:?}");
        }
    }

    fn account() -> OutboundAccount {
        OutboundAccount {
            carrier: CarrierKind::Telnyx,
            account_id: "f5586561-8ff0-4291-a51b-c7dfe4139ff9".into(),
            tenant_id: "t1".into(),
            numbers: Vec::new(),
            application_id: Some("1773070540731319841".into()),
            credential: Secret::new("KEY0123"),
            api_base: "https://api.telnyx.com".into(),
        }
    }

    #[test]
    fn the_outbound_request_has_the_documented_shape() {
        let call = PlaceCall {
            to: "+13121230000",
            from: "+13120001234",
            answer: "<Response/>",
            status_url: "https://edge.example/voice/telnyx/status?call_id=call_1",
            machine_detection: MachineDetection::Detect,
        };
        let request = Telnyx.place_call(&account(), &call);
        assert_eq!(
            request.url,
            "https://api.telnyx.com/v2/texml/Accounts/f5586561-8ff0-4291-a51b-c7dfe4139ff9/Calls"
        );
        assert_eq!(request.header("authorization"), Some("Bearer KEY0123"));
        let body: serde_json::Value = serde_json::from_str(&request.body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "ApplicationSid": "1773070540731319841",
                "To": "+13121230000",
                "From": "+13120001234",
                "Texml": "<Response/>",
                "StatusCallback": "https://edge.example/voice/telnyx/status?call_id=call_1",
                "StatusCallbackMethod": "POST",
                "StatusCallbackEvent": "ringing answered completed",
                "MachineDetection": "Enable",
                "AsyncAmd": true,
                "AsyncAmdStatusCallback": "https://edge.example/voice/telnyx/status?call_id=call_1",
                "AsyncAmdStatusCallbackMethod": "POST",
            })
        );
    }

    #[test]
    fn answers_map_to_outcomes() {
        let error = |pointer: &str| {
            format!(
                r#"{{"errors":[{{"code":"10015","title":"Invalid value","detail":"The number is not valid.","source":{{"pointer":"{pointer}"}}}}]}}"#
            )
        };
        let cases: Vec<(u16, String, Result<Placed, PlacementError>)> = vec![
            (
                200,
                r#"{"from":"+13120001234","to":"+13121230000","status":"queued"}"#.into(),
                Ok(Placed {
                    carrier_call_id: None,
                }),
            ),
            (
                200,
                r#"{"call_sid":"v3:abc","status":"queued"}"#.into(),
                Ok(Placed {
                    carrier_call_id: Some("v3:abc".into()),
                }),
            ),
            (
                422,
                error("/To"),
                Err(PlacementError::Destination(
                    "The number is not valid.".into(),
                )),
            ),
            (
                422,
                error("/From"),
                Err(PlacementError::CallerId("The number is not valid.".into())),
            ),
            (
                422,
                error("/Url"),
                Err(PlacementError::Refused {
                    status: 422,
                    detail: "The number is not valid.".into(),
                }),
            ),
            (
                401,
                r#"{"errors":[{"code":"10009","title":"Authentication failed"}]}"#.into(),
                Err(PlacementError::Credentials { status: 401 }),
            ),
            (
                502,
                String::new(),
                Err(PlacementError::Unavailable { status: 502 }),
            ),
        ];
        for (status, body, expected) in cases {
            assert_eq!(
                Telnyx.placement(status, body.as_bytes()),
                expected,
                "{body}"
            );
        }
    }
}
