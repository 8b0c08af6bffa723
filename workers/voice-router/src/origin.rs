//! Forwarding to the origin: signed with the edge's key (`shared::signing`), sent to the
//! call's region first and, when the request cannot do harm twice, to the next region when an
//! origin fails before answering; failures are reported to geo-router.

use std::time::Duration;

use edge_io::clock::{now_ms, within};
use shared::call::AnsweredByReport;
use shared::call_session::Routing;
use shared::call_session::relay::origin_knows_it_ended;
use shared::carrier::AnsweredBy;
use shared::edge_config::EdgeConfig;
use shared::failover::{Failover, FailoverPolicy, Step};
use shared::geo::Target;
use shared::geo::wire::ReportRequest;
use shared::headers;
use shared::principal::Principal;
use shared::public_route::{ForwardFailure, means_origin_unavailable};
use shared::signing::{self, BodyHash, SignedRequest};
use shared::trace_context::TraceParent;
use worker::{Env, Headers, Method, Request, RequestInit, Response};

use crate::services;

/// How long an origin may take to start answering. A turn's headers come before its first
/// token, so this bounds connection and validation, not the reply.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// Who a forwarded request is for, and how to sign it.
pub struct Signer<'a> {
    /// The edge ↔ origin key.
    pub secret: &'a [u8],
    /// The authenticated principal.
    pub principal: &'a Principal,
    /// The caller's country.
    pub country: Option<&'a str>,
    /// This request's id.
    pub request_id: &'a str,
    /// The `traceparent` sent: this request's span in its trace.
    pub trace: TraceParent,
    /// How long the request may spend failing over to further regions, in ms.
    pub failover_budget_ms: u64,
}

impl Signer<'_> {
    /// How log lines about this request name it.
    pub fn tag(&self) -> Tag<'_> {
        Tag {
            request_id: self.request_id,
            trace: &self.trace,
        }
    }
}

/// A request as log lines name it: `request <id> trace <trace id>`, so an edge log line leads to
/// the origin's spans and log lines of the same request.
pub struct Tag<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// Its trace.
    pub trace: &'a TraceParent,
}

impl std::fmt::Display for Tag<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request {} trace {}",
            self.request_id,
            self.trace.trace_id_hex()
        )
    }
}

/// What a forwarded request carries.
pub enum Body<'a> {
    /// No body (`GET`, `DELETE`).
    Empty,
    /// A complete body, hashed into the signature.
    Bytes(&'a [u8]),
    /// A WebSocket upgrade: the stream marker is signed.
    Upgrade,
}

/// Every region failed.
#[derive(Debug)]
pub struct Unavailable {
    /// `region: cause` per attempt.
    pub attempts: Vec<String>,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no origin answered: {}", self.attempts.join("; "))
    }
}

/// Builds the signed request for one target.
pub fn signed_request(
    signer: &Signer<'_>,
    target: &Target,
    method: Method,
    path_and_query: &str,
    body: &Body<'_>,
    content_type: Option<&str>,
    extra: &[(&str, &str)],
) -> worker::Result<Request> {
    let principal = signer.principal.to_header();
    let timestamp = now_ms() / 1000;
    // Fresh for every attempt (a retry in the next region is a new request): the origin
    // refuses a nonce it has seen within the skew window (`shared::signing::replay`).
    let nonce = edge_io::request_id::random_uuid();
    let body_hash = match body {
        Body::Empty => BodyHash::of(b""),
        Body::Bytes(bytes) => BodyHash::of(bytes),
        Body::Upgrade => BodyHash::Stream,
    };
    let signature = signing::sign(
        signer.secret,
        &SignedRequest {
            method: method.as_ref(),
            path_and_query,
            timestamp,
            nonce: &nonce,
            body: body_hash,
            principal: &principal,
        },
    )
    .map_err(|e| worker::Error::RustError(e.to_string()))?;

    let headers = Headers::new();
    headers.set(headers::REQUEST_ID, signer.request_id)?;
    headers.set(headers::CF_REGION, &target.region)?;
    if let Some(country) = signer.country {
        headers.set(headers::CF_COUNTRY, country)?;
    }
    headers.set(headers::EDGE_PRINCIPAL, &principal)?;
    headers.set(headers::EDGE_TIMESTAMP, &timestamp.to_string())?;
    headers.set(headers::EDGE_NONCE, &nonce)?;
    headers.set(headers::EDGE_SIGNATURE, &signature)?;
    // Not signed (`shared::headers::TRACEPARENT` says why).
    headers.set(headers::TRACEPARENT, &signer.trace.to_string())?;
    if let Some(content_type) = content_type {
        headers.set("content-type", content_type)?;
    }
    if matches!(body, Body::Upgrade) {
        headers.set("upgrade", "websocket")?;
    }
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    if let Body::Bytes(bytes) = body {
        init.with_body(Some(worker::js_sys::Uint8Array::from(*bytes).into()));
    }
    Request::new_with_init(&format!("{}{path_and_query}", target.origin_url), &init)
}

