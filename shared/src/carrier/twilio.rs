//! Twilio: form (or `bodySHA256` JSON) webhooks signed with `X-Twilio-Signature`
//! (`crate::twilio`), TwiML answers (`crate::twiml`), and outbound calls through
//! `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`
//! (<https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource>).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::account::OutboundAccount;
use super::outbound::{self, CarrierRequest, PlaceCall, Placed, PlacementError};
use super::{
    Carrier, CarrierKind, IncomingCall, RelayAuth, SignatureScheme, StatusReport, WebhookError,
};
use crate::agent::AgentSpec;
use crate::identifier::is_resource_id;
use crate::principal::AuthMethod;
use crate::twilio::{CallWebhook, SIGNATURE_HEADER};
use crate::twiml;

/// Status callback events an outbound call asks for (`StatusCallbackEvent`): the call's
/// progress (`ringing`, `answered`) and its end (`completed`, which carries `busy`,
/// `no-answer`, `failed` and `canceled` too).
pub const STATUS_EVENTS: [&str; 3] = ["ringing", "answered", "completed"];

/// Twilio error codes of a refused caller id: 21210 "'From' phone number not verified"
/// (<https://www.twilio.com/docs/api/errors/21210>), 21212 "Invalid 'From' Phone Number"
/// (<https://www.twilio.com/docs/api/errors/21212>).
const CALLER_ID_ERRORS: [u64; 2] = [21210, 21212];
/// Twilio error codes of a refused destination: 21211 "Invalid 'To' Phone Number", 21214
/// "'To' phone number cannot be reached", 21215 "Geo Permission configuration is not permitting
/// call", 21217 "Phone number does not appear to be valid", 21219 "'To' phone number not verified"
/// (<https://www.twilio.com/docs/api/errors/21211> and the pages beside it).
const DESTINATION_ERRORS: [u64; 5] = [21211, 21214, 21215, 21217, 21219];

/// Twilio.
#[derive(Debug, Clone, Copy, Default)]
pub struct Twilio;

impl Carrier for Twilio {
    fn kind(&self) -> CarrierKind {
        CarrierKind::Twilio
    }

    fn signature(&self) -> SignatureScheme {
        SignatureScheme {
            method: AuthMethod::TwilioSignature,
            headers: &[SIGNATURE_HEADER],
            covers_url: true,
        }
    }

