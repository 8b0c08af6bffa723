//! The origin's configuration: parsed once at start from a lookup through
//! [`shared::config::Reader`], every problem reported together.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use shared::config::ConfigIssue;
use shared::journal::JournalLimits;
use shared::outbound_url::OutboundPolicy;
use shared::signing::MIN_SECRET_LEN;

/// Env var: address to listen on.
pub const LISTEN_ADDR: &str = "LISTEN_ADDR";
/// Env var: `json` (default; CloudWatch-friendly) or `text` (for people).
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// Env var: `tracing` filter directives, e.g. `info,origin=debug`.
pub const LOG_FILTER: &str = "RUST_LOG";
/// Env var: how long live requests may run on after SIGTERM before the process exits.
pub const SHUTDOWN_GRACE_SECS: &str = "SHUTDOWN_GRACE_SECS";
/// Env var (secret, required): HMAC key shared with the edge, by the edge's name for it.
pub use shared::signing::EDGE_SIGNING_SECRET;
/// Env var (secret, optional): the previous key, accepted while a rotation rolls out.
pub const EDGE_SIGNING_SECRET_PREVIOUS: &str = "EDGE_SIGNING_SECRET_PREVIOUS";
/// Env var: `refuse` (default) or `accept` requests signed by an edge from before the nonce
/// (`v1=`, no `X-Edge-Nonce`, replayable within the skew): `accept` only for the deploy that
/// brings the nonce to both sides (docs/operations.md).
pub const EDGE_LEGACY_SIGNATURES: &str = "EDGE_LEGACY_SIGNATURES";
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
/// Env var: how often the background probe asks the database whether it is up.
pub const DATABASE_PROBE_INTERVAL_MS: &str = "DATABASE_PROBE_INTERVAL_MS";
/// Env var: how long the probe waits for the database's answer before calling it down (a slow
/// answer within it is still up).
pub const DATABASE_PROBE_TIMEOUT_MS: &str = "DATABASE_PROBE_TIMEOUT_MS";
/// Env var: most turns one live call's write-behind journal holds (`shared::journal`).
pub const JOURNAL_MAX_PER_CALL: &str = "JOURNAL_MAX_PER_CALL";
/// Env var: most turns every journal of the process holds together.
pub const JOURNAL_MAX_TOTAL: &str = "JOURNAL_MAX_TOTAL";
/// Env var: how long a relay turn waits for its journal entry to be written before its reply
/// is closed anyway (the entry stays journaled).
pub const JOURNAL_WRITE_WAIT_MS: &str = "JOURNAL_WRITE_WAIT_MS";
/// Env var ECS injects into every task: the container agent's endpoint; with it, the task
/// protects itself from scale-in while it holds live calls (`crate::task_protection`).
pub const ECS_AGENT_URI: &str = "ECS_AGENT_URI";
/// Env var: minutes of scale-in protection asked for at a time (1–2880; 0 = never asked).
pub const TASK_PROTECTION_MINUTES: &str = "TASK_PROTECTION_MINUTES";
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

/// Env var: how often the webhooks' outbox is polled for due deliveries (a change made on this
/// replica wakes it at once; the poll finds retries and other replicas' rows).
pub const WEBHOOK_POLL_MS: &str = "WEBHOOK_POLL_MS";

/// Env var (OpenTelemetry standard): base URL of an OTLP/HTTP collector; traces go to
/// `{base}/v1/traces`. Traces are off when neither this nor the traces endpoint is set.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Env var (OpenTelemetry standard): full URL traces are posted to, used as given.
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Env var (OpenTelemetry standard): `http/protobuf` (default) or `http/json`.
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// Env var (OpenTelemetry standard): the `service.name` of the origin's spans.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// `service.name` when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "aybiza-origin";

/// Port 4000 on every interface: what the ECS task definition and ALB target group expect.
const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 4000);
/// ECS waits 30 s (`stopTimeout`) between SIGTERM and SIGKILL; finish well inside it.
const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 20;
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
    /// Whether a `v1=` signature without a nonce is still accepted (a transition only).
    pub accept_legacy_signatures: bool,
    /// The database.
    pub database: DatabaseConfig,
    /// Redis, when configured.
    pub redis: Option<RedisConfig>,
    /// The compute region (`AWS_REGION`), `local` when unset.
    pub region: String,
    /// Bedrock.
    pub bedrock: BedrockConfig,
    /// Where requests to tenants' URLs (tool calls, webhooks) may go.
    pub outbound_policy: OutboundPolicy,
    /// How often the webhooks' outbox is polled.
    pub webhook_poll: Duration,
    /// Bounds of the live calls' write-behind journals (`crate::journal`).
    pub journal: JournalLimits,
    /// How long a relay turn waits for its journal entry to be written.
    pub journal_write_wait: Duration,
    /// ECS task scale-in protection while calls are live (`crate::task_protection`); `None`
    /// outside ECS or when switched off.
    pub task_protection: Option<TaskProtectionConfig>,
    /// Where traces go over OTLP; `None` = no traces exported.
    pub traces: Option<TracesConfig>,
}

