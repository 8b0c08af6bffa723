//! The carriers' routes: the incoming-call webhook (answered with the carrier's markup), the
//! status callback, and the ConversationRelay WebSocket, each written once against
//! `shared::carrier::Carrier` (`{carrier}` in the path picks the implementation); and Twilio's
//! `<Connect action>` callback once a relay session ended (a transfer is dialled there) with the
//! whisper said to the person taking a transfer.

use shared::agent::Agent;
use shared::auth::{MintSessionTokenRequest, SESSION_TOKEN_PARAM};
use shared::call::{CallDirection, CallSource};
use shared::call_session::SessionRefusal;
use shared::call_session::wire::{CarrierReport, EndRequest};
use shared::carrier::{
    ANSWER_CONTENT_TYPE, CALL_ID_PARAM, CallProgress, Carrier, CarrierKind, RelayAuth,
};
use shared::handoff::{AfterSession, after_session};
use shared::identifier::is_resource_id;
use shared::principal::Principal;
use shared::public_route::{ACTION_PATH, PublicRoute, on_same_host, whisper_text, whisper_url};
use shared::relay;
use shared::twilio::CallWebhook;
use shared::twiml;
use worker::{Headers, Method, Request, Response, console_error, console_log};

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
/// Lifetime of the session token in a relay URL handed to a carrier that does not sign its
/// handshake: long enough for an outbound call to ring out and be answered.
const RELAY_TOKEN_TTL_S: u64 = 600;

/// `POST /voice/{carrier}/incoming`: a call arrives. Finds the agent for the called number,
/// starts the call (`call_start`), and answers the carrier's markup connecting it to
/// ConversationRelay. Anything that stops the call after authentication is said to the caller,
/// not an HTTP error the carrier reads out.
pub async fn incoming(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
    carrier: &dyn Carrier,
) -> Result<Response, Refusal> {
    let (principal, targets) = gate::admit_and_route(x, req, route).await?;
    let principal = signed_by(carrier, principal)?;
    let incoming = carrier
        .incoming(content_type(req).as_deref(), &x.body)
        .map_err(|error| Refusal::InvalidRequest(error.to_string()))?;
    let call_id = carrier
        .call_id(&incoming.carrier_call_id)
        .ok_or_else(|| Refusal::InvalidRequest("CallSid is missing or not an id".into()))?;
    let to = incoming.to.clone().unwrap_or_default();

    let agent = match find_agent(x, &principal, &targets, &to).await {
        Ok(Some(agent)) => agent,
        Ok(None) => return answer(&carrier.say_and_hang_up(NOT_IN_SERVICE, None)),
        Err(cause) => {
            console_error!("{}: call {call_id}: agent lookup: {cause}", x.tag());
            return answer(&carrier.say_and_hang_up(TROUBLE, None));
        }
    };
    let language = agent.spec.voice.language.as_deref();
    let call = NewCall {
        call_id: call_id.clone(),
        agent_id: agent.id.clone(),
        source: CallSource::Phone,
        from: incoming.from.clone(),
        to: Some(to),
        direction: CallDirection::Inbound,
        carrier: Some(carrier.kind()),
        carrier_call_id: Some(incoming.carrier_call_id.clone()),
        metadata: None,
    };
    match call_start::start_call(x, &principal, &call, &targets).await {
        Ok(_) => {}
        Err(StartError::Busy { .. }) => {
            return answer(&carrier.say_and_hang_up(BUSY, language));
        }
        Err(StartError::UnknownAgent | StartError::NotStarted | StartError::OriginRefused(_)) => {
            return answer(&carrier.say_and_hang_up(TROUBLE, language));
        }
    }
    match carrier_relay_url(x, carrier, &principal, &call_id).await {
        Ok(relay_url) => {
            let action = action_url(x, &call_id);
            answer(&carrier.connect_agent(
                &agent.spec,
                &relay_url,
                Some(&action),
                &greeting_parameter(&agent),
            ))
        }
        Err(refusal) => {
            console_error!("{}: call {call_id}: no relay URL: {refusal:?}", x.tag());
            if let Err(ending) = stub::end(
                x.env,
                &call_id,
                &EndRequest::new(shared::call_session::EndReason::Failed),
            )
            .await
            {
                console_error!("{}: call {call_id}: not ended: {ending:?}", x.tag());
            }
            answer(&carrier.say_and_hang_up(TROUBLE, language))
        }
    }
}

/// Where the carrier posts when `call_id`'s relay session ends (a transfer is dialled there);
/// the URL names the call, as an outbound call's status callback does, since an outbound call's
/// `CallSid` is not its id.
pub fn action_url(x: &Exchange<'_>, call_id: &str) -> String {
    format!(
        "{}?{CALL_ID_PARAM}={call_id}",
        on_same_host(&x.public_url, ACTION_PATH)
    )
}

