//! Wire types and business rules shared by the four Workers and the origin.
//!
//! Sans-I/O: every input, the clock included, is an argument and every output is a value,
//! so the same code runs natively in tests and as wasm32 inside the Workers.

pub mod agent;
pub mod api_key;
pub mod auth;
pub mod call;
pub mod call_event;
pub mod call_list;
pub mod call_session;
pub mod carrier;
pub mod chunking;
pub mod config;
pub mod conversation;
pub mod cors;
pub mod edge_config;
pub mod error_body;
pub mod failover;
pub mod firewall;
pub mod geo;
pub mod handoff;
pub mod headers;
pub mod health;
pub mod identifier;
pub mod idle;
pub mod journal;
pub mod jwks;
pub mod jwt;
pub mod language;
pub mod model;
pub mod origin_path;
pub mod outbound_signature;
pub mod outbound_url;
pub mod principal;
pub mod public_route;
pub mod public_url;
pub mod rate_limit;
pub mod relay;
pub mod request_id;
pub mod secret;
pub mod session_token;
pub mod signature;
pub mod signing;
pub mod task_protection;
pub mod telnyx;
pub mod trace_context;
pub mod ttl_map;
pub mod turn;
pub mod twilio;
pub mod twiml;
pub mod usage;
pub mod voicemail;
pub mod webhook;

#[cfg(test)]
mod test_support;
