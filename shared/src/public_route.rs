//! The public HTTP surface of voice-router: which route a request is, and each route's policy —
//! firewall stage, credential, scopes, body limit, and whether a failed forward may be retried
//! on another region.

use crate::carrier::CarrierKind;
use crate::firewall::RouteKind;
use crate::identifier::is_resource_id;
use crate::origin_path;

/// A recognised public route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicRoute {
    /// `GET /health`.
    Health,
    /// `OPTIONS *`: a CORS preflight.
    Preflight,
    /// `POST /voice/{carrier}/incoming`: the carrier's incoming-call webhook.
    CarrierIncoming {
        /// Whose webhook.
        carrier: CarrierKind,
    },
    /// `POST /voice/{carrier}/status`: the carrier's call status (and AMD) callback.
    CarrierStatus {
        /// Whose callback.
        carrier: CarrierKind,
    },
    /// `POST /voice/twilio/action`: Twilio's `<Connect action>` callback once a relay session
    /// ended; answered `<Dial>` for a transfer, else `<Hangup/>`.
    TwilioAction,
    /// `POST /voice/twilio/whisper?text=…`: TwiML said to the person answering a transfer.
    TwilioWhisper,
    /// `GET /voice/relay/{call_id}`: the ConversationRelay WebSocket.
    Relay {
        /// The call's id (the carrier's CallSid for phone calls).
        call_id: String,
    },
    /// `POST /api/v1/calls`.
    CreateCall,
    /// `POST /api/v1/calls/outbound`: dial a number through the tenant's carrier.
    OutboundCall,
    /// `GET /api/v1/calls/{id}`.
    GetCall {
        /// The call's id.
        call_id: String,
    },
    /// `POST /api/v1/calls/{id}/turns`: one turn in, the reply out as SSE.
    Turn {
        /// The call's id.
        call_id: String,
    },
    /// `POST /api/v1/calls/{id}/end`.
    EndCall {
        /// The call's id.
        call_id: String,
    },
    /// `/api/v1/agents…`: agent configuration, passed to the origin.
    Agents {
        /// The origin path, e.g. `/v1/agents/a1`.
        origin_path: String,
    },
    /// `GET /api/v1/signing-secret`, `POST /api/v1/signing-secret/rotate`: the tenant's secret
    /// for `X-Aybiza-Signature`, passed to the origin.
    SigningSecret {
        /// The origin path, e.g. `/v1/signing-secret/rotate`.
        origin_path: String,
    },
    /// `/api/v1/webhooks…`: the tenant's webhook endpoints and their delivery logs
    /// (`crate::webhook`), passed to the origin.
    Webhooks {
        /// The origin path, e.g. `/v1/webhooks/we_1/deliveries`.
        origin_path: String,
    },
    /// `GET /api/v1/calls`: the tenant's calls, newest first, a page at a time
    /// (`crate::call_list`).
    ListCalls,
    /// `GET /api/v1/calls/{id}/turns`: the call's transcript.
    Transcript {
        /// The call's id.
        call_id: String,
    },
    /// `GET /api/v1/calls/{id}/events`: the call's events as SSE, history first
    /// (`crate::call_event::stream`).
    CallEvents {
        /// The call's id.
        call_id: String,
    },
    /// `GET /api/v1/events`: every call's live events of the tenant, as SSE.
    Events,
    /// `GET /api/v1/usage`: usage per day (`crate::usage`).
    Usage,
}

/// Path of the carrier's `<Connect action>` callback (rendered into TwiML, routed here).
pub const ACTION_PATH: &str = "/voice/twilio/action";
/// Path of the whisper TwiML a transfer's `<Number url>` points at.
pub const WHISPER_PATH: &str = "/voice/twilio/whisper";
/// Query parameter of [`WHISPER_PATH`] carrying what is said.
pub const WHISPER_TEXT_PARAM: &str = "text";

/// Why a request matches no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route has this path.
    #[error("no such route")]
    NotFound,
    /// The path exists, not for this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A path segment that must be an id is not one.
    #[error("{0:?} is not a valid id")]
    BadId(String),
}

