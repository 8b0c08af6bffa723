//! Judging a probe of an origin's `/health`: what counts as a healthy answer.

use crate::health::{HEALTH_PATH, HealthReport, HealthStatus};

use super::health::ProbeRecord;

/// The URL a region's origin is probed at (`origin_url` has no trailing slash).
pub fn health_url(origin_url: &str) -> String {
    format!("{origin_url}{HEALTH_PATH}")
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    /// The origin did not answer before the deadline.
    #[error("no answer within {0} ms")]
    TimedOut(u64),
    /// The connection failed (refused, reset, DNS, TLS).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The origin answered with a status other than 200.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// A 200 whose body is not an origin health report (a captive page, a default backend).
    #[error("answered with something other than a health report")]
    NotAHealthReport,
    /// The origin answered but reports itself degraded.
    #[error("reports itself degraded")]
    Degraded,
}

/// Judges an origin's answer to `GET /health`: healthy only as a 200 carrying an `ok` report.
pub fn judge_answer(status: u16, body: &str) -> Result<(), ProbeFailure> {
    if status != 200 {
        return Err(ProbeFailure::Status(status));
    }
    match serde_json::from_str::<HealthReport>(body) {
        Ok(report) if report.status == HealthStatus::Ok => Ok(()),
        Ok(_) => Err(ProbeFailure::Degraded),
        Err(_) => Err(ProbeFailure::NotAHealthReport),
    }
}

/// The record of one finished probe.
pub fn record(
    at_ms: u64,
    latency_ms: u64,
    status: Option<u16>,
    outcome: Result<(), ProbeFailure>,
) -> ProbeRecord {
    ProbeRecord {
        at_ms,
        ok: outcome.is_ok(),
        latency_ms,
        status,
        error: outcome.err().map(|failure| one_line(&failure.to_string())),
    }
}

/// Runtime errors can be long, multi-line strings; a record wants one short line.
fn one_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(160)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::BindingHealth;

    #[test]
    fn only_a_200_with_an_ok_report_is_healthy() {
        let ok = HealthReport::from_checks("origin", "0.1.0", []).to_json();
        let degraded = HealthReport::from_checks(
            "origin",
            "0.1.0",
            [("DB".to_owned(), BindingHealth::failed("down", None))],
        )
        .to_json();
        let cases = [
            (200, ok.as_str(), Ok(())),
            (503, degraded.as_str(), Err(ProbeFailure::Status(503))),
            (200, degraded.as_str(), Err(ProbeFailure::Degraded)),
            (
                200,
                "<html>It works!</html>",
                Err(ProbeFailure::NotAHealthReport),
            ),
            (204, "", Err(ProbeFailure::Status(204))),
            (502, "Bad Gateway", Err(ProbeFailure::Status(502))),
        ];
        for (status, body, expected) in cases {
            assert_eq!(judge_answer(status, body), expected, "{status} {body}");
        }
    }

    #[test]
    fn records_carry_a_one_line_cause() {
        let failed = record(
            10,
            2_000,
            None,
            Err(ProbeFailure::Unreachable(
                "connect ECONNREFUSED\n    at stack".into(),
            )),
        );
        assert!(!failed.ok);
        assert_eq!(
            failed.error.as_deref(),
            Some("unreachable: connect ECONNREFUSED")
        );
        let good = record(10, 3, Some(200), Ok(()));
        assert!(good.ok);
        assert_eq!(good.error, None);
        assert_eq!(health_url("https://a.test"), "https://a.test/health");
    }
}