/// Where the origin's spans are exported (OTLP over HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracesConfig {
    /// The URL spans are posted to (`…/v1/traces`).
    pub endpoint: String,
    /// How they are encoded.
    pub protocol: OtlpProtocol,
    /// `service.name`.
    pub service_name: String,
}

/// OTLP/HTTP encodings (gRPC is not built in: it would pull a second HTTP stack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`, the specification's default.
    Protobuf,
    /// `http/json`.
    Json,
}

// Secrets stay out of logs and panics.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("log_format", &self.log_format)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("signing_secrets", &self.signing_secrets.len())
            .field("accept_legacy_signatures", &self.accept_legacy_signatures)
            .field("database", &self.database.backend())
            .field("redis", &self.redis.is_some())
            .field("region", &self.region)
            .field("bedrock", &self.bedrock)
            .field("outbound_policy", &self.outbound_policy)
            .field("journal", &self.journal)
            .field("task_protection", &self.task_protection)
            .field("traces", &self.traces)
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
    /// How often the background probe runs (`crate::db_health`).
    pub probe_interval: Duration,
    /// How long the probe waits before calling the database down.
    pub probe_timeout: Duration,
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

/// ECS task scale-in protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProtectionConfig {
    /// `ECS_AGENT_URI`, without a trailing slash.
    pub agent_uri: String,
    /// `TASK_PROTECTION_MINUTES`: asked for at a time, renewed at half time.
    pub minutes: u32,
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

/// What can be wrong with the origin's own settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginIssue {
    /// Not an address like `0.0.0.0:4000`.
    #[error("not an address like 0.0.0.0:4000")]
    NotASocketAddress,
    /// A URL of the wrong kind.
    #[error("does not start with {0}")]
    WrongScheme(&'static str),
    /// A CA bundle given for a database that is not PostgreSQL.
    #[error("applies to PostgreSQL only")]
    PostgresOnly,
    /// A path that is not a readable file.
    #[error("{0:?} is not a readable file")]
    NotAFile(String),
    /// Not a PostgreSQL schema name this service creates.
    #[error("not 1 to 63 of a-z, 0-9 and _")]
    NotASchemaName,
    /// A model chain entry that is not a Bedrock model id.
    #[error("{0:?} is not a Bedrock model id")]
    NotAModelId(String),
}

/// Every problem found in the configuration, so an operator fixes them in one go.
pub type ConfigError = shared::config::ConfigError<OriginIssue>;

type Reader<'a> = shared::config::Reader<'a, OriginIssue>;

fn invalid(issue: OriginIssue) -> ConfigIssue<OriginIssue> {
    ConfigIssue::Invalid(issue)
}

impl Config {
    /// Parses the configuration from `lookup` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(&lookup);

        let listen_addr = reader
            .parse(LISTEN_ADDR, |text| {
                text.parse()
                    .map_err(|_| invalid(OriginIssue::NotASocketAddress))
            })
            .unwrap_or(DEFAULT_LISTEN_ADDR);
        let log_format = reader
            .parse(LOG_FORMAT, |text| match text {
                "json" => Ok(LogFormat::Json),
                "text" => Ok(LogFormat::Text),
                _ => Err(ConfigIssue::NotOneOf(&["json", "text"])),
            })
            .unwrap_or(LogFormat::Json);
        let log_filter = reader.text(LOG_FILTER).unwrap_or_else(|| "info".to_owned());
        let shutdown_grace = reader.seconds(
            SHUTDOWN_GRACE_SECS,
            0..=MAX_SHUTDOWN_GRACE_SECS,
            DEFAULT_SHUTDOWN_GRACE_SECS,
        );

        let current = reader.required_secret(EDGE_SIGNING_SECRET, MIN_SECRET_LEN);
        let previous = reader.secret(EDGE_SIGNING_SECRET_PREVIOUS, MIN_SECRET_LEN);
        let signing_secrets = std::iter::once(current)
            .chain(previous)
            .map(|secret| secret.expose().to_vec())
            .collect();
        let accept_legacy_signatures = reader
            .parse(EDGE_LEGACY_SIGNATURES, |text| match text {
                "refuse" => Ok(false),
                "accept" => Ok(true),
                _ => Err(ConfigIssue::NotOneOf(&["refuse", "accept"])),
            })
            .unwrap_or(false);

