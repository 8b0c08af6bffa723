//! `POST /api/v1/calls/outbound`: the platform dials out. The body
//! `{agent_id, to, from?, machine_detection?, metadata?}` is checked, the caller id must be one
//! of the tenant's numbers (the origin knows them: its agents' phone numbers), the carrier
//! account placing calls from it is chosen (`TWILIO_ACCOUNTS`/`TELNYX_ACCOUNTS`), its calls per
//! second are paced by the rate-limiter (`carrier-cps`), and the call is started the one way
//! every call is (`call_start`: the tenant's concurrent-call lease, the call at the origin, its
//! `CallSession`, queued). Then the carrier's REST API places it, with the agent's markup
//! inline and the status route as its callback. Answers 202 `{call_id, status: "queued"}`; a
//! carrier that does not place the call ends it (the lease goes back) and the client is told
//! why.

use std::time::Duration;

use edge_io::clock::within;
use serde::{Deserialize, Serialize};
use shared::agent::{Agent, is_e164};
use shared::call::{CallDirection, CallSource, check_metadata};
use shared::call_session::wire::{CarrierReport, EndRequest};
use shared::call_session::{CallStatus, EndReason};
use shared::carrier::account::OutboundAccount;
use shared::carrier::{CarrierRequest, MachineDetection, PlaceCall, Placed, PlacementError};
use shared::geo::Target;
use shared::identifier::is_resource_id;
use shared::principal::Principal;
use shared::public_route::PublicRoute;
use shared::rate_limit::api::Check;
use shared::rate_limit::policy::CARRIER_CPS;
use worker::{Headers, Method, Request, RequestInit, Response, console_error, console_log};

use crate::call_start::{self, NewCall};
use crate::refusal::Refusal;
use crate::voice::{self, LookupError};
use crate::{Exchange, gate, stub};

/// How long a carrier's REST API may take to accept a call.
const CARRIER_DEADLINE: Duration = Duration::from_secs(10);

/// The body of `POST /api/v1/calls/outbound`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Outbound {
    agent_id: String,
    to: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    machine_detection: MachineDetection,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// The answer: the call exists and the carrier has it.
#[derive(Debug, Serialize)]
struct Queued {
    call_id: String,
    status: CallStatus,
}

