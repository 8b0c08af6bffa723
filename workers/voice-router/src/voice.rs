//! The carrier's routes: the incoming-call webhook (answered with TwiML), the status callback,
//! and the ConversationRelay WebSocket.

use edge_io::Failure;
use shared::agent::Agent;
use shared::call::{CallSource, CreateCall};
use shared::call_session::{EndReason, StartCall};
use shared::identifier::is_resource_id;
use shared::principal::Principal;
use shared::public_route::PublicRoute;
use shared::rate_limit::api::LeaseRequest;
use shared::relay;
use shared::twilio::CallWebhook;
use shared::twiml::{self, ConversationRelay};
use worker::{Headers, Method, Request, Response, console_error, console_warn};

use crate::gate::{self, refuse};
use crate::origin::{self, Body, Forward, Signer, Target};
use crate::services::{self, ServiceError};
use crate::session::{EndRequest, StartSession, TENANT_HEADER};
use crate::{CALL_SESSION, Exchange};

/// Said when the tenant is at its concurrent-call limit.
const BUSY: &str =
    "All of our lines are busy right now. Please call again in a few minutes. Goodbye.";
/// Said when the number has no agent.
const NOT_IN_SERVICE: &str = "The number you have called is not in service. Goodbye.";
/// Said when the call cannot be connected for a technical reason.
const TROUBLE: &str =
    "We are sorry, we cannot take your call right now. Please try again later. Goodbye.";

