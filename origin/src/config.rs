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
/// Env var (secret, required): HMAC key shared with the edge.
pub const EDGE_SIGNING_SECRET: &str = "EDGE_SIGNING_SECRET";
/// Env var (secret, optional): the previous key, accepted while a rotation rolls out.
pub const EDGE_SIGNING_SECRET_PREVIOUS: &str = "EDGE_SIGNING_SECRET_PREVIOUS";
/// Env var (secret in production): `postgres://…` (Aurora) or `sqlite://…`; absent = SQLite.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Env var: PEM bundle to verify PostgreSQL's TLS certificate with (e.g. the RDS CA bundle).
pub const DATABASE_CA_FILE: &str = "DATABASE_CA_FILE";
/// Env var: most database connections per process.
pub const DATABASE_POOL_SIZE: &str = "DATABASE_POOL_SIZE";
/// Env var: PostgreSQL `statement_timeout` in milliseconds.
pub const DATABASE_STATEMENT_TIMEOUT_MS: &str = "DATABASE_STATEMENT_TIMEOUT_MS";
/// Env var: how long a request waits for a database connection before answering 503.
pub const DATABASE_ACQUIRE_TIMEOUT_MS: &str = "DATABASE_ACQUIRE_TIMEOUT_MS";
/// Env var: PostgreSQL schema holding the tables (created when missing); default `public`.
pub const DATABASE_SCHEMA: &str = "DATABASE_SCHEMA";
/// Env var (secret in production): `redis://…` or `rediss://…`; absent = in-process fan-out.
pub const REDIS_URL: &str = "REDIS_URL";
/// Env var: prefix of every Redis key and channel.
pub const REDIS_KEY_PREFIX: &str = "REDIS_KEY_PREFIX";
/// Env var: the compute region (ECS sets it); recorded on calls, and picks Bedrock's region.
pub const AWS_REGION: &str = "AWS_REGION";
/// Env var: Bedrock region override.
pub const BEDROCK_REGION: &str = "BEDROCK_REGION";
/// Env var: Bedrock Runtime endpoint override (the emulator in tests and local runs).
pub const BEDROCK_ENDPOINT_URL: &str = "BEDROCK_ENDPOINT_URL";
/// Env var: comma-separated model chain for agents that name none.
pub const BEDROCK_DEFAULT_MODELS: &str = "BEDROCK_DEFAULT_MODELS";
/// Env var: deadline for a model's first token before falling back.
pub const BEDROCK_FIRST_TOKEN_TIMEOUT_MS: &str = "BEDROCK_FIRST_TOKEN_TIMEOUT_MS";
/// Env var: longest silence inside a started stream before it counts as stalled.
pub const BEDROCK_STALL_TIMEOUT_MS: &str = "BEDROCK_STALL_TIMEOUT_MS";
/// Env var: TCP/TLS connect timeout to Bedrock.
pub const BEDROCK_CONNECT_TIMEOUT_MS: &str = "BEDROCK_CONNECT_TIMEOUT_MS";
/// Env var: `production` (default) or `development`; a development origin lets agents' tool
/// URLs be loopback (`http://127.0.0.1:…`), which production refuses.
pub const ORIGIN_ENVIRONMENT: &str = "ORIGIN_ENVIRONMENT";

/// Port 4000 on every interface: what the ECS task definition and ALB target group expect.
const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:4000";
/// ECS waits 30 s (`stopTimeout`) between SIGTERM and SIGKILL; finish well inside it.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// A grace longer than ECS's maximum `stopTimeout` (120 s) would be cut by SIGKILL anyway.
const MAX_SHUTDOWN_GRACE_SECS: u64 = 120;
/// The embedded default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://aybiza-origin.sqlite3?mode=rwc";

