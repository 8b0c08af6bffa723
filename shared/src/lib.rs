//! Wire types and business rules shared by the four Workers and the origin.
//!
//! Sans-I/O: every input, the clock included, is an argument and every output is a value,
//! so the same code runs natively in tests and as wasm32 inside the Workers.

pub mod agent;
pub mod call;
pub mod call_event;
pub mod chunking;
pub mod conversation;
pub mod error_body;
pub mod headers;
pub mod health;
pub mod identifier;
pub mod model;
pub mod principal;
pub mod relay;
pub mod request_id;
pub mod signing;
pub mod turn;
pub mod usage;
