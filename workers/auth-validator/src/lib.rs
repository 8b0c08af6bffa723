//! auth-validator: decides who a request is. No public route; voice-router reaches it through
//! its `AUTH` service binding. The rules live in `shared` (`auth`, `jwt`, `jwks`, `api_key`,
//! `twilio`, `session_token`); this Worker loads keys and records, calls them, and answers.
//!
//! # Routes
//!
//! `POST /v1/authenticate` — body: `shared::auth::AuthenticateRequest`
//! (`{"method","url","headers":{"authorization","x-api-key","x-twilio-signature",
//! "telnyx-signature-ed25519","telnyx-timestamp","content-type"},
//! "body","required_scopes","call_id"}`; only `method` and `url` are required; `url` is the public
//! URL exactly as the client or carrier called it, `wss://` for a WebSocket handshake).
//! Exactly one credential is used: `Authorization: Bearer <jwt | ak_… | st_…>`, `X-Api-Key:
//! ak_…`, `X-Twilio-Signature`, `telnyx-signature-ed25519` (with `telnyx-timestamp`; Ed25519
//! over `timestamp|body`, verified with WebCrypto), or a `session_token=st_…` query parameter.
//!
//! | status | body | when |
//! | --- | --- | --- |
//! | 200 | `shared::principal::Principal` | authenticated and holding every required scope |
//! | 400 | error `invalid_request`, `invalid_url`, `multiple_credentials`, `empty_credential` | the envelope is not usable, or more than one credential |
//! | 401 | error, code per cause (`token_expired`, `api_key_revoked`, `twilio_bad_signature`, …) | the credential is missing or refused |
//! | 403 | error `insufficient_scope` | valid credential, missing scope |
//! | 413 | error `payload_too_large` | envelope over 256 KiB |
//! | 500 | error `internal` / `misconfigured` | a bug, a corrupt key record, invalid configuration (causes logged) |
//! | 503 | error `jwks_unavailable`, `verifier_unavailable`, `storage_unavailable` | keys, WebCrypto or KV unreachable |
//!
//! Refusals of a bearer credential (`Authorization: Bearer`, `session_token`) carry
//! `WWW-Authenticate: Bearer error="invalid_token", error_description="…"` (403:
//! `error="insufficient_scope", scope="…"`; 400: `error="invalid_request"`); other 401s carry
//! `WWW-Authenticate: Bearer realm="aybiza"`.
//!
//! `POST /v1/session-tokens` — body: `shared::auth::MintSessionTokenRequest`
//! (`{"call_id","principal","scopes"?,"ttl_s"?}`) → 200 `shared::auth::SessionTokenResponse`
//! (`{"token":"st_…","call_id","expires_at"}`); 400 `invalid_call_id`; 401
//! `auth_method_not_enabled` when no `SESSION_TOKEN_SECRET` is set. Callers are trusted (service
//! binding only): voice-router mints after authenticating the caller.
//!
//! `GET /health` — the KV binding, plus `CONFIG` when the configuration has problems.
//!
//! Every answer carries `X-Request-Id` (the caller's, when well formed); every error is
//! `{"error":{"code","message","request_id"}}`.

use edge_io::{Failure, Rejection, probe, respond};
use serde::de::DeserializeOwned;
use shared::auth::config::AuthConfig;
use shared::auth::{
    self, AUTHENTICATE_PATH, AuthError, AuthenticateRequest, Credential, MAX_ENVELOPE_BYTES,
    MintSessionTokenRequest, Presentation, SESSION_TOKENS_PATH, SessionTokenResponse,
};
use shared::health::{BindingHealth, HEALTH_PATH, HealthReport};
use shared::jwt::JwtError;
use shared::principal::{AuthMethod, Principal};
use shared::request_id::Trust;
use shared::{api_key, session_token, telnyx, twilio};
use worker::{Context, Env, Method, Request, Response, Result, console_error, console_log, event};

