//! Twilio request signatures (`X-Twilio-Signature`), as Twilio documents them in "Validating
//! Requests are coming from Twilio": base64 of HMAC-SHA1, keyed with the account's auth token,
//! over the full URL the carrier called followed by the POST parameters sorted by name, each name
//! immediately followed by its value.
//!
//! - Form webhooks (`application/x-www-form-urlencoded`): URL + sorted parameters.
//! - JSON webhooks: the URL carries `bodySHA256=<hex SHA-256 of the body>`; the signature covers
//!   the URL only and the body must hash to that value.
//! - GET requests and the ConversationRelay WebSocket handshake: the URL alone.
//!
//! As Twilio's own validators do, the URL is tried without its port and with its port (or the
//! scheme's default), because Twilio is not consistent about which one it signs. For a `ws(s)`
//! URL the `http(s)` spelling of the same URL is tried too: Twilio's documentation does not pin
//! the scheme of a signed handshake, and the host, path and query stay covered either way.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::principal::{AuthMethod, Principal};
use crate::public_url::{self, UrlError};
use crate::secret::Secret;

/// The header Twilio signs with.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// The query parameter carrying the SHA-256 of a JSON body.
pub const BODY_HASH_PARAM: &str = "bodySHA256";
/// Length of an HMAC-SHA1 signature.
pub const SIGNATURE_LEN: usize = 20;
/// Scopes a carrier principal holds unless its account is configured otherwise.
pub const DEFAULT_SCOPES: [&str; 1] = ["voice:carrier"];

/// A Twilio account whose requests are accepted, and the tenant it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioAccount {
    /// `AC…`, 34 characters.
    pub account_sid: String,
    /// The account's auth token, the HMAC key.
    pub auth_token: Secret,
    /// The tenant calls to this account belong to.
    pub tenant_id: String,
    /// The tenant's plan.
    pub plan: String,
    /// Scopes granted to requests signed by this account.
    pub scopes: Vec<String>,
}

impl TwilioAccount {
    /// The principal of a request this account signed.
    pub fn principal(&self) -> Principal {
        Principal {
            tenant_id: self.tenant_id.clone(),
            subject: self.account_sid.clone(),
            scopes: self.scopes.clone(),
            plan: self.plan.clone(),
            method: AuthMethod::TwilioSignature,
        }
    }
}

/// What a signed request consists of, as the edge received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The public URL exactly as the carrier called it.
    pub url: &'a str,
    /// `Content-Type`, if any.
    pub content_type: Option<&'a str>,
    /// The raw body, if any.
    pub body: Option<&'a str>,
    /// The `X-Twilio-Signature` value.
    pub signature: &'a str,
}

/// Why a carrier signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwilioError {
    /// The header is not base64 of 20 bytes.
    #[error("the signature is not base64 of an HMAC-SHA1")]
    MalformedSignature,
    /// The URL in the request cannot be parsed.
    #[error("the request URL is not usable: {0}")]
    BadUrl(UrlError),
    /// The URL has `bodySHA256` but no body came with the request.
    #[error("the URL names a body hash but the request has no body")]
    MissingBody,
    /// The body does not hash to the URL's `bodySHA256`.
    #[error("the body does not match the signed body hash")]
    BodyHashMismatch,
    /// A body that no signature covers (neither form parameters nor `bodySHA256`).
    #[error("the request body is not covered by the signature")]
    UnsignedBody,
    /// The request names an account that is not configured.
    #[error("the account is not configured")]
    UnknownAccount,
    /// No configured account's token produces this signature.
    #[error("the signature does not match")]
    BadSignature,
}

impl TwilioError {
    /// Stable snake_case code for the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            TwilioError::MalformedSignature => "twilio_signature_malformed",
            TwilioError::BadUrl(_) => "invalid_url",
            TwilioError::MissingBody => "twilio_body_missing",
            TwilioError::BodyHashMismatch => "twilio_body_hash_mismatch",
            TwilioError::UnsignedBody => "twilio_body_unsigned",
            TwilioError::UnknownAccount => "twilio_unknown_account",
            TwilioError::BadSignature => "twilio_bad_signature",
        }
    }
}

