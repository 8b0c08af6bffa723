//! The `CallSession` Durable Object: one instance per call id.

use worker::{DurableObject, Env, Method, Request, Response, Result, State, durable_object};

#[durable_object]
pub struct CallSession {
    _state: State,
}

impl DurableObject for CallSession {
    fn new(state: State, _env: Env) -> Self {
        Self { _state: state }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match (req.method(), req.path().as_str()) {
            // Answering proves the class is deployed and its instance can be reached.
            (Method::Get, "/health") => Response::from_json(&serde_json::json!({ "ok": true })),
            _ => Ok(Response::error("no such Durable Object route", 404)?),
        }
    }
}