mod config;
mod keys;
mod verifier;

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// KV: API key records by SHA-256, and the JWKS cache.
const AUTH_KV: &str = "AUTH_KV";
/// How a failing configuration shows in `/health`.
const CONFIG: &str = "CONFIG";
/// The realm of every challenge.
const REALM: &str = "aybiza";
/// Response header of a 401/403 challenge.
const WWW_AUTHENTICATE: &str = "www-authenticate";

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let request_id = edge_io::request_id(&req, Trust::Internal);
    respond(route(req, &env, &ctx, &request_id).await, &request_id)
}

async fn route(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    match (req.method(), req.path().as_str()) {
        (Method::Get, HEALTH_PATH) => health(env, request_id).await,
        (Method::Post, AUTHENTICATE_PATH) => {
            let outcome = authenticate(&mut req, env, ctx).await;
            match outcome {
                Ok(principal) => edge_io::json(200, &principal, request_id),
                Err(refusal) => Err(refuse(refusal, request_id)),
            }
        }
        (Method::Post, SESSION_TOKENS_PATH) => match mint(&mut req, env).await {
            Ok(minted) => edge_io::json(200, &minted, request_id),
            Err(refusal) => Err(refuse(refusal, request_id)),
        },
        (_, HEALTH_PATH | AUTHENTICATE_PATH | SESSION_TOKENS_PATH) => {
            Err(Failure::MethodNotAllowed)
        }
        _ => Err(Failure::NotFound),
    }
}

async fn health(env: &Env, request_id: &str) -> std::result::Result<Response, Failure> {
    let mut checks = vec![probe::kv(env, AUTH_KV).await];
    if let Err(problems) = config::load(env).as_ref() {
        checks.push((
            CONFIG.to_owned(),
            BindingHealth::failed(problems.to_string(), None),
        ));
    }
    let report = HealthReport::from_checks(SERVICE, VERSION, checks);
    edge_io::answer::health(&report, request_id)
}

/// Why a request was not answered with a principal or a token. Turned into a status in one
/// place: [`rejection`].
#[derive(Debug)]
enum Refusal {
    /// The credential or the scope check said no.
    Auth {
        error: AuthError,
        presentation: Option<Presentation>,
    },
    /// The body is not the expected JSON.
    InvalidEnvelope,
    /// The body is larger than [`MAX_ENVELOPE_BYTES`].
    EnvelopeTooLarge,
    /// The configuration has problems (logged when it was parsed).
    Misconfigured,
    /// The key set could not be fetched and nothing usable is cached.
    JwksUnavailable,
    /// KV failed.
    Storage(worker::Error),
    /// The runtime failed underneath.
    Runtime(worker::Error),
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Self {
        Refusal::Auth {
            error,
            presentation: None,
        }
    }
}

impl Refusal {
    fn with_presentation(self, presentation: Presentation) -> Self {
        match self {
            Refusal::Auth { error, .. } => Refusal::Auth {
                error,
                presentation: Some(presentation),
            },
            other => other,
        }
    }
}

/// Loads the configuration, reads the envelope, verifies the one credential, checks scopes.
async fn authenticate(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
) -> std::result::Result<Principal, Refusal> {
    let loaded = config::load(env);
    let config = loaded
        .as_ref()
        .as_ref()
        .map_err(|_| Refusal::Misconfigured)?;
    let envelope: AuthenticateRequest = read_json(req).await?;
    let presented = auth::identify(&envelope)?;
    let presentation = presented.presentation;
    let principal = verify(&presented.credential, &envelope, config, env, ctx)
        .await
        .map_err(|refusal| refusal.with_presentation(presentation))?;
    auth::authorize(&principal, &envelope.required_scopes)
        .map_err(|error| Refusal::from(error).with_presentation(presentation))?;
    Ok(principal)
}