/// Which credential a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// None: open routes.
    None,
    /// The carrier's signature (`X-Twilio-Signature`, `telnyx-signature-ed25519`).
    CarrierSignature,
    /// The carrier's signature on the handshake, or a Bearer JWT/API key/call session token.
    CarrierOrBearer,
    /// A Bearer JWT or API key (`Authorization` or `X-Api-Key`).
    Bearer,
}

/// Scope an API client needs to read calls.
pub const SCOPE_CALLS_READ: &str = "calls:read";
/// Scope an API client needs to start, drive and end calls.
pub const SCOPE_CALLS_WRITE: &str = "calls:write";
/// Scope needed to manage agents.
pub const SCOPE_AGENTS_ADMIN: &str = "agents:admin";

/// Body limit of the carrier's webhooks (form posts of a few hundred bytes).
pub const VOICE_BODY_LIMIT: u64 = 64 * 1024;
/// Body limit of API requests (a turn's text, an agent's configuration).
pub const API_BODY_LIMIT: u64 = 256 * 1024;

impl PublicRoute {
    /// Recognises `method` + `path` (no query).
    pub fn parse(method: &str, path: &str) -> Result<Self, RouteError> {
        if method.eq_ignore_ascii_case("OPTIONS") {
            return Ok(PublicRoute::Preflight);
        }
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let (route, allowed_method) = match segments.as_slice() {
            ["health"] => (PublicRoute::Health, "GET"),
            ["voice", "twilio", "action"] => (PublicRoute::TwilioAction, "POST"),
            ["voice", "twilio", "whisper"] => (PublicRoute::TwilioWhisper, "POST"),
            ["api", "v1", "signing-secret"] => (
                PublicRoute::SigningSecret {
                    origin_path: crate::origin_path::SIGNING_SECRET.to_owned(),
                },
                "GET",
            ),
            ["api", "v1", "signing-secret", "rotate"] => (
                PublicRoute::SigningSecret {
                    origin_path: crate::origin_path::SIGNING_SECRET_ROTATE.to_owned(),
                },
                "POST",
            ),
            ["voice", "relay", id] => (
                PublicRoute::Relay {
                    call_id: id_of(id)?,
                },
                "GET",
            ),
            ["voice", carrier, "incoming"] => (
                PublicRoute::CarrierIncoming {
                    carrier: CarrierKind::parse(carrier).ok_or(RouteError::NotFound)?,
                },
                "POST",
            ),
            ["voice", carrier, "status"] => (
                PublicRoute::CarrierStatus {
                    carrier: CarrierKind::parse(carrier).ok_or(RouteError::NotFound)?,
                },
                "POST",
            ),
            ["api", "v1", "calls"] => {
                return by_method(
                    method,
                    [
                        ("POST", PublicRoute::CreateCall),
                        ("GET", PublicRoute::ListCalls),
                    ],
                );
            }
            // Before the id arm: `outbound` is not a call id any carrier or the edge makes.
            ["api", "v1", "calls", "outbound"] => (PublicRoute::OutboundCall, "POST"),
            ["api", "v1", "calls", id] => (
                PublicRoute::GetCall {
                    call_id: id_of(id)?,
                },
                "GET",
            ),
            ["api", "v1", "calls", id, "turns"] => {
                let call_id = id_of(id)?;
                return by_method(
                    method,
                    [
                        (
                            "POST",
                            PublicRoute::Turn {
                                call_id: call_id.clone(),
                            },
                        ),
                        ("GET", PublicRoute::Transcript { call_id }),
                    ],
                );
            }
            ["api", "v1", "calls", id, "events"] => (
                PublicRoute::CallEvents {
                    call_id: id_of(id)?,
                },
                "GET",
            ),
            ["api", "v1", "events"] => (PublicRoute::Events, "GET"),
            ["api", "v1", "usage"] => (PublicRoute::Usage, "GET"),
            ["api", "v1", "calls", id, "end"] => (
                PublicRoute::EndCall {
                    call_id: id_of(id)?,
                },
                "POST",
            ),
            ["api", "v1", "agents", rest @ ..] => {
                for segment in rest {
                    id_of(segment)?;
                }
                let origin_path = match rest {
                    [] => origin_path::AGENTS.to_owned(),
                    [id] => origin_path::agent(id),
                    _ => return Err(RouteError::NotFound),
                };
                let route = PublicRoute::Agents { origin_path };
                // The origin creates agents with `PUT /v1/agents/{id}` (the id is the client's).
                let allowed = match rest.len() {
                    0 => method.eq_ignore_ascii_case("GET"),
                    1 => ["GET", "PUT", "DELETE"]
                        .iter()
                        .any(|m| method.eq_ignore_ascii_case(m)),
                    _ => return Err(RouteError::NotFound),
                };
                return if allowed {
                    Ok(route)
                } else {
                    Err(RouteError::MethodNotAllowed)
                };
            }
            ["api", "v1", "webhooks", rest @ ..] => return webhooks_route(method, rest),
            _ => return Err(RouteError::NotFound),
        };
        if method.eq_ignore_ascii_case(allowed_method) {
            Ok(route)
        } else {
            Err(RouteError::MethodNotAllowed)
        }
    }