/// Everything the origin reads from its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// `tracing` filter directives.
    pub log_filter: String,
    /// Bound on draining live requests at shutdown.
    pub shutdown_grace: Duration,
    /// Keys accepted for edge signatures: the current one first.
    pub signing_secrets: Vec<Vec<u8>>,
    /// The database.
    pub database: DatabaseConfig,
    /// Redis, when configured.
    pub redis: Option<RedisConfig>,
    /// The compute region (`AWS_REGION`), `local` when unset.
    pub region: String,
    /// Bedrock.
    pub bedrock: BedrockConfig,
    /// Where requests to tenants' URLs (tool calls) may go.
    pub outbound_policy: shared::outbound_url::OutboundPolicy,
}

// Secrets stay out of logs and panics.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("log_format", &self.log_format)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("signing_secrets", &self.signing_secrets.len())
            .field("database", &self.database.backend())
            .field("redis", &self.redis.is_some())
            .field("region", &self.region)
            .field("bedrock", &self.bedrock)
            .field("outbound_policy", &self.outbound_policy)
            .finish_non_exhaustive()
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Which database and how to hold its connections.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://…`, TLS parameters already added.
    pub url: String,
    /// Pool size.
    pub pool_size: u32,
    /// PostgreSQL `statement_timeout`.
    pub statement_timeout: Duration,
    /// Longest wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL schema (`search_path`).
    pub schema: Option<String>,
}

/// The database kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (Aurora in production).
    Postgres,
    /// The embedded SQLite.
    Sqlite,
}

impl DatabaseConfig {
    /// Which backend the URL names.
    pub fn backend(&self) -> Backend {
        if self.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }
}

/// Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://…` or `rediss://…`.
    pub url: String,
    /// Prefix of keys and channels.
    pub key_prefix: String,
}

/// Bedrock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockConfig {
    /// Region of the Bedrock endpoint.
    pub region: String,
    /// Endpoint override.
    pub endpoint_url: Option<String>,
    /// Chain for agents without their own.
    pub default_models: Vec<String>,
    /// Deadline for the first token of each model attempt.
    pub first_token_timeout: Duration,
    /// Longest silence inside a started stream.
    pub stall_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
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

