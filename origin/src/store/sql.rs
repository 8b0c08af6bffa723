//! [`Store`] over sqlx's `Any` driver: PostgreSQL (Aurora) in production, SQLite embedded by
//! default. The same SQL runs on both (`$n` parameters, `ON CONFLICT`, `RETURNING`); only the
//! migrations differ in column types.
//!
//! The pool is lazy and migrations retry in the background, so the origin starts, and later
//! recovers, while the database is away: until it answers, every operation fails fast with
//! [`StoreError::Unavailable`] (a 503 for clients).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use shared::agent::{
    Agent, AgentSpec, DEFAULT_FALLBACK_UTTERANCE, DEFAULT_FILLER_AFTER_MS,
    DEFAULT_FILLER_UTTERANCE, DEFAULT_IDLE_GOODBYE, DEFAULT_IDLE_REPROMPT,
    DEFAULT_IDLE_REPROMPT_SECS, DEFAULT_IDLE_REPROMPTS, InferenceSettings, Latency, VoiceSettings,
};
use shared::call::{Call, CallDirection, CallSource, CallStatus, CallerDetails};
use shared::call_list::CallListQuery;
use shared::carrier::{AnsweredBy, CarrierKind};
use shared::turn::{Turn, TurnRole};
use shared::usage::{DayRange, UsageDay, day_of};
use shared::webhook::{self, Delivery, Endpoint, EndpointConfig, EventType};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row, SqlSafeStr};

use super::{
    AnswerOutcome, Attempt, ClaimedDelivery, EndOutcome, NewTurn, Recorded, SigningSecret, Store,
    StoreError,
};
use crate::config::{Backend, DatabaseConfig};

const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "carriers and models",
        include_str!("../../migrations/postgres/0002_carriers_and_models.sql"),
    ),
    (
        3,
        "tools and signing secrets",
        include_str!("../../migrations/postgres/0003_tools_and_signing_secrets.sql"),
    ),
    (
        4,
        "webhooks",
        include_str!("../../migrations/postgres/0004_webhooks.sql"),
    ),
    (
        5,
        "calls by start",
        include_str!("../../migrations/postgres/0005_calls_by_start.sql"),
    ),
    (
        6,
        "outbound calls",
        include_str!("../../migrations/postgres/0006_outbound_calls.sql"),
    ),
    (
        7,
        "turn journal",
        include_str!("../../migrations/postgres/0007_turn_journal.sql"),
    ),
];
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "carriers and models",
        include_str!("../../migrations/sqlite/0002_carriers_and_models.sql"),
    ),
    (
        3,
        "tools and signing secrets",
        include_str!("../../migrations/sqlite/0003_tools_and_signing_secrets.sql"),
    ),
    (
        4,
        "webhooks",
        include_str!("../../migrations/sqlite/0004_webhooks.sql"),
    ),
    (
        5,
        "calls by start",
        include_str!("../../migrations/sqlite/0005_calls_by_start.sql"),
    ),
    (
        6,
        "outbound calls",
        include_str!("../../migrations/sqlite/0006_outbound_calls.sql"),
    ),
    (
        7,
        "turn journal",
        include_str!("../../migrations/sqlite/0007_turn_journal.sql"),
    ),
];

mod webhooks;

/// The SQL store.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    schema: Option<String>,
    migrated: Arc<AtomicBool>,
    /// How to open the probe's own connection.
    options: AnyConnectOptions,
    /// The background probe's connection, apart from the pool: a pool busy with slow queries
    /// must not read as a database that is down.
    probe_connection: Arc<tokio::sync::Mutex<Option<AnyConnection>>>,
}

const AGENT_COLUMNS: &str = "id, tenant_id, name, system_prompt, greeting, model, fallback_models, \
    max_tokens, temperature, top_p, stop_sequences, voice, language, tts_provider, \
    transcription_provider, phone_numbers, version, created_at_ms, updated_at_ms, voice_settings, \
    fallback_utterance, idle_reprompt_secs, idle_reprompt, idle_reprompts, idle_goodbye, \
    guardrail, latency, tools, builtin_tools, filler_after_ms, filler_utterance, voicemail_message";

/// A call's columns. `turn_count` (the column) numbers every stored turn for `seq`; what a call
/// reports as its turn count is its caller turns (`TurnRole::is_caller_turn`: `user` and
/// `dtmf`), the definition the edge counts too.
const CALL_COLUMNS: &str = "id, tenant_id, agent_id, source, carrier_call_sid, from_number, \
    to_number, region, status, started_at_ms, ended_at_ms, end_reason, caller_name, \
    forwarded_from, call_type, direction, carrier, answered_by, voicemail_message, \
    voicemail_left_at_ms, metadata, \
    (SELECT COUNT(*) FROM turns t WHERE t.tenant_id = calls.tenant_id AND t.call_id = calls.id \
    AND t.role IN ('user', 'dtmf')) AS caller_turns";

const TURN_COLUMNS: &str = "seq, role, text, interrupted, model, input_tokens, output_tokens, \
    ttft_ms, duration_ms, created_at_ms, lang, stop_reason, failure_reason, tool_calls";

const SECRET_COLUMNS: &str =
    "secret, previous_secret, previous_expires_at_ms, created_at_ms, rotated_at_ms";

impl SqlStore {
    /// Opens the pool lazily and migrates in the background, retrying until the database
    /// answers. Never fails for an unreachable database; fails for a malformed URL.
    pub fn open(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let store = Self::lazy(config)?;
        let migrating = store.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match migrating.migrate().await {
                    Ok(()) => {
                        tracing::info!(backend = ?migrating.backend, "database ready: migrations applied");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in_ms = delay.as_millis(), "database not ready");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(store)
    }

    /// Opens the pool and migrates now; fails when the database does not answer.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let store = Self::lazy(config)?;
        store.migrate().await?;
        Ok(store)
    }

