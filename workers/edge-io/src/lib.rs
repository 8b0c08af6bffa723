//! The I/O half every Worker shares: JSON answers, request ids, binding probes, the clock,
//! the configuration lookup and calls to Durable Objects by name.
//!
//! Policy stays in `shared`; this crate only moves bytes between the Workers runtime and it.

pub mod answer;
pub mod clock;
pub mod config;
pub mod objects;
pub mod probe;
pub mod request_id;
pub mod trace;

pub use answer::{Failure, Rejection, json, respond};
pub use request_id::request_id;
