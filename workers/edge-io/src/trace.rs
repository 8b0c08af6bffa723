//! The trace a request belongs to (`shared::trace_context`), with ids from the runtime's CSPRNG.

use shared::trace_context::TraceParent;
use wasm_bindgen::prelude::wasm_bindgen;
use worker::Request;

#[wasm_bindgen]
extern "C" {
    /// `crypto.getRandomValues(array)`: fills the array from the runtime's CSPRNG.
    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues)]
    fn get_random_values(buffer: &mut [u8]);
}

/// 24 random bytes: a trace id and a span id.
fn random_ids() -> [u8; 24] {
    let mut bytes = [0u8; 24];
    get_random_values(&mut bytes);
    bytes
}

/// What this hop sends on: the incoming `traceparent`'s trace with a span id of its own, or a
/// new trace when the request carries none (or an invalid one).
pub fn continue_or_start(req: &Request) -> TraceParent {
    let incoming = req
        .headers()
        .get(shared::headers::TRACEPARENT)
        .ok()
        .flatten();
    TraceParent::continue_or_start(incoming.as_deref(), random_ids())
}

/// A new request within the trace named by `trace_id` (a call's stored trace); a new trace when
/// it is absent.
pub fn within(trace_id: Option<&str>) -> TraceParent {
    TraceParent::within(trace_id, random_ids())
}
