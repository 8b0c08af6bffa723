//! Wire types and business rules shared by the four Workers and the origin.
//!
//! Sans-I/O: every input, the clock included, is an argument and every output is a value,
//! so the same code runs natively in tests and as wasm32 inside the Workers.

pub mod error_body;
pub mod headers;
pub mod health;
pub mod principal;
pub mod rate_limit;
pub mod request_id;