/// `POST /voice/twilio/incoming`: a call arrives. Finds the agent for the called number, takes
/// the tenant's concurrent-call lease, records the call at the origin, creates its session, and
/// answers TwiML that connects the call to ConversationRelay. Anything that stops the call
/// after authentication is said to the caller in TwiML, not an HTTP error the carrier reads out.
pub async fn incoming(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<Response, Failure> {
    let route_request = shared::geo::wire::RouteRequest {
        caller: Some(x.client.location()),
        pin: None,
    };
    let (principal, limited, decision) = futures::join!(
        gate::authenticate(x.env, req, route, &x.public_url, &x.body, x.request_id),
        gate::enforce_ip(x),
        // The relay WebSocket will come from the carrier's media edge, which is where this
        // webhook came from: route by the carrier's location, not the caller's number.
        services::route(x.env, &route_request, x.request_id),
    );
    limited?;
    let principal = principal?;
    let webhook = CallWebhook::from_form(&x.body);
    let call_sid = valid_call_sid(&webhook)?;
    let to = webhook.to.clone().unwrap_or_default();
    let targets = targets_or_default(x, decision);
    let signer = signer(x, &principal);

    let agent = match find_agent(x, &signer, &targets, &to, &principal).await {
        Ok(Some(agent)) => agent,
        Ok(None) => return twiml_answer(&twiml::say_and_hang_up(NOT_IN_SERVICE, None)),
        Err(cause) => {
            console_error!(
                "request {}: call {call_sid}: agent lookup failed: {cause}",
                x.request_id
            );
            return twiml_answer(&twiml::say_and_hang_up(TROUBLE, None));
        }
    };
    let language = agent.spec.voice.language.as_deref();

    let lease = LeaseRequest::for_call(&principal.tenant_id, &principal.plan, &call_sid);
    match services::acquire_lease(x.env, &lease, x.request_id).await {
        Ok(granted) if granted.decision.allowed => {}
        Ok(_) => return twiml_answer(&twiml::say_and_hang_up(BUSY, language)),
        Err(error) => {
            // Fail open like the limiter itself: a limiter outage must not hang up on callers.
            console_warn!(
                "request {}: call {call_sid}: lease not taken: {error:?}",
                x.request_id
            );
        }
    }

    let create = CreateCall {
        id: Some(call_sid.clone()),
        agent_id: Some(agent.id.clone()),
        source: CallSource::Phone,
        carrier_call_sid: Some(call_sid.clone()),
        from: webhook.from.clone(),
        to: Some(to.clone()),
    };
    let started = match create_at_origin(x, &signer, &targets, &create, &principal).await {
        Ok(target) => {
            start_session(
                x,
                &principal,
                &call_sid,
                Some(agent.id.clone()),
                CallSource::Phone,
                &targets,
                &target,
            )
            .await
        }
        Err(cause) => Err(cause),
    };
    if let Err(cause) = started {
        console_error!(
            "request {}: call {call_sid}: not started: {cause}",
            x.request_id
        );
        if let Err(error) = services::release_lease(x.env, &lease, x.request_id).await {
            console_error!(
                "request {}: call {call_sid}: lease not released: {error:?}",
                x.request_id
            );
        }
        return twiml_answer(&twiml::say_and_hang_up(TROUBLE, language));
    }

    let relay_url = relay_url(&x.public_url, &call_sid);
    twiml_answer(&twiml::connect_relay(&ConversationRelay {
        url: relay_url,
        welcome_greeting: agent.spec.greeting.clone(),
        voice: agent.spec.voice.voice.clone(),
        language: agent.spec.voice.language.clone(),
        tts_provider: agent.spec.voice.tts_provider.clone(),
        transcription_provider: agent.spec.voice.transcription_provider.clone(),
        dtmf_detection: true,
        parameters: greeting_parameter(&agent),
    }))
}

/// The carrier speaks the greeting (TwiML `welcomeGreeting`), so the origin is told not to speak
/// it again when the relay's `setup` arrives.
fn greeting_parameter(agent: &Agent) -> Vec<(String, String)> {
    let mut parameters = vec![(relay::AGENT_ID_PARAM.to_owned(), agent.id.clone())];
    if agent.spec.greeting.is_some() {
        parameters.push((
            relay::GREETING_PARAM.to_owned(),
            relay::GREETING_BY_CARRIER.to_owned(),
        ));
    }
    parameters
}

/// `POST /voice/twilio/status`: a finished call (completed, busy, failed, no-answer, canceled)
/// ends its session, which releases the lease; other statuses are acknowledged.
pub async fn status(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<Response, Failure> {
    let (principal, limited) = futures::join!(
        gate::authenticate(x.env, req, route, &x.public_url, &x.body, x.request_id),
        gate::enforce_ip(x),
    );
    limited?;
    let principal = principal?;
    let webhook = CallWebhook::from_form(&x.body);
    let call_sid = valid_call_sid(&webhook)?;
    let Some(reason) = webhook
        .call_status
        .as_deref()
        .and_then(EndReason::from_carrier_status)
    else {
        return Ok(Response::empty()?.with_status(204));
    };
    let session = session_state(x, &call_sid).await?;
    if session.tenant_id != principal.tenant_id {
        return Err(refuse(404, "unknown_call", "no such call"));
    }
    let mut answer = session_request(
        x,
        &call_sid,
        Method::Post,
        "/end",
        Some(&EndRequest { reason }),
    )
    .await?;
    match answer.status_code() {
        // Ended now, or already ended by the relay or an alarm: the carrier is told it worked.
        200 | 409 => Ok(Response::empty()?.with_status(204)),
        status => {
            let text = answer.text().await.unwrap_or_default();
            console_error!(
                "request {}: ending {call_sid}: session answered {status}: {text}",
                x.request_id
            );
            Err(Failure::Internal(worker::Error::RustError(
                "ending the session failed".into(),
            )))
        }
    }
}

/// `GET /voice/relay/{call_id}`: the ConversationRelay WebSocket. The carrier signs the
/// handshake; API clients present a Bearer credential or the call's session token. The socket is
/// handed to the call's `CallSession`, which relays it to the origin.
pub async fn relay(
    x: &Exchange<'_>,
    req: Request,
    route: &PublicRoute,
) -> Result<Response, Failure> {
    let upgrade = req.headers().get("upgrade").ok().flatten();
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(Failure::Rejected(
            edge_io::Rejection::new(426, "upgrade_required", "this route is a WebSocket")
                .with_header("upgrade", "websocket"),
        ));
    }
    let (principal, limited) = futures::join!(
        gate::authenticate(x.env, &req, route, &x.public_url, &[], x.request_id),
        gate::enforce_ip(x),
    );
    limited?;
    let principal = principal?;
    let call_id = route.call_id().unwrap_or_default();
    let stub = x.env.durable_object(CALL_SESSION)?.get_by_name(call_id)?;
    let headers = Headers::new();
    headers.set("upgrade", "websocket")?;
    headers.set(TENANT_HEADER, &principal.tenant_id)?;
    let mut init = worker::RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let forwarded = Request::new_with_init("https://call-session/relay", &init)?;
    let mut answer = stub.fetch_with_request(forwarded).await?;
    if answer.status_code() == 101 {
        return Ok(answer);
    }
    Err(pass_session_refusal(&mut answer).await)
}

fn valid_call_sid(webhook: &CallWebhook) -> Result<String, Failure> {
    webhook
        .call_sid
        .clone()
        .filter(|sid| is_resource_id(sid))
        .ok_or_else(|| refuse(400, "invalid_request", "CallSid is missing or not an id"))
}

fn twiml_answer(xml: &str) -> Result<Response, Failure> {
    let headers = Headers::new();
    headers.set("content-type", "text/xml; charset=utf-8")?;
    Ok(Response::ok(xml)?.with_headers(headers))
}

/// `wss://<public host>/voice/relay/<call id>` from the URL this request came in on.
pub fn relay_url(public_url: &str, call_id: &str) -> String {
    let websocket = shared::public_route::as_called(public_url, None, true);
    let base_end = websocket.find("://").map_or(0, |at| at + 3);
    let host_end = websocket[base_end..]
        .find('/')
        .map_or(websocket.len(), |p| base_end + p);
    format!("{}/voice/relay/{call_id}", &websocket[..host_end])
}

/// The regions geo-router chose, or the configured origin when it could not answer (the call
/// still goes through, unrouted, rather than failing).
pub fn targets_or_default(
    x: &Exchange<'_>,
    decision: Result<shared::geo::wire::RouteDecision, ServiceError>,
) -> Vec<Target> {
    match decision {
        Ok(decision) => origin::targets_of(&decision),
        Err(error) => {
            console_warn!(
                "request {}: geo-router did not route, using ORIGIN_URL: {error:?}",
                x.request_id
            );
            vec![Target {
                region: "default".to_owned(),
                origin_url: x.config.origin_url.clone(),
            }]
        }
    }
}

pub fn signer<'a>(x: &'a Exchange<'_>, principal: &'a Principal) -> Signer<'a> {
    Signer {
        secret: &x.config.signing_secret,
        principal,
        country: x.client.country.as_deref(),
        request_id: x.request_id,
    }
}