async fn verify(
    credential: &Credential<'_>,
    envelope: &AuthenticateRequest,
    config: &AuthConfig,
    env: &Env,
    ctx: &Context,
) -> std::result::Result<Principal, Refusal> {
    let now_ms = edge_io::clock::now_ms();
    let now_s = now_ms / 1_000;
    match credential {
        Credential::Jwt(token) => {
            let jwt = config
                .jwt
                .as_ref()
                .ok_or(AuthError::MethodNotEnabled(AuthMethod::Jwt))?;
            let token = shared::jwt::decode(token).map_err(AuthError::from)?;
            let keys = keys::for_token(token.header(), jwt, env, ctx, now_ms).await?;
            shared::jwt::verify_decoded(&token, &keys, &jwt.policy, now_s, &verifier::Backend)
                .await
                .map_err(|error| AuthError::from(error).into())
        }
        Credential::ApiKey(raw) => {
            let key = api_key::parse(raw).map_err(AuthError::from)?;
            let store = env.kv(AUTH_KV).map_err(Refusal::Storage)?;
            let stored = store
                .get(&key.storage_key())
                .text()
                .await
                .map_err(|error| Refusal::Storage(error.into()))?;
            Ok(api_key::accept(&key, stored.as_deref(), now_s).map_err(AuthError::from)?)
        }
        Credential::SessionToken(token) => {
            let sessions = config
                .session_tokens
                .as_ref()
                .ok_or(AuthError::MethodNotEnabled(AuthMethod::SessionToken))?;
            Ok(
                session_token::verify(token, &sessions.keys, envelope.call_id.as_deref(), now_s)
                    .map_err(AuthError::from)?,
            )
        }
        Credential::TwilioSignature(signature) => {
            if config.twilio_accounts.is_empty() {
                return Err(AuthError::MethodNotEnabled(AuthMethod::TwilioSignature).into());
            }
            let request = twilio::SignedRequest {
                method: &envelope.method,
                url: &envelope.url,
                content_type: envelope.headers.content_type.as_deref(),
                body: envelope.body.as_deref(),
                signature,
            };
            let account =
                twilio::verify(&config.twilio_accounts, &request).map_err(AuthError::from)?;
            Ok(account.principal())
        }
        Credential::TelnyxSignature {
            signature,
            timestamp,
        } => {
            if config.telnyx_accounts.is_empty() {
                return Err(AuthError::MethodNotEnabled(AuthMethod::TelnyxSignature).into());
            }
            let request = telnyx::SignedRequest {
                body: envelope.body.as_deref().unwrap_or_default(),
                signature,
                timestamp: *timestamp,
            };
            let account =
                telnyx::verify(&config.telnyx_accounts, &request, now_s, &verifier::Backend)
                    .await
                    .map_err(AuthError::from)?;
            Ok(account.principal())
        }
    }
}

/// `POST /v1/session-tokens`.
async fn mint(req: &mut Request, env: &Env) -> std::result::Result<SessionTokenResponse, Refusal> {
    let loaded = config::load(env);
    let config = loaded
        .as_ref()
        .as_ref()
        .map_err(|_| Refusal::Misconfigured)?;
    let request: MintSessionTokenRequest = read_json(req).await?;
    let sessions = config
        .session_tokens
        .as_ref()
        .ok_or(AuthError::MethodNotEnabled(AuthMethod::SessionToken))?;
    let key = sessions
        .signing_key()
        .ok_or(AuthError::MethodNotEnabled(AuthMethod::SessionToken))?;
    let scopes = request
        .scopes
        .clone()
        .unwrap_or_else(|| request.principal.scopes.clone());
    let minted = session_token::mint(
        &request.principal,
        &request.call_id,
        &scopes,
        edge_io::clock::now_ms() / 1_000,
        sessions.ttl_s(request.ttl_s),
        key,
    )
    .map_err(AuthError::from)?;
    Ok(SessionTokenResponse {
        token: minted.token,
        call_id: request.call_id,
        expires_at: minted.expires_at,
    })
}

async fn read_json<T: DeserializeOwned>(req: &mut Request) -> std::result::Result<T, Refusal> {
    let declared = req
        .headers()
        .get("content-length")
        .map_err(Refusal::Runtime)?
        .and_then(|length| length.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_ENVELOPE_BYTES) {
        return Err(Refusal::EnvelopeTooLarge);
    }
    let body = req.bytes().await.map_err(Refusal::Runtime)?;
    if body.len() > MAX_ENVELOPE_BYTES {
        return Err(Refusal::EnvelopeTooLarge);
    }
    serde_json::from_slice(&body).map_err(|_| Refusal::InvalidEnvelope)
}

