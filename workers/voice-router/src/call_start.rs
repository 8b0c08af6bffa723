//! Starting a call, the one way both the carrier's webhook and the API do it: take the tenant's
//! concurrent-call lease, record the call at the origin of the chosen region (or the next one
//! that answers), create its `CallSession` pinned to the region that took it — and give the
//! lease back when any step fails. The two routes differ only in how they answer (TwiML, JSON).

use shared::call::{CallDirection, CallSource, CreateCall};
use shared::call_session::SessionRefusal;
use shared::call_session::StartCall;
use shared::call_session::wire::StartSession;
use shared::carrier::CarrierKind;
use shared::geo::{Target, targets};
use shared::principal::Principal;
use shared::public_route::means_origin_unavailable;
use shared::rate_limit::api::LeaseRequest;
use worker::{Method, console_error, console_warn};

use crate::Exchange;
use crate::origin::{self, Body, Forward};
use crate::refusal::Refusal;
use crate::{services, stub};

/// A call to start.
pub struct NewCall {
    /// Its id (the carrier's CallSid, or one the edge chose).
    pub call_id: String,
    /// The agent answering it.
    pub agent_id: String,
    /// Phone or API.
    pub source: CallSource,
    /// Caller's number, for phone calls.
    pub from: Option<String>,
    /// Called number, for phone calls.
    pub to: Option<String>,
    /// Who dialled whom: an outbound call starts queued.
    pub direction: CallDirection,
    /// The carrier of a phone call.
    pub carrier: Option<CarrierKind>,
    /// The carrier's call id, when known (an incoming call's `CallSid`).
    pub carrier_call_id: Option<String>,
    /// The API client's own data about an outbound call.
    pub metadata: Option<serde_json::Value>,
}

/// Why a call did not start.
#[derive(Debug)]
pub enum StartError {
    /// The tenant is at its concurrent-call limit.
    Busy {
        /// The limit.
        limit: u64,
        /// When a line may be free, in whole seconds.
        retry_after_s: u64,
    },
    /// The origin knows no such agent.
    UnknownAgent,
    /// No origin recorded the call, or its session was not created; the cause is logged.
    NotStarted,
    /// Every origin tried refused new work for now (a database outage): what the last one said.
    OriginRefused(OriginRefusal),
}

/// An origin's refusal of new work, passed on to the client as it gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRefusal {
    /// Its status (502–504, 520–524).
    pub status: u16,
    /// Its error code (`database_unavailable`), when its body had one.
    pub code: Option<String>,
    /// Its `Retry-After`, when it gave one.
    pub retry_after: Option<String>,
}

impl OriginRefusal {
    /// Reads the refusal out of an origin's answer.
    pub async fn read(response: &mut worker::Response) -> Self {
        // Whole seconds only: anything else is not passed on.
        let retry_after = response
            .headers()
            .get("retry-after")
            .ok()
            .flatten()
            .filter(|value| {
                (1..=6).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit())
            });
        let code = response
            .json::<shared::error_body::ErrorBody>()
            .await
            .ok()
            .map(|body| body.error.code)
            .filter(|code| shared::error_body::is_code(code));
        Self {
            status: response.status_code(),
            code,
            retry_after,
        }
    }
}

impl From<StartError> for Refusal {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Busy {
                limit,
                retry_after_s,
            } => Refusal::ConcurrentCalls {
                limit,
                retry_after_s,
            },
            StartError::UnknownAgent => Refusal::UnknownAgent,
            StartError::NotStarted => Refusal::CallNotStarted,
            StartError::OriginRefused(refusal) => Refusal::OriginRefused(refusal),
        }
    }
}