/// The agent answering `number`; `None` when no agent has it.
async fn find_agent(
    x: &Exchange<'_>,
    signer: &Signer<'_>,
    targets: &[Target],
    number: &str,
    principal: &Principal,
) -> Result<Option<Agent>, String> {
    let path = shared::origin_path::phone_number_agent(number);
    let forward = Forward {
        method: Method::Get,
        path_and_query: &path,
        body: Body::Empty,
        content_type: None,
        extra: &[],
        may_retry: &|_| true,
        reporter: &principal.tenant_id,
    };
    let (mut response, _) = origin::send(x.env, signer, targets, &forward)
        .await
        .map_err(|e| e.to_string())?;
    match response.status_code() {
        200 => response
            .json::<Agent>()
            .await
            .map(Some)
            .map_err(|e| e.to_string()),
        404 => Ok(None),
        status => Err(format!("origin answered {status}")),
    }
}

/// Records the call at the origin; returns the region that took it. Safe to retry elsewhere:
/// the edge chose the id, so the origin refuses a duplicate with `call_exists`.
pub async fn create_at_origin(
    x: &Exchange<'_>,
    signer: &Signer<'_>,
    targets: &[Target],
    create: &CreateCall,
    principal: &Principal,
) -> Result<Target, String> {
    let body = serde_json::to_vec(create).map_err(|e| e.to_string())?;
    let forward = Forward {
        method: Method::Post,
        path_and_query: shared::origin_path::CALLS,
        body: Body::Bytes(&body),
        content_type: Some("application/json"),
        extra: &[],
        may_retry: &|_| true,
        reporter: &principal.tenant_id,
    };
    let (mut response, target) = origin::send(x.env, signer, targets, &forward)
        .await
        .map_err(|e| e.to_string())?;
    match response.status_code() {
        201 | 409 => Ok(target),
        status => Err(format!(
            "origin answered {status}: {}",
            response.text().await.unwrap_or_default()
        )),
    }
}