/// A forward to try: the request's shape, and whether a failure may move it to the next region.
pub struct Forward<'a> {
    /// Method.
    pub method: Method,
    /// Origin path and query.
    pub path_and_query: &'a str,
    /// Body.
    pub body: Body<'a>,
    /// The body's content type.
    pub content_type: Option<&'a str>,
    /// Extra headers passed to the origin (`accept`, `last-event-id`, …).
    pub extra: &'a [(&'a str, &'a str)],
    /// Whether a failure of this kind may be retried in the next region.
    pub may_retry: &'a dyn Fn(ForwardFailure) -> bool,
    /// Who reports a failure to geo-router (tenant or client IP); bounds one client's weight.
    pub reporter: &'a str,
}

/// Sends `forward` to the targets in order until one answers; returns the answer and the
/// target that gave it. Further regions are tried only within the request's failover budget
/// (`shared::failover`). When no region answered usefully, the last answer meaning the origin
/// could not serve (502–504, 520–524) is returned as the origin gave it, so its code and
/// `Retry-After` reach the client; without any, `Unavailable`.
pub async fn send(
    env: &Env,
    signer: &Signer<'_>,
    targets: &[Target],
    forward: &Forward<'_>,
) -> Result<(Response, Target), Unavailable> {
    let failover = Failover::start(
        FailoverPolicy {
            budget_ms: signer.failover_budget_ms,
            head_timeout_ms: u64::try_from(HEAD_DEADLINE.as_millis()).unwrap_or(u64::MAX),
        },
        now_ms(),
    );
    let mut attempts = Vec::new();
    let mut refused: Option<(Response, Target)> = None;
    let mut failed: Vec<&Target> = Vec::new();
    let mut answered: Option<(Response, Target)> = None;
    let mut step = failover.first();
    for (index, target) in targets.iter().enumerate() {
        let timeout_ms = match step {
            Step::Send { timeout_ms } => timeout_ms,
            Step::Stop(reason) => {
                attempts.push(format!("stopped: {reason:?}"));
                break;
            }
        };
        let request = signed_request(
            signer,
            target,
            forward.method.clone(),
            forward.path_and_query,
            &forward.body,
            forward.content_type,
            forward.extra,
        );
        let outcome = match request {
            Ok(request) => {
                within(
                    Duration::from_millis(timeout_ms),
                    worker::Fetch::Request(request).send(),
                )
                .await
            }
            Err(error) => Some(Err(error)),
        };
        let failure = match outcome {
            Some(Ok(response)) => {
                let status = response.status_code();
                if !means_origin_unavailable(status) {
                    answered = Some((response, target.clone()));
                    break;
                }
                attempts.push(format!("{}: answered {status}", target.region));
                refused = Some((response, target.clone()));
                ForwardFailure::Unavailable(status)
            }
            Some(Err(error)) => {
                attempts.push(format!("{}: {error}", target.region));
                ForwardFailure::Connect
            }
            None => {
                attempts.push(format!(
                    "{}: no answer within {timeout_ms} ms",
                    target.region
                ));
                ForwardFailure::Connect
            }
        };
        failed.push(target);
        let regions_left = targets.len() - index - 1;
        step = failover.after_failure(failure, forward.may_retry, regions_left, now_ms());
    }
    // Reported together once the failover is over: a report is a round trip to geo-router, and
    // one per region, in turn, would spend the request's deadline on bookkeeping.
    futures::future::join_all(
        failed
            .iter()
            .map(|target| report(env, signer, target, forward)),
    )
    .await;
    if let Some(answer) = answered {
        return Ok(answer);
    }
    match refused {
        Some(answer) => {
            worker::console_warn!(
                "{}: the origins refused: {}",
                signer.tag(),
                attempts.join("; ")
            );
            Ok(answer)
        }
        None => Err(Unavailable { attempts }),
    }
}

async fn report(env: &Env, signer: &Signer<'_>, target: &Target, forward: &Forward<'_>) {
    services::report_failure(
        env,
        &ReportRequest {
            region: target.region.clone(),
            client: forward.reporter.to_owned(),
        },
        signer.request_id,
    )
    .await;
}