    fn incoming(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<IncomingCall, WebhookError> {
        IncomingCall::of(CallWebhook::from_body(content_type, body), is_resource_id)
    }

    fn status(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<StatusReport, WebhookError> {
        StatusReport::of(CallWebhook::from_body(content_type, body), is_resource_id)
    }

    /// A `CallSid` (`CA` + 32 hex digits) already obeys the id rule: it is the call's id.
    fn call_id(&self, carrier_call_id: &str) -> Option<String> {
        is_resource_id(carrier_call_id).then(|| carrier_call_id.to_owned())
    }

    fn relay_auth(&self) -> RelayAuth {
        RelayAuth::SignedHandshake
    }

    fn connect_agent(
        &self,
        agent: &AgentSpec,
        relay_url: &str,
        action: Option<&str>,
        parameters: &[(String, String)],
    ) -> String {
        twiml::connect_agent(agent, relay_url, action, parameters)
    }

    fn say_and_hang_up(&self, message: &str, language: Option<&str>) -> String {
        twiml::say_and_hang_up(message, language)
    }

    /// Form parameters as documented for creating a Call: `To`, `From`, `Twiml` (the answer,
    /// inline), `StatusCallback` with `StatusCallbackEvent` repeated per event, and for
    /// detection `MachineDetection` with `AsyncAmd=true` and `AsyncAmdStatusCallback` (the same
    /// status route): asynchronous, so the callee hears the agent at once while detection
    /// listens (<https://www.twilio.com/docs/voice/answering-machine-detection>). HTTP Basic
    /// with the AccountSid and its auth token.
    fn place_call(&self, account: &OutboundAccount, call: &PlaceCall<'_>) -> CarrierRequest {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", call.to)
            .append_pair("From", call.from)
            .append_pair("Twiml", call.answer)
            .append_pair("StatusCallback", call.status_url)
            .append_pair("StatusCallbackMethod", "POST");
        for event in STATUS_EVENTS {
            form.append_pair("StatusCallbackEvent", event);
        }
        if let Some(mode) = call.machine_detection.carrier_value() {
            form.append_pair("MachineDetection", mode)
                .append_pair("AsyncAmd", "true")
                .append_pair("AsyncAmdStatusCallback", call.status_url)
                .append_pair("AsyncAmdStatusCallbackMethod", "POST");
        }
        let mut basic = account.account_id.as_bytes().to_vec();
        basic.push(b':');
        basic.extend_from_slice(account.credential.expose());
        CarrierRequest {
            method: "POST",
            url: format!(
                "{}/2010-04-01/Accounts/{}/Calls.json",
                account.api_base, account.account_id
            ),
            headers: vec![
                ("authorization", format!("Basic {}", STANDARD.encode(basic))),
                (
                    "content-type",
                    "application/x-www-form-urlencoded".to_owned(),
                ),
                ("accept", "application/json".to_owned()),
            ],
            body: form.finish(),
        }
    }

    /// 201 with the Call resource (`sid`); errors are `{"code","message","status"}`
    /// (<https://www.twilio.com/docs/usage/twilios-response#response-formats-exceptions>).
    fn placement(&self, status: u16, body: &[u8]) -> Result<Placed, PlacementError> {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(Placed {
                carrier_call_id: json
                    .get("sid")
                    .and_then(|sid| sid.as_str())
                    .map(str::to_owned),
            });
        }
        if let Some(error) = outbound::by_status(status) {
            return Err(error);
        }
        let code = json.get("code").and_then(serde_json::Value::as_u64);
        let message = outbound::detail(
            json.get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default(),
        );
        Err(match code {
            Some(code) if CALLER_ID_ERRORS.contains(&code) => PlacementError::CallerId(message),
            Some(code) if DESTINATION_ERRORS.contains(&code) => {
                PlacementError::Destination(message)
            }
            _ => PlacementError::Refused {
                status,
                detail: message,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call_session::EndReason;
    use crate::carrier::{AnsweredBy, CallProgress, MachineDetection};
    use crate::secret::Secret;

    fn account() -> OutboundAccount {
        OutboundAccount {
            carrier: CarrierKind::Twilio,
            account_id: "AC0123456789abcdef0123456789abcdef".into(),
            tenant_id: "t1".into(),
            numbers: Vec::new(),
            application_id: None,
            credential: Secret::new("auth-token"),
            api_base: "https://api.twilio.com".into(),
        }
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    /// The parameters of Twilio's documented status callback and AMD callback.
    #[test]
    fn webhooks_read_as_twilio_documents_them() {
        let incoming = Twilio
            .incoming(
                FORM,
                b"AccountSid=AC1&CallSid=CA0123&From=%2B14155550100&To=%2B18005550101&CallStatus=ringing&Direction=inbound",
            )
            .expect("incoming");
        assert_eq!(
            incoming,
            IncomingCall {
                carrier_call_id: "CA0123".into(),
                account_id: Some("AC1".into()),
                from: Some("+14155550100".into()),
                to: Some("+18005550101".into()),
            }
        );
        let busy = Twilio
            .status(
                FORM,
                b"AccountSid=AC1&CallSid=CA0123&CallStatus=busy&CallDuration=0",
            )
            .expect("status");
        assert_eq!(busy.progress, Some(CallProgress::Ended(EndReason::Busy)));
        assert_eq!(busy.carrier_status.as_deref(), Some("busy"));
        assert_eq!(busy.answered_by, None);
        // The asynchronous AMD callback: CallSid, AccountSid, AnsweredBy, MachineDetectionDuration.
        let amd = Twilio
            .status(
                FORM,
                b"AccountSid=AC1&CallSid=CA0123&AnsweredBy=machine_end_beep&MachineDetectionDuration=4120",
            )
            .expect("amd");
        assert_eq!(
            (amd.progress, amd.answered_by),
            (None, Some(AnsweredBy::MachineEndBeep))
        );
        for bad in [&b"CallStatus=busy"[..], b"CallSid=v3%3Aabc&CallStatus=busy"] {
            assert_eq!(Twilio.status(FORM, bad), Err(WebhookError::BadCallId));
        }
    }

    #[test]
    fn a_call_sid_is_its_own_call_id() {
        assert_eq!(
            Twilio
                .call_id("CA0123456789abcdef0123456789abcdef")
                .as_deref(),
            Some("CA0123456789abcdef0123456789abcdef")
        );
        assert_eq!(Twilio.call_id("v3:abc"), None);
    }

    #[test]
    fn the_outbound_request_has_the_documented_shape() {
        let call = PlaceCall {
            to: "+14155550100",
            from: "+18005550101",
            answer: "<Response/>",
            status_url: "https://edge.example/voice/twilio/status?call_id=call_1",
            machine_detection: MachineDetection::DetectMessageEnd,
        };
        let request = Twilio.place_call(&account(), &call);
        assert_eq!(
            request.url,
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json"
        );
        assert_eq!(
            request.header("authorization"),
            Some("Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjphdXRoLXRva2Vu")
        );
        let params: Vec<(String, String)> = form_urlencoded::parse(request.body.as_bytes())
            .into_owned()
            .collect();
        let status_url = "https://edge.example/voice/twilio/status?call_id=call_1";
        let expected: Vec<(String, String)> = [
            ("To", "+14155550100"),
            ("From", "+18005550101"),
            ("Twiml", "<Response/>"),
            ("StatusCallback", status_url),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
            ("MachineDetection", "DetectMessageEnd"),
            ("AsyncAmd", "true"),
            ("AsyncAmdStatusCallback", status_url),
            ("AsyncAmdStatusCallbackMethod", "POST"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(params, expected);
        let off = Twilio.place_call(
            &account(),
            &PlaceCall {
                machine_detection: MachineDetection::Off,
                ..call
            },
        );
        assert!(!off.body.contains("MachineDetection") && !off.body.contains("AsyncAmd"));
    }

    /// Twilio's documented error body: `{"code":21211,"message":…,"more_info":…,"status":400}`.
    #[test]
    fn answers_map_to_outcomes() {
        let error = |code: u64| {
            format!(
                r#"{{"code":{code},"message":"The number is unverified","more_info":"https://www.twilio.com/docs/errors/{code}","status":400}}"#
            )
        };
        let cases: Vec<(u16, String, Result<Placed, PlacementError>)> = vec![
            (
                201,
                r#"{"sid":"CA9","status":"queued"}"#.into(),
                Ok(Placed {
                    carrier_call_id: Some("CA9".into()),
                }),
            ),
            (
                400,
                error(21211),
                Err(PlacementError::Destination(
                    "The number is unverified".into(),
                )),
            ),
            (
                400,
                error(21210),
                Err(PlacementError::CallerId("The number is unverified".into())),
            ),
            (
                400,
                error(20001),
                Err(PlacementError::Refused {
                    status: 400,
                    detail: "The number is unverified".into(),
                }),
            ),
            (
                401,
                error(20003),
                Err(PlacementError::Credentials { status: 401 }),
            ),
            (429, error(20429), Err(PlacementError::RateLimited)),
            (
                503,
                "<html>down</html>".into(),
                Err(PlacementError::Unavailable { status: 503 }),
            ),
        ];
        for (status, body, expected) in cases {
            assert_eq!(
                Twilio.placement(status, body.as_bytes()),
                expected,
                "{body}"
            );
        }
    }
}