/// Creates the call's `CallSession`, pinned to `chosen` with the other regions after it.
pub async fn start_session(
    x: &Exchange<'_>,
    principal: &Principal,
    call_id: &str,
    agent_id: Option<String>,
    source: CallSource,
    targets: &[Target],
    chosen: &Target,
) -> Result<(), String> {
    let mut ordered = vec![chosen.clone()];
    ordered.extend(targets.iter().filter(|t| *t != chosen).cloned());
    let start = StartSession {
        call: StartCall {
            call_id: call_id.to_owned(),
            tenant_id: principal.tenant_id.clone(),
            agent_id,
            source,
            region: chosen.region.clone(),
        },
        principal: principal.clone(),
        targets: ordered,
        country: x.client.country.clone(),
        request_id: x.request_id.to_owned(),
    };
    let answer = session_request(x, call_id, Method::Post, "/start", Some(&start))
        .await
        .map_err(|e| format!("{e:?}"))?;
    match answer.status_code() {
        // 409: the carrier retried the webhook and the session already exists.
        201 | 409 => Ok(()),
        status => Err(format!("session answered {status}")),
    }
}

/// A request to the call's `CallSession`.
pub async fn session_request<T: serde::Serialize>(
    x: &Exchange<'_>,
    call_id: &str,
    method: Method,
    path: &str,
    body: Option<&T>,
) -> Result<Response, Failure> {
    let stub = x.env.durable_object(CALL_SESSION)?.get_by_name(call_id)?;
    let mut init = worker::RequestInit::new();
    init.with_method(method);
    if let Some(body) = body {
        let json = serde_json::to_string(body).map_err(|e| Failure::Internal(e.into()))?;
        let headers = Headers::new();
        headers.set("content-type", "application/json")?;
        init.with_headers(headers).with_body(Some(json.into()));
    }
    let request = Request::new_with_init(&format!("https://call-session{path}"), &init)?;
    Ok(stub.fetch_with_request(request).await?)
}

/// The call's state, or 404 when there is no such call.
pub async fn session_state(
    x: &Exchange<'_>,
    call_id: &str,
) -> Result<shared::call_session::CallSession, Failure> {
    let mut answer = session_request::<()>(x, call_id, Method::Get, "/state", None).await?;
    match answer.status_code() {
        200 => Ok(answer.json().await?),
        _ => Err(pass_session_refusal(&mut answer).await),
    }
}

/// A `CallSession` refusal (its JSON error) as the client's refusal.
pub async fn pass_session_refusal(answer: &mut Response) -> Failure {
    let status = answer.status_code();
    let text = answer.text().await.unwrap_or_default();
    match serde_json::from_str::<shared::error_body::ErrorBody>(&text) {
        Ok(body) if (400..500).contains(&status) => Failure::Rejected(edge_io::Rejection::new(
            status,
            body.error.code,
            body.error.message,
        )),
        _ => Failure::Internal(worker::Error::RustError(format!(
            "session answered {status}: {text}"
        ))),
    }
}