/// The signature Twilio computes for `url` and POST `params` (any order; sorted here).
pub fn compute_signature(
    auth_token: &[u8],
    url: &str,
    params: &[(String, String)],
) -> [u8; SIGNATURE_LEN] {
    signing_mac(auth_token, url, &sorted(params))
        .finalize()
        .into_bytes()
        .into()
}

/// [`compute_signature`] as the header value.
pub fn signature_header(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(compute_signature(auth_token, url, params))
}

/// Checks a request's signature against the configured accounts; returns the account that
/// signed it. The comparison of signatures and of body hashes is constant-time.
pub fn verify<'a>(
    accounts: &'a [TwilioAccount],
    request: &SignedRequest<'_>,
) -> Result<&'a TwilioAccount, TwilioError> {
    let signature = STANDARD
        .decode(request.signature.trim())
        .map_err(|_| TwilioError::MalformedSignature)?;
    if signature.len() != SIGNATURE_LEN {
        return Err(TwilioError::MalformedSignature);
    }
    let url = public_url::parse(request.url).map_err(TwilioError::BadUrl)?;
    let signed = signed_content(request, &url)?;

    let candidates: Vec<&TwilioAccount> = match &signed.account_sid {
        Some(sid) => vec![
            accounts
                .iter()
                .find(|account| account.account_sid == *sid)
                .ok_or(TwilioError::UnknownAccount)?,
        ],
        None => accounts.iter().collect(),
    };
    let mut urls = vec![url.without_port(), url.with_port()];
    if url.is_websocket() {
        let http = url.with_scheme(if url.default_port() == "443" {
            "https"
        } else {
            "http"
        });
        urls.push(http.without_port());
        urls.push(http.with_port());
    }
    urls.dedup();
    for account in candidates {
        for candidate in &urls {
            let mac = signing_mac(account.auth_token.expose(), candidate, &signed.params);
            // `verify_slice` compares in constant time.
            if mac.verify_slice(&signature).is_ok() {
                return Ok(account);
            }
        }
    }
    Err(TwilioError::BadSignature)
}

/// The parameters a signature covers, and the account the request names (if it names one).
struct SignedContent {
    params: Vec<(String, String)>,
    account_sid: Option<String>,
}