/// Reads variables, collecting problems.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    /// A whole number within `range`, or the default.
    fn number(&mut self, name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
        match self.get(name) {
            None => default,
            Some(text) => match text.parse::<u64>() {
                Ok(n) if range.contains(&n) => n,
                _ => {
                    self.problems.push(format!(
                        "{name}={text:?} must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ));
                    default
                }
            },
        }
    }

    fn millis(
        &mut self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Duration {
        Duration::from_millis(self.number(name, default, range))
    }
}

impl Config {
    /// Parses the configuration from `lookup` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut reader = Reader {
            lookup: &lookup,
            problems: Vec::new(),
        };

        let listen_addr_text = reader
            .get(LISTEN_ADDR)
            .unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned());
        let listen_addr = listen_addr_text.parse().unwrap_or_else(|_| {
            reader.problems.push(format!(
                "{LISTEN_ADDR}={listen_addr_text:?} is not an address like 0.0.0.0:4000"
            ));
            SocketAddr::from(([0, 0, 0, 0], 4000))
        });

        let log_format = match reader.get(LOG_FORMAT).as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                reader
                    .problems
                    .push(format!("{LOG_FORMAT}={other:?} must be `json` or `text`"));
                LogFormat::Json
            }
        };
        let log_filter = reader.get(LOG_FILTER).unwrap_or_else(|| "info".to_owned());
        let shutdown_grace = Duration::from_secs(reader.number(
            SHUTDOWN_GRACE_SECS,
            DEFAULT_SHUTDOWN_GRACE.as_secs(),
            0..=MAX_SHUTDOWN_GRACE_SECS,
        ));

        let mut signing_secrets = Vec::new();
        match reader.get(EDGE_SIGNING_SECRET) {
            None => reader.problems.push(format!(
                "{EDGE_SIGNING_SECRET} is required: the HMAC key shared with the edge (at least {} bytes)",
                shared::signing::MIN_SECRET_LEN
            )),
            Some(secret) if secret.len() < shared::signing::MIN_SECRET_LEN => {
                reader.problems.push(format!(
                    "{EDGE_SIGNING_SECRET} must be at least {} bytes",
                    shared::signing::MIN_SECRET_LEN
                ));
            }
            Some(secret) => signing_secrets.push(secret.into_bytes()),
        }
        if let Some(previous) = reader.get(EDGE_SIGNING_SECRET_PREVIOUS) {
            if previous.len() < shared::signing::MIN_SECRET_LEN {
                reader.problems.push(format!(
                    "{EDGE_SIGNING_SECRET_PREVIOUS} must be at least {} bytes",
                    shared::signing::MIN_SECRET_LEN
                ));
            } else {
                signing_secrets.push(previous.into_bytes());
            }
        }

        let database = database_config(&mut reader);

        let redis = reader.get(REDIS_URL).map(|url| {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                reader
                    .problems
                    .push(format!("{REDIS_URL} must start with redis:// or rediss://"));
            }
            RedisConfig {
                url,
                key_prefix: reader
                    .get(REDIS_KEY_PREFIX)
                    .unwrap_or_else(|| "aybiza:".to_owned()),
            }
        });

        let region = reader.get(AWS_REGION).unwrap_or_else(|| "local".to_owned());
        let bedrock_region = reader
            .get(BEDROCK_REGION)
            .unwrap_or_else(|| shared::model::bedrock_region_for(&region).to_owned());
        let endpoint_url = reader.get(BEDROCK_ENDPOINT_URL);
        if let Some(url) = &endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            reader.problems.push(format!(
                "{BEDROCK_ENDPOINT_URL} must start with http:// or https://"
            ));
        }
        let default_models = match reader.get(BEDROCK_DEFAULT_MODELS) {
            None => shared::model::default_chain(&bedrock_region),
            Some(list) => {
                let models: Vec<String> = list
                    .split(',')
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty())
                    .collect();
                if models.is_empty() || !models.iter().all(|m| shared::agent::is_model_id(m)) {
                    reader.problems.push(format!(
                        "{BEDROCK_DEFAULT_MODELS} must be a comma-separated list of Bedrock model ids"
                    ));
                }
                models
            }
        };
        let bedrock = BedrockConfig {
            region: bedrock_region,
            endpoint_url,
            default_models,
            first_token_timeout: reader.millis(BEDROCK_FIRST_TOKEN_TIMEOUT_MS, 2_500, 100..=60_000),
            stall_timeout: reader.millis(BEDROCK_STALL_TIMEOUT_MS, 3_000, 100..=60_000),
            connect_timeout: reader.millis(BEDROCK_CONNECT_TIMEOUT_MS, 1_000, 50..=30_000),
        };

        let outbound_policy = match reader.get(ORIGIN_ENVIRONMENT).as_deref() {
            None | Some("production") => shared::outbound_url::OutboundPolicy::PublicOnly,
            Some("development") => shared::outbound_url::OutboundPolicy::LoopbackToo,
            Some(other) => {
                reader.problems.push(format!(
                    "{ORIGIN_ENVIRONMENT}={other:?} must be `production` or `development`"
                ));
                shared::outbound_url::OutboundPolicy::PublicOnly
            }
        };

        if reader.problems.is_empty() {
            Ok(Self {
                listen_addr,
                log_format,
                log_filter,
                shutdown_grace,
                signing_secrets,
                database,
                redis,
                region,
                bedrock,
                outbound_policy,
            })
        } else {
            Err(ConfigError {
                problems: reader.problems,
            })
        }
    }
}