/// Starts `call` for `principal` in the first of `targets` that takes it; returns that target.
pub async fn start_call(
    x: &Exchange<'_>,
    principal: &Principal,
    call: &NewCall,
    targets: &[Target],
) -> Result<Target, StartError> {
    let call_id = &call.call_id;
    let lease = LeaseRequest::for_call(&principal.tenant_id, &principal.plan, call_id);
    match services::acquire_lease(x.env, &lease, x.request_id).await {
        Ok(granted) if granted.decision.allowed => {}
        Ok(refused) => {
            return Err(StartError::Busy {
                limit: refused.decision.limit,
                retry_after_s: refused.decision.retry_after_ms.div_ceil(1000),
            });
        }
        // Fail open like the limiter itself: a limiter outage must not hang up on callers.
        Err(error) => console_warn!("{}: call {call_id}: lease not taken: {error:?}", x.tag()),
    }
    let started = match create_at_origin(x, principal, call, targets).await {
        Ok(target) => start_session(x, principal, call, targets, &target)
            .await
            .map(|()| target),
        Err(error) => Err(error),
    };
    if let Err(error) = &started {
        if let Err(release) = services::release_lease(x.env, &lease, x.request_id).await {
            console_error!(
                "{}: call {call_id}: lease not released: {release:?}",
                x.tag()
            );
        }
        if !matches!(error, StartError::UnknownAgent) {
            console_error!("{}: call {call_id}: not started", x.tag());
        }
    }
    started
}

/// Records the call at the origin; returns the region that took it. Safe to retry elsewhere:
/// the edge chose the id, so the origin refuses a duplicate (409, which a carrier retrying its
/// webhook also gets).
async fn create_at_origin(
    x: &Exchange<'_>,
    principal: &Principal,
    call: &NewCall,
    targets: &[Target],
) -> Result<Target, StartError> {
    let create = CreateCall {
        id: Some(call.call_id.clone()),
        agent_id: Some(call.agent_id.clone()),
        source: call.source,
        carrier_call_sid: call
            .carrier_call_id
            .clone()
            .filter(|_| call.source == CallSource::Phone),
        from: call.from.clone(),
        to: call.to.clone(),
        direction: call.direction,
        carrier: call.carrier,
        metadata: call.metadata.clone(),
    };
    let body = serde_json::to_vec(&create).map_err(|error| {
        console_error!("{}: {error}", x.tag());
        StartError::NotStarted
    })?;
    let forward = Forward {
        method: Method::Post,
        path_and_query: shared::origin_path::CALLS,
        body: Body::Bytes(&body),
        content_type: Some("application/json"),
        extra: &[],
        may_retry: &|_| true,
        reporter: &principal.tenant_id,
    };
    let (mut response, target) = origin::send(x.env, &x.signer(principal), targets, &forward)
        .await
        .map_err(|unavailable| {
            console_error!("{}: {unavailable}", x.tag());
            StartError::NotStarted
        })?;
    match response.status_code() {
        201 | 409 => Ok(target),
        404 => Err(StartError::UnknownAgent),
        status if means_origin_unavailable(status) => {
            let refusal = OriginRefusal::read(&mut response).await;
            console_warn!(
                "{}: the origin in {} refused the call: {refusal:?}",
                x.tag(),
                target.region
            );
            Err(StartError::OriginRefused(refusal))
        }
        status => {
            let text = response.text().await.unwrap_or_default();
            console_error!(
                "{}: the origin in {} answered {status} to the call: {}",
                x.tag(),
                target.region,
                text.chars().take(200).collect::<String>()
            );
            Err(StartError::NotStarted)
        }
    }
}

/// Creates the call's `CallSession`, pinned to `chosen` with the other regions after it.
async fn start_session(
    x: &Exchange<'_>,
    principal: &Principal,
    call: &NewCall,
    targets: &[Target],
    chosen: &Target,
) -> Result<(), StartError> {
    let start = StartSession {
        call: StartCall {
            call_id: call.call_id.clone(),
            tenant_id: principal.tenant_id.clone(),
            agent_id: Some(call.agent_id.clone()),
            source: call.source,
            region: chosen.region.clone(),
            direction: call.direction,
            carrier: call.carrier,
            carrier_call_id: call.carrier_call_id.clone(),
        },
        principal: principal.clone(),
        targets: targets::with_first(targets, chosen),
        country: x.client.country.clone(),
        request_id: x.request_id.to_owned(),
        trace_id: Some(x.trace.trace_id_hex()),
    };
    match stub::start(x.env, &start).await {
        // A carrier retrying its webhook finds the session there already.
        Ok(_) | Err(Refusal::Session(SessionRefusal::CallExists)) => Ok(()),
        Err(refusal) => {
            console_error!(
                "{}: call {}: session not created: {refusal:?}",
                x.tag(),
                call.call_id
            );
            Err(StartError::NotStarted)
        }
    }
}