fn signed_content(
    request: &SignedRequest<'_>,
    url: &public_url::PublicUrl<'_>,
) -> Result<SignedContent, TwilioError> {
    if let Some(expected) = url.query_param(BODY_HASH_PARAM) {
        let body = request.body.ok_or(TwilioError::MissingBody)?;
        let actual: String = Sha256::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let expected = expected.to_ascii_lowercase();
        if !bool::from(actual.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(TwilioError::BodyHashMismatch);
        }
        return Ok(SignedContent {
            params: Vec::new(),
            account_sid: json_account_sid(body),
        });
    }
    let is_form = request.content_type.is_some_and(|content_type| {
        content_type.split(';').next().is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if request.method.eq_ignore_ascii_case("POST") && is_form {
        let params: Vec<(String, String)> =
            form_urlencoded::parse(request.body.unwrap_or_default().as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect();
        let account_sid = params
            .iter()
            .find(|(name, _)| name == "AccountSid")
            .map(|(_, sid)| sid.clone());
        return Ok(SignedContent {
            params: sorted(&params),
            account_sid,
        });
    }
    if request.body.is_some_and(|body| !body.is_empty()) {
        return Err(TwilioError::UnsignedBody);
    }
    Ok(SignedContent {
        params: Vec::new(),
        account_sid: None,
    })
}

fn json_account_sid(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    ["AccountSid", "accountSid"]
        .iter()
        .find_map(|name| value.get(name)?.as_str().map(str::to_owned))
}

/// Sorted by name, then value; identical pairs counted once (as Twilio's validators do).
fn sorted(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut params = params.to_vec();
    params.sort();
    params.dedup();
    params
}

fn signing_mac(auth_token: &[u8], url: &str, sorted_params: &[(String, String)]) -> Hmac<Sha1> {
    let mut mac = hmac_sha1(auth_token);
    mac.update(url.as_bytes());
    for (name, value) in sorted_params {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    // Proven invariant: HMAC takes keys of any length.
    Hmac::<Sha1>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Twilio's documented example ("Validating Requests are coming from Twilio"), also the
    // vectors of twilio-python's request validator tests.
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const EXPECTED: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    const BODY: &str = "{\"property\": \"value\", \"boolean\": true}";
    const BODY_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    const BODY_SIGNATURE: &str = "a9nBmqA0ju/hNViExpshrM61xv4=";

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn form_body(params: &[(String, String)]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish()
    }

    fn account(sid: &str, token: &str) -> TwilioAccount {
        TwilioAccount {
            account_sid: sid.into(),
            auth_token: Secret::new(token),
            tenant_id: format!("tenant-of-{sid}"),
            plan: "pro".into(),
            scopes: vec!["voice:carrier".into()],
        }
    }

    fn form_request<'a>(url: &'a str, body: &'a str, signature: &'a str) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            url,
            content_type: Some("application/x-www-form-urlencoded; charset=utf-8"),
            body: Some(body),
            signature,
        }
    }

    #[test]
    fn twilio_documented_example_signature() {
        assert_eq!(signature_header(TOKEN.as_bytes(), URL, &params()), EXPECTED);
        // Order of the parameters as sent does not matter.
        let mut reversed = params();
        reversed.reverse();
        assert_eq!(signature_header(TOKEN.as_bytes(), URL, &reversed), EXPECTED);
    }

    #[test]
    fn documented_example_verifies_as_a_form_webhook() {
        let accounts = [account("AC1", TOKEN)];
        let body = form_body(&params());
        let verified = verify(&accounts, &form_request(URL, &body, EXPECTED)).expect("valid");
        assert_eq!(verified.account_sid, "AC1");
        assert_eq!(verified.principal().method, AuthMethod::TwilioSignature);
    }

    #[test]
    fn repeated_parameters_sort_by_value() {
        // twilio-python: Digits=5678&Digits=1234 signs as Digits1234Digits5678.
        let params: Vec<(String, String)> = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            signature_header(TOKEN.as_bytes(), URL, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn port_variants_from_twilio_python() {
        let accounts = [account("AC1", TOKEN)];
        let body = form_body(&params());
        let cases = [
            // Signed without the port, received with one.
            ("https://mycompany.com:1234/myapp.php?foo=1&bar=2", EXPECTED),
            // Signed with the (non-default) port.
            (
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            ),
            // Signed with the default port, received without it.
            (URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),
            (
                "http://mycompany.com/myapp.php?foo=1&bar=2",
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            ),
        ];
        for (url, signature) in cases {
            assert!(
                verify(&accounts, &form_request(url, &body, signature)).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn json_body_with_body_sha256() {
        let accounts = [account("AC1", TOKEN)];
        let url = format!("{URL}&bodySHA256={BODY_HASH}");
        let request = SignedRequest {
            method: "POST",
            url: &url,
            content_type: Some("application/json"),
            body: Some(BODY),
            signature: BODY_SIGNATURE,
        };
        assert!(verify(&accounts, &request).is_ok());
        let tampered = SignedRequest {
            body: Some("{\"property\": \"other\"}"),
            ..request
        };
        assert_eq!(
            verify(&accounts, &tampered),
            Err(TwilioError::BodyHashMismatch)
        );
        let missing = SignedRequest {
            body: None,
            ..request
        };
        assert_eq!(verify(&accounts, &missing), Err(TwilioError::MissingBody));
        let upper = url.replace(BODY_HASH, &BODY_HASH.to_ascii_uppercase());
        let upper = SignedRequest {
            url: &upper,
            ..request
        };
        // Same hash in capitals: the body check passes, but the URL signed was lowercase.
        assert_eq!(verify(&accounts, &upper), Err(TwilioError::BadSignature));
    }

    #[test]
    fn websocket_handshake_signs_the_url_alone() {
        let accounts = [account("AC1", TOKEN)];
        let url = "wss://edge.example/voice/relay/CA0001";
        let signature = signature_header(TOKEN.as_bytes(), url, &[]);
        let handshake = SignedRequest {
            method: "GET",
            url,
            content_type: None,
            body: None,
            signature: &signature,
        };
        assert!(verify(&accounts, &handshake).is_ok());
        // Signed as https by the carrier, received as the wss URL of the same resource.
        let https_signature = signature_header(
            TOKEN.as_bytes(),
            "https://edge.example/voice/relay/CA0001",
            &[],
        );
        assert!(
            verify(
                &accounts,
                &SignedRequest {
                    signature: &https_signature,
                    ..handshake
                }
            )
            .is_ok()
        );
        // Another call's relay URL does not verify.
        let other = SignedRequest {
            url: "wss://edge.example/voice/relay/CA0002",
            ..handshake
        };
        assert_eq!(verify(&accounts, &other), Err(TwilioError::BadSignature));
        // The internal host is not the one the carrier signed.
        let internal = SignedRequest {
            url: "https://voice-router.internal/voice/relay/CA0001",
            ..handshake
        };
        assert_eq!(verify(&accounts, &internal), Err(TwilioError::BadSignature));
    }

    #[test]
    fn several_accounts_by_account_sid_or_by_trying_each() {
        let accounts = [account("ACaaa", "token-a"), account("ACbbb", "token-b")];
        let mut params = params();
        params.push(("AccountSid".into(), "ACbbb".into()));
        let body = form_body(&params);
        let signature = signature_header(b"token-b", URL, &params);
        let verified = verify(&accounts, &form_request(URL, &body, &signature)).expect("valid");
        assert_eq!(verified.tenant_id, "tenant-of-ACbbb");
        // Claiming another configured account with b's signature fails.
        let mut lying = params.clone();
        lying.last_mut().expect("pushed").1 = "ACaaa".into();
        let body = form_body(&lying);
        assert_eq!(
            verify(&accounts, &form_request(URL, &body, &signature)),
            Err(TwilioError::BadSignature)
        );
        // An account that is not configured.
        lying.last_mut().expect("pushed").1 = "ACzzz".into();
        let body = form_body(&lying);
        assert_eq!(
            verify(&accounts, &form_request(URL, &body, &signature)),
            Err(TwilioError::UnknownAccount)
        );
        // No AccountSid (a WebSocket handshake): every configured token is tried.
        let url = "wss://edge.example/voice/relay/CA1";
        let signature = signature_header(b"token-b", url, &[]);
        let handshake = SignedRequest {
            method: "GET",
            url,
            content_type: None,
            body: None,
            signature: &signature,
        };
        assert_eq!(
            verify(&accounts, &handshake).map(|a| a.account_sid.as_str()),
            Ok("ACbbb")
        );
    }

    #[test]
    fn refusals() {
        let accounts = [account("AC1", TOKEN)];
        let body = form_body(&params());
        let cases: Vec<(SignedRequest<'_>, TwilioError)> = vec![
            (
                form_request(URL, &body, "not base64!"),
                TwilioError::MalformedSignature,
            ),
            (
                form_request(URL, &body, "c2hvcnQ="),
                TwilioError::MalformedSignature,
            ),
            (
                form_request("not a url", &body, EXPECTED),
                TwilioError::BadUrl(UrlError::NoScheme),
            ),
            (
                form_request(URL, "CallSid=CA1234567890ABCDE", EXPECTED),
                TwilioError::BadSignature,
            ),
            (
                form_request(
                    "https://mycompany.com/myapp.php?foo=1&bar=3",
                    &body,
                    EXPECTED,
                ),
                TwilioError::BadSignature,
            ),
            (
                form_request(
                    "http://mycompany.com/myapp.php?foo=1&bar=2",
                    &body,
                    EXPECTED,
                ),
                TwilioError::BadSignature,
            ),
            (
                SignedRequest {
                    content_type: Some("application/json"),
                    ..form_request(URL, BODY, EXPECTED)
                },
                TwilioError::UnsignedBody,
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(verify(&accounts, &request), Err(expected), "{request:?}");
        }
        assert_eq!(
            verify(&[], &form_request(URL, &body, EXPECTED)),
            Err(TwilioError::BadSignature)
        );
    }

    proptest! {
        /// Any single bit flipped in the signature, the URL or the body is rejected. (A flip
        /// that leaves the decoded form parameters unchanged, e.g. `%2B` to `%2b`, changes
        /// nothing Twilio signs, so it is not a tampering.)
        #[test]
        fn any_bit_flip_is_rejected(target in 0usize..3, index in any::<usize>(), bit in 0u8..7) {
            let accounts = [account("AC1", TOKEN)];
            let original = form_body(&params());
            let mut parts = [EXPECTED.to_string(), URL.to_string(), original.clone()];
            parts[target] = flip(&parts[target], index, bit);
            let [signature, url, body] = &parts;
            prop_assume!(target != 2 || decoded(body) != decoded(&original));
            prop_assert!(verify(&accounts, &form_request(url, body, signature)).is_err(),
                "accepted after flip: {parts:?}");
        }
    }

    fn decoded(body: &str) -> Vec<(String, String)> {
        sorted(
            &form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect::<Vec<_>>(),
        )
    }

    fn flip(text: &str, index: usize, bit: u8) -> String {
        let mut bytes = text.as_bytes().to_vec();
        let index = index % bytes.len();
        bytes[index] ^= 1 << bit;
        String::from_utf8(bytes).expect("ASCII stays UTF-8")
    }
}

/// The fields of the carrier's call webhooks (incoming call, status callback, answering-machine detection callback, and the
/// `<Connect action>` callback after a ConversationRelay session ends) the edge acts on. The
/// action callback adds `SessionId`, `SessionStatus`, `SessionDuration` and `HandoffData` (the
/// `handoffData` string of the relay's `end` message, as sent) to the usual call fields:
/// <https://www.twilio.com/docs/voice/twiml/connect/conversationrelay> ("End session message").
/// The answering-machine detection callback adds `AnsweredBy`. Telnyx's TeXML callbacks use
/// the same names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallWebhook {
    /// `CallSid`: the carrier's call id.
    pub call_sid: Option<String>,
    /// `AccountSid`.
    pub account_sid: Option<String>,
    /// `From`: the caller's number.
    pub from: Option<String>,
    /// `To`: the called number.
    pub to: Option<String>,
    /// `CallStatus`: `ringing`, `in-progress`, `completed`, `busy`, …
    pub call_status: Option<String>,
    /// `SessionId`: the ConversationRelay session (`VX…`), action callback only.
    pub session_id: Option<String>,
    /// `SessionStatus`: how the relay session ended (`ended`, `failed`, …), action callback only.
    pub session_status: Option<String>,
    /// `SessionDuration`: seconds the relay session lasted, action callback only.
    pub session_duration: Option<String>,
    /// `HandoffData`: the `handoffData` of the relay's `end`, action callback only.
    pub handoff_data: Option<String>,
    /// `AnsweredBy`: what answering-machine detection found (`human`, `machine_end_beep`, …).
    pub answered_by: Option<String>,
}

impl CallWebhook {
    /// Reads a webhook body as its `Content-Type` says: a JSON object (the `bodySHA256`
    /// scheme) or, otherwise, `application/x-www-form-urlencoded`. Absent fields are `None`.
    pub fn from_body(content_type: Option<&str>, body: &[u8]) -> Self {
        let is_json = content_type
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if is_json {
            Self::from_json(body)
        } else {
            Self::from_form(body)
        }
    }

    /// Reads a JSON object body; fields that are not strings count as absent.
    pub fn from_json(body: &[u8]) -> Self {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
            return Self::default();
        };
        let text = |name: &str| fields.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        Self {
            call_sid: text("CallSid"),
            account_sid: text("AccountSid"),
            from: text("From"),
            to: text("To"),
            call_status: text("CallStatus"),
            session_id: text("SessionId"),
            session_status: text("SessionStatus"),
            session_duration: text("SessionDuration"),
            handoff_data: text("HandoffData"),
            answered_by: text("AnsweredBy"),
        }
    }

    /// Reads an `application/x-www-form-urlencoded` webhook body; absent fields are `None`.
    pub fn from_form(body: &[u8]) -> Self {
        let mut webhook = Self::default();
        for (name, value) in form_urlencoded::parse(body) {
            let slot = match name.as_ref() {
                "CallSid" => &mut webhook.call_sid,
                "AccountSid" => &mut webhook.account_sid,
                "From" => &mut webhook.from,
                "To" => &mut webhook.to,
                "CallStatus" => &mut webhook.call_status,
                "SessionId" => &mut webhook.session_id,
                "SessionStatus" => &mut webhook.session_status,
                "SessionDuration" => &mut webhook.session_duration,
                "HandoffData" => &mut webhook.handoff_data,
                "AnsweredBy" => &mut webhook.answered_by,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        webhook
    }
}

#[cfg(test)]
mod webhook_tests {
    use super::*;

    #[test]
    fn reads_the_fields_the_edge_uses() {
        let body = b"AccountSid=AC1&CallSid=CA2&From=%2B14155550100&To=%2B18005550101&CallStatus=completed&Direction=inbound&CallSid=CA3";
        assert_eq!(
            CallWebhook::from_form(body),
            CallWebhook {
                call_sid: Some("CA2".into()),
                account_sid: Some("AC1".into()),
                from: Some("+14155550100".into()),
                to: Some("+18005550101".into()),
                call_status: Some("completed".into()),
                ..CallWebhook::default()
            }
        );
        assert_eq!(CallWebhook::from_form(b""), CallWebhook::default());
    }

    #[test]
    fn json_bodies_are_read_as_their_content_type_says() {
        let json = br#"{"AccountSid":"AC1","CallSid":"CA2","CallStatus":"completed","To":7}"#;
        let read = CallWebhook::from_body(Some("application/json; charset=utf-8"), json);
        assert_eq!(
            read,
            CallWebhook {
                call_sid: Some("CA2".into()),
                account_sid: Some("AC1".into()),
                from: None,
                to: None,
                call_status: Some("completed".into()),
                ..CallWebhook::default()
            }
        );
        let form = b"CallSid=CA3&CallStatus=busy";
        assert_eq!(
            CallWebhook::from_body(Some("application/x-www-form-urlencoded"), form).call_sid,
            Some("CA3".into())
        );
        assert_eq!(
            CallWebhook::from_body(None, form).call_sid,
            Some("CA3".into())
        );
        assert_eq!(
            CallWebhook::from_body(Some("application/json"), b"[1]"),
            CallWebhook::default()
        );
    }

    #[test]
    fn the_action_callback_carries_the_session_and_its_handoff_data() {
        // As the carrier posts it after the relay's `end` (form-encoded, HandoffData a string).
        let body = b"AccountSid=AC1&CallSid=CA2&CallStatus=in-progress&SessionId=VX3&SessionStatus=ended&SessionDuration=42&HandoffData=%7B%22reason%22%3A%22transfer%22%7D";
        let read = CallWebhook::from_form(body);
        assert_eq!(read.session_id.as_deref(), Some("VX3"));
        assert_eq!(read.session_status.as_deref(), Some("ended"));
        assert_eq!(read.session_duration.as_deref(), Some("42"));
        assert_eq!(
            read.handoff_data.as_deref(),
            Some(r#"{"reason":"transfer"}"#)
        );
        let json = br#"{"CallSid":"CA2","SessionStatus":"failed","HandoffData":"{}"}"#;
        let read = CallWebhook::from_json(json);
        assert_eq!(
            (read.session_status.as_deref(), read.handoff_data.as_deref()),
            (Some("failed"), Some("{}"))
        );
    }
}