fn database_config(reader: &mut Reader<'_>) -> DatabaseConfig {
    let mut url = reader
        .get(DATABASE_URL)
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let is_postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !is_postgres && !url.starts_with("sqlite:") {
        reader.problems.push(format!(
            "{DATABASE_URL} must start with postgres://, postgresql:// or sqlite:"
        ));
    }
    if let Some(ca_file) = reader.get(DATABASE_CA_FILE) {
        if !is_postgres {
            reader
                .problems
                .push(format!("{DATABASE_CA_FILE} applies to PostgreSQL only"));
        } else if !std::path::Path::new(&ca_file).is_file() {
            reader.problems.push(format!(
                "{DATABASE_CA_FILE}={ca_file:?} is not a readable file"
            ));
        } else {
            // Verify the server against this CA, and its name, unless the URL already says how.
            let separator = if url.contains('?') { '&' } else { '?' };
            if !url.contains("sslmode=") {
                url.push_str(&format!("{separator}sslmode=verify-full"));
            }
            let separator = if url.contains('?') { '&' } else { '?' };
            url.push_str(&format!(
                "{separator}sslrootcert={}",
                percent_encode(&ca_file)
            ));
        }
    }
    let schema = reader.get(DATABASE_SCHEMA);
    if let Some(schema) = &schema
        && (schema.is_empty()
            || schema.len() > 63
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
    {
        reader.problems.push(format!(
            "{DATABASE_SCHEMA} must be 1 to 63 of a-z, 0-9 and _"
        ));
    }
    DatabaseConfig {
        url,
        pool_size: u32::try_from(reader.number(DATABASE_POOL_SIZE, 16, 1..=500)).unwrap_or(16),
        statement_timeout: reader.millis(DATABASE_STATEMENT_TIMEOUT_MS, 3_000, 10..=600_000),
        acquire_timeout: reader.millis(DATABASE_ACQUIRE_TIMEOUT_MS, 1_000, 10..=60_000),
        schema,
    }
}

/// Percent-encodes a file path for a URL query value.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'.' | b'-' | b'_') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        map.entry(EDGE_SIGNING_SECRET.to_owned())
            .or_insert_with(|| SECRET.to_owned());
        Config::from_lookup(|key| map.get(key).cloned())
    }

    #[test]
    fn a_secret_alone_gives_the_embedded_defaults() {
        let config = parse(&[]).expect("defaults are valid");
        assert_eq!(config.listen_addr, "0.0.0.0:4000".parse().expect("addr"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.shutdown_grace, Duration::from_secs(20));
        assert_eq!(config.signing_secrets, vec![SECRET.as_bytes().to_vec()]);
        assert_eq!(config.database.url, DEFAULT_DATABASE_URL);
        assert_eq!(config.database.backend(), Backend::Sqlite);
        assert!(config.redis.is_none());
        assert_eq!(config.region, "local");
        assert_eq!(config.bedrock.region, "us-east-1");
        assert_eq!(
            config.bedrock.default_models,
            vec![
                "us.anthropic.claude-sonnet-4-6",
                "us.anthropic.claude-haiku-4-5-20251001-v1:0",
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            ]
        );
        assert_eq!(config.bedrock.endpoint_url, None);
        assert_eq!(
            config.outbound_policy,
            shared::outbound_url::OutboundPolicy::PublicOnly,
            "production unless told otherwise"
        );
    }

    #[test]
    fn a_development_origin_lets_tools_be_loopback() {
        let config = parse(&[(ORIGIN_ENVIRONMENT, "development")]).expect("valid");
        assert_eq!(
            config.outbound_policy,
            shared::outbound_url::OutboundPolicy::LoopbackToo
        );
        let error = parse(&[(ORIGIN_ENVIRONMENT, "dev")]).expect_err("unknown");
        assert!(error.to_string().contains(ORIGIN_ENVIRONMENT), "{error}");
    }

    #[test]
    fn the_signing_secret_is_required_and_must_be_long() {
        let error = Config::from_lookup(|_| None).expect_err("no secret");
        assert!(error.to_string().contains(EDGE_SIGNING_SECRET), "{error}");
        let error = parse(&[(EDGE_SIGNING_SECRET, "short")]).expect_err("short");
        assert!(error.problems[0].contains("at least 32 bytes"), "{error}");
    }

    #[test]
    fn values_are_read() {
        let config = parse(&[
            (LISTEN_ADDR, "127.0.0.1:0"),
            (LOG_FORMAT, "text"),
            (LOG_FILTER, "debug"),
            (SHUTDOWN_GRACE_SECS, "5"),
            (
                EDGE_SIGNING_SECRET_PREVIOUS,
                "fedcba9876543210fedcba9876543210",
            ),
            (DATABASE_URL, "postgres://u@db:5432/app"),
            (DATABASE_POOL_SIZE, "40"),
            (DATABASE_SCHEMA, "tenant_x"),
            (REDIS_URL, "redis://cache:6379"),
            (REDIS_KEY_PREFIX, "t:"),
            (AWS_REGION, "eu-west-2"),
            (BEDROCK_ENDPOINT_URL, "http://127.0.0.1:9"),
            (BEDROCK_DEFAULT_MODELS, "a, b"),
            (BEDROCK_FIRST_TOKEN_TIMEOUT_MS, "800"),
        ])
        .expect("valid");
        assert_eq!(config.listen_addr.port(), 0);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.shutdown_grace, Duration::from_secs(5));
        assert_eq!(config.signing_secrets.len(), 2);
        assert_eq!(config.database.backend(), Backend::Postgres);
        assert_eq!(config.database.pool_size, 40);
        assert_eq!(config.database.schema.as_deref(), Some("tenant_x"));
        assert_eq!(
            config.redis.as_ref().map(|r| r.key_prefix.as_str()),
            Some("t:")
        );
        assert_eq!(config.region, "eu-west-2");
        assert_eq!(config.bedrock.region, "eu-west-1", "EU compute → eu-west-1");
        assert_eq!(config.bedrock.default_models, vec!["a", "b"]);
        assert_eq!(
            config.bedrock.first_token_timeout,
            Duration::from_millis(800)
        );
    }

    #[test]
    fn bedrock_region_can_be_overridden() {
        let config =
            parse(&[(AWS_REGION, "us-west-2"), (BEDROCK_REGION, "us-west-2")]).expect("valid");
        assert_eq!(config.bedrock.region, "us-west-2");
        assert!(config.bedrock.default_models[0].starts_with("us."));
        let tokyo = parse(&[(AWS_REGION, "ap-northeast-1")]).expect("valid");
        assert_eq!(tokyo.bedrock.region, "ap-northeast-1");
        assert_eq!(
            tokyo.bedrock.default_models[0],
            "jp.anthropic.claude-sonnet-4-6"
        );
    }

    #[test]
    fn a_ca_file_turns_on_verified_tls() {
        let dir = std::env::temp_dir().join(format!("origin-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = dir.join("rds ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").expect("write");
        let config = parse(&[
            (DATABASE_URL, "postgres://u@db/app?application_name=origin"),
            (DATABASE_CA_FILE, ca.to_str().expect("utf-8 path")),
        ])
        .expect("valid");
        assert!(
            config.database.url.contains("&sslmode=verify-full"),
            "{}",
            config.database.url
        );
        assert!(
            config.database.url.contains("rds%20ca.pem"),
            "{}",
            config.database.url
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = parse(&[(DATABASE_URL, "postgres://user:hunter2@db/app")]).expect("valid");
        let text = format!("{config:?}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn every_problem_is_reported_together() {
        let error = parse(&[
            (LISTEN_ADDR, "port four thousand"),
            (LOG_FORMAT, "xml"),
            (SHUTDOWN_GRACE_SECS, "-1"),
            (DATABASE_URL, "mysql://x"),
            (REDIS_URL, "http://x"),
            (DATABASE_POOL_SIZE, "0"),
            (DATABASE_SCHEMA, "Bad-Name"),
            (BEDROCK_ENDPOINT_URL, "localhost:9"),
        ])
        .expect_err("eight problems");
        assert_eq!(error.problems.len(), 8, "{error}");
        let text = error.to_string();
        for name in [
            LISTEN_ADDR,
            LOG_FORMAT,
            SHUTDOWN_GRACE_SECS,
            DATABASE_URL,
            REDIS_URL,
            DATABASE_POOL_SIZE,
            DATABASE_SCHEMA,
            BEDROCK_ENDPOINT_URL,
        ] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
    }

    #[test]
    fn grace_beyond_what_ecs_allows_is_refused() {
        let error = parse(&[(SHUTDOWN_GRACE_SECS, "121")]).expect_err("too long");
        assert!(error.problems[0].contains("0 to 120"));
    }
}
