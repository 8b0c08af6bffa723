//! `GET /health` for every service: which bindings answered, and what that means overall.
//!
//! A Worker probes its bindings (KV, Durable Objects, service bindings, the origin) and hands
//! the outcomes here; this module decides the overall status and the report's shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The path every service (each Worker, each Durable Object, the origin) answers health on.
pub const HEALTH_PATH: &str = "/health";

/// A service's answer to `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Which service answered, e.g. `voice-router`.
    pub service: String,
    /// The service's package version.
    pub version: String,
    /// `ok` only when every binding answered.
    pub status: HealthStatus,
    /// One entry per binding, by binding name (sorted, so the JSON is stable).
    pub bindings: BTreeMap<String, BindingHealth>,
    /// The origin's write-behind journals of live calls (`crate::journal`), on its `/ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<crate::journal::JournalReport>,
}

/// Overall health of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Every binding answered.
    Ok,
    /// The service runs but at least one binding did not answer.
    Degraded,
}

/// How one binding answered a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingHealth {
    /// Whether the binding answered as expected.
    pub ok: bool,
    /// Round trip of the probe, when the caller measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// `service@version` of a remote service that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the probe failed; a short cause, never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BindingHealth {
    /// A binding that answered.
    pub fn answered(latency_ms: Option<u64>) -> Self {
        Self {
            ok: true,
            latency_ms,
            version: None,
            error: None,
        }
    }

    /// A binding that failed, with the reason.
    pub fn failed(error: impl Into<String>, latency_ms: Option<u64>) -> Self {
        Self {
            ok: false,
            latency_ms,
            version: None,
            error: Some(error.into()),
        }
    }

    /// Judges a remote service from the body of its own `/health` answer.
    ///
    /// A remote that answers but is itself degraded counts as failed, naming its failing
    /// bindings, so a broken dependency two hops away still shows at the top.
    pub fn from_remote_body(body: &str, latency_ms: Option<u64>) -> Self {
        let report: HealthReport = match serde_json::from_str(body) {
            Ok(report) => report,
            Err(_) => {
                return Self::failed(
                    "answered with something other than a health report",
                    latency_ms,
                );
            }
        };
        let version = Some(format!("{}@{}", report.service, report.version));
        let error = match report.status {
            HealthStatus::Ok => None,
            HealthStatus::Degraded => {
                let failing: Vec<&str> = report
                    .bindings
                    .iter()
                    .filter(|(_, binding)| !binding.ok)
                    .map(|(name, _)| name.as_str())
                    .collect();
                Some(format!("degraded: {}", failing.join(", ")))
            }
        };
        Self {
            ok: error.is_none(),
            latency_ms,
            version,
            error,
        }
    }
}

impl HealthReport {
    /// Builds a report from each binding's probe outcome.
    pub fn from_checks(
        service: &str,
        version: &str,
        checks: impl IntoIterator<Item = (String, BindingHealth)>,
    ) -> Self {
        let bindings: BTreeMap<String, BindingHealth> = checks.into_iter().collect();
        let status = if bindings.values().all(|binding| binding.ok) {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        };
        Self {
            service: service.to_owned(),
            version: version.to_owned(),
            status,
            bindings,
            journal: None,
        }
    }

    /// Serialises the report.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"status":"degraded"}"#.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(checks: Vec<(&str, BindingHealth)>) -> HealthReport {
        HealthReport::from_checks(
            "svc",
            "1.2.3",
            checks
                .into_iter()
                .map(|(name, check)| (name.to_owned(), check)),
        )
    }

    #[test]
    fn ok_when_every_binding_answered() {
        let report = report(vec![
            ("KV", BindingHealth::answered(Some(1))),
            ("DO", BindingHealth::answered(None)),
        ]);
        assert_eq!(report.status, HealthStatus::Ok);
    }

    #[test]
    fn ok_with_no_bindings_at_all() {
        assert_eq!(report(vec![]).status, HealthStatus::Ok);
    }

    #[test]
    fn degraded_when_any_binding_failed() {
        let report = report(vec![
            ("KV", BindingHealth::answered(Some(1))),
            ("DO", BindingHealth::failed("timed out", Some(2000))),
        ]);
        assert_eq!(report.status, HealthStatus::Degraded);
    }

    #[test]
    fn serialises_with_sorted_bindings_and_without_empty_fields() {
        let report = report(vec![
            ("Z", BindingHealth::answered(None)),
            ("A", BindingHealth::failed("down", None)),
        ]);
        assert_eq!(
            report.to_json(),
            r#"{"service":"svc","version":"1.2.3","status":"degraded","bindings":{"A":{"ok":false,"error":"down"},"Z":{"ok":true}}}"#
        );
    }

    #[test]
    fn remote_ok_report_names_service_and_version() {
        let remote = report(vec![("KV", BindingHealth::answered(None))]).to_json();
        let judged = BindingHealth::from_remote_body(&remote, Some(4));
        assert_eq!(
            judged,
            BindingHealth {
                ok: true,
                latency_ms: Some(4),
                version: Some("svc@1.2.3".into()),
                error: None
            }
        );
    }

    #[test]
    fn remote_degraded_report_fails_and_names_failing_bindings() {
        let remote = report(vec![
            ("KV", BindingHealth::failed("x", None)),
            ("DO", BindingHealth::answered(None)),
            ("ORIGIN", BindingHealth::failed("y", None)),
        ])
        .to_json();
        let judged = BindingHealth::from_remote_body(&remote, None);
        assert!(!judged.ok);
        assert_eq!(judged.error.as_deref(), Some("degraded: KV, ORIGIN"));
    }

    #[test]
    fn remote_garbage_fails() {
        let judged = BindingHealth::from_remote_body("<html>502</html>", Some(9));
        assert!(!judged.ok);
        assert_eq!(judged.latency_ms, Some(9));
    }
}
