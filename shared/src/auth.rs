//! auth-validator's internal API, as voice-router calls it over the `AUTH` service binding, and
//! the rules that pick the credential out of a request and check the route's scopes.
//!
//! `POST /v1/authenticate` takes an [`AuthenticateRequest`] (what the public edge received) and
//! answers `200` with a [`Principal`] or the JSON error envelope; `POST /v1/session-tokens` takes
//! a [`MintSessionTokenRequest`] and answers `200` with a [`SessionTokenResponse`]. Routes,
//! statuses and headers are documented at the top of auth-validator's `lib.rs`.

pub mod config;
pub mod principal_cache;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::api_key::ApiKeyError;
use crate::jwt::JwtError;
use crate::principal::{AuthMethod, Principal};
use crate::public_url::{self, UrlError};
use crate::session_token::{self, SessionTokenError};
use crate::telnyx::{self, TelnyxError};
use crate::twilio::{self, TwilioError};

/// Decides who a request is.
pub const AUTHENTICATE_PATH: &str = "/v1/authenticate";
/// Mints a call-bound session token.
pub const SESSION_TOKENS_PATH: &str = "/v1/session-tokens";
/// Query parameter carrying a session token on a relay WebSocket URL.
pub const SESSION_TOKEN_PARAM: &str = "session_token";
/// Largest request envelope accepted (a carrier webhook body is a few KB).
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;

/// `Authorization`.
pub const AUTHORIZATION: &str = "authorization";
/// `X-Api-Key`.
pub const API_KEY: &str = "x-api-key";
/// `X-Twilio-Signature`.
pub const TWILIO_SIGNATURE: &str = twilio::SIGNATURE_HEADER;
/// `telnyx-signature-ed25519`.
pub const TELNYX_SIGNATURE: &str = telnyx::SIGNATURE_HEADER;
/// `telnyx-timestamp` (signed with the body).
pub const TELNYX_TIMESTAMP: &str = telnyx::TIMESTAMP_HEADER;
/// `Content-Type` (decides how a carrier's body is signed).
pub const CONTENT_TYPE: &str = "content-type";
/// Every header the envelope carries, lowercase.
pub const CREDENTIAL_HEADERS: [&str; 6] = [
    AUTHORIZATION,
    API_KEY,
    TWILIO_SIGNATURE,
    TELNYX_SIGNATURE,
    TELNYX_TIMESTAMP,
    CONTENT_TYPE,
];

/// What the public edge received, for auth-validator to judge. One round trip per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateRequest {
    /// HTTP method of the original request.
    pub method: String,
    /// The public URL exactly as the client or carrier called it: scheme, host, path, query.
    /// For a WebSocket handshake, the `wss://` URL the client was given.
    pub url: String,
    /// The credential headers of the original request.
    #[serde(default)]
    pub headers: CredentialHeaders,
    /// The raw body, when a signature covers it (carrier form or JSON webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Scopes the route requires; all must be held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// The call the route is bound to (relay WebSocket, call routes): session tokens are only
    /// accepted when it matches theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

/// The credential-bearing headers, by their lowercase names on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialHeaders {
    /// `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// `X-Api-Key`.
    #[serde(rename = "x-api-key", default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// `X-Twilio-Signature`.
    #[serde(
        rename = "x-twilio-signature",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub twilio_signature: Option<String>,
    /// `telnyx-signature-ed25519`.
    #[serde(
        rename = "telnyx-signature-ed25519",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub telnyx_signature: Option<String>,
    /// `telnyx-timestamp`.
    #[serde(
        rename = "telnyx-timestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub telnyx_timestamp: Option<String>,
    /// `Content-Type`.
    #[serde(
        rename = "content-type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub content_type: Option<String>,
}