    /// The firewall stage this route goes through.
    pub fn kind(&self) -> RouteKind {
        match self {
            PublicRoute::Health | PublicRoute::Preflight => RouteKind::Open,
            PublicRoute::CarrierIncoming { .. }
            | PublicRoute::CarrierStatus { .. }
            | PublicRoute::TwilioAction
            | PublicRoute::TwilioWhisper
            | PublicRoute::Relay { .. } => RouteKind::Voice,
            _ => RouteKind::Api,
        }
    }

    /// The credential the route accepts.
    pub fn credential(&self) -> Credential {
        match self {
            PublicRoute::Health | PublicRoute::Preflight => Credential::None,
            PublicRoute::CarrierIncoming { .. }
            | PublicRoute::CarrierStatus { .. }
            | PublicRoute::TwilioAction
            | PublicRoute::TwilioWhisper => Credential::CarrierSignature,
            PublicRoute::Relay { .. } => Credential::CarrierOrBearer,
            _ => Credential::Bearer,
        }
    }

    /// Scopes a Bearer principal needs (carrier-signed requests carry none and need none).
    pub fn required_scopes(&self) -> &'static [&'static str] {
        match self {
            PublicRoute::GetCall { .. }
            | PublicRoute::ListCalls
            | PublicRoute::Transcript { .. }
            | PublicRoute::CallEvents { .. }
            | PublicRoute::Events
            | PublicRoute::Usage => &[SCOPE_CALLS_READ],
            PublicRoute::CreateCall
            | PublicRoute::OutboundCall
            | PublicRoute::Turn { .. }
            | PublicRoute::EndCall { .. } => &[SCOPE_CALLS_WRITE],
            PublicRoute::Agents { .. }
            | PublicRoute::SigningSecret { .. }
            | PublicRoute::Webhooks { .. } => &[SCOPE_AGENTS_ADMIN],
            _ => &[],
        }
    }

    /// Largest body accepted; larger is 413 before it is read.
    pub fn body_limit(&self) -> u64 {
        match self.kind() {
            RouteKind::Voice => VOICE_BODY_LIMIT,
            RouteKind::Api => API_BODY_LIMIT,
            RouteKind::Open => 0,
        }
    }

    /// The call this route is bound to, if any.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            PublicRoute::Relay { call_id }
            | PublicRoute::GetCall { call_id }
            | PublicRoute::Turn { call_id }
            | PublicRoute::EndCall { call_id }
            | PublicRoute::Transcript { call_id }
            | PublicRoute::CallEvents { call_id } => Some(call_id),
            _ => None,
        }
    }
}

/// `/api/v1/webhooks` + `rest`: the origin's path is the public one without `/api`, once every
/// id in it is an id and the shape and method are one of the origin's webhook routes.
fn webhooks_route(method: &str, rest: &[&str]) -> Result<PublicRoute, RouteError> {
    let allowed: &[&str] = match rest {
        [] => &["GET", "POST"],
        [id] => {
            id_of(id)?;
            &["GET", "PATCH", "DELETE"]
        }
        [id, "deliveries"] => {
            id_of(id)?;
            &["GET"]
        }
        [id, "deliveries", delivery, "retry"] => {
            id_of(id)?;
            id_of(delivery)?;
            &["POST"]
        }
        _ => return Err(RouteError::NotFound),
    };
    if !allowed.iter().any(|m| method.eq_ignore_ascii_case(m)) {
        return Err(RouteError::MethodNotAllowed);
    }
    let mut origin_path = origin_path::WEBHOOKS.to_owned();
    for segment in rest {
        origin_path.push('/');
        origin_path.push_str(segment);
    }
    Ok(PublicRoute::Webhooks { origin_path })
}