/// The route.
pub async fn place(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<Response, Refusal> {
    let (principal, targets) = gate::admit_and_route(x, req, route).await?;
    gate::enforce_principal(x, &principal).await?;
    let body = read(&x.body)?;
    let agent = agent_at(
        x,
        &principal,
        &targets,
        &shared::origin_path::agent(&body.agent_id),
    )
    .await?
    .ok_or(Refusal::UnknownAgent)?;
    let from = caller_id(x, &principal, &targets, &agent, body.from.as_deref()).await?;
    let account = x
        .config
        .outbound
        .for_call(&principal.tenant_id, &from)
        .ok_or_else(|| Refusal::OutboundNotConfigured(from.clone()))?;
    gate::enforce(x, vec![pacing_check(account, &principal)], false).await?;

    let call = NewCall {
        call_id: format!("call_{}", crate::uuid()),
        agent_id: agent.id.clone(),
        source: CallSource::Phone,
        from: Some(from.clone()),
        to: Some(body.to.clone()),
        direction: CallDirection::Outbound,
        carrier: Some(account.carrier),
        carrier_call_id: None,
        metadata: body.metadata.clone(),
    };
    call_start::start_call(x, &principal, &call, &targets).await?;
    // The call exists and holds a line from here: a carrier that does not place it ends it.
    let placed = dial(x, &principal, account, &agent, &call, &body, &from).await;
    let placed = match placed {
        Ok(placed) => placed,
        Err(refusal) => {
            if let Err(ending) =
                stub::end(x.env, &call.call_id, &EndRequest::new(EndReason::Failed)).await
            {
                console_error!(
                    "{}: call {}: not ended after the carrier refused it: {ending:?}",
                    x.tag(),
                    call.call_id
                );
            }
            return Err(refusal);
        }
    };
    console_log!(
        "{}: call {} placed through {} {}",
        x.tag(),
        call.call_id,
        account.carrier.as_str(),
        account.account_id
    );
    if let Some(carrier_call_id) = placed.carrier_call_id {
        let report = CarrierReport {
            carrier_call_id: Some(carrier_call_id),
            carrier_status: None,
            progress: None,
            answered_by: None,
        };
        if let Err(refusal) = stub::carrier(x.env, &call.call_id, &report).await {
            // Its first status callback binds it instead.
            console_error!(
                "{}: call {}: carrier call id not recorded: {refusal:?}",
                x.tag(),
                call.call_id
            );
        }
    }
    let queued = Queued {
        call_id: call.call_id,
        status: CallStatus::Queued,
    };
    Ok(Response::from_json(&queued)?.with_status(202))
}

/// The body, checked.
fn read(body: &[u8]) -> Result<Outbound, Refusal> {
    let body: Outbound = serde_json::from_slice(body).map_err(|e| {
        Refusal::InvalidRequest(format!(
            "the body must be {{\"agent_id\", \"to\", \"from\"?, \"machine_detection\"?, \"metadata\"?}}: {e}"
        ))
    })?;
    if !is_resource_id(&body.agent_id) {
        return Err(Refusal::InvalidRequest("agent_id is not an id".into()));
    }
    if !is_e164(&body.to) {
        return Err(Refusal::InvalidRequest(format!(
            "to {:?} is not E.164 (+ and 7 to 15 digits)",
            body.to
        )));
    }
    if let Some(from) = body.from.as_deref().filter(|from| !is_e164(from)) {
        return Err(Refusal::InvalidRequest(format!(
            "from {from:?} is not E.164 (+ and 7 to 15 digits)"
        )));
    }
    if let Some(metadata) = &body.metadata {
        check_metadata(metadata).map_err(|error| Refusal::InvalidRequest(error.to_string()))?;
    }
    Ok(body)
}

/// The agent at `path`, or why not.
async fn agent_at(
    x: &Exchange<'_>,
    principal: &Principal,
    targets: &[Target],
    path: &str,
) -> Result<Option<Agent>, Refusal> {
    voice::lookup_agent(x, principal, targets, path)
        .await
        .map_err(|error| {
            console_error!("{}: agent lookup: {error}", x.tag());
            match error {
                LookupError::Unavailable(_) | LookupError::Answered(_) => {
                    Refusal::OriginUnavailable
                }
                LookupError::Unreadable(error) => Refusal::Internal(error),
            }
        })
}

/// The caller id: `from` when given, else the agent's first number; one of the tenant's
/// numbers (the agent's own, or another agent's of the tenant, as the origin knows them).
async fn caller_id(
    x: &Exchange<'_>,
    principal: &Principal,
    targets: &[Target],
    agent: &Agent,
    from: Option<&str>,
) -> Result<String, Refusal> {
    let numbers = &agent.spec.phone_numbers;
    let from = match from {
        Some(from) => from.to_owned(),
        None => numbers.first().cloned().ok_or_else(|| {
            Refusal::InvalidRequest(
                "from is required: the agent has no phone number to call from".into(),
            )
        })?,
    };
    if numbers.contains(&from) {
        return Ok(from);
    }
    let path = shared::origin_path::phone_number_agent(&from);
    match agent_at(x, principal, targets, &path).await? {
        Some(_) => Ok(from),
        None => Err(Refusal::CallerIdNotAllowed(from)),
    }
}

/// The rate-limit check pacing `account`'s calls, under the tenant's and plan's overrides.
fn pacing_check(account: &OutboundAccount, principal: &Principal) -> Check {
    Check {
        policy: CARRIER_CPS.to_owned(),
        key: account.pacing_key(),
        cost: None,
        tenant: Some(principal.tenant_id.clone()),
        plan: Some(principal.plan.clone()),
    }
}

/// Asks the carrier to place `call`.
async fn dial(
    x: &Exchange<'_>,
    principal: &Principal,
    account: &OutboundAccount,
    agent: &Agent,
    call: &NewCall,
    body: &Outbound,
    from: &str,
) -> Result<Placed, Refusal> {
    let carrier = account.carrier.carrier();
    let relay_url = voice::carrier_relay_url(x, carrier, principal, &call.call_id).await?;
    let action = voice::action_url(x, &call.call_id);
    let answer = carrier.connect_agent(
        &agent.spec,
        &relay_url,
        Some(&action),
        &voice::greeting_parameter(agent),
    );
    let status_url = voice::status_url(&x.public_url, carrier, &call.call_id);
    let request = carrier.place_call(
        account,
        &PlaceCall {
            to: &body.to,
            from,
            answer: &answer,
            status_url: &status_url,
            machine_detection: body.machine_detection,
        },
    );
    let (status, answer) = send(&request).await.map_err(|cause| {
        console_error!("{}: {} {}: {cause}", x.tag(), request.method, request.url);
        Refusal::Carrier(PlacementError::Unavailable { status: 0 })
    })?;
    carrier.placement(status, &answer).map_err(Refusal::Carrier)
}

/// Sends a carrier request within [`CARRIER_DEADLINE`]; its status and body.
async fn send(request: &CarrierRequest) -> Result<(u16, Vec<u8>), worker::Error> {
    let headers = Headers::new();
    for (name, value) in &request.headers {
        headers.set(name, value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::from(request.method.to_owned()))
        .with_headers(headers)
        .with_body(Some(request.body.clone().into()));
    let outgoing = Request::new_with_init(&request.url, &init)?;
    let mut response = within(CARRIER_DEADLINE, worker::Fetch::Request(outgoing).send())
        .await
        .ok_or_else(|| {
            worker::Error::RustError(format!(
                "no answer within {} ms",
                CARRIER_DEADLINE.as_millis()
            ))
        })??;
    let status = response.status_code();
    Ok((status, response.bytes().await?))
}
