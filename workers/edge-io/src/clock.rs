//! Time as the Workers runtime tells it: the wall clock, Durable Object alarm times and
//! deadlines. `shared` takes the time as an argument; these are where a Worker reads it.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};
use worker::Delay;

/// Milliseconds since the Unix epoch, as the Workers runtime tells it. Note: inside a request the
/// runtime advances this clock only across I/O, which is exactly what a probe measures.
///
/// `Date.now()`, not workers-rs's `Date::now()`, which builds a JS `Date` object per call: that
/// was 7% of the `CallSession`'s CPU per relayed message (issue 15's profile).
pub fn now_ms() -> u64 {
    worker::js_sys::Date::now() as u64
}

/// A Durable Object alarm at `at_ms` since the epoch. workers-rs reads a bare `i64` as an offset
/// from now, not a point in time, so every alarm goes through here.
pub fn alarm_at(at_ms: u64) -> worker::ScheduledTime {
    worker::ScheduledTime::new(worker::js_sys::Date::new(&worker::js_sys::Number::from(
        at_ms as f64,
    )))
}

/// Runs `future` with a deadline; `None` when the deadline came first.
pub async fn within<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    match select(pin!(future), pin!(Delay::from(timeout))).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// A deadline the runtime keeps itself: set as a subrequest's `signal`, it fails the fetch and
/// the reading of its body with a `TimeoutError` once `timeout` has passed. On a hot path this
/// is cheaper than [`within`]: no Rust timer, closure or `clearTimeout` per call (issue 15's
/// profile).
pub fn deadline_signal(timeout: Duration) -> worker::web_sys::AbortSignal {
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    worker::web_sys::AbortSignal::timeout_with_u32(timeout_ms)
}

/// Whether `error`, from a fetch or a body read with a [`deadline_signal`], is its deadline.
pub fn is_timeout(error: &wasm_bindgen::JsValue) -> bool {
    worker::js_sys::Reflect::get(error, &wasm_bindgen::JsValue::from_str("name"))
        .ok()
        .and_then(|name| name.as_string())
        .is_some_and(|name| name == "TimeoutError")
}
