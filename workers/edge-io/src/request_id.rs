//! The request id a Worker answers and logs with.

use shared::request_id::{Trust, choose};
use wasm_bindgen::prelude::wasm_bindgen;
use worker::Request;

#[wasm_bindgen]
extern "C" {
    // The Workers runtime's CSPRNG-backed UUID; no need to ship a random generator in the wasm.
    /// `crypto.randomUUID()`.
    #[wasm_bindgen(js_namespace = crypto, js_name = randomUUID)]
    pub fn random_uuid() -> String;
}

/// The id for this request: adopted per `shared::request_id::choose`, else a fresh UUID.
pub fn request_id(req: &Request, trust: Trust) -> String {
    let headers = req.headers();
    let incoming = headers.get(shared::headers::REQUEST_ID).ok().flatten();
    let ray = headers.get("cf-ray").ok().flatten();
    match choose(trust, incoming.as_deref(), ray.as_deref()) {
        Some(id) => id.to_owned(),
        None => random_uuid(),
    }
}
