//! Time as the Workers runtime tells it: the wall clock, Durable Object alarm times and
//! deadlines. `shared` takes the time as an argument; these are where a Worker reads it.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};
use worker::{Date, Delay};

/// Milliseconds since the Unix epoch, as the Workers runtime tells it. Note: inside a request the
/// runtime advances this clock only across I/O, which is exactly what a probe measures.
pub fn now_ms() -> u64 {
    Date::now().as_millis()
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
