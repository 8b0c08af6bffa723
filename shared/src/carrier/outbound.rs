//! Placing an outbound call: what the API client asks for ([`MachineDetection`]), what a carrier
//! is given ([`PlaceCall`]), the REST request it builds ([`CarrierRequest`], a value voice-router
//! sends), and what the carrier's answer means ([`Placed`] or [`PlacementError`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Answering-machine detection asked for an outbound call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineDetection {
    /// No detection: whoever answers talks to the agent.
    #[default]
    Off,
    /// Say as soon as it is known whether a person or a machine answered; a machine is hung up
    /// on (its greeting is still playing, so a message would be cut).
    Detect,
    /// For a machine, wait for the end of its greeting (the beep), then leave the agent's
    /// voicemail message.
    DetectMessageEnd,
}

impl MachineDetection {
    /// The carriers' `MachineDetection` value (Twilio: `Enable`/`DetectMessageEnd`,
    /// <https://www.twilio.com/docs/voice/answering-machine-detection>; Telnyx TeXML takes the
    /// same values, <https://developers.telnyx.com/docs/voice/programmable-voice/texml-answering-machine>);
    /// `None` when detection is off.
    pub fn carrier_value(self) -> Option<&'static str> {
        match self {
            MachineDetection::Off => None,
            MachineDetection::Detect => Some("Enable"),
            MachineDetection::DetectMessageEnd => Some("DetectMessageEnd"),
        }
    }
}

/// An outbound call as a carrier is asked to place it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceCall<'a> {
    /// E.164 number to call.
    pub to: &'a str,
    /// E.164 caller id (one of the tenant's numbers).
    pub from: &'a str,
    /// The answer document (TwiML/TeXML) run when the call is answered.
    pub answer: &'a str,
    /// Where the carrier posts status callbacks and the AMD result.
    pub status_url: &'a str,
    /// Answering-machine detection.
    pub machine_detection: MachineDetection,
}

/// An HTTP request to a carrier's REST API. `Debug` never shows the `authorization` value.
#[derive(Clone, PartialEq, Eq)]
pub struct CarrierRequest {
    /// `POST`.
    pub method: &'static str,
    /// Absolute URL.
    pub url: String,
    /// Headers, `authorization` among them.
    pub headers: Vec<(&'static str, String)>,
    /// The body, as sent.
    pub body: String,
}

impl CarrierRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

impl fmt::Debug for CarrierRequest {
    // By hand: the credential must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if name.eq_ignore_ascii_case("authorization") {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (*name, shown)
            })
            .collect();
        f.debug_struct("CarrierRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// The carrier accepted the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The carrier's call id, when its answer names it (Twilio's `sid`; Telnyx documents none,
    /// its id arrives with the first status callback).
    pub carrier_call_id: Option<String>,
}

/// Why a carrier did not place the call. Client mistakes the carrier found (the numbers) are
/// told to the client; everything else is the edge's or the carrier's trouble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The carrier refused the number called (invalid, unreachable, not permitted).
    #[error("the carrier refused the number to call: {0}")]
    Destination(String),
    /// The carrier refused the caller id (not verified or not owned by the account).
    #[error("the carrier refused the caller id: {0}")]
    CallerId(String),
    /// The carrier refused the account's credentials (a configuration problem of the edge).
    #[error("the carrier refused the account's credentials ({status})")]
    Credentials {
        /// The HTTP status.
        status: u16,
    },
    /// The carrier asked to slow down.
    #[error("the carrier is rate limiting the account")]
    RateLimited,
    /// The carrier failed (5xx) or answered something unreadable.
    #[error("the carrier is unavailable ({status})")]
    Unavailable {
        /// The HTTP status (0: no answer at all).
        status: u16,
    },
    /// Another refusal, as the carrier worded it.
    #[error("the carrier refused the call ({status}): {detail}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The carrier's words.
        detail: String,
    },
}

/// The shortened, printable form of a carrier's message (it is shown to API clients).
pub(crate) fn detail(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Status classes every carrier shares: credentials, rate limits and 5xx; `None` for a 4xx the
/// carrier's own error body must explain.
pub(crate) fn by_status(status: u16) -> Option<PlacementError> {
    match status {
        401 | 403 => Some(PlacementError::Credentials { status }),
        429 => Some(PlacementError::RateLimited),
        500..=599 => Some(PlacementError::Unavailable { status }),
        400..=499 => None,
        _ => Some(PlacementError::Unavailable { status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_detection_travels_in_snake_case_and_maps_to_the_carriers_values() {
        let cases = [
            ("\"off\"", MachineDetection::Off, None),
            ("\"detect\"", MachineDetection::Detect, Some("Enable")),
            (
                "\"detect_message_end\"",
                MachineDetection::DetectMessageEnd,
                Some("DetectMessageEnd"),
            ),
        ];
        for (json, mode, value) in cases {
            assert_eq!(
                serde_json::from_str::<MachineDetection>(json).expect("parses"),
                mode
            );
            assert_eq!(mode.carrier_value(), value);
        }
        assert!(serde_json::from_str::<MachineDetection>("\"Enable\"").is_err());
    }

    #[test]
    fn debug_hides_the_credential() {
        let request = CarrierRequest {
            method: "POST",
            url: "https://api.example/Calls".into(),
            headers: vec![
                ("authorization", "Basic c2VjcmV0LXRva2Vu".into()),
                ("content-type", "application/json".into()),
            ],
            body: "{}".into(),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("c2VjcmV0LXRva2Vu"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("application/json"));
        assert_eq!(
            request.header("Authorization"),
            Some("Basic c2VjcmV0LXRva2Vu")
        );
    }

    #[test]
    fn shared_status_classes() {
        assert_eq!(
            by_status(401),
            Some(PlacementError::Credentials { status: 401 })
        );
        assert_eq!(by_status(429), Some(PlacementError::RateLimited));
        assert_eq!(
            by_status(503),
            Some(PlacementError::Unavailable { status: 503 })
        );
        assert_eq!(by_status(400), None);
        assert_eq!(detail("  a\u{7}b \n"), "ab");
    }
}
