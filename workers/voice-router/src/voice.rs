//! The carrier's routes: the incoming-call webhook (answered with TwiML), the status callback,
//! and the ConversationRelay WebSocket.

use shared::agent::Agent;
use shared::call::CallSource;
use shared::call_session::{EndReason, SessionRefusal};
use shared::geo::wire::RouteRequest;
use shared::identifier::is_resource_id;
use shared::public_route::PublicRoute;
use shared::relay;
use shared::twilio::CallWebhook;
use shared::twiml;
use worker::{Headers, Method, Request, Response, console_error};

use crate::call_start::{self, NewCall, StartError};
use crate::origin::{self, Body, Forward};
use crate::refusal::Refusal;
use crate::{Exchange, gate, services, stub};

/// Said when the tenant is at its concurrent-call limit.
const BUSY: &str =
    "All of our lines are busy right now. Please call again in a few minutes. Goodbye.";
/// Said when the number has no agent.
const NOT_IN_SERVICE: &str = "The number you have called is not in service. Goodbye.";
/// Said when the call cannot be connected for a technical reason.
const TROUBLE: &str =
    "We are sorry, we cannot take your call right now. Please try again later. Goodbye.";

/// `POST /voice/twilio/incoming`: a call arrives. Finds the agent for the called number, starts
/// the call (`call_start`), and answers TwiML that connects it to ConversationRelay. Anything
/// that stops the call after authentication is said to the caller in TwiML, not an HTTP error
/// the carrier reads out.
pub async fn incoming(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<Response, Refusal> {
    let route_request = RouteRequest {
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
    let webhook = webhook_of(x, req);
    let call_sid = valid_call_sid(&webhook)?;
    let to = webhook.to.clone().unwrap_or_default();
    let targets = x.targets(decision);

    let agent = match find_agent(x, &principal, &targets, &to).await {
        Ok(Some(agent)) => agent,
        Ok(None) => return twiml_answer(&twiml::say_and_hang_up(NOT_IN_SERVICE, None)),
        Err(cause) => {
            console_error!(
                "request {}: call {call_sid}: agent lookup: {cause}",
                x.request_id
            );
            return twiml_answer(&twiml::say_and_hang_up(TROUBLE, None));
        }
    };
    let language = agent.spec.voice.language.as_deref();
    let call = NewCall {
        call_id: call_sid.clone(),
        agent_id: agent.id.clone(),
        source: CallSource::Phone,
        from: webhook.from.clone(),
        to: Some(to),
    };
    match call_start::start_call(x, &principal, &call, &targets).await {
        Ok(_) => {}
        Err(StartError::Busy { .. }) => {
            return twiml_answer(&twiml::say_and_hang_up(BUSY, language));
        }
        Err(StartError::UnknownAgent | StartError::NotStarted) => {
            return twiml_answer(&twiml::say_and_hang_up(TROUBLE, language));
        }
    }
    let relay_url = relay_url(&x.public_url, &call_sid);
    twiml_answer(&twiml::connect_agent(
        &agent.spec,
        &relay_url,
        &greeting_parameter(&agent),
    ))
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
) -> Result<Response, Refusal> {
    let (principal, limited) = futures::join!(
        gate::authenticate(x.env, req, route, &x.public_url, &x.body, x.request_id),
        gate::enforce_ip(x),
    );
    limited?;
    let principal = principal?;
    let webhook = webhook_of(x, req);
    let call_sid = valid_call_sid(&webhook)?;
    let Some(reason) = webhook
        .call_status
        .as_deref()
        .and_then(EndReason::from_carrier_status)
    else {
        return Ok(Response::empty()?.with_status(204));
    };
    stub::owned(stub::state(x.env, &call_sid).await?, &principal)?;
    match stub::end(x.env, &call_sid, reason).await {
        // Ended now, or already by the relay or an alarm: the carrier is told it worked.
        Ok(_) | Err(Refusal::Session(SessionRefusal::CallEnded)) => {
            Ok(Response::empty()?.with_status(204))
        }
        Err(refusal) => Err(refusal),
    }
}

/// `GET /voice/relay/{call_id}`: the ConversationRelay WebSocket. The carrier signs the
/// handshake; API clients present a Bearer credential or the call's session token. The socket is
/// handed to the call's `CallSession`, which relays it to the origin.
pub async fn relay(
    x: &Exchange<'_>,
    req: Request,
    route: &PublicRoute,
) -> Result<Response, Refusal> {
    let upgrade = req.headers().get("upgrade").ok().flatten();
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(Refusal::UpgradeRequired);
    }
    let (principal, limited) = futures::join!(
        gate::authenticate(x.env, &req, route, &x.public_url, &[], x.request_id),
        gate::enforce_ip(x),
    );
    limited?;
    let principal = principal?;
    let call_id = route.call_id().unwrap_or_default();
    stub::relay(x.env, call_id, &principal.tenant_id).await
}

/// The webhook's fields, from a form or a JSON body (the `bodySHA256` scheme).
fn webhook_of(x: &Exchange<'_>, req: &Request) -> CallWebhook {
    let content_type = req.headers().get("content-type").ok().flatten();
    CallWebhook::from_body(content_type.as_deref(), &x.body)
}

fn valid_call_sid(webhook: &CallWebhook) -> Result<String, Refusal> {
    webhook
        .call_sid
        .clone()
        .filter(|sid| is_resource_id(sid))
        .ok_or_else(|| Refusal::InvalidRequest("CallSid is missing or not an id".into()))
}

fn twiml_answer(xml: &str) -> Result<Response, Refusal> {
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

/// Why the agent of a number could not be looked up (for the log).
#[derive(Debug)]
enum LookupError {
    Unavailable(origin::Unavailable),
    Answered(u16),
    Unreadable(worker::Error),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Unavailable(unavailable) => unavailable.fmt(f),
            LookupError::Answered(status) => write!(f, "the origin answered {status}"),
            LookupError::Unreadable(error) => write!(f, "the agent was not understood: {error}"),
        }
    }
}

/// The agent answering `number`; `None` when no agent has it.
async fn find_agent(
    x: &Exchange<'_>,
    principal: &shared::principal::Principal,
    targets: &[shared::geo::Target],
    number: &str,
) -> Result<Option<Agent>, LookupError> {
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
    let (mut response, _) = origin::send(x.env, &x.signer(principal), targets, &forward)
        .await
        .map_err(LookupError::Unavailable)?;
    match response.status_code() {
        200 => response
            .json::<Agent>()
            .await
            .map(Some)
            .map_err(LookupError::Unreadable),
        404 => Ok(None),
        status => Err(LookupError::Answered(status)),
    }
}
