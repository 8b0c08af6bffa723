//! Region selection and origin health for geo-router: which AWS region serves a caller, and
//! which regions are fit to.
//!
//! Pure: the Worker passes `request.cf`, its config, the health table and the time, and stores
//! or answers what comes back. voice-router speaks to geo-router with the types in [`wire`].

pub mod config;
pub mod distance;
pub mod health;
pub mod probe;
pub mod select;
pub mod targets;
pub mod wire;

pub use config::{ConfigError, ConfigProblem, GeoConfig, GeoIssue, Region, SEED_REGIONS};
pub use health::{HealthError, HealthPolicy, HealthState, HealthTable, ReportOutcome};
pub use select::select_region;
pub use targets::Target;
pub use wire::{
    CallerLocation, Fallback, Reason, RegionsView, ReportRequest, ReportResponse, RouteDecision,
    RouteRequest, WireError,
};