/// `POST /voice/twilio/action`: the carrier's `<Connect action>` callback once the relay
/// session ended. Its `HandoffData` (the origin's `end`) decides: a transfer of a call this
/// tenant owns is answered `<Dial>` to the target (with the configured caller id and, when asked,
/// a whisper of the summary to the person answering); anything else is `<Hangup/>`. The call's
/// session already recorded the end (`transferred`, `agent_ended`, …) when the `end` passed.
pub async fn action(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<Response, Refusal> {
    let principal = twilio_signed(x, req, route).await?;
    let webhook = CallWebhook::from_body(content_type(req).as_deref(), &x.body);
    let call_id = callback_call_id(x, twilio(), webhook.call_sid.as_deref().unwrap_or_default())?;
    // Only a call this tenant's edge handled, on the carrier's call it is bound to, is
    // transferred anywhere (the URL names the call; the `CallSid` must be that call's).
    let owned = match stub::state(x.env, &call_id).await {
        Ok(state) => {
            state.carrier_call_id.is_some()
                && state.carrier_call_id == webhook.call_sid
                && stub::owned(state, &principal).is_ok()
        }
        Err(Refusal::Session(SessionRefusal::UnknownCall)) => false,
        Err(refusal) => return Err(refusal),
    };
    let after = if owned {
        after_session(webhook.handoff_data.as_deref())
    } else {
        AfterSession::HangUp
    };
    let session = webhook.session_status.as_deref().unwrap_or("unknown");
    match &after {
        AfterSession::Dial(plan) => console_log!(
            "{}: call {call_id}: relay session {session}; transferring to {}",
            x.tag(),
            plan.to.as_str()
        ),
        AfterSession::HangUp => console_log!(
            "{}: call {call_id}: relay session {session}; hanging up",
            x.tag()
        ),
    }
    match after {
        AfterSession::Dial(plan) => {
            let whisper = plan
                .whisper
                .as_deref()
                .map(|text| whisper_url(&x.public_url, text));
            answer(&twiml::dial(&plan, whisper.as_deref()))
        }
        AfterSession::HangUp => answer(&twiml::hang_up()),
    }
}

/// `POST /voice/twilio/whisper?text=…`: TwiML for the person answering a transfer — the
/// summary, said before the caller is connected. The carrier signs the URL, text included.
pub async fn whisper(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<Response, Refusal> {
    twilio_signed(x, req, route).await?;
    let text = whisper_text(&x.public_url)
        .ok_or_else(|| Refusal::InvalidRequest("the whisper has no text".into()))?;
    let text: String = text
        .chars()
        .take(shared::handoff::MAX_SUMMARY_CHARS)
        .collect();
    answer(&twiml::say(&text))
}

/// The carrier speaks the greeting (`welcomeGreeting`), so the origin is told not to speak
/// it again when the relay's `setup` arrives.
pub fn greeting_parameter(agent: &Agent) -> Vec<(String, String)> {
    let mut parameters = vec![(relay::AGENT_ID_PARAM.to_owned(), agent.id.clone())];
    if agent.spec.greeting.is_some() {
        parameters.push((
            relay::GREETING_PARAM.to_owned(),
            relay::GREETING_BY_CARRIER.to_owned(),
        ));
    }
    parameters
}

/// The relay URL handed to `carrier` for `call_id`: as it is for a carrier that signs its
/// handshake, with a call-bound session token minted for `principal` for one that does not.
pub async fn carrier_relay_url(
    x: &Exchange<'_>,
    carrier: &dyn Carrier,
    principal: &Principal,
    call_id: &str,
) -> Result<String, Refusal> {
    let url = relay_url(&x.public_url, call_id);
    match carrier.relay_auth() {
        RelayAuth::SignedHandshake => Ok(url),
        RelayAuth::SessionToken => {
            let token = services::mint_session_token(
                x.env,
                &MintSessionTokenRequest {
                    call_id: call_id.to_owned(),
                    principal: principal.clone(),
                    scopes: None,
                    ttl_s: Some(RELAY_TOKEN_TTL_S),
                },
                x.request_id,
            )
            .await?;
            Ok(format!("{url}?{SESSION_TOKEN_PARAM}={}", token.token))
        }
    }
}

/// `POST /voice/{carrier}/status`: a status callback (or an answering-machine detection result)
/// goes to the call's session, which follows the call's progress, ends it (and gives its lease
/// back) on a final status, and tells the origin what detection found. The call is the one the
/// callback URL names (`?call_id=`, an outbound call's) or the one of the carrier's call id. A
/// callback that changes nothing — progress about a call the edge does not know, or about one
/// that already ended — is acknowledged.
pub async fn status(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
    carrier: &dyn Carrier,
) -> Result<Response, Refusal> {
    let (principal, limited) = futures::join!(
        gate::authenticate(x, req, route, &x.body),
        gate::enforce_ip(x),
    );
    limited?;
    let principal = signed_by(carrier, principal?)?;
    let report = carrier
        .status(content_type(req).as_deref(), &x.body)
        .map_err(|error| Refusal::InvalidRequest(error.to_string()))?;
    let call_id = callback_call_id(x, carrier, &report.carrier_call_id)?;
    let is_final = matches!(report.progress, Some(CallProgress::Ended(_)));
    match stub::state(x.env, &call_id).await {
        Ok(state) => stub::owned(state, &principal)?,
        Err(Refusal::Session(SessionRefusal::UnknownCall))
            if !is_final && report.answered_by.is_none() =>
        {
            return Ok(Response::empty()?.with_status(204));
        }
        Err(refusal) => return Err(refusal),
    };
    let facts = CarrierReport {
        carrier_call_id: Some(report.carrier_call_id),
        carrier_status: report.carrier_status,
        progress: report.progress,
        answered_by: report.answered_by,
    };
    match stub::carrier(x.env, &call_id, &facts).await {
        // Told now, or the call already ended (by the relay, an alarm, or an earlier callback):
        // the carrier is told it worked.
        Ok(_) | Err(Refusal::Session(SessionRefusal::CallEnded)) => {
            Ok(Response::empty()?.with_status(204))
        }
        Err(refusal) => Err(refusal),
    }
}

/// The call a carrier's callback is about: the one its URL names (`?call_id=`, as the edge
/// renders its callback URLs), else the one of the carrier's call id.
fn callback_call_id(
    x: &Exchange<'_>,
    carrier: &dyn Carrier,
    carrier_call_id: &str,
) -> Result<String, Refusal> {
    let named = shared::public_url::parse(&x.public_url)
        .ok()
        .and_then(|url| url.query_param(CALL_ID_PARAM).map(|id| id.into_owned()));
    match named {
        Some(id) if is_resource_id(&id) => Ok(id),
        Some(_) => Err(Refusal::InvalidRequest(format!(
            "{CALL_ID_PARAM} is not an id"
        ))),
        None => carrier
            .call_id(carrier_call_id)
            .ok_or_else(|| Refusal::InvalidRequest("CallSid is missing or not an id".into())),
    }
}

/// Twilio, whose `<Connect action>` and whisper callbacks the edge serves.
fn twilio() -> &'static dyn Carrier {
    CarrierKind::Twilio.carrier()
}

/// The principal of a request Twilio signed, within the per-IP limit.
async fn twilio_signed(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<Principal, Refusal> {
    let (principal, limited) = futures::join!(
        gate::authenticate(x, req, route, &x.body),
        gate::enforce_ip(x),
    );
    limited?;
    signed_by(twilio(), principal?)
}

/// The principal, when the route's carrier signed the request: a request another carrier signed
/// is refused (each carrier's accounts are configured apart).
fn signed_by(carrier: &dyn Carrier, principal: Principal) -> Result<Principal, Refusal> {
    if principal.method == carrier.signature().method {
        Ok(principal)
    } else {
        Err(Refusal::WrongCarrier(carrier.kind()))
    }
}

fn content_type(req: &Request) -> Option<String> {
    req.headers().get("content-type").ok().flatten()
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
    let (principal, limited) =
        futures::join!(gate::authenticate(x, &req, route, &[]), gate::enforce_ip(x),);
    limited?;
    let principal = principal?;
    let call_id = route.call_id().unwrap_or_default();
    stub::relay(x.env, call_id, &principal.tenant_id).await
}

/// The carrier's markup as the answer.
fn answer(xml: &str) -> Result<Response, Refusal> {
    let headers = Headers::new();
    headers.set("content-type", ANSWER_CONTENT_TYPE)?;
    Ok(Response::ok(xml)?.with_headers(headers))
}

/// `wss://<public host>/voice/relay/<call id>` from the URL this request came in on.
pub fn relay_url(public_url: &str, call_id: &str) -> String {
    let websocket = shared::public_route::as_called(public_url, None, true);
    format!("{}/voice/relay/{call_id}", base_of(&websocket))
}

/// `https://<public host>/voice/<carrier>/status?call_id=<call id>`: where an outbound call's
/// carrier posts its status callbacks and detection result.
pub fn status_url(public_url: &str, carrier: &dyn Carrier, call_id: &str) -> String {
    format!(
        "{}/voice/{}/status?{CALL_ID_PARAM}={call_id}",
        base_of(public_url),
        carrier.kind().as_str()
    )
}

/// `scheme://host[:port]` of an absolute URL.
fn base_of(url: &str) -> &str {
    let base_end = url.find("://").map_or(0, |at| at + 3);
    let host_end = url[base_end..]
        .find('/')
        .map_or(url.len(), |p| base_end + p);
    &url[..host_end]
}

/// Why an agent could not be looked up (for the log).
#[derive(Debug)]
pub enum LookupError {
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
    principal: &Principal,
    targets: &[shared::geo::Target],
    number: &str,
) -> Result<Option<Agent>, LookupError> {
    let path = shared::origin_path::phone_number_agent(number);
    lookup_agent(x, principal, targets, &path).await
}

/// The agent the origin answers at `path` (one agent, or a number's); `None` for its 404.
pub async fn lookup_agent(
    x: &Exchange<'_>,
    principal: &Principal,
    targets: &[shared::geo::Target],
    path: &str,
) -> Result<Option<Agent>, LookupError> {
    let forward = Forward {
        method: Method::Get,
        path_and_query: path,
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
