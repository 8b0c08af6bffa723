//! Rate limits and concurrent-call leases, as pure state machines with the clock passed in.
//!
//! rate-limiter's `RateLimiter` Durable Object loads one key's [`object::Stored`] state, calls
//! [`object::apply`] with the current time, stores what comes back and answers the
//! [`Decision`]. voice-router sends [`api`] requests and turns decisions into HTTP headers with
//! [`headers::for_decisions`], so both sides share every type and rule here.
//!
//! - [`gcra`]: GCRA (a token bucket without a timer): a sustained rate plus a burst.
//! - [`window`]: a sliding window for "N per window" semantics, never over-admitting.
//! - [`lease`]: concurrent-call leases with expiries, reclaimed when a call vanishes.
//! - [`policy`]: which limit applies, built-in defaults and per-plan/per-tenant overrides.
//! - [`key`]: namespaced, keyed-hash names of the Durable Object instances.
//! - [`learned`]: the policies objects applied, for a Worker that asks them directly.

pub mod api;
pub mod config;
pub mod decision;
pub mod gcra;
pub mod headers;
pub mod key;
pub mod learned;
pub mod lease;
pub mod object;
pub mod policy;
pub mod refusals;
pub mod window;

pub use decision::{Decision, Verdict};
pub use policy::{FailureMode, Limit, Policy, PolicyName};
