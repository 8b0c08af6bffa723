//! Test support: an origin on a free port wired to the Bedrock emulator (through the real SDK),
//! SQLite or the test command's PostgreSQL (one schema per test), optionally its Redis (one key
//! prefix per test); a client that signs like the edge; SSE and relay helpers; fakes behind
//! the origin's traits; and a TCP proxy that can take a dependency "down" and bring it back.
//!
//! PostgreSQL and Redis come from `DATABASE_URL` and `REDIS_URL`, which `make test` exports
//! after starting both. Run without them, the tests that need them fail and say so: a silent
//! skip would report green for code that was never run against PostgreSQL.

#![allow(dead_code)]

/// Runs a test once on SQLite and once on PostgreSQL: `on_both_databases!(a, b)` expects
/// `async fn a(db: Db)` beside it.
#[allow(unused_macros)] // Not every test crate runs on both databases.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Db::Sqlite).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Db::Postgres).await;
            }
        }
    )*};
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bedrock_emulator::{Emulator, ModelScript};
use futures_util::{SinkExt, StreamExt};
use origin::config::Config;
use origin::fanout::Fanout;
use origin::llm::bedrock::BedrockClient;
use origin::llm::{LlmClient, LlmError, LlmEvent, LlmReadiness, LlmRequest, LlmStream};
use origin::metrics::Metrics;
use origin::store::sql::SqlStore;
use origin::store::{
    AnswerOutcome, Attempt, ClaimedDelivery, EndOutcome, NewTurn, Recorded, SigningSecret, Store,
    StoreError,
};
use origin::{AppState, Clock};
use serde_json::{Value, json};
use shared::agent::{Agent, AgentSpec};
use shared::call::Call;
use shared::call::CallerDetails;
use shared::call_list::CallListQuery;
use shared::carrier::AnsweredBy;
use shared::model::ModelFailure;
use shared::principal::{AuthMethod, Principal};
use shared::signing::{BodyHash, SignedRequest, sign};
use shared::turn::{Turn, Usage};
use shared::usage::{DayRange, UsageDay};
use shared::webhook::{Delivery, Endpoint, EndpointConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite;

/// The signing secret of every test origin.
pub const SECRET: &str = "test-edge-signing-secret-0123456789abcdef";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh schema in the test command's PostgreSQL.
    Postgres,
}

/// A unique, lowercase name for this test's schema or key prefix.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..8)
            .unwrap_or("x")
    )
}

/// `DATABASE_URL` of the test command's PostgreSQL; fails the test clearly without it.
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
        .expect(
            "DATABASE_URL must point at a PostgreSQL server for this test: run `make test` \
             (tests/stack/test.sh starts one), or export DATABASE_URL=postgres://… yourself",
        )
}

/// `REDIS_URL` of the test command's Redis; fails the test clearly without it.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|url| url.starts_with("redis"))
        .expect(
            "REDIS_URL must point at a Redis server for this test: run `make test` \
         (tests/stack/test.sh starts one), or export REDIS_URL=redis://… yourself",
        )
}

/// Replaces the `host:port` of a URL (for routing it through a [`Proxy`]).
pub fn with_authority(url: &str, authority: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL with a scheme");
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((userinfo, hostpart)) => (format!("{userinfo}@"), hostpart),
        None => (String::new(), rest),
    };
    let tail = hostpart.find(['/', '?']).map_or("", |i| &hostpart[i..]);
    format!("{scheme}://{userinfo}{authority}{tail}")
}

/// The `host:port` of a URL.
pub fn authority_of(url: &str) -> String {
    let rest = url.split_once("://").expect("scheme").1;
    let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = hostpart.find(['/', '?']).unwrap_or(hostpart.len());
    hostpart[..end].to_owned()
}