    fn lazy(config: &DatabaseConfig) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let options: AnyConnectOptions = config.url.parse().map_err(|error: sqlx::Error| {
            StoreError::Unavailable(format!("bad database URL: {error}"))
        })?;
        let backend = config.backend();
        let schema = config.schema.clone();
        let store_schema = schema.clone();
        let statement_timeout_ms = config.statement_timeout.as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(config.pool_size)
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout)
            // A connection that died with the database is noticed here and replaced, which is
            // how the origin recovers by itself.
            .test_before_acquire(true)
            .after_connect(move |connection, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    match backend {
                        Backend::Postgres => {
                            let mut setup =
                                format!("SET statement_timeout = {statement_timeout_ms};");
                            if let Some(schema) = &schema {
                                // Validated by the config: [a-z0-9_]+.
                                setup.push_str(&format!(" SET search_path TO \"{schema}\";"));
                            }
                            connection.execute(sqlx::AssertSqlSafe(setup)).await?;
                        }
                        Backend::Sqlite => {
                            connection
                                .execute(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                     PRAGMA busy_timeout = 5000;",
                                )
                                .await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            backend,
            schema: store_schema,
            migrated: Arc::new(AtomicBool::new(false)),
            options,
            probe_connection: Arc::default(),
        })
    }

    /// Creates the schema when configured, then applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError> {
        let (migrations, schema) = match self.backend {
            Backend::Postgres => (POSTGRES_MIGRATIONS, self.schema.as_deref()),
            Backend::Sqlite => (SQLITE_MIGRATIONS, None),
        };
        if let Some(schema) = schema {
            self.pool
                .execute(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
                )))
                .await
                .map_err(classify)?;
        }
        let migrator = Migrator::with_migrations(
            migrations
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        );
        migrator
            .run(&self.pool)
            .await
            .map_err(|error| match error {
                sqlx::migrate::MigrateError::Execute(error) => classify(error),
                other => StoreError::Unavailable(format!("migration failed: {other}")),
            })?;
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    fn ready(&self) -> Result<&AnyPool, StoreError> {
        if self.migrated.load(Ordering::Acquire) {
            Ok(&self.pool)
        } else {
            Err(StoreError::Unavailable(
                "the database has not answered since start".into(),
            ))
        }
    }

    /// Closes the pool (tests use this to simulate nothing; shutdown uses it to be polite).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Maps a driver error: connection trouble is `Unavailable`, the rest is a bug.