/// The route among `choices` (method, route) that `method` names.
fn by_method<const N: usize>(
    method: &str,
    choices: [(&str, PublicRoute); N],
) -> Result<PublicRoute, RouteError> {
    choices
        .into_iter()
        .find(|(allowed, _)| method.eq_ignore_ascii_case(allowed))
        .map(|(_, route)| route)
        .ok_or(RouteError::MethodNotAllowed)
}

/// The URL exactly as the client or carrier called it — what a carrier signature covers:
/// `request_url` (as the runtime saw it) with the configured public base in front when there is
/// one (the edge may sit behind a proxy or tunnel), and `ws`/`wss` for a WebSocket handshake.
pub fn as_called(request_url: &str, public_base: Option<&str>, websocket: bool) -> String {
    let after_scheme = request_url.find("://").map_or(0, |at| at + 3);
    let path_start = request_url[after_scheme..]
        .find('/')
        .map_or(request_url.len(), |p| after_scheme + p);
    let path_and_query = match &request_url[path_start..] {
        "" => "/",
        rest => rest,
    };
    let base = public_base
        .map(|b| b.trim_end_matches('/'))
        .unwrap_or(&request_url[..path_start]);
    let full = format!("{base}{path_and_query}");
    if !websocket {
        return full;
    }
    if let Some(rest) = full.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = full.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        full
    }
}

/// `path_and_query` on the scheme and host `url_as_called` (an [`as_called`] URL) came in on:
/// where the carrier is pointed back at this edge (the `<Connect action>`, a whisper).
pub fn on_same_host(url_as_called: &str, path_and_query: &str) -> String {
    let after_scheme = url_as_called.find("://").map_or(0, |at| at + 3);
    let host_end = url_as_called[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url_as_called.len(), |p| after_scheme + p);
    format!("{}{path_and_query}", &url_as_called[..host_end])
}

/// The whisper URL for `text` on the host `url_as_called` came in on: [`WHISPER_PATH`] with the
/// text form-encoded in [`WHISPER_TEXT_PARAM`] (the carrier signs the whole URL when it
/// fetches it, so the text cannot be altered on the way).
pub fn whisper_url(url_as_called: &str, text: &str) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(WHISPER_TEXT_PARAM, text)
        .finish();
    on_same_host(url_as_called, &format!("{WHISPER_PATH}?{query}"))
}

/// The whisper text of a [`WHISPER_PATH`] URL (as called), when it has one.
pub fn whisper_text(url_as_called: &str) -> Option<String> {
    let query = url_as_called.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == WHISPER_TEXT_PARAM)
        .map(|(_, value)| value.into_owned())
        .filter(|text| !text.trim().is_empty())
}

/// Percent-encodes `text` for use as one path segment (e.g. an E.164 number's `+`).
pub fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn id_of(segment: &str) -> Result<String, RouteError> {
    if is_resource_id(segment) {
        Ok(segment.to_owned())
    } else {
        Err(RouteError::BadId(segment.chars().take(80).collect()))
    }
}

/// How a forward to the origin failed before an answer the client should see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardFailure {
    /// No connection, or it broke before a response.
    Connect,
    /// The origin, its load balancer or the proxy in front of it answered that it could not
    /// serve ([`means_origin_unavailable`]).
    Unavailable(u16),
}

/// Whether an answer's status says the origin itself could not serve, so another region may:
/// 502/503/504 from the origin or its load balancer, and Cloudflare's 520–524 from a proxied
/// origin hostname (520 unknown error, 521 web server down, 522 connection timed out, 523 origin
/// unreachable, 524 a timeout occurred — Cloudflare's "Troubleshooting Cloudflare 5XX errors").
pub fn means_origin_unavailable(status: u16) -> bool {
    matches!(status, 502..=504 | 520..=524)
}