/// How to start a test origin.
#[derive(Clone)]
pub struct Options {
    /// The database.
    pub db: Db,
    /// A PostgreSQL schema / SQLite file to reuse (a second replica of the same deployment).
    pub shared_db: Option<String>,
    /// The database URL to use instead of the test command's (e.g. through a proxy).
    pub database_url: Option<String>,
    /// Use Redis (the test command's, or `redis_url`).
    pub redis: bool,
    /// Redis URL override (e.g. through a proxy).
    pub redis_url: Option<String>,
    /// Redis key prefix to share with another origin.
    pub redis_prefix: Option<String>,
    /// An emulator to share with another origin.
    pub emulator: Option<(Emulator, String)>,
    /// More variables.
    pub env: Vec<(String, String)>,
    /// Another clock.
    pub clock: Option<Clock>,
    /// Another model client (a fake).
    pub llm: Option<Arc<dyn LlmClient>>,
    /// Wrap the store (e.g. to make it fail on demand).
    pub flaky: Option<Arc<AtomicBool>>,
    /// Resolve tool hosts with this instead of the system's resolver.
    pub resolver: Option<Arc<dyn origin::outbound::Resolve>>,
}

impl Options {
    /// A database, no Redis.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            shared_db: None,
            database_url: None,
            redis: false,
            redis_url: None,
            redis_prefix: None,
            emulator: None,
            env: Vec::new(),
            clock: None,
            llm: None,
            flaky: None,
            resolver: None,
        }
    }

    /// Sets a variable.
    pub fn var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }
}

/// A running test origin.
pub struct Origin {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The emulator behind it.
    pub emulator: Emulator,
    /// The emulator's URL.
    pub emulator_url: String,
    /// The origin's state (store, metrics, …).
    pub state: AppState,
    /// The schema or SQLite path in use (to start a second replica on it).
    pub db_name: String,
    /// The Redis key prefix in use.
    pub redis_prefix: String,
    /// A SQLite file this origin created (removed on drop).
    owned_file: Option<std::path::PathBuf>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Origin {
    /// Starts an origin as described.
    pub async fn start(options: Options) -> Self {
        let (emulator, emulator_url) = match options.emulator.clone() {
            Some(shared) => shared,
            None => {
                let emulator = Emulator::new(ModelScript {
                    ttft_ms: 5,
                    inter_token_ms: 1,
                    ..ModelScript::default()
                });
                let url = bedrock_emulator::spawn(emulator.clone())
                    .await
                    .expect("emulator starts");
                (emulator, url)
            }
        };
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("EDGE_SIGNING_SECRET".into(), SECRET.into());
        env.insert("BEDROCK_ENDPOINT_URL".into(), emulator_url.clone());
        env.insert("BEDROCK_DEFAULT_MODELS".into(), "default-model".into());
        env.insert("BEDROCK_FIRST_TOKEN_TIMEOUT_MS".into(), "1000".into());
        env.insert("BEDROCK_STALL_TIMEOUT_MS".into(), "1000".into());
        env.insert("SHUTDOWN_GRACE_SECS".into(), "2".into());
        env.insert("LISTEN_ADDR".into(), "127.0.0.1:0".into());
        env.insert("AWS_REGION".into(), "us-east-1".into());
        let db_name = match (options.db, &options.shared_db) {
            (_, Some(name)) => name.clone(),
            (Db::Sqlite, None) => std::env::temp_dir()
                .join(format!("{}.sqlite3", unique("origin_test")))
                .to_string_lossy()
                .into_owned(),
            (Db::Postgres, None) => unique("t"),
        };
        match options.db {
            Db::Sqlite => {
                env.insert(
                    "DATABASE_URL".into(),
                    format!("sqlite://{db_name}?mode=rwc"),
                );
            }
            Db::Postgres => {
                let url = options.database_url.clone().unwrap_or_else(postgres_url);
                env.insert("DATABASE_URL".into(), url);
                env.insert("DATABASE_SCHEMA".into(), db_name.clone());
                env.insert("DATABASE_ACQUIRE_TIMEOUT_MS".into(), "500".into());
                env.insert("DATABASE_POOL_SIZE".into(), "8".into());
            }
        }
        let redis_prefix = options
            .redis_prefix
            .clone()
            .unwrap_or_else(|| format!("{}:", unique("test")));
        if options.redis {
            env.insert(
                "REDIS_URL".into(),
                options.redis_url.clone().unwrap_or_else(redis_url),
            );
            env.insert("REDIS_KEY_PREFIX".into(), redis_prefix.clone());
        }
        for (name, value) in &options.env {
            env.insert(name.clone(), value.clone());
        }
        let config = Config::from_lookup(|key| env.get(key).cloned()).expect("valid test config");

        let metrics = Arc::new(Metrics::new());
        let sql: Arc<dyn Store> =
            Arc::new(SqlStore::open(&config.database).expect("database URL is well-formed"));
        let store: Arc<dyn Store> = match &options.flaky {
            Some(down) => Arc::new(FlakyStore {
                inner: sql,
                down: Arc::clone(down),
            }),
            None => sql,
        };
        let fanout = match &config.redis {
            Some(redis) => Fanout::with_redis(redis, Arc::clone(&metrics), Duration::from_secs(2))
                .await
                .expect("Redis config"),
            None => Fanout::local(Arc::clone(&metrics)),
        };
        let llm: Arc<dyn LlmClient> = match &options.llm {
            Some(llm) => Arc::clone(llm),
            None => Arc::new(BedrockClient::with_credentials(
                &config.bedrock,
                aws_credential_types::Credentials::new("AKIDTEST", "secret", None, None, "tests"),
            )),
        };
        let mut state = AppState::new(config, store, llm, fanout, metrics);
        if let Some(clock) = options.clock.clone() {
            state = state.with_clock(clock);
        }
        if let Some(resolver) = options.resolver.clone() {
            state = state.with_resolver(resolver);
        }
        // Wait for the migrations the store runs in the background.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while state.store.ping().await.is_err() {
            if options
                .flaky
                .as_ref()
                .is_some_and(|d| d.load(Ordering::SeqCst))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the test database did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, on_stop) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(origin::serve(listener, state.clone(), async move {
            let _ = on_stop.await;
        }));
        let owned_file = (options.db == Db::Sqlite && options.shared_db.is_none())
            .then(|| std::path::PathBuf::from(&db_name));
        Self {
            base: format!("http://{addr}"),
            emulator,
            emulator_url,
            state,
            db_name,
            redis_prefix,
            owned_file,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client signing as `tenant`.
    pub fn client(&self, tenant: &str) -> Client {
        Client::new(&self.base, tenant)
    }

    /// SIGTERM, in effect; waits for `serve` to return.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("serve did not panic"),
            None => Ok(()),
        }
    }