        let database = database_config(&mut reader);

        let redis = reader
            .parse(REDIS_URL, |url| {
                if url.starts_with("redis://") || url.starts_with("rediss://") {
                    Ok(url.to_owned())
                } else {
                    Err(invalid(OriginIssue::WrongScheme("redis:// or rediss://")))
                }
            })
            .map(|url| RedisConfig {
                url,
                key_prefix: reader
                    .text(REDIS_KEY_PREFIX)
                    .unwrap_or_else(|| "aybiza:".to_owned()),
            });

        let region = reader
            .text(AWS_REGION)
            .unwrap_or_else(|| "local".to_owned());
        let bedrock_region = reader
            .text(BEDROCK_REGION)
            .unwrap_or_else(|| shared::model::bedrock_region_for(&region).to_owned());
        let endpoint_url = reader.url(BEDROCK_ENDPOINT_URL);
        let default_models = match reader.list(BEDROCK_DEFAULT_MODELS) {
            None => shared::model::default_chain(&bedrock_region),
            Some(models) => {
                for model in models.iter().filter(|m| !shared::agent::is_model_id(m)) {
                    reader.problem(
                        BEDROCK_DEFAULT_MODELS,
                        invalid(OriginIssue::NotAModelId(model.clone())),
                    );
                }
                models
            }
        };
        let bedrock = BedrockConfig {
            region: bedrock_region,
            endpoint_url,
            default_models,
            first_token_timeout: reader.millis(BEDROCK_FIRST_TOKEN_TIMEOUT_MS, 100..=60_000, 2_500),
            stall_timeout: reader.millis(BEDROCK_STALL_TIMEOUT_MS, 100..=60_000, 3_000),
            connect_timeout: reader.millis(BEDROCK_CONNECT_TIMEOUT_MS, 50..=30_000, 1_000),
        };

        let outbound_policy = reader
            .parse(ORIGIN_ENVIRONMENT, |text| match text {
                "production" => Ok(OutboundPolicy::PublicOnly),
                "development" => Ok(OutboundPolicy::LoopbackToo),
                _ => Err(ConfigIssue::NotOneOf(&["production", "development"])),
            })
            .unwrap_or(OutboundPolicy::PublicOnly);
        let webhook_poll = reader.millis(WEBHOOK_POLL_MS, 10..=60_000, 1_000);

        let journal_defaults = JournalLimits::default();
        let journal = JournalLimits {
            per_call: usize::try_from(reader.number(
                JOURNAL_MAX_PER_CALL,
                1..=1_000_000,
                journal_defaults.per_call as u64,
            ))
            .unwrap_or(journal_defaults.per_call),
            total: usize::try_from(reader.number(
                JOURNAL_MAX_TOTAL,
                1..=100_000_000,
                journal_defaults.total as u64,
            ))
            .unwrap_or(journal_defaults.total),
        };
        let journal_write_wait = reader.millis(JOURNAL_WRITE_WAIT_MS, 0..=60_000, 1_000);
        let protection_minutes = reader.number(
            TASK_PROTECTION_MINUTES,
            0..=u64::from(shared::task_protection::MAX_MINUTES),
            u64::from(shared::task_protection::DEFAULT_MINUTES),
        );
        let task_protection = reader
            .parse(ECS_AGENT_URI, |uri| {
                if uri.starts_with("http://") {
                    Ok(uri.trim_end_matches('/').to_owned())
                } else {
                    Err(invalid(OriginIssue::WrongScheme("http://")))
                }
            })
            .filter(|_| protection_minutes > 0)
            .map(|agent_uri| TaskProtectionConfig {
                agent_uri,
                minutes: u32::try_from(protection_minutes)
                    .unwrap_or(shared::task_protection::DEFAULT_MINUTES),
            });

        let traces = traces_config(&mut reader);

        reader.finish()?;
        Ok(Self {
            traces,
            journal,
            journal_write_wait,
            task_protection,
            listen_addr,
            log_format,
            log_filter,
            shutdown_grace,
            signing_secrets,
            accept_legacy_signatures,
            database,
            redis,
            region,
            bedrock,
            outbound_policy,
            webhook_poll,
        })
    }
}