/// Inserts one turn at `seq` (reserved by the caller) and counts it in the day's usage.
async fn insert_turn(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: &str,
    call_id: &str,
    seq: i64,
    turn: &NewTurn,
    journal_key: Option<&str>,
) -> Result<(), StoreError> {
    let tool_calls = if turn.tool_calls.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&turn.tool_calls)
                .map_err(|error| StoreError::Corrupt(format!("turn tool_calls: {error}")))?,
        )
    };
    sqlx::query(
        "INSERT INTO turns (tenant_id, call_id, seq, role, text, interrupted, model, \
         input_tokens, output_tokens, ttft_ms, duration_ms, created_at_ms, lang, \
         stop_reason, failure_reason, tool_calls, journal_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(tenant)
    .bind(call_id)
    .bind(seq)
    .bind(turn.role.as_str())
    .bind(turn.text.as_str())
    .bind(turn.interrupted)
    .bind(turn.model.as_deref())
    .bind(opt_int(turn.input_tokens))
    .bind(opt_int(turn.output_tokens))
    .bind(opt_int(turn.ttft_ms))
    .bind(opt_int(turn.duration_ms))
    .bind(int(turn.created_at_ms))
    .bind(turn.lang.as_deref())
    .bind(turn.stop_reason.as_deref())
    .bind(turn.failure_reason.as_deref())
    .bind(tool_calls)
    .bind(journal_key)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    // A model's reply counts; a greeting (no model) does not. Tool calls count whenever
    // they were made (a reply cut short still called them).
    let counted = turn.role == TurnRole::Assistant && turn.model.is_some();
    if counted || !turn.tool_calls.is_empty() {
        sqlx::query(
            "INSERT INTO usage_daily (tenant_id, day, turns, input_tokens, output_tokens, \
             tool_calls) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, day) DO UPDATE SET \
             turns = usage_daily.turns + excluded.turns, \
             input_tokens = usage_daily.input_tokens + excluded.input_tokens, \
             output_tokens = usage_daily.output_tokens + excluded.output_tokens, \
             tool_calls = usage_daily.tool_calls + excluded.tool_calls",
        )
        .bind(tenant)
        .bind(day_of(turn.created_at_ms))
        .bind(i64::from(counted))
        .bind(i64::from(turn.input_tokens.unwrap_or(0)))
        .bind(i64::from(turn.output_tokens.unwrap_or(0)))
        .bind(i64::try_from(turn.tool_calls.len()).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or(Cow::Borrowed(""));
            // PostgreSQL classes 08 (connection), 53 (resources), 57 (cancelled, shutting
            // down, statement timeout); SQLite 5/6 (busy, locked).
            let transient = code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "5"
                || code == "6"
                || code == "517"
                || code == "262";
            if transient {
                StoreError::Unavailable(error.to_string())
            } else {
                StoreError::Corrupt(error.to_string())
            }
        }
        _ => StoreError::Corrupt(error.to_string()),
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Milliseconds in a UTC day (`shared::usage::day_of`'s unit).
const MS_PER_DAY: i64 = 86_400_000;

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn opt_int(value: Option<u32>) -> Option<i64> {
    value.map(i64::from)
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn small(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn corrupt(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |error| StoreError::Corrupt(format!("{what}: {error}"))
}

fn json_list(text: &str, what: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// A JSON column read back into its type.
fn json_value<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

fn latency_text(latency: Latency) -> &'static str {
    match latency {
        Latency::Standard => "standard",
        Latency::Optimized => "optimized",
    }
}

fn latency_of(text: &str) -> Result<Latency, StoreError> {
    match text {
        "standard" => Ok(Latency::Standard),
        "optimized" => Ok(Latency::Optimized),
        other => Err(StoreError::Corrupt(format!("agent latency {other:?}"))),
    }
}

fn agent_from_row(row: &AnyRow) -> Result<Agent, StoreError> {
    let get_text = |name: &str| row.try_get::<String, _>(name).map_err(corrupt("agent"));
    let get_opt = |name: &str| {
        row.try_get::<Option<String>, _>(name)
            .map_err(corrupt("agent"))
    };
    let fallback_models = match get_opt("fallback_models")? {
        Some(text) => Some(json_list(&text, "agent fallback_models")?),
        None => None,
    };
    let float = |name: &str| -> Result<Option<f32>, StoreError> {
        #[allow(clippy::cast_possible_truncation)]
        Ok(row
            .try_get::<Option<f64>, _>(name)
            .map_err(corrupt("agent"))?
            .map(|v| v as f32))
    };
    let int_of = |name: &str| row.try_get::<i64, _>(name).map_err(corrupt("agent"));
    let opt_int_of = |name: &str| {
        row.try_get::<Option<i64>, _>(name)
            .map_err(corrupt("agent"))
    };
    // Agents stored before `voice_settings` existed have only the four older columns.
    let voice = match get_opt("voice_settings")? {
        Some(text) => json_value(&text, "agent voice_settings")?,
        None => VoiceSettings {
            voice: get_opt("voice")?,
            language: get_opt("language")?,
            tts_provider: get_opt("tts_provider")?,
            transcription_provider: get_opt("transcription_provider")?,
            ..VoiceSettings::default()
        },
    };
    let guardrail = match get_opt("guardrail")? {
        Some(text) => Some(json_value(&text, "agent guardrail")?),
        None => None,
    };
    let latency = match get_opt("latency")? {
        Some(text) => Some(latency_of(&text)?),
        None => None,
    };
    Ok(Agent {
        id: get_text("id")?,
        tenant_id: get_text("tenant_id")?,
        spec: AgentSpec {
            name: get_text("name")?,
            system_prompt: get_text("system_prompt")?,
            greeting: get_opt("greeting")?,
            model: get_opt("model")?,
            fallback_models,
            inference: InferenceSettings {
                max_tokens: small(int_of("max_tokens")?),
                temperature: float("temperature")?,
                top_p: float("top_p")?,
                stop_sequences: json_list(&get_text("stop_sequences")?, "agent stop_sequences")?,
                latency,
            },
            voice,
            phone_numbers: json_list(&get_text("phone_numbers")?, "agent phone_numbers")?,
            fallback_utterance: get_opt("fallback_utterance")?
                .unwrap_or_else(|| DEFAULT_FALLBACK_UTTERANCE.to_owned()),
            idle_reprompt_secs: opt_int_of("idle_reprompt_secs")?
                .map_or(DEFAULT_IDLE_REPROMPT_SECS, |secs| {
                    u32::try_from(secs).unwrap_or(DEFAULT_IDLE_REPROMPT_SECS)
                }),
            idle_reprompt: get_opt("idle_reprompt")?
                .unwrap_or_else(|| DEFAULT_IDLE_REPROMPT.to_owned()),
            idle_reprompts: opt_int_of("idle_reprompts")?.map_or(DEFAULT_IDLE_REPROMPTS, |n| {
                u8::try_from(n).unwrap_or(DEFAULT_IDLE_REPROMPTS)
            }),
            idle_goodbye: get_opt("idle_goodbye")?
                .unwrap_or_else(|| DEFAULT_IDLE_GOODBYE.to_owned()),
            guardrail,
            tools: match get_opt("tools")? {
                Some(text) => json_value(&text, "agent tools")?,
                None => Vec::new(),
            },
            builtin_tools: match get_opt("builtin_tools")? {
                Some(text) => json_value(&text, "agent builtin_tools")?,
                None => shared::agent::BuiltinTools::default(),
            },
            filler_after_ms: opt_int_of("filler_after_ms")?.map_or(DEFAULT_FILLER_AFTER_MS, |ms| {
                u32::try_from(ms).unwrap_or(DEFAULT_FILLER_AFTER_MS)
            }),
            filler_utterance: get_opt("filler_utterance")?
                .unwrap_or_else(|| DEFAULT_FILLER_UTTERANCE.to_owned()),
            voicemail_message: get_opt("voicemail_message")?,
        },
        version: unsigned(int_of("version")?),
        created_at_ms: unsigned(int_of("created_at_ms")?),
        updated_at_ms: unsigned(int_of("updated_at_ms")?),
    })
}

/// A value bound to a statement built at run time.
enum Bind {
    Text(String),
    Int(i64),
}

/// `SELECT` of one page of calls: only the conditions the query sets, each value bound (never
/// spliced), ordered as `shared::call_list::newest_first` (the `calls_by_start` index, read
/// backwards), one row more than the page. Ids compare byte by byte as in `shared`: SQLite's
/// default collation does; PostgreSQL's follows the database's locale unless told `"C"`.
fn list_calls_sql(backend: Backend, tenant: &str, query: &CallListQuery) -> (String, Vec<Bind>) {
    let id_column = match backend {
        Backend::Postgres => "id COLLATE \"C\"",
        Backend::Sqlite => "id",
    };
    let mut binds = vec![Bind::Text(tenant.to_owned())];
    let mut conditions = vec!["tenant_id = $1".to_owned()];
    let mut bind = |value: Bind| {
        binds.push(value);
        format!("${}", binds.len())
    };
    if let Some(status) = query.status {
        conditions.push(format!(
            "status = {}",
            bind(Bind::Text(status.as_str().into()))
        ));
    }
    if let Some(agent_id) = &query.agent_id {
        conditions.push(format!("agent_id = {}", bind(Bind::Text(agent_id.clone()))));
    }
    if let Some(source) = query.source {
        conditions.push(format!(
            "source = {}",
            bind(Bind::Text(source.as_str().into()))
        ));
    }
    if let Some(after) = query.started_after_ms {
        conditions.push(format!("started_at_ms > {}", bind(Bind::Int(int(after)))));
    }
    if let Some(before) = query.started_before_ms {
        conditions.push(format!("started_at_ms < {}", bind(Bind::Int(int(before)))));
    }
    if let Some(cursor) = &query.cursor {
        let at = bind(Bind::Int(int(cursor.started_at_ms)));
        let id = bind(Bind::Text(cursor.id.clone()));
        conditions.push(format!(
            "(started_at_ms < {at} OR (started_at_ms = {at} AND {id_column} < {id}))"
        ));
    }
    let limit = bind(Bind::Int(i64::from(query.limit) + 1));
    let sql = format!(
        "SELECT {CALL_COLUMNS} FROM calls WHERE {} \
         ORDER BY started_at_ms DESC, {id_column} DESC LIMIT {limit}",
        conditions.join(" AND ")
    );
    (sql, binds)
}

fn call_from_row(row: &AnyRow) -> Result<Call, StoreError> {
    let text = |name: &str| row.try_get::<String, _>(name).map_err(corrupt("call"));
    let opt = |name: &str| {
        row.try_get::<Option<String>, _>(name)
            .map_err(corrupt("call"))
    };
    let source = text("source")?;
    let status = text("status")?;
    Ok(Call {
        id: text("id")?,
        tenant_id: text("tenant_id")?,
        agent_id: text("agent_id")?,
        source: CallSource::parse(&source)
            .ok_or_else(|| StoreError::Corrupt(format!("call source {source:?}")))?,
        carrier_call_sid: opt("carrier_call_sid")?,
        from: opt("from_number")?,
        to: opt("to_number")?,
        region: text("region")?,
        status: CallStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("call status {status:?}")))?,
        turn_count: small(
            row.try_get::<i64, _>("caller_turns")
                .map_err(corrupt("call"))?,
        ),
        started_at_ms: unsigned(
            row.try_get::<i64, _>("started_at_ms")
                .map_err(corrupt("call"))?,
        ),
        ended_at_ms: row
            .try_get::<Option<i64>, _>("ended_at_ms")
            .map_err(corrupt("call"))?
            .map(unsigned),
        end_reason: opt("end_reason")?,
        caller: CallerDetails {
            caller_name: opt("caller_name")?,
            forwarded_from: opt("forwarded_from")?,
            call_type: opt("call_type")?,
        },
        // Calls stored before outbound calls existed have no direction: they came in.
        direction: match opt("direction")? {
            Some(text) => CallDirection::parse(&text)
                .ok_or_else(|| StoreError::Corrupt(format!("call direction {text:?}")))?,
            None => CallDirection::Inbound,
        },
        carrier: match opt("carrier")? {
            Some(text) => Some(
                CarrierKind::parse(&text)
                    .ok_or_else(|| StoreError::Corrupt(format!("call carrier {text:?}")))?,
            ),
            None => None,
        },
        answered_by: match opt("answered_by")? {
            Some(text) => Some(
                AnsweredBy::parse(&text)
                    .ok_or_else(|| StoreError::Corrupt(format!("call answered_by {text:?}")))?,
            ),
            None => None,
        },
        voicemail_message: opt("voicemail_message")?,
        voicemail_left_at_ms: row
            .try_get::<Option<i64>, _>("voicemail_left_at_ms")
            .map_err(corrupt("call"))?
            .map(unsigned),
        metadata: match opt("metadata")? {
            Some(text) => Some(json_value(&text, "call metadata")?),
            None => None,
        },
    })
}

/// A boolean column: PostgreSQL answers a boolean, SQLite the integer it stores.
fn flag(row: &AnyRow, name: &str) -> Result<bool, StoreError> {
    row.try_get::<bool, _>(name).or_else(|_| {
        row.try_get::<i64, _>(name)
            .map(|value| value != 0)
            .map_err(corrupt("turn"))
    })
}

fn turn_from_row(row: &AnyRow) -> Result<Turn, StoreError> {
    let role: String = row.try_get("role").map_err(corrupt("turn"))?;
    let opt_small = |name: &str| -> Result<Option<u32>, StoreError> {
        Ok(row
            .try_get::<Option<i64>, _>(name)
            .map_err(corrupt("turn"))?
            .map(small))
    };
    Ok(Turn {
        seq: small(row.try_get::<i64, _>("seq").map_err(corrupt("turn"))?),
        role: TurnRole::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("turn role {role:?}")))?,
        text: row.try_get("text").map_err(corrupt("turn"))?,
        interrupted: flag(row, "interrupted")?,
        model: row.try_get("model").map_err(corrupt("turn"))?,
        input_tokens: opt_small("input_tokens")?,
        output_tokens: opt_small("output_tokens")?,
        ttft_ms: opt_small("ttft_ms")?,
        duration_ms: opt_small("duration_ms")?,
        lang: row.try_get("lang").map_err(corrupt("turn"))?,
        stop_reason: row.try_get("stop_reason").map_err(corrupt("turn"))?,
        failure_reason: row.try_get("failure_reason").map_err(corrupt("turn"))?,
        tool_calls: match row
            .try_get::<Option<String>, _>("tool_calls")
            .map_err(corrupt("turn"))?
        {
            Some(text) => json_value(&text, "turn tool_calls")?,
            None => Vec::new(),
        },
        created_at_ms: unsigned(
            row.try_get::<i64, _>("created_at_ms")
                .map_err(corrupt("turn"))?,
        ),
    })
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let pool = self.ready()?;
        sqlx::query("SELECT 1")
            .fetch_one(pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.ready()?;
        let mut slot = self.probe_connection.lock().await;
        let connection = match slot.as_mut() {
            Some(connection) => connection,
            None => slot.insert(
                AnyConnection::connect_with(&self.options)
                    .await
                    .map_err(classify)?,
            ),
        };
        if let Err(error) = sqlx::query("SELECT 1").fetch_one(&mut *connection).await {
            // Dead with the database: the next probe opens a new one.
            *slot = None;
            return Err(classify(error));
        }
        Ok(())
    }

    async fn put_agent(
        &self,
        tenant: &str,
        id: &str,
        spec: &AgentSpec,
        now_ms: u64,
    ) -> Result<(Agent, bool), StoreError> {
        let pool = self.ready()?;
        let mut tx = pool.begin().await.map_err(classify)?;
        let fallback_models = spec.fallback_models.as_deref().map(to_json);
        let voice_settings = serde_json::to_string(&spec.voice)
            .map_err(|error| StoreError::Corrupt(format!("agent voice_settings: {error}")))?;
        let guardrail = spec
            .guardrail
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|error| StoreError::Corrupt(format!("agent guardrail: {error}")))?;
        let tools = serde_json::to_string(&spec.tools)
            .map_err(|error| StoreError::Corrupt(format!("agent tools: {error}")))?;
        let builtin_tools = serde_json::to_string(&spec.builtin_tools)
            .map_err(|error| StoreError::Corrupt(format!("agent builtin_tools: {error}")))?;
        let row = sqlx::query(
            "INSERT INTO agents (tenant_id, id, name, system_prompt, greeting, model, \
             fallback_models, max_tokens, temperature, top_p, stop_sequences, voice, language, \
             tts_provider, transcription_provider, phone_numbers, version, created_at_ms, \
             updated_at_ms, voice_settings, fallback_utterance, idle_reprompt_secs, idle_reprompt, \
             idle_reprompts, idle_goodbye, guardrail, latency, tools, builtin_tools, \
             filler_after_ms, filler_utterance, voicemail_message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 1, $17, $17, \
             $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, \
             system_prompt = excluded.system_prompt, greeting = excluded.greeting, \
             model = excluded.model, fallback_models = excluded.fallback_models, \
             max_tokens = excluded.max_tokens, temperature = excluded.temperature, \
             top_p = excluded.top_p, stop_sequences = excluded.stop_sequences, \
             voice = excluded.voice, language = excluded.language, \
             tts_provider = excluded.tts_provider, \
             transcription_provider = excluded.transcription_provider, \
             phone_numbers = excluded.phone_numbers, version = agents.version + 1, \
             updated_at_ms = excluded.updated_at_ms, voice_settings = excluded.voice_settings, \
             fallback_utterance = excluded.fallback_utterance, \
             idle_reprompt_secs = excluded.idle_reprompt_secs, \
             idle_reprompt = excluded.idle_reprompt, idle_reprompts = excluded.idle_reprompts, \
             idle_goodbye = excluded.idle_goodbye, guardrail = excluded.guardrail, \
             latency = excluded.latency, tools = excluded.tools, \
             builtin_tools = excluded.builtin_tools, filler_after_ms = excluded.filler_after_ms, \
             filler_utterance = excluded.filler_utterance, \
             voicemail_message = excluded.voicemail_message \
             RETURNING version, created_at_ms",
        )
        .bind(tenant)
        .bind(id)
        .bind(spec.name.as_str())
        .bind(spec.system_prompt.as_str())
        .bind(spec.greeting.as_deref())
        .bind(spec.model.as_deref())
        .bind(fallback_models)
        .bind(i64::from(spec.inference.max_tokens))
        .bind(spec.inference.temperature.map(f64::from))
        .bind(spec.inference.top_p.map(f64::from))
        .bind(to_json(&spec.inference.stop_sequences))
        .bind(spec.voice.voice.as_deref())
        .bind(spec.voice.language.as_deref())
        .bind(spec.voice.tts_provider.as_deref())
        .bind(spec.voice.transcription_provider.as_deref())
        .bind(to_json(&spec.phone_numbers))
        .bind(int(now_ms))
        .bind(voice_settings)
        .bind(spec.fallback_utterance.as_str())
        .bind(i64::from(spec.idle_reprompt_secs))
        .bind(spec.idle_reprompt.as_str())
        .bind(i64::from(spec.idle_reprompts))
        .bind(spec.idle_goodbye.as_str())
        .bind(guardrail)
        .bind(spec.inference.latency.map(latency_text))
        .bind(tools)
        .bind(builtin_tools)
        .bind(i64::from(spec.filler_after_ms))
        .bind(spec.filler_utterance.as_str())
        .bind(spec.voicemail_message.as_deref())
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let version = unsigned(row.try_get::<i64, _>(0).map_err(corrupt("agent"))?);
        let created_at_ms = unsigned(row.try_get::<i64, _>(1).map_err(corrupt("agent"))?);
        // Checked after the write above, which took the write lock: SQLite fails a transaction
        // that reads first outright (SQLITE_BUSY) when another write commits in between. A
        // number taken by another agent rolls the whole transaction back.
        for number in &spec.phone_numbers {
            let owner = sqlx::query(
                "SELECT agent_id FROM agent_phone_numbers WHERE tenant_id = $1 AND phone_number = $2",
            )
            .bind(tenant)
            .bind(number.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
            if let Some(row) = owner {
                let owner: String = row.try_get(0).map_err(corrupt("phone number"))?;
                if owner != id {
                    return Err(StoreError::PhoneNumberTaken(number.clone()));
                }
            }
        }
        sqlx::query("DELETE FROM agent_phone_numbers WHERE tenant_id = $1 AND agent_id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        for number in &spec.phone_numbers {
            sqlx::query(
                "INSERT INTO agent_phone_numbers (tenant_id, phone_number, agent_id) VALUES ($1, $2, $3)",
            )
            .bind(tenant)
            .bind(number.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|error| {
                // Another agent took the number between our check and this insert.
                if is_unique_violation(&error) {
                    StoreError::PhoneNumberTaken(number.clone())
                } else {
                    classify(error)
                }
            })?;
        }
        tx.commit().await.map_err(classify)?;
        let agent = Agent {
            id: id.to_owned(),
            tenant_id: tenant.to_owned(),
            spec: spec.clone(),
            version,
            created_at_ms,
            updated_at_ms: now_ms,
        };
        Ok((agent, version == 1))
    }

    async fn get_agent(&self, tenant: &str, id: &str) -> Result<Option<Agent>, StoreError> {
        let pool = self.ready()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn delete_agent(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_with_children(tenant, id, "agents", "agent_phone_numbers", "agent_id")
            .await
    }

    async fn list_agents(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Agent>, StoreError> {
        let pool = self.ready()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        )))
        .bind(tenant)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(classify)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn agent_for_number(
        &self,
        tenant: &str,
        number: &str,
    ) -> Result<Option<Agent>, StoreError> {
        let pool = self.ready()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = \
             (SELECT agent_id FROM agent_phone_numbers WHERE tenant_id = $1 AND phone_number = $2)"
        )))
        .bind(tenant)
        .bind(number)
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    #[tracing::instrument(name = "db.write", skip_all, fields(db.operation = "create_call"))]
    async fn create_call(&self, call: &Call) -> Result<(), StoreError> {
        let pool = self.ready()?;
        let mut tx = pool.begin().await.map_err(classify)?;
        sqlx::query(
            "INSERT INTO calls (tenant_id, id, agent_id, source, carrier_call_sid, from_number, \
             to_number, region, status, turn_count, started_at_ms, direction, carrier, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $12, $13)",
        )
        .bind(call.tenant_id.as_str())
        .bind(call.id.as_str())
        .bind(call.agent_id.as_str())
        .bind(call.source.as_str())
        .bind(call.carrier_call_sid.as_deref())
        .bind(call.from.as_deref())
        .bind(call.to.as_deref())
        .bind(call.region.as_str())
        .bind(call.status.as_str())
        .bind(int(call.started_at_ms))
        .bind(call.direction.as_str())
        .bind(call.carrier.map(CarrierKind::as_str))
        .bind(call.metadata.as_ref().map(ToString::to_string))
        .execute(&mut *tx)
        .await
        .map_err(|error| {
            if is_unique_violation(&error) {
                StoreError::CallExists
            } else {
                classify(error)
            }
        })?;
        sqlx::query(
            "INSERT INTO usage_daily (tenant_id, day, calls) VALUES ($1, $2, 1) \
             ON CONFLICT (tenant_id, day) DO UPDATE SET calls = usage_daily.calls + 1",
        )
        .bind(call.tenant_id.as_str())
        .bind(day_of(call.started_at_ms))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        webhooks::enqueue(
            &mut tx,
            webhooks::About::call(call),
            EventType::CallStarted,
            webhook::call_started(call),
            call.started_at_ms,
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn get_call(&self, tenant: &str, id: &str) -> Result<Option<Call>, StoreError> {
        let pool = self.ready()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
        row.as_ref().map(call_from_row).transpose()
    }

    async fn list_calls(
        &self,
        tenant: &str,
        query: &CallListQuery,
    ) -> Result<Vec<Call>, StoreError> {
        let pool = self.ready()?;
        let (sql, binds) = list_calls_sql(self.backend, tenant, query);
        let mut statement = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            statement = match bind {
                Bind::Text(text) => statement.bind(text),
                Bind::Int(number) => statement.bind(number),
            };
        }
        let rows = statement.fetch_all(pool).await.map_err(classify)?;
        rows.iter().map(call_from_row).collect()
    }

    #[tracing::instrument(name = "db.write", skip_all, fields(db.operation = "end_call"))]
    async fn end_call(
        &self,
        tenant: &str,
        id: &str,
        reason: &str,
        handoff: Option<&serde_json::Value>,
        now_ms: u64,
    ) -> Result<EndOutcome, StoreError> {
        let pool = self.ready()?;
        let mut tx = pool.begin().await.map_err(classify)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE calls SET status = 'ended', ended_at_ms = $3, end_reason = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'active' RETURNING {CALL_COLUMNS}"
        )))
        .bind(tenant)
        .bind(id)
        .bind(int(now_ms))
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        if let Some(row) = row {
            let call = call_from_row(&row)?;
            let turns = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {TURN_COLUMNS} FROM turns WHERE tenant_id = $1 AND call_id = $2 \
                 ORDER BY seq"
            )))
            .bind(tenant)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?
            .iter()
            .map(turn_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            webhooks::enqueue_end(&mut tx, &call, &turns, handoff).await?;
            tx.commit().await.map_err(classify)?;
            return Ok(EndOutcome::Ended(call));
        }
        drop(tx);
        Ok(match self.get_call(tenant, id).await? {
            Some(call) => EndOutcome::AlreadyEnded(call),
            None => EndOutcome::NotFound,
        })
    }

    #[tracing::instrument(name = "db.write", skip_all, fields(db.operation = "record_answer"))]
    async fn record_answer(
        &self,
        tenant: &str,
        id: &str,
        answered_by: AnsweredBy,
    ) -> Result<AnswerOutcome, StoreError> {
        let pool = self.ready()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE calls SET answered_by = COALESCE(answered_by, $3) \
             WHERE tenant_id = $1 AND id = $2 AND status = 'active' RETURNING {CALL_COLUMNS}"
        )))
        .bind(tenant)
        .bind(id)
        .bind(answered_by.as_str())
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
        if let Some(row) = row {
            return Ok(AnswerOutcome::Recorded(call_from_row(&row)?));
        }
        Ok(match self.get_call(tenant, id).await? {
            Some(call) => AnswerOutcome::Ended(call),
            None => AnswerOutcome::NotFound,
        })
    }

    #[tracing::instrument(name = "db.write", skip_all, fields(db.operation = "record_voicemail"))]
    async fn record_voicemail(
        &self,
        tenant: &str,
        id: &str,
        message: &str,
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        let pool = self.ready()?;
        let done = sqlx::query(
            "UPDATE calls SET voicemail_message = $3, voicemail_left_at_ms = $4 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(message)
        .bind(int(at_ms))
        .execute(pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_turns(&self, tenant: &str, call_id: &str) -> Result<Vec<Turn>, StoreError> {
        let pool = self.ready()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TURN_COLUMNS} FROM turns WHERE tenant_id = $1 AND call_id = $2 ORDER BY seq"
        )))
        .bind(tenant)
        .bind(call_id)
        .fetch_all(pool)
        .await
        .map_err(classify)?;
        rows.iter().map(turn_from_row).collect()
    }

    #[tracing::instrument(name = "db.write", skip_all, fields(db.operation = "append_turns"))]
    async fn append_turns(
        &self,
        tenant: &str,
        call_id: &str,
        turns: &[NewTurn],
    ) -> Result<Vec<u32>, StoreError> {
        if turns.is_empty() {
            return Ok(Vec::new());
        }
        let pool = self.ready()?;
        let count = i64::try_from(turns.len()).unwrap_or(i64::MAX);
        let mut tx = pool.begin().await.map_err(classify)?;
        // Reserving the seqs and checking the call is active are one atomic statement.
        let reserved = sqlx::query(
            "UPDATE calls SET turn_count = turn_count + $3 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'active' \
             RETURNING turn_count, agent_id",
        )
        .bind(tenant)
        .bind(call_id)
        .bind(count)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let Some(row) = reserved else {
            drop(tx);
            return Err(match self.get_call(tenant, call_id).await? {
                Some(_) => StoreError::CallEnded,
                None => StoreError::CallNotFound,
            });
        };
        let last: i64 = row.try_get("turn_count").map_err(corrupt("call"))?;
        let agent_id: String = row.try_get("agent_id").map_err(corrupt("call"))?;
        let first = last - count + 1;
        let mut seqs = Vec::with_capacity(turns.len());
        for (offset, turn) in (0_i64..).zip(turns) {
            let seq = first + offset;
            insert_turn(&mut tx, tenant, call_id, seq, turn, None).await?;
            seqs.push(small(seq));
        }
        let stored: Vec<Turn> = turns
            .iter()
            .zip(&seqs)
            .map(|(turn, seq)| turn.stored(*seq))
            .collect();
        let about = webhooks::About {
            tenant,
            call_id,
            agent_id: &agent_id,
        };
        webhooks::enqueue_replies(&mut tx, about, &stored).await?;
        tx.commit().await.map_err(classify)?;
        Ok(seqs)
    }

    #[tracing::instrument(name = "db.write", skip_all, fields(db.operation = "append_journaled"))]
    async fn append_journaled(
        &self,
        tenant: &str,
        call_id: &str,
        key: &str,
        turn: &NewTurn,
    ) -> Result<u32, StoreError> {
        let pool = self.ready()?;
        let mut tx = pool.begin().await.map_err(classify)?;
        // The write comes first: it takes the write lock at once (waiting for it if need be).
        // Reading first would make SQLite fail the transaction outright (SQLITE_BUSY, no retry)
        // whenever another write committed between the read and this one; on PostgreSQL it
        // locks the call's row, so the call's turns are numbered one at a time either way.
        // Said while the call lived: stored even if the call has ended since.
        let reserved = sqlx::query(
            "UPDATE calls SET turn_count = turn_count + 1 \
             WHERE tenant_id = $1 AND id = $2 RETURNING turn_count, agent_id",
        )
        .bind(tenant)
        .bind(call_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let Some(row) = reserved else {
            return Err(StoreError::CallNotFound);
        };
        // Written before (its answer was lost): the same turn, nothing new (the transaction
        // rolls back as it is dropped, the count with it).
        let written = sqlx::query(
            "SELECT seq FROM turns WHERE tenant_id = $1 AND call_id = $2 AND journal_key = $3",
        )
        .bind(tenant)
        .bind(call_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        if let Some(row) = written {
            let seq: i64 = row.try_get(0).map_err(corrupt("turn"))?;
            return Ok(small(seq));
        }
        let seq: i64 = row.try_get("turn_count").map_err(corrupt("call"))?;
        let agent_id: String = row.try_get("agent_id").map_err(corrupt("call"))?;
        insert_turn(&mut tx, tenant, call_id, seq, turn, Some(key)).await?;
        // A reply written late is announced like any other (`turn.completed`).
        let about = webhooks::About {
            tenant,
            call_id,
            agent_id: &agent_id,
        };
        webhooks::enqueue_replies(&mut tx, about, &[turn.stored(small(seq))]).await?;
        tx.commit().await.map_err(classify)?;
        Ok(small(seq))
    }

    #[tracing::instrument(name = "db.write", skip_all, fields(db.operation = "record_caller"))]
    async fn record_caller(
        &self,
        tenant: &str,
        call_id: &str,
        caller: &CallerDetails,
    ) -> Result<bool, StoreError> {
        let pool = self.ready()?;
        // A reconnect replays `setup`: the same details are written again, harmlessly; a
        // detail the carrier leaves out this time does not erase one it sent before.
        let updated = sqlx::query(
            "UPDATE calls SET caller_name = COALESCE($3, caller_name), \
             forwarded_from = COALESCE($4, forwarded_from), call_type = COALESCE($5, call_type) \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(call_id)
        .bind(caller.caller_name.as_deref())
        .bind(caller.forwarded_from.as_deref())
        .bind(caller.call_type.as_deref())
        .execute(pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(updated > 0)
    }

    #[tracing::instrument(name = "db.write", skip_all, fields(db.operation = "mark_interrupted"))]
    async fn mark_interrupted(
        &self,
        tenant: &str,
        call_id: &str,
        seq: u32,
        heard: &str,
    ) -> Result<bool, StoreError> {
        let pool = self.ready()?;
        let updated = sqlx::query(
            "UPDATE turns SET text = $4, interrupted = $5 \
             WHERE tenant_id = $1 AND call_id = $2 AND seq = $3 AND role = 'assistant'",
        )
        .bind(tenant)
        .bind(call_id)
        .bind(i64::from(seq))
        .bind(heard)
        .bind(true)
        .execute(pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(updated > 0)
    }

    async fn usage(&self, tenant: &str, range: DayRange) -> Result<Vec<UsageDay>, StoreError> {
        let pool = self.ready()?;
        let rows = sqlx::query(
            "SELECT day, calls, turns, input_tokens, output_tokens, tool_calls FROM usage_daily \
             WHERE tenant_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(tenant)
        .bind(range.first)
        .bind(range.last)
        .fetch_all(pool)
        .await
        .map_err(classify)?;
        // Minutes are read from the calls themselves (their start and end are stored; the
        // `calls_by_start` index reaches the range): each ended call's length rounded up to a
        // whole minute, on the day it started. PostgreSQL's SUM of a BIGINT is NUMERIC, hence
        // the cast.
        let minute_rows = sqlx::query(
            "SELECT started_at_ms / 86400000 AS day, CAST(SUM(CASE \
             WHEN ended_at_ms > started_at_ms THEN (ended_at_ms - started_at_ms + 59999) / 60000 \
             ELSE 0 END) AS BIGINT) AS minutes \
             FROM calls WHERE tenant_id = $1 AND started_at_ms >= $2 AND started_at_ms < $3 \
             AND ended_at_ms IS NOT NULL GROUP BY started_at_ms / 86400000",
        )
        .bind(tenant)
        .bind(range.first.saturating_mul(MS_PER_DAY))
        .bind(range.last.saturating_add(1).saturating_mul(MS_PER_DAY))
        .fetch_all(pool)
        .await
        .map_err(classify)?;
        let mut minutes = std::collections::HashMap::new();
        for row in &minute_rows {
            let day: i64 = row.try_get("day").map_err(corrupt("usage"))?;
            let sum: i64 = row.try_get("minutes").map_err(corrupt("usage"))?;
            minutes.insert(day, unsigned(sum));
        }
        rows.iter()
            .map(|row| {
                let number = |name: &str| -> Result<u64, StoreError> {
                    Ok(unsigned(
                        row.try_get::<i64, _>(name).map_err(corrupt("usage"))?,
                    ))
                };
                let day = row.try_get::<i64, _>("day").map_err(corrupt("usage"))?;
                Ok(UsageDay {
                    day: shared::usage::format_day(day),
                    calls: number("calls")?,
                    turns: number("turns")?,
                    input_tokens: number("input_tokens")?,
                    output_tokens: number("output_tokens")?,
                    tool_calls: number("tool_calls")?,
                    // Every call is counted in `usage_daily` on the day it started, so a day
                    // with minutes always has its row.
                    minutes: minutes.get(&day).copied().unwrap_or(0),
                })
            })
            .collect()
    }

    async fn signing_secret(&self, tenant: &str) -> Result<Option<SigningSecret>, StoreError> {
        let pool = self.ready()?;
        self.read_secret(pool, tenant).await
    }

    async fn create_signing_secret(
        &self,
        tenant: &str,
        secret: &str,
        now_ms: u64,
    ) -> Result<(SigningSecret, bool), StoreError> {
        let pool = self.ready()?;
        // Two replicas creating at once: one insert wins, both read the winner.
        let created = sqlx::query(
            "INSERT INTO signing_secrets (tenant_id, secret, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(secret)
        .bind(int(now_ms))
        .execute(pool)
        .await
        .map_err(classify)?
        .rows_affected()
            == 1;
        let stored = self.read_secret(pool, tenant).await?.ok_or_else(|| {
            StoreError::Corrupt("signing secret vanished after its insert".into())
        })?;
        Ok((stored, created))
    }

    async fn rotate_signing_secret(
        &self,
        tenant: &str,
        secret: &str,
        previous_expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<SigningSecret, StoreError> {
        let pool = self.ready()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO signing_secrets (tenant_id, secret, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET previous_secret = signing_secrets.secret, \
             previous_expires_at_ms = $4, secret = excluded.secret, rotated_at_ms = $3 \
             RETURNING {SECRET_COLUMNS}"
        )))
        .bind(tenant)
        .bind(secret)
        .bind(int(now_ms))
        .bind(int(previous_expires_at_ms))
        .fetch_one(pool)
        .await
        .map_err(classify)?;
        secret_from_row(&row)
    }

    async fn create_webhook(
        &self,
        tenant: &str,
        id: &str,
        config: &EndpointConfig,
        now_ms: u64,
    ) -> Result<Endpoint, StoreError> {
        self.webhook_create(tenant, id, config, now_ms).await
    }

    async fn list_webhooks(&self, tenant: &str) -> Result<Vec<Endpoint>, StoreError> {
        self.webhook_list(tenant).await
    }

    async fn get_webhook(&self, tenant: &str, id: &str) -> Result<Option<Endpoint>, StoreError> {
        self.webhook_get(tenant, id).await
    }

    async fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        config: &EndpointConfig,
        enabled: Option<bool>,
        now_ms: u64,
    ) -> Result<Option<Endpoint>, StoreError> {
        self.webhook_update(tenant, id, config, enabled, now_ms)
            .await
    }

    async fn delete_webhook(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_with_children(
            tenant,
            id,
            "webhook_endpoints",
            "webhook_deliveries",
            "endpoint_id",
        )
        .await
    }

    async fn list_deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.webhook_deliveries(tenant, endpoint_id, limit).await
    }

    async fn retry_delivery(
        &self,
        tenant: &str,
        endpoint_id: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<Option<Delivery>, StoreError> {
        self.webhook_retry(tenant, endpoint_id, event_id, now_ms)
            .await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.webhook_claim(owner, now_ms, lease_ms, limit).await
    }

    async fn record_attempt(
        &self,
        claimed: &ClaimedDelivery,
        owner: &str,
        attempt: &Attempt,
    ) -> Result<Recorded, StoreError> {
        self.webhook_record(claimed, owner, attempt).await
    }

    async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        self.webhook_pending().await
    }
}

fn secret_from_row(row: &AnyRow) -> Result<SigningSecret, StoreError> {
    let opt_ms = |name: &str| {
        row.try_get::<Option<i64>, _>(name)
            .map(|v| v.map(unsigned))
            .map_err(corrupt("signing secret"))
    };
    Ok(SigningSecret {
        secret: row.try_get("secret").map_err(corrupt("signing secret"))?,
        previous: row
            .try_get("previous_secret")
            .map_err(corrupt("signing secret"))?,
        previous_expires_at_ms: opt_ms("previous_expires_at_ms")?,
        created_at_ms: unsigned(
            row.try_get::<i64, _>("created_at_ms")
                .map_err(corrupt("signing secret"))?,
        ),
        rotated_at_ms: opt_ms("rotated_at_ms")?,
    })
}

impl SqlStore {
    /// Deletes row `id` of `parent` and, in the same transaction, the rows of `child` whose
    /// `child_key` names it; false when there was no such row. Table and column names are this
    /// file's constants, never input.
    async fn delete_with_children(
        &self,
        tenant: &str,
        id: &str,
        parent: &str,
        child: &str,
        child_key: &str,
    ) -> Result<bool, StoreError> {
        let pool = self.ready()?;
        let mut tx = pool.begin().await.map_err(classify)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {child} WHERE tenant_id = $1 AND {child_key} = $2"
        )))
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {parent} WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
        tx.commit().await.map_err(classify)?;
        Ok(deleted > 0)
    }

    async fn read_secret(
        &self,
        pool: &AnyPool,
        tenant: &str,
    ) -> Result<Option<SigningSecret>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SECRET_COLUMNS} FROM signing_secrets WHERE tenant_id = $1"
        )))
        .bind(tenant)
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
        row.as_ref().map(secret_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use shared::turn::TurnRole;

    use super::CALL_COLUMNS;

    #[test]
    fn a_calls_turn_count_counts_exactly_the_caller_turns() {
        for role in [TurnRole::User, TurnRole::Assistant, TurnRole::Dtmf] {
            let counted = CALL_COLUMNS.contains(&format!("'{}'", role.as_str()));
            assert_eq!(counted, role.is_caller_turn(), "{role:?}");
        }
    }
}