    /// Waits (at most 5 s) until `/ready` answers 200: the background database probe has found
    /// the database up.
    pub async fn until_ready(&self) {
        let client = self.client("ops");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if client.send("GET", "/ready", None).await.status() == 200 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the origin did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sets a model's behaviour in the emulator.
    pub fn script(&self, model: &str, script: ModelScript) {
        self.emulator.set_script(model, script);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(file) = &self.owned_file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
    }
}

/// A principal of `tenant`.
pub fn principal(tenant: &str) -> Principal {
    Principal {
        tenant_id: tenant.to_owned(),
        subject: "tester".into(),
        scopes: vec!["calls:write".into(), "agents:admin".into()],
        plan: "pro".into(),
        method: AuthMethod::ApiKey,
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A fresh nonce, as the edge makes one per request.
pub fn fresh_nonce() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The edge headers for a request, with a fresh nonce.
pub fn edge_headers(
    method: &str,
    path: &str,
    body: BodyHash,
    principal: Option<&Principal>,
    timestamp: u64,
) -> Vec<(&'static str, String)> {
    edge_headers_with_nonce(method, path, body, principal, timestamp, &fresh_nonce())
}

/// The edge headers for a request with the given nonce (to replay one).
pub fn edge_headers_with_nonce(
    method: &str,
    path: &str,
    body: BodyHash,
    principal: Option<&Principal>,
    timestamp: u64,
    nonce: &str,
) -> Vec<(&'static str, String)> {
    let principal_header = principal.map(Principal::to_header).unwrap_or_default();
    let signature = sign(
        SECRET.as_bytes(),
        &SignedRequest {
            method,
            path_and_query: path,
            timestamp,
            nonce,
            body,
            principal: &principal_header,
        },
    )
    .expect("strong secret");
    let mut headers = vec![
        (shared::headers::EDGE_TIMESTAMP, timestamp.to_string()),
        (shared::headers::EDGE_NONCE, nonce.to_owned()),
        (shared::headers::EDGE_SIGNATURE, signature),
    ];
    if principal.is_some() {
        headers.push((shared::headers::EDGE_PRINCIPAL, principal_header));
    }
    headers
}

/// A client that signs like the edge.
#[derive(Clone)]
pub struct Client {
    /// Origin base URL.
    pub base: String,
    /// Who it signs as.
    pub principal: Principal,
    http: reqwest::Client,
}

/// A parsed SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `event:`.
    pub event: String,
    /// `data:` as JSON.
    pub data: Value,
}

impl Client {
    /// A client for `base` signing as `tenant`.
    pub fn new(base: &str, tenant: &str) -> Self {
        Self {
            base: base.to_owned(),
            principal: principal(tenant),
            http: reqwest::Client::new(),
        }
    }

    /// A signed request with a JSON (or raw) body.
    pub async fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> reqwest::Response {
        let bytes = body.unwrap_or(b"").to_vec();
        let mut request = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{path}", self.base),
        );
        for (name, value) in edge_headers(
            method,
            path,
            BodyHash::of(&bytes),
            Some(&self.principal),
            now_secs(),
        ) {
            request = request.header(name, value);
        }
        if body.is_some() {
            request = request
                .header("content-type", "application/json")
                .body(bytes);
        }
        request.send().await.expect("origin answers")
    }

    /// A signed JSON request; the status and the JSON answer (`null` when empty).
    pub async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
        let response = self.send(method, path, bytes.as_deref()).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        (status, value)
    }