/// The OTLP endpoint per the OpenTelemetry exporter specification ("Endpoint URLs for
/// OTLP/HTTP"): the per-signal variable is used as is, the base one gets `/v1/traces` appended.
fn traces_config(reader: &mut Reader<'_>) -> Option<TracesConfig> {
    let signal = reader.url(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
    let base = reader.url(OTEL_EXPORTER_OTLP_ENDPOINT);
    let protocol = reader
        .parse(OTEL_EXPORTER_OTLP_PROTOCOL, |text| match text {
            "http/protobuf" => Ok(OtlpProtocol::Protobuf),
            "http/json" => Ok(OtlpProtocol::Json),
            _ => Err(ConfigIssue::NotOneOf(&["http/protobuf", "http/json"])),
        })
        .unwrap_or(OtlpProtocol::Protobuf);
    let service_name = reader
        .text(OTEL_SERVICE_NAME)
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let endpoint =
        signal.or_else(|| base.map(|base| format!("{}/v1/traces", base.trim_end_matches('/'))))?;
    Some(TracesConfig {
        endpoint,
        protocol,
        service_name,
    })
}

fn database_config(reader: &mut Reader<'_>) -> DatabaseConfig {
    let mut url = reader
        .parse(DATABASE_URL, |url| {
            if ["postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                Ok(url.to_owned())
            } else {
                Err(invalid(OriginIssue::WrongScheme(
                    "postgres://, postgresql:// or sqlite:",
                )))
            }
        })
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let is_postgres = !url.starts_with("sqlite:");
    if let Some(ca_file) = reader.text(DATABASE_CA_FILE) {
        if !is_postgres {
            reader.problem(DATABASE_CA_FILE, invalid(OriginIssue::PostgresOnly));
        } else if !std::path::Path::new(&ca_file).is_file() {
            reader.problem(DATABASE_CA_FILE, invalid(OriginIssue::NotAFile(ca_file)));
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
    let schema = reader.parse(DATABASE_SCHEMA, |schema| {
        if schema.len() <= 63
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            Ok(schema.to_owned())
        } else {
            Err(invalid(OriginIssue::NotASchemaName))
        }
    });
    DatabaseConfig {
        url,
        pool_size: u32::try_from(reader.number(DATABASE_POOL_SIZE, 1..=500, 16)).unwrap_or(16),
        statement_timeout: reader.millis(DATABASE_STATEMENT_TIMEOUT_MS, 10..=600_000, 3_000),
        acquire_timeout: reader.millis(DATABASE_ACQUIRE_TIMEOUT_MS, 10..=60_000, 1_000),
        schema,
        probe_interval: reader.millis(DATABASE_PROBE_INTERVAL_MS, 50..=60_000, 250),
        probe_timeout: reader.millis(DATABASE_PROBE_TIMEOUT_MS, 50..=60_000, 2_000),
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
    fn task_protection_needs_the_ecs_agent_and_can_be_switched_off() {
        let outside_ecs = parse(&[]).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(outside_ecs.task_protection, None);
        let agent = "http://169.254.170.2/api/abc-123/";
        let inside = parse(&[(ECS_AGENT_URI, agent)]).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            inside.task_protection,
            Some(TaskProtectionConfig {
                agent_uri: "http://169.254.170.2/api/abc-123".into(),
                minutes: shared::task_protection::DEFAULT_MINUTES,
            })
        );
        let off = parse(&[(ECS_AGENT_URI, agent), (TASK_PROTECTION_MINUTES, "0")])
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(off.task_protection, None);
        assert!(parse(&[(TASK_PROTECTION_MINUTES, "2881")]).is_err());
        assert!(parse(&[(ECS_AGENT_URI, "https://agent")]).is_err());
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
            OutboundPolicy::PublicOnly,
            "production unless told otherwise"
        );
        assert_eq!(config.traces, None, "no traces unless an endpoint is given");
    }

    #[test]
    fn traces_follow_the_opentelemetry_variables() {
        let config =
            parse(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://127.0.0.1:4318/")]).expect("valid");
        assert_eq!(
            config.traces,
            Some(TracesConfig {
                endpoint: "http://127.0.0.1:4318/v1/traces".into(),
                protocol: OtlpProtocol::Protobuf,
                service_name: DEFAULT_SERVICE_NAME.into(),
            })
        );
        let config = parse(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4318"),
            (
                OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
                "http://jaeger:4318/custom",
            ),
            (OTEL_EXPORTER_OTLP_PROTOCOL, "http/json"),
            (OTEL_SERVICE_NAME, "origin-eu"),
        ])
        .expect("valid");
        assert_eq!(
            config.traces,
            Some(TracesConfig {
                endpoint: "http://jaeger:4318/custom".into(),
                protocol: OtlpProtocol::Json,
                service_name: "origin-eu".into(),
            }),
            "the per-signal endpoint is used as given and wins"
        );
        let error = parse(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4318"),
            (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
        ])
        .expect_err("not a URL, gRPC not built");
        let named: Vec<&str> = error.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            named,
            [OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL]
        );
    }

    #[test]
    fn a_development_origin_lets_tools_be_loopback() {
        let config = parse(&[(ORIGIN_ENVIRONMENT, "development")]).expect("valid");
        assert_eq!(config.outbound_policy, OutboundPolicy::LoopbackToo);
        let error = parse(&[(ORIGIN_ENVIRONMENT, "dev")]).expect_err("unknown");
        assert!(error.to_string().contains(ORIGIN_ENVIRONMENT), "{error}");
    }

    #[test]
    fn legacy_signatures_are_refused_unless_accepted_by_name() {
        assert!(!parse(&[]).expect("valid").accept_legacy_signatures);
        assert!(
            parse(&[(EDGE_LEGACY_SIGNATURES, "accept")])
                .expect("valid")
                .accept_legacy_signatures
        );
        let error = parse(&[(EDGE_LEGACY_SIGNATURES, "yes")]).expect_err("not a word it takes");
        assert!(
            error.to_string().contains(EDGE_LEGACY_SIGNATURES),
            "{error}"
        );
    }

    #[test]
    fn the_signing_secret_is_required_and_must_be_long() {
        let error = Config::from_lookup(|_| None).expect_err("no secret");
        assert!(error.to_string().contains(EDGE_SIGNING_SECRET), "{error}");
        let error = parse(&[(EDGE_SIGNING_SECRET, "short")]).expect_err("short");
        assert_eq!(error.problems[0].name, EDGE_SIGNING_SECRET);
        assert_eq!(
            error.problems[0].issue,
            ConfigIssue::TooShort { min: 32 },
            "{error}"
        );
        assert_eq!(
            error.problems[0].value, None,
            "a secret's value is never kept"
        );
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
        assert_eq!(error.problems[0].name, SHUTDOWN_GRACE_SECS);
        assert_eq!(
            error.problems[0].issue,
            ConfigIssue::OutOfRange { min: 0, max: 120 }
        );
    }

    /// `echo "$KEY" | wrangler secret put EDGE_SIGNING_SECRET` stores the key with a newline;
    /// the edge and the origin must still hold the same key, or no signature would verify.
    #[test]
    fn a_secret_stored_with_a_trailing_newline_is_the_same_key_on_both_sides() {
        use shared::edge_config::{EdgeConfig, ORIGIN_URL};
        use shared::signing::{BodyHash, SignedRequest, sign, verify};

        let stored = format!("{SECRET}\n");
        let edge = EdgeConfig::from_lookup(|name| match name {
            ORIGIN_URL => Some("http://127.0.0.1:4000".to_owned()),
            EDGE_SIGNING_SECRET => Some(stored.clone()),
            _ => None,
        })
        .expect("the edge accepts it");
        let origin = parse(&[(EDGE_SIGNING_SECRET, &stored)]).expect("the origin accepts it");
        assert_eq!(edge.signing_secret, SECRET.as_bytes());
        assert_eq!(
            origin.signing_secrets,
            std::slice::from_ref(&edge.signing_secret)
        );

        let now = 1_790_000_000;
        let request = SignedRequest {
            method: "POST",
            path_and_query: "/v1/calls",
            timestamp: now,
            nonce: "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            body: BodyHash::of(b"{}"),
            principal: "",
        };
        let signature = sign(&edge.signing_secret, &request).expect("the edge signs");
        let keys: Vec<&[u8]> = origin.signing_secrets.iter().map(Vec::as_slice).collect();
        assert_eq!(verify(&keys, &request, Some(&signature), now), Ok(()));
    }

    #[test]
    fn a_short_key_is_short_on_both_sides_whatever_whitespace_surrounds_it() {
        let stored = format!("  {}\n", &SECRET[..31]);
        let edge = shared::edge_config::EdgeConfig::from_lookup(|name| match name {
            shared::edge_config::ORIGIN_URL => Some("http://o".to_owned()),
            EDGE_SIGNING_SECRET => Some(stored.clone()),
            _ => None,
        })
        .expect_err("31 bytes after trimming");
        let origin = parse(&[(EDGE_SIGNING_SECRET, &stored)]).expect_err("31 bytes after trimming");
        assert!(
            matches!(
                edge.problems[0].issue,
                ConfigIssue::TooShort {
                    min: MIN_SECRET_LEN
                }
            ),
            "{edge}"
        );
        assert_eq!(
            origin.problems[0].issue,
            ConfigIssue::TooShort {
                min: MIN_SECRET_LEN
            }
        );
    }
}
