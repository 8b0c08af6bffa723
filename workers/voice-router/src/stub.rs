//! The Worker's side of a call's `CallSession` object: typed requests through its stub
//! (`shared::call_session::wire`), answers read back as the session's state or as the
//! [`SessionRefusal`] its error code names.

use serde::Serialize;
use shared::call_session::wire::{
    BASE_URL, CARRIER_PATH, CarrierReport, END_PATH, EndRequest, RELAY_PATH, START_PATH,
    STATE_PATH, StartSession, TENANT_HEADER, TOUCH_PATH, Touch,
};
use shared::call_session::{CallSession as CallState, SessionRefusal};
use shared::error_body::{ErrorBody, ErrorCode};
use shared::principal::Principal;
use worker::{Env, Headers, Method, Request, RequestInit, Response};

use crate::CALL_SESSION;
use crate::refusal::Refusal;

/// `POST /start`: the session of a new call. A call that exists already is
/// [`SessionRefusal::CallExists`] (a carrier retrying its webhook).
pub async fn start(env: &Env, start: &StartSession) -> Result<CallState, Refusal> {
    let answer = send(
        env,
        &start.call.call_id,
        Method::Post,
        START_PATH,
        Some(start),
    )
    .await?;
    state_of(answer).await
}

/// `GET /state`.
pub async fn state(env: &Env, call_id: &str) -> Result<CallState, Refusal> {
    state_of(send::<()>(env, call_id, Method::Get, STATE_PATH, None).await?).await
}

/// The call's state when `principal`'s tenant owns it; another tenant's call does not exist
/// as far as that principal can tell.
pub fn owned(state: CallState, principal: &Principal) -> Result<CallState, Refusal> {
    if state.tenant_id == principal.tenant_id {
        Ok(state)
    } else {
        Err(SessionRefusal::UnknownCall.into())
    }
}

/// `POST /touch`: an API turn (or other activity) on the call.
pub async fn touch(env: &Env, call_id: &str, touch: Touch) -> Result<CallState, Refusal> {
    state_of(send(env, call_id, Method::Post, TOUCH_PATH, Some(&touch)).await?).await
}

/// `POST /end`: ends the call (lease, origin, sockets); refused when it already ended.
pub async fn end(env: &Env, call_id: &str, request: &EndRequest) -> Result<CallState, Refusal> {
    state_of(send(env, call_id, Method::Post, END_PATH, Some(request)).await?).await
}

/// `POST /carrier`: what the carrier reported about the call (status, AMD, its call id).
pub async fn carrier(
    env: &Env,
    call_id: &str,
    report: &CarrierReport,
) -> Result<CallState, Refusal> {
    state_of(send(env, call_id, Method::Post, CARRIER_PATH, Some(report)).await?).await
}

/// `GET /relay`: hands the caller's WebSocket upgrade to the session (101), for `tenant`.
pub async fn relay(env: &Env, call_id: &str, tenant: &str) -> Result<Response, Refusal> {
    let headers = Headers::new();
    headers.set("upgrade", "websocket")?;
    headers.set(TENANT_HEADER, tenant)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let request = Request::new_with_init(&format!("{BASE_URL}{RELAY_PATH}"), &init)?;
    let answer = stub(env, call_id)?.fetch_with_request(request).await?;
    if answer.status_code() == 101 {
        Ok(answer)
    } else {
        Err(refusal_of(answer).await)
    }
}

fn stub(env: &Env, call_id: &str) -> Result<worker::Stub, Refusal> {
    Ok(env.durable_object(CALL_SESSION)?.get_by_name(call_id)?)
}

async fn send<T: Serialize>(
    env: &Env,
    call_id: &str,
    method: Method,
    path: &str,
    body: Option<&T>,
) -> Result<Response, Refusal> {
    let mut init = RequestInit::new();
    init.with_method(method);
    if let Some(body) = body {
        let json = serde_json::to_string(body).map_err(|e| Refusal::Internal(e.into()))?;
        let headers = Headers::new();
        headers.set("content-type", "application/json")?;
        init.with_headers(headers).with_body(Some(json.into()));
    }
    let request = Request::new_with_init(&format!("{BASE_URL}{path}"), &init)?;
    Ok(stub(env, call_id)?.fetch_with_request(request).await?)
}

async fn state_of(mut answer: Response) -> Result<CallState, Refusal> {
    if (200..300).contains(&answer.status_code()) {
        Ok(answer.json().await?)
    } else {
        Err(refusal_of(answer).await)
    }
}

/// The session's refusal, by the code in its error envelope.
async fn refusal_of(mut answer: Response) -> Refusal {
    let status = answer.status_code();
    let text = answer.text().await.unwrap_or_default();
    let refusal = serde_json::from_str::<ErrorBody>(&text)
        .ok()
        .and_then(|body| ErrorCode::parse(&body.error.code))
        .and_then(SessionRefusal::from_code);
    match refusal {
        Some(refusal) => Refusal::Session(refusal),
        None => Refusal::Internal(worker::Error::RustError(format!(
            "the call's session answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ))),
    }
}