/// How long an origin may take to accept a call's relay socket.
const RELAY_DEADLINE: Duration = Duration::from_secs(5);

/// Who a call's own requests to its origin are signed as: the principal that started the call,
/// from the `CallSession`'s routing.
/// Each is a new span of the call's trace.
pub fn call_signer<'a>(
    config: &'a EdgeConfig,
    routing: &'a Routing,
    request_id: &'a str,
) -> Signer<'a> {
    Signer {
        secret: &config.signing_secret,
        principal: &routing.principal,
        country: routing.country.as_deref(),
        request_id,
        trace: edge_io::trace::within(routing.trace_id.as_deref()),
        failover_budget_ms: config.failover_budget_ms,
    }
}

/// Opens the call's relay WebSocket to `target`'s origin; anything but a 101 within the
/// deadline is an error naming what the origin did.
pub async fn open_relay(
    signer: &Signer<'_>,
    target: &Target,
    call_id: &str,
) -> worker::Result<worker::WebSocket> {
    let path = shared::origin_path::call_relay(call_id);
    let request = signed_request(
        signer,
        target,
        Method::Get,
        &path,
        &Body::Upgrade,
        None,
        &[],
    )?;
    let mut response = within(RELAY_DEADLINE, worker::Fetch::Request(request).send())
        .await
        .ok_or_else(|| {
            worker::Error::RustError(format!(
                "no answer within {} ms",
                RELAY_DEADLINE.as_millis()
            ))
        })??;
    let status = response.status_code();
    if status != 101 {
        let text = response.text().await.unwrap_or_default();
        return Err(worker::Error::RustError(format!(
            "answered {status} instead of upgrading: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    let socket = response
        .websocket()
        .ok_or_else(|| worker::Error::RustError("answered 101 without a WebSocket".into()))?;
    socket.accept()?;
    Ok(socket)
}

/// What the origin is told about a call's end: the reason (the edge's, or the one an API
/// client gave) and an API client's handoff data, which the origin puts in the relay's `end`.
pub struct EndTold<'a> {
    /// `reason` of `POST /v1/calls/{id}/end`.
    pub reason: &'a str,
    /// `handoff_data` of it.
    pub handoff_data: Option<serde_json::Value>,
}

/// Tells the origins, in order until one answers, that the call ended; what they answered is
/// logged when it is not what an origin that knows says ([`origin_knows_it_ended`]).
pub async fn end_call(
    env: &Env,
    signer: &Signer<'_>,
    targets: &[Target],
    call_id: &str,
    told: EndTold<'_>,
) {
    let mut body = serde_json::json!({ "reason": told.reason });
    if let Some(data) = told.handoff_data {
        body["handoff_data"] = data;
    }
    let body = body.to_string();
    let path = shared::origin_path::call_end(call_id);
    tell(
        env,
        signer,
        targets,
        call_id,
        &path,
        &body,
        origin_knows_it_ended,
    )
    .await;
}

/// Tells the origins, in order until one answers, what answering-machine detection found; the
/// origin stores it and tells the call's live relay session.
pub async fn answered_by(
    env: &Env,
    signer: &Signer<'_>,
    targets: &[Target],
    call_id: &str,
    answered_by: AnsweredBy,
) {
    let body = serde_json::to_string(&AnsweredByReport { answered_by }).unwrap_or_default();
    let path = shared::origin_path::call_answered_by(call_id);
    // 409: the call ended meanwhile, nothing to do.
    tell(env, signer, targets, call_id, &path, &body, |status| {
        matches!(status, 200 | 409)
    })
    .await;
}

/// Posts `body` to `path` for the call on the origins in order until one answers; logs an answer
/// `expected` does not accept, or no answer.
async fn tell(
    env: &Env,
    signer: &Signer<'_>,
    targets: &[Target],
    call_id: &str,
    path: &str,
    body: &str,
    expected: impl Fn(u16) -> bool,
) {
    let forward = Forward {
        method: Method::Post,
        path_and_query: path,
        body: Body::Bytes(body.as_bytes()),
        content_type: Some("application/json"),
        extra: &[],
        may_retry: &|_| true,
        reporter: &signer.principal.tenant_id,
    };
    match send(env, signer, targets, &forward).await {
        Ok((response, _)) if expected(response.status_code()) => {}
        Ok((response, target)) => worker::console_warn!(
            "call {call_id}: the origin in {} answered {} to {path}",
            target.region,
            response.status_code()
        ),
        Err(error) => worker::console_error!("call {call_id}: {path}: {error}"),
    }
}