/// Whether a forward that failed this way may be tried again on the next region. Only requests
/// that cannot do harm twice: reads, idempotent writes (`PUT`, `DELETE`), and writes the origin
/// deduplicates by an id the edge chose (call creation).
pub fn may_retry_elsewhere(method: &str, route: &PublicRoute, failure: ForwardFailure) -> bool {
    let retryable_failure = match failure {
        ForwardFailure::Connect => true,
        ForwardFailure::Unavailable(status) => means_origin_unavailable(status),
    };
    let idempotent = matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "PUT" | "DELETE"
    ) || matches!(route, PublicRoute::CreateCall | PublicRoute::EndCall { .. });
    retryable_failure && idempotent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> String {
        id.to_owned()
    }

    #[test]
    fn recognises_every_public_route() {
        let cases = [
            ("GET", "/health", PublicRoute::Health),
            ("OPTIONS", "/api/v1/calls", PublicRoute::Preflight),
            (
                "POST",
                "/voice/twilio/incoming",
                PublicRoute::CarrierIncoming {
                    carrier: CarrierKind::Twilio,
                },
            ),
            (
                "POST",
                "/voice/twilio/status",
                PublicRoute::CarrierStatus {
                    carrier: CarrierKind::Twilio,
                },
            ),
            ("POST", ACTION_PATH, PublicRoute::TwilioAction),
            ("POST", WHISPER_PATH, PublicRoute::TwilioWhisper),
            (
                "GET",
                "/api/v1/signing-secret",
                PublicRoute::SigningSecret {
                    origin_path: "/v1/signing-secret".into(),
                },
            ),
            (
                "POST",
                "/api/v1/signing-secret/rotate",
                PublicRoute::SigningSecret {
                    origin_path: "/v1/signing-secret/rotate".into(),
                },
            ),
            (
                "POST",
                "/voice/telnyx/incoming",
                PublicRoute::CarrierIncoming {
                    carrier: CarrierKind::Telnyx,
                },
            ),
            (
                "POST",
                "/voice/telnyx/status",
                PublicRoute::CarrierStatus {
                    carrier: CarrierKind::Telnyx,
                },
            ),
            ("POST", "/api/v1/calls/outbound", PublicRoute::OutboundCall),
            (
                "GET",
                "/voice/relay/CA0123456789abcdef0123456789abcdef",
                PublicRoute::Relay {
                    call_id: call("CA0123456789abcdef0123456789abcdef"),
                },
            ),
            ("POST", "/api/v1/calls", PublicRoute::CreateCall),
            ("POST", "/api/v1/calls/", PublicRoute::CreateCall),
            (
                "GET",
                "/api/v1/calls/c-1",
                PublicRoute::GetCall {
                    call_id: call("c-1"),
                },
            ),
            (
                "POST",
                "/api/v1/calls/c-1/turns",
                PublicRoute::Turn {
                    call_id: call("c-1"),
                },
            ),
            (
                "POST",
                "/api/v1/calls/c-1/end",
                PublicRoute::EndCall {
                    call_id: call("c-1"),
                },
            ),
            (
                "GET",
                "/api/v1/agents",
                PublicRoute::Agents {
                    origin_path: "/v1/agents".into(),
                },
            ),
            (
                "PUT",
                "/api/v1/agents/a_1",
                PublicRoute::Agents {
                    origin_path: "/v1/agents/a_1".into(),
                },
            ),
            (
                "DELETE",
                "/api/v1/agents/a_1",
                PublicRoute::Agents {
                    origin_path: "/v1/agents/a_1".into(),
                },
            ),
            ("GET", "/api/v1/calls", PublicRoute::ListCalls),
            ("get", "/api/v1/calls/", PublicRoute::ListCalls),
            (
                "GET",
                "/api/v1/calls/c-1/turns",
                PublicRoute::Transcript {
                    call_id: call("c-1"),
                },
            ),
            (
                "GET",
                "/api/v1/calls/c-1/events",
                PublicRoute::CallEvents {
                    call_id: call("c-1"),
                },
            ),
            ("GET", "/api/v1/events", PublicRoute::Events),
            ("GET", "/api/v1/usage", PublicRoute::Usage),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                PublicRoute::parse(method, path),
                Ok(expected),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn webhook_routes_pass_to_the_origin_under_the_admin_scope() {
        let webhooks = |path: &str| PublicRoute::Webhooks {
            origin_path: path.into(),
        };
        let cases = [
            ("POST", "/api/v1/webhooks", webhooks("/v1/webhooks")),
            ("GET", "/api/v1/webhooks/", webhooks("/v1/webhooks")),
            (
                "GET",
                "/api/v1/webhooks/we_1",
                webhooks("/v1/webhooks/we_1"),
            ),
            (
                "PATCH",
                "/api/v1/webhooks/we_1",
                webhooks("/v1/webhooks/we_1"),
            ),
            (
                "DELETE",
                "/api/v1/webhooks/we_1",
                webhooks("/v1/webhooks/we_1"),
            ),
            (
                "GET",
                "/api/v1/webhooks/we_1/deliveries",
                webhooks("/v1/webhooks/we_1/deliveries"),
            ),
            (
                "POST",
                "/api/v1/webhooks/we_1/deliveries/evt_2/retry",
                webhooks("/v1/webhooks/we_1/deliveries/evt_2/retry"),
            ),
        ];
        for (method, path, expected) in cases {
            let route = PublicRoute::parse(method, path);
            assert_eq!(route, Ok(expected), "{method} {path}");
            let route = route.expect("parsed");
            assert_eq!(route.required_scopes(), &[SCOPE_AGENTS_ADMIN]);
            assert_eq!(route.credential(), Credential::Bearer);
            assert_eq!(route.kind(), RouteKind::Api);
        }
        let refused = [
            ("PUT", "/api/v1/webhooks", RouteError::MethodNotAllowed),
            (
                "POST",
                "/api/v1/webhooks/we_1",
                RouteError::MethodNotAllowed,
            ),
            (
                "GET",
                "/api/v1/webhooks/we_1/deliveries/evt_2/retry",
                RouteError::MethodNotAllowed,
            ),
            ("GET", "/api/v1/webhooks/we_1/other", RouteError::NotFound),
            (
                "GET",
                "/api/v1/webhooks/we_1/deliveries/evt_2",
                RouteError::NotFound,
            ),
            (
                "GET",
                "/api/v1/webhooks/we%2F1",
                RouteError::BadId("we%2F1".into()),
            ),
            (
                "POST",
                "/api/v1/webhooks/we_1/deliveries/e.v/retry",
                RouteError::BadId("e.v".into()),
            ),
        ];
        for (method, path, error) in refused {
            assert_eq!(
                PublicRoute::parse(method, path),
                Err(error),
                "{method} {path}"
            );
        }
        // A create or a retry is not repeated in another region: it could happen twice.
        let create = webhooks("/v1/webhooks");
        assert!(!may_retry_elsewhere(
            "POST",
            &create,
            ForwardFailure::Connect
        ));
        assert!(!may_retry_elsewhere(
            "PATCH",
            &create,
            ForwardFailure::Connect
        ));
        assert!(may_retry_elsewhere("GET", &create, ForwardFailure::Connect));
    }

    #[test]
    fn refusals() {
        let cases = [
            ("GET", "/", RouteError::NotFound),
            ("GET", "/api/v1/call", RouteError::NotFound),
            ("GET", "/api/v1/agents/a/b", RouteError::NotFound),
            ("POST", "/voice/vonage/incoming", RouteError::NotFound),
            ("POST", "/voice/relay/status", RouteError::MethodNotAllowed),
            (
                "GET",
                "/api/v1/calls/outbound",
                RouteError::MethodNotAllowed,
            ),
            ("POST", "/health", RouteError::MethodNotAllowed),
            (
                "GET",
                "/voice/twilio/incoming",
                RouteError::MethodNotAllowed,
            ),
            ("DELETE", "/api/v1/calls/c1", RouteError::MethodNotAllowed),
            ("DELETE", "/api/v1/agents", RouteError::MethodNotAllowed),
            ("GET", "/voice/twilio/action", RouteError::MethodNotAllowed),
            (
                "POST",
                "/api/v1/signing-secret",
                RouteError::MethodNotAllowed,
            ),
            (
                "GET",
                "/api/v1/signing-secret/rotate",
                RouteError::MethodNotAllowed,
            ),
            ("POST", "/api/v1/signing-secret/x", RouteError::NotFound),
            ("POST", "/api/v1/agents", RouteError::MethodNotAllowed),
            ("DELETE", "/api/v1/calls", RouteError::MethodNotAllowed),
            (
                "PUT",
                "/api/v1/calls/c1/turns",
                RouteError::MethodNotAllowed,
            ),
            (
                "POST",
                "/api/v1/calls/c1/events",
                RouteError::MethodNotAllowed,
            ),
            ("POST", "/api/v1/usage", RouteError::MethodNotAllowed),
            ("POST", "/api/v1/events", RouteError::MethodNotAllowed),
            (
                "GET",
                "/api/v1/calls/a.b/turns",
                RouteError::BadId("a.b".into()),
            ),
            (
                "GET",
                "/api/v1/calls/..%2f..",
                RouteError::BadId("..%2f..".into()),
            ),
            ("GET", "/voice/relay/a.b", RouteError::BadId("a.b".into())),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                PublicRoute::parse(method, path),
                Err(expected),
                "{method} {path}"
            );
        }
        let long = format!(
            "/api/v1/calls/{}",
            "a".repeat(crate::identifier::MAX_LEN + 1)
        );
        assert!(matches!(
            PublicRoute::parse("GET", &long),
            Err(RouteError::BadId(_))
        ));
    }

    #[test]
    fn policies_per_route() {
        let relay = PublicRoute::Relay { call_id: call("c") };
        assert_eq!(relay.kind(), RouteKind::Voice);
        assert_eq!(relay.credential(), Credential::CarrierOrBearer);
        assert_eq!(relay.call_id(), Some("c"));
        assert_eq!(
            PublicRoute::CreateCall.required_scopes(),
            &[SCOPE_CALLS_WRITE]
        );
        assert_eq!(
            PublicRoute::GetCall { call_id: call("c") }.required_scopes(),
            &[SCOPE_CALLS_READ]
        );
        for read in [
            PublicRoute::ListCalls,
            PublicRoute::Transcript { call_id: call("c") },
            PublicRoute::CallEvents { call_id: call("c") },
            PublicRoute::Events,
            PublicRoute::Usage,
        ] {
            assert_eq!(read.required_scopes(), &[SCOPE_CALLS_READ], "{read:?}");
            assert_eq!(read.credential(), Credential::Bearer, "{read:?}");
            assert_eq!(read.kind(), RouteKind::Api, "{read:?}");
            assert!(
                may_retry_elsewhere("GET", &read, ForwardFailure::Connect),
                "{read:?}: reads fail over"
            );
        }
        assert_eq!(
            PublicRoute::CallEvents { call_id: call("c") }.call_id(),
            Some("c")
        );
        assert_eq!(PublicRoute::ListCalls.call_id(), None);
        assert_eq!(PublicRoute::Health.credential(), Credential::None);
        for carrier in [PublicRoute::TwilioAction, PublicRoute::TwilioWhisper] {
            assert_eq!(carrier.credential(), Credential::CarrierSignature);
            assert_eq!(carrier.kind(), RouteKind::Voice);
            assert_eq!(carrier.body_limit(), VOICE_BODY_LIMIT);
        }
        let secret = PublicRoute::SigningSecret {
            origin_path: "/v1/signing-secret".into(),
        };
        assert_eq!(secret.required_scopes(), &[SCOPE_AGENTS_ADMIN]);
        assert_eq!(secret.credential(), Credential::Bearer);
        assert_eq!(PublicRoute::Health.body_limit(), 0);
        let telnyx = PublicRoute::CarrierStatus {
            carrier: CarrierKind::Telnyx,
        };
        assert_eq!(telnyx.body_limit(), VOICE_BODY_LIMIT);
        assert_eq!(telnyx.credential(), Credential::CarrierSignature);
        assert_eq!(telnyx.kind(), RouteKind::Voice);
        assert_eq!(PublicRoute::OutboundCall.kind(), RouteKind::Api);
        assert_eq!(PublicRoute::OutboundCall.credential(), Credential::Bearer);
        assert_eq!(
            PublicRoute::OutboundCall.required_scopes(),
            &[SCOPE_CALLS_WRITE]
        );
        assert_eq!(
            PublicRoute::Turn { call_id: call("c") }.body_limit(),
            API_BODY_LIMIT
        );
    }

    #[test]
    fn urls_back_to_this_host() {
        for (called, expected) in [
            (
                "https://edge.example/voice/twilio/incoming?x=1",
                "https://edge.example/voice/twilio/action",
            ),
            (
                "http://127.0.0.1:8787/voice/twilio/incoming",
                "http://127.0.0.1:8787/voice/twilio/action",
            ),
            (
                "https://edge.example",
                "https://edge.example/voice/twilio/action",
            ),
            (
                "https://edge.example?x=1",
                "https://edge.example/voice/twilio/action",
            ),
        ] {
            assert_eq!(on_same_host(called, ACTION_PATH), expected, "{called}");
        }
    }

    #[test]
    fn whisper_urls_carry_their_text() {
        let url = whisper_url(
            "https://edge.example/voice/twilio/action?x=1",
            "Caller wants a refund & a call back",
        );
        assert_eq!(
            url,
            "https://edge.example/voice/twilio/whisper?text=Caller+wants+a+refund+%26+a+call+back"
        );
        assert_eq!(
            whisper_text(&url).as_deref(),
            Some("Caller wants a refund & a call back")
        );
        assert_eq!(
            whisper_text("https://edge.example/voice/twilio/whisper"),
            None
        );
        assert_eq!(
            whisper_text("https://e.example/voice/twilio/whisper?text=+"),
            None
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("+14155550100"), "%2B14155550100");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment("plain-id_1.x~"), "plain-id_1.x~");
    }

    #[test]
    fn url_as_called() {
        let cases = [
            (
                "https://edge.example/voice/twilio/incoming?x=1",
                None,
                false,
                "https://edge.example/voice/twilio/incoming?x=1",
            ),
            (
                "http://127.0.0.1:8787/voice/relay/CA1",
                None,
                true,
                "ws://127.0.0.1:8787/voice/relay/CA1",
            ),
            (
                "https://edge.example/voice/relay/CA1",
                None,
                true,
                "wss://edge.example/voice/relay/CA1",
            ),
            (
                "http://internal:8787/voice/relay/CA1?t=1",
                Some("https://voice.example.com/"),
                true,
                "wss://voice.example.com/voice/relay/CA1?t=1",
            ),
            (
                "http://internal:8787/voice/twilio/status",
                Some("https://voice.example.com"),
                false,
                "https://voice.example.com/voice/twilio/status",
            ),
            ("https://edge.example", None, false, "https://edge.example/"),
        ];
        for (url, base, websocket, expected) in cases {
            assert_eq!(as_called(url, base, websocket), expected, "{url}");
        }
    }

    #[test]
    fn statuses_that_mean_the_origin_could_not_serve() {
        for status in [502, 503, 504, 520, 521, 522, 523, 524] {
            assert!(means_origin_unavailable(status), "{status}");
        }
        for status in [200, 404, 500, 501, 505, 519, 525, 526] {
            assert!(!means_origin_unavailable(status), "{status}");
        }
        assert!(may_retry_elsewhere(
            "GET",
            &PublicRoute::GetCall { call_id: call("c") },
            ForwardFailure::Unavailable(522)
        ));
    }

    #[test]
    fn retry_only_what_cannot_do_harm_twice() {
        let turn = PublicRoute::Turn { call_id: call("c") };
        let get = PublicRoute::GetCall { call_id: call("c") };
        assert!(may_retry_elsewhere("GET", &get, ForwardFailure::Connect));
        assert!(may_retry_elsewhere(
            "GET",
            &get,
            ForwardFailure::Unavailable(503)
        ));
        assert!(!may_retry_elsewhere(
            "GET",
            &get,
            ForwardFailure::Unavailable(500)
        ));
        assert!(may_retry_elsewhere(
            "POST",
            &PublicRoute::CreateCall,
            ForwardFailure::Unavailable(502)
        ));
        assert!(
            !may_retry_elsewhere("POST", &turn, ForwardFailure::Connect),
            "a turn could be answered twice"
        );
        assert!(may_retry_elsewhere(
            "PUT",
            &PublicRoute::Agents {
                origin_path: "/v1/agents/a".into()
            },
            ForwardFailure::Connect
        ));
    }
}