    /// Creates an agent answering with `model` (and `fallbacks`).
    pub async fn agent(&self, id: &str, model: &str, fallbacks: &[&str]) -> Value {
        let (status, agent) = self
            .json(
                "PUT",
                &format!("/v1/agents/{id}"),
                Some(json!({
                    "name": format!("Agent {id}"),
                    "system_prompt": "You are a helpful voice agent.",
                    "model": model,
                    "fallback_models": fallbacks,
                })),
            )
            .await;
        assert!(status == 201 || status == 200, "{status} {agent}");
        agent
    }

    /// Creates a call on `agent`.
    pub async fn call(&self, agent: &str) -> String {
        let (status, call) = self
            .json("POST", "/v1/calls", Some(json!({ "agent_id": agent })))
            .await;
        assert_eq!(status, 201, "{call}");
        call["id"].as_str().expect("id").to_owned()
    }

    /// A turn over SSE: the status and every event.
    pub async fn turn(&self, call: &str, text: &str) -> (u16, Vec<SseEvent>) {
        let body = serde_json::to_vec(&json!({ "text": text })).expect("json");
        let response = self
            .send("POST", &format!("/v1/calls/{call}/turns"), Some(&body))
            .await;
        let status = response.status().as_u16();
        if status != 200 {
            return (
                status,
                vec![SseEvent {
                    event: "status".into(),
                    data: response.json().await.unwrap_or(Value::Null),
                }],
            );
        }
        let text = tokio::time::timeout(Duration::from_secs(20), response.text())
            .await
            .expect("the SSE stream ends")
            .expect("body");
        (status, parse_sse(&text))
    }

    /// Opens the call's relay WebSocket.
    pub async fn relay(&self, call: &str) -> Relay {
        let path = format!("/v1/calls/{call}/relay");
        Relay::connect(&self.base, &path, &self.principal).await
    }
}

/// Parses a complete SSE body.
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut event = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if !data.is_empty() {
            events.push(SseEvent {
                event,
                data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
            });
        }
    }
    events
}

/// A relay WebSocket client.
pub struct Relay {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

impl Relay {
    /// Connects with the edge's signed headers.
    pub async fn connect(base: &str, path: &str, principal: &Principal) -> Self {
        Self::try_connect(base, path, principal)
            .await
            .unwrap_or_else(|error| panic!("relay connect: {error}"))
    }