/// Logs a refusal (never a credential) and turns it into the client's answer.
fn refuse(refusal: Refusal, request_id: &str) -> Failure {
    let rejection = rejection(&refusal);
    if rejection.status >= 500 {
        console_error!(
            "request {request_id}: {} ({})",
            rejection.code,
            cause(&refusal)
        );
    } else {
        console_log!("request {request_id}: refused {}", rejection.code);
    }
    match refusal {
        Refusal::Runtime(error) => Failure::Internal(error),
        _ => Failure::Rejected(rejection),
    }
}

fn cause(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Storage(error) | Refusal::Runtime(error) => error.to_string(),
        Refusal::Auth { error, .. } => error.to_string(),
        other => format!("{other:?}"),
    }
}

/// The one place statuses are chosen.
fn rejection(refusal: &Refusal) -> Rejection {
    match refusal {
        Refusal::InvalidEnvelope => Rejection::new(
            400,
            "invalid_request",
            "the body is not a valid request for this route",
        ),
        Refusal::EnvelopeTooLarge => Rejection::new(
            413,
            "payload_too_large",
            format!("the body is larger than {MAX_ENVELOPE_BYTES} bytes"),
        ),
        Refusal::Misconfigured => Rejection::new(
            500,
            "misconfigured",
            "auth-validator is misconfigured; quote the request id when reporting it",
        ),
        Refusal::JwksUnavailable => Rejection::new(
            503,
            "jwks_unavailable",
            "signing keys are unavailable; retry later",
        ),
        Refusal::Storage(_) => Rejection::new(
            503,
            "storage_unavailable",
            "credential storage is unavailable; retry later",
        ),
        Refusal::Runtime(_) => Rejection::new(500, "internal", "internal error"),
        Refusal::Auth {
            error,
            presentation,
        } => auth_rejection(error, *presentation),
    }
}

fn auth_rejection(error: &AuthError, presentation: Option<Presentation>) -> Rejection {
    let code = error.code();
    let message = error.to_string();
    let bearer = presentation.is_some_and(Presentation::is_bearer);
    match error {
        AuthError::InsufficientScope { missing } => {
            let rejection = Rejection::new(403, code, message);
            if bearer {
                rejection.with_header(
                    WWW_AUTHENTICATE,
                    format!(
                        "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
                        quoted(&missing.join(" "))
                    ),
                )
            } else {
                rejection
            }
        }
        AuthError::BadUrl(_)
        | AuthError::Twilio(twilio::TwilioError::BadUrl(_))
        | AuthError::SessionToken(session_token::SessionTokenError::InvalidCallId) => {
            Rejection::new(400, code, message)
        }
        AuthError::MultipleCredentials | AuthError::EmptyBearer => {
            Rejection::new(400, code, &message).with_header(
                WWW_AUTHENTICATE,
                format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_request\", error_description=\"{}\"",
                    quoted(&message)
                ),
            )
        }
        AuthError::Jwt(JwtError::VerifierFailed)
        | AuthError::Telnyx(telnyx::TelnyxError::Unverifiable) => {
            Rejection::new(503, code, "the signature could not be checked; retry later")
        }
        AuthError::ApiKey(api_key::ApiKeyError::CorruptRecord) => Rejection::new(
            500,
            "internal",
            "internal error; quote the request id when reporting it",
        ),
        _ if bearer => Rejection::new(401, code, &message).with_header(
            WWW_AUTHENTICATE,
            format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                quoted(&message)
            ),
        ),
        _ => Rejection::new(401, code, message)
            .with_header(WWW_AUTHENTICATE, format!("Bearer realm=\"{REALM}\"")),
    }
}

/// A value safe inside an HTTP quoted-string: no quotes, backslashes or control characters.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() || !c.is_ascii() {
                '\''
            } else {
                c
            }
        })
        .collect()
}
