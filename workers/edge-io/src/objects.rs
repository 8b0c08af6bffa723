//! One round trip to a Durable Object instance by name, with a deadline.
//!
//! It goes through the runtime's own `Request`, stub and `Response.text()` rather than
//! workers-rs's wrappers, which build a `Headers` object and read the answer chunk by chunk: a
//! rate-limit check pays this on every request that is not a remembered refusal.

use std::time::Duration;

use wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, web_sys};

use crate::clock;

/// What the instance answered: its status and body.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body as text.
    pub text: String,
}

/// POSTs `body` to `url` on the instance named `name` of the namespace bound as `binding`.
/// The deadline covers the answer and its body; a miss is "no answer within N ms". Every
/// failure is one line, without a stack, ready for the log.
pub async fn post(
    env: &Env,
    binding: &str,
    name: &str,
    url: &str,
    body: &str,
    timeout: Duration,
) -> Result<Answer, String> {
    let namespace = env.durable_object(binding).map_err(|e| e.to_string())?;
    let namespace: &worker::worker_sys::DurableObjectNamespace = namespace.as_ref().unchecked_ref();
    let stub = namespace.get_by_name(name).map_err(js_error)?;
    let late = |e: JsValue| {
        if clock::is_timeout(&e) {
            format!("no answer within {} ms", timeout.as_millis())
        } else {
            js_error(e)
        }
    };
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    init.set_signal(Some(&clock::deadline_signal(timeout)));
    let outgoing = web_sys::Request::new_with_str_and_init(url, &init).map_err(js_error)?;
    let answer = stub.fetch_with_request(&outgoing).map_err(js_error)?;
    let response: web_sys::Response = JsFuture::from(answer).await.map_err(late)?.unchecked_into();
    let text = JsFuture::from(response.text().map_err(js_error)?)
        .await
        .map_err(late)?
        .as_string()
        .unwrap_or_default();
    Ok(Answer {
        status: response.status(),
        text,
    })
}

/// An exception's message, one line, without its stack.
fn js_error(error: JsValue) -> String {
    match error.dyn_ref::<worker::js_sys::Error>() {
        Some(error) => String::from(error.message()),
        None => error.as_string().unwrap_or_else(|| format!("{error:?}")),
    }
}