    /// Connects, or the handshake's error.
    pub async fn try_connect(
        base: &str,
        path: &str,
        principal: &Principal,
    ) -> Result<Self, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        let url = format!("{}{path}", base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().expect("request");
        for (name, value) in
            edge_headers("GET", path, BodyHash::Stream, Some(principal), now_secs())
        {
            request
                .headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { socket })
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(tungstenite::Message::Text(message.to_string().into()))
            .await
            .expect("send");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(tungstenite::Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next JSON message (panics after 10 s or on close).
    pub async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }

    /// The next JSON message within `wait`; `None` on timeout or close.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(wait, self.socket.next())
                .await
                .ok()??;
            match message.ok()? {
                tungstenite::Message::Text(text) => {
                    return Some(serde_json::from_str(&text).expect("JSON message"));
                }
                tungstenite::Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The close frame's code, waiting up to `wait`.
    pub async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        loop {
            let message = tokio::time::timeout(wait, self.socket.next())
                .await
                .ok()??;
            match message {
                Ok(tungstenite::Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Sends setup for a call.
    pub async fn setup(&mut self, call_sid: &str, parameters: Value) {
        self.send(json!({
            "type": "setup",
            "sessionId": "VX1",
            "callSid": call_sid,
            "from": "+14155550100",
            "to": "+14155550199",
            "direction": "inbound",
            "customParameters": parameters,
        }))
        .await;
    }

    /// Sends a final prompt.
    pub async fn prompt(&mut self, text: &str) {
        self.send(json!({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": true}))
            .await;
    }

    /// Reads `text` messages until `last: true`; returns the joined tokens.
    pub async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let message = self.next().await;
            assert_eq!(message["type"], "text", "{message}");
            reply.push_str(message["token"].as_str().expect("token"));
            if message["last"] == true {
                return reply;
            }
        }
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// A model that answers `reply` quickly, `inter_token_ms` between deltas.
pub fn slow(reply: &str, inter_token_ms: u64) -> ModelScript {
    ModelScript {
        ttft_ms: 5,
        inter_token_ms,
        reply: Some(reply.to_owned()),
        ..ModelScript::default()
    }
}

/// A model that fails with `kind` before its first token, every time.
pub fn fault(kind: bedrock_emulator::FaultKind) -> ModelScript {
    ModelScript {
        fault: Some(bedrock_emulator::Fault {
            kind,
            after_tokens: 0,
            exception: "modelStreamErrorException".into(),
            times: None,
        }),
        ..ModelScript::default()
    }
}

/// Serves `app` on a free loopback port for the rest of the test (a tenant's tool server or
/// webhook receiver); its `http://127.0.0.1:PORT`.
pub async fn serve_locally(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A call's stored turns, as `GET /v1/calls/{call}/turns` answers them.
pub async fn turns_of(client: &Client, call: &str) -> Vec<Value> {
    let (status, list) = client
        .json("GET", &format!("/v1/calls/{call}/turns"), None)
        .await;
    assert_eq!(status, 200, "{list}");
    list["turns"].as_array().cloned().unwrap_or_default()
}

/// Waits until `condition` holds (polling every 10 ms, at most `wait`).
pub async fn eventually<F, Fut>(wait: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy whose upstream can be taken away ("down") and brought back.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Forwards a free loopback port to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_owned();
        let (task_down, task_connections) = (Arc::clone(&down), Arc::clone(&connections));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if task_down.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                task_connections.lock().expect("lock").push(handle);
            }
        });
        Self {
            addr,
            down,
            connections,
            task,
        }
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    /// Forwards again.
    pub fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.down();
    }
}

/// A store that fails with `Unavailable` while `down` is set, else passes through.
pub struct FlakyStore {
    /// The real store.
    pub inner: Arc<dyn Store>,
    /// Whether to fail.
    pub down: Arc<AtomicBool>,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("test: database down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
    async fn put_agent(
        &self,
        tenant: &str,
        id: &str,
        spec: &AgentSpec,
        now_ms: u64,
    ) -> Result<(Agent, bool), StoreError> {
        self.check()?;
        self.inner.put_agent(tenant, id, spec, now_ms).await
    }
    async fn get_agent(&self, tenant: &str, id: &str) -> Result<Option<Agent>, StoreError> {
        self.check()?;
        self.inner.get_agent(tenant, id).await
    }
    async fn delete_agent(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete_agent(tenant, id).await
    }
    async fn list_agents(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Agent>, StoreError> {
        self.check()?;
        self.inner.list_agents(tenant, after, limit).await
    }
    async fn agent_for_number(
        &self,
        tenant: &str,
        number: &str,
    ) -> Result<Option<Agent>, StoreError> {
        self.check()?;
        self.inner.agent_for_number(tenant, number).await
    }
    async fn create_call(&self, call: &Call) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_call(call).await
    }
    async fn get_call(&self, tenant: &str, id: &str) -> Result<Option<Call>, StoreError> {
        self.check()?;
        self.inner.get_call(tenant, id).await
    }
    async fn list_calls(
        &self,
        tenant: &str,
        query: &CallListQuery,
    ) -> Result<Vec<Call>, StoreError> {
        self.check()?;
        self.inner.list_calls(tenant, query).await
    }
    async fn end_call(
        &self,
        tenant: &str,
        id: &str,
        reason: &str,
        handoff: Option<&Value>,
        now_ms: u64,
    ) -> Result<EndOutcome, StoreError> {
        self.check()?;
        self.inner
            .end_call(tenant, id, reason, handoff, now_ms)
            .await
    }
    async fn record_answer(
        &self,
        tenant: &str,
        id: &str,
        answered_by: AnsweredBy,
    ) -> Result<AnswerOutcome, StoreError> {
        self.check()?;
        self.inner.record_answer(tenant, id, answered_by).await
    }
    async fn record_voicemail(
        &self,
        tenant: &str,
        id: &str,
        message: &str,
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner
            .record_voicemail(tenant, id, message, at_ms)
            .await
    }
    async fn list_turns(&self, tenant: &str, call_id: &str) -> Result<Vec<Turn>, StoreError> {
        self.check()?;
        self.inner.list_turns(tenant, call_id).await
    }
    async fn append_turns(
        &self,
        tenant: &str,
        call_id: &str,
        turns: &[NewTurn],
    ) -> Result<Vec<u32>, StoreError> {
        self.check()?;
        self.inner.append_turns(tenant, call_id, turns).await
    }
    async fn record_caller(
        &self,
        tenant: &str,
        call_id: &str,
        caller: &CallerDetails,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.record_caller(tenant, call_id, caller).await
    }
    async fn mark_interrupted(
        &self,
        tenant: &str,
        call_id: &str,
        seq: u32,
        heard: &str,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner
            .mark_interrupted(tenant, call_id, seq, heard)
            .await
    }
    async fn usage(&self, tenant: &str, range: DayRange) -> Result<Vec<UsageDay>, StoreError> {
        self.check()?;
        self.inner.usage(tenant, range).await
    }
    async fn signing_secret(&self, tenant: &str) -> Result<Option<SigningSecret>, StoreError> {
        self.check()?;
        self.inner.signing_secret(tenant).await
    }
    async fn create_signing_secret(
        &self,
        tenant: &str,
        secret: &str,
        now_ms: u64,
    ) -> Result<(SigningSecret, bool), StoreError> {
        self.check()?;
        self.inner
            .create_signing_secret(tenant, secret, now_ms)
            .await
    }
    async fn rotate_signing_secret(
        &self,
        tenant: &str,
        secret: &str,
        previous_expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<SigningSecret, StoreError> {
        self.check()?;
        self.inner
            .rotate_signing_secret(tenant, secret, previous_expires_at_ms, now_ms)
            .await
    }
    async fn create_webhook(
        &self,
        tenant: &str,
        id: &str,
        config: &EndpointConfig,
        now_ms: u64,
    ) -> Result<Endpoint, StoreError> {
        self.check()?;
        self.inner.create_webhook(tenant, id, config, now_ms).await
    }
    async fn list_webhooks(&self, tenant: &str) -> Result<Vec<Endpoint>, StoreError> {
        self.check()?;
        self.inner.list_webhooks(tenant).await
    }
    async fn get_webhook(&self, tenant: &str, id: &str) -> Result<Option<Endpoint>, StoreError> {
        self.check()?;
        self.inner.get_webhook(tenant, id).await
    }
    async fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        config: &EndpointConfig,
        enabled: Option<bool>,
        now_ms: u64,
    ) -> Result<Option<Endpoint>, StoreError> {
        self.check()?;
        self.inner
            .update_webhook(tenant, id, config, enabled, now_ms)
            .await
    }
    async fn delete_webhook(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete_webhook(tenant, id).await
    }
    async fn list_deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.check()?;
        self.inner.list_deliveries(tenant, endpoint_id, limit).await
    }
    async fn retry_delivery(
        &self,
        tenant: &str,
        endpoint_id: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<Option<Delivery>, StoreError> {
        self.check()?;
        self.inner
            .retry_delivery(tenant, endpoint_id, event_id, now_ms)
            .await
    }
    async fn claim_deliveries(
        &self,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.check()?;
        self.inner
            .claim_deliveries(owner, now_ms, lease_ms, limit)
            .await
    }
    async fn record_attempt(
        &self,
        claimed: &ClaimedDelivery,
        owner: &str,
        attempt: &Attempt,
    ) -> Result<Recorded, StoreError> {
        self.check()?;
        self.inner.record_attempt(claimed, owner, attempt).await
    }
    async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.pending_deliveries().await
    }
}

/// What a [`FakeLlm`] model does.
#[derive(Debug, Clone)]
pub enum FakeReply {
    /// Streams these deltas.
    Tokens(Vec<String>),
    /// Fails before the first token.
    FailBefore(ModelFailure),
    /// Streams `n` deltas, then fails.
    FailAfter(Vec<String>, ModelFailure),
}

/// A scripted model, no SDK, no network: for router tests.
#[derive(Default)]
pub struct FakeLlm {
    replies: Mutex<HashMap<String, FakeReply>>,
    /// Requests received, in order.
    pub requests: Mutex<Vec<LlmRequest>>,
}

impl FakeLlm {
    /// Sets a model's reply.
    pub fn reply(&self, model: &str, reply: FakeReply) {
        self.replies
            .lock()
            .expect("lock")
            .insert(model.to_owned(), reply);
    }
}

struct FakeStream {
    events: std::vec::IntoIter<Result<LlmEvent, LlmError>>,
}

#[async_trait]
impl LlmStream for FakeStream {
    async fn next(&mut self) -> Result<Option<LlmEvent>, LlmError> {
        self.events.next().transpose()
    }
}

#[async_trait]
impl LlmClient for FakeLlm {
    async fn converse_stream(&self, request: LlmRequest) -> Result<Box<dyn LlmStream>, LlmError> {
        let reply = self
            .replies
            .lock()
            .expect("lock")
            .get(&request.model)
            .cloned()
            .unwrap_or_else(|| FakeReply::Tokens(vec!["Hello there. ".into(), "Bye.".into()]));
        self.requests.lock().expect("lock").push(request);
        let (tokens, failure) = match reply {
            FakeReply::FailBefore(failure) => return Err(LlmError::new(failure, "fake")),
            FakeReply::Tokens(tokens) => (tokens, None),
            FakeReply::FailAfter(tokens, failure) => (tokens, Some(failure)),
        };
        let count = u32::try_from(tokens.len()).expect("few tokens");
        let mut events: Vec<Result<LlmEvent, LlmError>> =
            tokens.into_iter().map(|t| Ok(LlmEvent::Text(t))).collect();
        match failure {
            Some(failure) => events.push(Err(LlmError::new(failure, "fake mid-stream"))),
            None => events.push(Ok(LlmEvent::Finished {
                stop_reason: "end_turn".into(),
                usage: Some(Usage {
                    input_tokens: 10,
                    output_tokens: count,
                }),
                guardrail_trace: None,
            })),
        }
        Ok(Box::new(FakeStream {
            events: events.into_iter(),
        }))
    }

    async fn readiness(&self) -> LlmReadiness {
        LlmReadiness {
            ok: true,
            detail: "fake".into(),
        }
    }
}

/// An SSE response read as it arrives.
pub struct SseStream {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseStream {
    /// The next event within `wait` (comments and keep-alives skipped).
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_sse(&block).into_iter().next() {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        }
    }

    /// The next event of kind `event` within `wait`, skipping others.
    pub async fn expect(&mut self, event: &str, wait: Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let next = self
                .next_within(left)
                .await
                .unwrap_or_else(|| panic!("no {event} event within {wait:?}"));
            if next.event == event {
                return next;
            }
        }
    }
}

impl Client {
    /// Opens `GET /v1/calls/{call}/events`.
    pub async fn events(&self, call: &str) -> SseStream {
        let response = self
            .send("GET", &format!("/v1/calls/{call}/events"), None)
            .await;
        assert_eq!(response.status(), 200, "events stream opens");
        SseStream {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }
}
