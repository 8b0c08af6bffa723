//! The origin's configuration: parsed once at start from a lookup, every problem reported together.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Env var: address to listen on.
pub const LISTEN_ADDR: &str = "LISTEN_ADDR";
/// Env var: `json` (default; CloudWatch-friendly) or `text` (for people).
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// Env var: `tracing` filter directives, e.g. `info,origin=debug`.
pub const LOG_FILTER: &str = "RUST_LOG";
/// Env var: how long live requests may run on after SIGTERM before the process exits.
pub const SHUTDOWN_GRACE_SECS: &str = "SHUTDOWN_GRACE_SECS";

/// Port 4000 on every interface: what the ECS task definition and ALB target group expect.
const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:4000";
/// ECS waits 30 s (`stopTimeout`) between SIGTERM and SIGKILL; finish well inside it.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// A grace longer than ECS's maximum `stopTimeout` (120 s) would be cut by SIGKILL anyway.
const MAX_SHUTDOWN_GRACE_SECS: u64 = 120;

/// Everything the origin reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// `tracing` filter directives.
    pub log_filter: String,
    /// Bound on draining live requests at shutdown.
    pub shutdown_grace: Duration,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Every problem found in the configuration, so an operator fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// One sentence per problem, naming the variable.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the configuration has {} problem(s):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Parses the configuration from `lookup` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let listen_addr_text = get(LISTEN_ADDR).unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned());
        let listen_addr = listen_addr_text.trim().parse().unwrap_or_else(|_| {
            problems.push(format!(
                "{LISTEN_ADDR}={listen_addr_text:?} is not an address like 0.0.0.0:4000"
            ));
            fallback_addr()
        });

        let log_format = match get(LOG_FORMAT).as_deref().map(str::trim) {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                problems.push(format!("{LOG_FORMAT}={other:?} must be `json` or `text`"));
                LogFormat::Json
            }
        };

        let log_filter = get(LOG_FILTER).unwrap_or_else(|| "info".to_owned());

        let shutdown_grace = match get(SHUTDOWN_GRACE_SECS) {
            None => DEFAULT_SHUTDOWN_GRACE,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(secs) if secs <= MAX_SHUTDOWN_GRACE_SECS => Duration::from_secs(secs),
                _ => {
                    problems.push(format!(
                        "{SHUTDOWN_GRACE_SECS}={text:?} must be whole seconds from 0 to {MAX_SHUTDOWN_GRACE_SECS}"
                    ));
                    DEFAULT_SHUTDOWN_GRACE
                }
            },
        };

        if problems.is_empty() {
            Ok(Self {
                listen_addr,
                log_format,
                log_filter,
                shutdown_grace,
            })
        } else {
            Err(ConfigError { problems })
        }
    }
}

fn fallback_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4000))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|key| map.get(key).cloned())
    }

    #[test]
    fn empty_environment_gives_the_embedded_defaults() {
        let config = parse(&[]).expect("defaults are valid");
        assert_eq!(config.listen_addr, "0.0.0.0:4000".parse().expect("addr"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.shutdown_grace, Duration::from_secs(20));
    }

    #[test]
    fn values_are_read() {
        let config = parse(&[
            (LISTEN_ADDR, "127.0.0.1:0"),
            (LOG_FORMAT, "text"),
            (LOG_FILTER, "debug"),
            (SHUTDOWN_GRACE_SECS, "5"),
        ])
        .expect("valid");
        assert_eq!(config.listen_addr.port(), 0);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_filter, "debug");
        assert_eq!(config.shutdown_grace, Duration::from_secs(5));
    }

    #[test]
    fn blank_values_count_as_unset() {
        let config = parse(&[(LOG_FORMAT, "  "), (SHUTDOWN_GRACE_SECS, "")]).expect("valid");
        assert_eq!(config, parse(&[]).expect("defaults"));
    }

    #[test]
    fn every_problem_is_reported_together() {
        let error = parse(&[
            (LISTEN_ADDR, "port four thousand"),
            (LOG_FORMAT, "xml"),
            (SHUTDOWN_GRACE_SECS, "-1"),
        ])
        .expect_err("three problems");
        assert_eq!(error.problems.len(), 3, "{error}");
        let text = error.to_string();
        for name in [LISTEN_ADDR, LOG_FORMAT, SHUTDOWN_GRACE_SECS] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
    }

    #[test]
    fn grace_beyond_what_ecs_allows_is_refused() {
        let error = parse(&[(SHUTDOWN_GRACE_SECS, "121")]).expect_err("too long");
        assert!(error.problems[0].contains("0 to 120"));
    }
}