impl CredentialHeaders {
    /// Collects the headers from a lookup by lowercase name (e.g. a Worker's request headers).
    pub fn from_lookup(mut get: impl FnMut(&str) -> Option<String>) -> Self {
        Self {
            authorization: get(AUTHORIZATION),
            api_key: get(API_KEY),
            twilio_signature: get(TWILIO_SIGNATURE),
            telnyx_signature: get(TELNYX_SIGNATURE),
            telnyx_timestamp: get(TELNYX_TIMESTAMP),
            content_type: get(CONTENT_TYPE),
        }
    }
}

/// Asks for a session token binding a principal to one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintSessionTokenRequest {
    /// The call the token is for.
    pub call_id: String,
    /// Who the token stands for (as authenticated by `/v1/authenticate`).
    pub principal: Principal,
    /// Scopes the token grants; the principal's own scopes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Lifetime wanted, in seconds; the configured default when absent, capped by the maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// A minted session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTokenResponse {
    /// `st_…`, for the `session_token` query parameter (or `Authorization: Bearer`).
    pub token: String,
    /// The call it is bound to.
    pub call_id: String,
    /// Unix seconds at which it stops being accepted.
    pub expires_at: u64,
}

/// The one credential a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A JWT from `Authorization: Bearer`.
    Jwt(&'a str),
    /// An `ak_…` key.
    ApiKey(&'a str),
    /// An `st_…` session token.
    SessionToken(Cow<'a, str>),
    /// An `X-Twilio-Signature` value.
    TwilioSignature(&'a str),
    /// A `telnyx-signature-ed25519` value, with the `telnyx-timestamp` it covers.
    TelnyxSignature {
        /// The signature.
        signature: &'a str,
        /// The timestamp header, if sent.
        timestamp: Option<&'a str>,
    },
}

/// Where the credential was found; decides the `WWW-Authenticate` challenge of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// `Authorization: Bearer …`.
    Bearer,
    /// `X-Api-Key`.
    ApiKeyHeader,
    /// The `session_token` query parameter.
    Query,
    /// A carrier's signature header (`X-Twilio-Signature`, `telnyx-signature-ed25519`).
    CarrierSignature,
}

impl Presentation {
    /// Whether a refusal answers with a Bearer `invalid_token` challenge (RFC 6750 §3).
    pub fn is_bearer(self) -> bool {
        matches!(self, Presentation::Bearer | Presentation::Query)
    }
}

/// Why a request was not authenticated (or not authorized).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential at all.
    #[error("no credential was presented")]
    MissingCredential,
    /// More than one credential (RFC 6750 §2: a client uses one method per request).
    #[error("more than one credential was presented")]
    MultipleCredentials,
    /// `Authorization` with a scheme other than Bearer (e.g. Basic).
    #[error("the authorization scheme is not supported; use Bearer")]
    UnsupportedScheme,
    /// `Authorization: Bearer` with nothing after it.
    #[error("the bearer credential is empty")]
    EmptyBearer,
    /// The envelope's URL cannot be parsed.
    #[error("the request URL is not usable: {0}")]
    BadUrl(UrlError),
    /// The credential kind is not configured on this deployment.
    #[error("this kind of credential is not enabled")]
    MethodNotEnabled(AuthMethod),
    /// A JWT was refused.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// An API key was refused.
    #[error(transparent)]
    ApiKey(#[from] ApiKeyError),
    /// A session token was refused.
    #[error(transparent)]
    SessionToken(#[from] SessionTokenError),
    /// A carrier signature was refused.
    #[error(transparent)]
    Twilio(#[from] TwilioError),
    /// A Telnyx signature was refused.
    #[error(transparent)]
    Telnyx(#[from] TelnyxError),
    /// Authenticated, but the route needs scopes the principal does not hold.
    #[error("missing scope: {}", missing.join(" "))]
    InsufficientScope {
        /// The scopes not held.
        missing: Vec<String>,
    },
}

impl AuthError {
    /// Stable snake_case code for the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredential => "missing_credential",
            AuthError::MultipleCredentials => "multiple_credentials",
            AuthError::UnsupportedScheme => "unsupported_auth_scheme",
            AuthError::EmptyBearer => "empty_credential",
            AuthError::BadUrl(_) => "invalid_url",
            AuthError::MethodNotEnabled(_) => "auth_method_not_enabled",
            AuthError::Jwt(error) => error.code(),
            AuthError::ApiKey(error) => error.code(),
            AuthError::SessionToken(error) => error.code(),
            AuthError::Twilio(error) => error.code(),
            AuthError::Telnyx(error) => error.code(),
            AuthError::InsufficientScope { .. } => "insufficient_scope",
        }
    }
}

/// A credential and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented<'a> {
    /// The credential.
    pub credential: Credential<'a>,
    /// Where it was.
    pub presentation: Presentation,
}

/// Picks the request's one credential. Bearer values are dispatched by prefix: `ak_` is an API
/// key, `st_` a session token, anything else a JWT. An `Authorization` header of another scheme
/// (Twilio sends Basic when a webhook URL carries user:password) is ignored beside another
/// credential and refused on its own.
pub fn identify(request: &AuthenticateRequest) -> Result<Presented<'_>, AuthError> {
    let url = public_url::parse(&request.url).map_err(AuthError::BadUrl)?;
    let headers = &request.headers;
    let mut found: Vec<Presented<'_>> = Vec::with_capacity(1);
    let mut other_scheme = false;

    if let Some(authorization) = headers.authorization.as_deref() {
        match bearer_value(authorization) {
            Some("") => return Err(AuthError::EmptyBearer),
            Some(value) => found.push(Presented {
                credential: by_prefix(value),
                presentation: Presentation::Bearer,
            }),
            None => other_scheme = true,
        }
    }
    if let Some(key) = headers.api_key.as_deref() {
        found.push(Presented {
            credential: Credential::ApiKey(key.trim()),
            presentation: Presentation::ApiKeyHeader,
        });
    }
    if let Some(signature) = headers.twilio_signature.as_deref() {
        found.push(Presented {
            credential: Credential::TwilioSignature(signature),
            presentation: Presentation::CarrierSignature,
        });
    }
    if let Some(signature) = headers.telnyx_signature.as_deref() {
        found.push(Presented {
            credential: Credential::TelnyxSignature {
                signature,
                timestamp: headers.telnyx_timestamp.as_deref(),
            },
            presentation: Presentation::CarrierSignature,
        });
    }
    if let Some(token) = url.query_param(SESSION_TOKEN_PARAM) {
        found.push(Presented {
            credential: Credential::SessionToken(token),
            presentation: Presentation::Query,
        });
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 if other_scheme => Err(AuthError::UnsupportedScheme),
        0 => Err(AuthError::MissingCredential),
        _ => Err(AuthError::MultipleCredentials),
    }
}

/// The token of a `Bearer` authorization value (scheme case-insensitive), `None` for another
/// scheme.
fn bearer_value(authorization: &str) -> Option<&str> {
    let authorization = authorization.trim();
    let (scheme, rest) = authorization.split_once(' ').unwrap_or((authorization, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn by_prefix(value: &str) -> Credential<'_> {
    if value.starts_with(crate::api_key::PREFIX) {
        Credential::ApiKey(value)
    } else if value.starts_with(session_token::PREFIX) {
        Credential::SessionToken(Cow::Borrowed(value))
    } else {
        Credential::Jwt(value)
    }
}

/// Checks that the principal holds every scope the route requires.
pub fn authorize(principal: &Principal, required: &[String]) -> Result<(), AuthError> {
    let missing: Vec<String> = required
        .iter()
        .filter(|scope| !principal.has_scope(scope))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AuthError::InsufficientScope { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: CredentialHeaders, url: &str) -> AuthenticateRequest {
        AuthenticateRequest {
            method: "GET".into(),
            url: url.into(),
            headers,
            body: None,
            required_scopes: vec![],
            call_id: None,
        }
    }

    fn bearer(value: &str) -> CredentialHeaders {
        CredentialHeaders {
            authorization: Some(value.into()),
            ..CredentialHeaders::default()
        }
    }

    const URL: &str = "https://edge.example/api/v1/calls";

    #[test]
    fn envelope_json_shape() {
        let json = r#"{
            "method": "POST",
            "url": "https://edge.example/voice/twilio/incoming?x=1",
            "headers": {"x-twilio-signature": "sig", "content-type": "application/x-www-form-urlencoded"},
            "body": "CallSid=CA1",
            "required_scopes": ["voice:carrier"]
        }"#;
        let request: AuthenticateRequest = serde_json::from_str(json).expect("parses");
        assert_eq!(request.headers.twilio_signature.as_deref(), Some("sig"));
        assert_eq!(request.call_id, None);
        let back: AuthenticateRequest =
            serde_json::from_str(&serde_json::to_string(&request).expect("serialises"))
                .expect("parses");
        assert_eq!(back, request);
        // Only method and url are required.
        let minimal: AuthenticateRequest =
            serde_json::from_str(r#"{"method":"GET","url":"https://e/x"}"#).expect("parses");
        assert_eq!(minimal.headers, CredentialHeaders::default());
    }

    #[test]
    fn headers_from_a_lookup() {
        let headers =
            CredentialHeaders::from_lookup(|name| (name == API_KEY).then(|| "ak_x".to_owned()));
        assert_eq!(headers.api_key.as_deref(), Some("ak_x"));
        assert_eq!(headers.authorization, None);
    }

    #[test]
    fn bearer_values_dispatch_by_prefix() {
        let cases = [
            ("Bearer eyJhbGciOi.x.y", Credential::Jwt("eyJhbGciOi.x.y")),
            ("bearer   ak_live_123", Credential::ApiKey("ak_live_123")),
            (
                "BEARER st_abc.def",
                Credential::SessionToken(Cow::Borrowed("st_abc.def")),
            ),
        ];
        for (authorization, expected) in cases {
            let request = request(bearer(authorization), URL);
            let presented = identify(&request).expect("one credential");
            assert_eq!(presented.credential, expected);
            assert_eq!(presented.presentation, Presentation::Bearer);
        }
    }

    #[test]
    fn other_places_a_credential_can_be() {
        let api_key = CredentialHeaders {
            api_key: Some(" ak_live_123 ".into()),
            ..Default::default()
        };
        let request1 = request(api_key, URL);
        assert_eq!(
            identify(&request1).expect("ok").credential,
            Credential::ApiKey("ak_live_123")
        );

        let twilio = CredentialHeaders {
            twilio_signature: Some("c2ln".into()),
            ..Default::default()
        };
        let request2 = request(twilio, URL);
        assert_eq!(
            identify(&request2).expect("ok").presentation,
            Presentation::CarrierSignature
        );
        let telnyx = CredentialHeaders {
            telnyx_signature: Some("c2ln".into()),
            telnyx_timestamp: Some("1700000000".into()),
            ..Default::default()
        };
        assert_eq!(
            identify(&request(telnyx, URL)).expect("ok").credential,
            Credential::TelnyxSignature {
                signature: "c2ln",
                timestamp: Some("1700000000")
            }
        );
        let both = CredentialHeaders {
            twilio_signature: Some("c2ln".into()),
            telnyx_signature: Some("c2ln".into()),
            ..Default::default()
        };
        assert_eq!(
            identify(&request(both, URL)),
            Err(AuthError::MultipleCredentials),
            "one carrier signs a request"
        );

        let request3 = request(
            CredentialHeaders::default(),
            "wss://edge.example/voice/relay/CA1?session_token=st_a.b",
        );
        let presented = identify(&request3).expect("ok");
        assert_eq!(
            presented.credential,
            Credential::SessionToken(Cow::Borrowed("st_a.b"))
        );
        assert!(presented.presentation.is_bearer());
    }

    #[test]
    fn zero_several_or_unusable_credentials() {
        let cases: Vec<(AuthenticateRequest, AuthError)> = vec![
            (
                request(CredentialHeaders::default(), URL),
                AuthError::MissingCredential,
            ),
            (
                request(bearer("Basic dXNlcjpwdw=="), URL),
                AuthError::UnsupportedScheme,
            ),
            (request(bearer("Bearer"), URL), AuthError::EmptyBearer),
            (request(bearer("Bearer   "), URL), AuthError::EmptyBearer),
            (
                request(
                    CredentialHeaders {
                        api_key: Some("ak_1".into()),
                        ..bearer("Bearer x.y.z")
                    },
                    URL,
                ),
                AuthError::MultipleCredentials,
            ),
            (
                request(bearer("Bearer x.y.z"), &format!("{URL}?session_token=st_x")),
                AuthError::MultipleCredentials,
            ),
            (
                request(bearer("Bearer x.y.z"), "/relative"),
                AuthError::BadUrl(UrlError::NoScheme),
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(identify(&request), Err(expected), "{request:?}");
        }
        // Twilio's Basic credentials beside its signature are not a second credential.
        let twilio = CredentialHeaders {
            twilio_signature: Some("c2ln".into()),
            ..bearer("Basic dXNlcjpwdw==")
        };
        assert!(identify(&request(twilio, URL)).is_ok());
    }

    #[test]
    fn scopes_must_all_be_held() {
        let principal = Principal {
            tenant_id: "t".into(),
            subject: "s".into(),
            scopes: vec!["calls:write".into(), "calls:read".into()],
            plan: "pro".into(),
            method: AuthMethod::Jwt,
        };
        assert_eq!(authorize(&principal, &[]), Ok(()));
        assert_eq!(authorize(&principal, &["calls:write".into()]), Ok(()));
        assert_eq!(
            authorize(&principal, &["calls:write".into(), "agents:admin".into()]),
            Err(AuthError::InsufficientScope {
                missing: vec!["agents:admin".into()]
            })
        );
    }

    #[test]
    fn codes_are_distinct_across_every_credential_kind() {
        use crate::jwt::Segment;
        let all: Vec<AuthError> = vec![
            AuthError::MissingCredential,
            AuthError::MultipleCredentials,
            AuthError::UnsupportedScheme,
            AuthError::EmptyBearer,
            AuthError::BadUrl(UrlError::NoHost),
            AuthError::MethodNotEnabled(AuthMethod::Jwt),
            AuthError::InsufficientScope { missing: vec![] },
            JwtError::Malformed.into(),
            JwtError::BadEncoding(Segment::Payload).into(),
            ApiKeyError::Malformed.into(),
            ApiKeyError::Unknown.into(),
            ApiKeyError::Revoked.into(),
            ApiKeyError::Expired.into(),
            ApiKeyError::CorruptRecord.into(),
            SessionTokenError::Malformed.into(),
            SessionTokenError::BadSignature.into(),
            SessionTokenError::BadPayload.into(),
            SessionTokenError::UnsupportedVersion.into(),
            SessionTokenError::Expired.into(),
            SessionTokenError::NotCallBound.into(),
            SessionTokenError::WrongCall.into(),
            SessionTokenError::TooLarge.into(),
            SessionTokenError::InvalidCallId.into(),
            TwilioError::MalformedSignature.into(),
            TwilioError::MissingBody.into(),
            TwilioError::BodyHashMismatch.into(),
            TwilioError::UnsignedBody.into(),
            TwilioError::UnknownAccount.into(),
            TwilioError::BadSignature.into(),
            TelnyxError::MalformedSignature.into(),
            TelnyxError::MalformedTimestamp.into(),
            TelnyxError::Stale.into(),
            TelnyxError::UnknownAccount.into(),
            TelnyxError::BadSignature.into(),
        ];
        let mut codes: Vec<&str> = all.iter().map(AuthError::code).collect();
        codes.sort_unstable();
        let before = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), before, "{codes:?}");
        // BadUrl from either side means the same thing.
        assert_eq!(
            AuthError::from(TwilioError::BadUrl(UrlError::NoHost)).code(),
            AuthError::BadUrl(UrlError::NoHost).code()
        );
    }
}
