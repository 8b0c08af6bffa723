//! Load generator for `tests/bench/origin.bench.mjs`. Prints one JSON line of results.
//!
//! ```text
//! origin-load direct --emulator URL --model M --conversations N --seconds S --warmup S --think-ms T
//!     N conversations against the emulator through the AWS SDK (the origin's own client
//!     settings): time from sending ConverseStream to the first text delta. The baseline.
//! origin-load relay --origin URL --secret K --tenant T --agent A --conversations N --seconds S --warmup S --think-ms T
//!     N ConversationRelay conversations through the origin: time from sending a final
//!     `prompt` to the first `text` message back.
//! origin-load sse --origin URL --secret K --tenant T --agent A --conversations N --seconds S --warmup S --think-ms T
//!     N API conversations through the origin: each creates its call (`POST /v1/calls`), then
//!     sends turns as `POST /v1/calls/{id}/turns`: time from sending to the first `token` event
//!     of the Server-Sent Events reply (the stream is read to its end before the next turn).
//! origin-load hold --origin URL --secret K --tenant T --agent A --connections N
//!     Opens N relay sockets (each sends `setup`), prints when they are open, holds them until
//!     stdin closes (or a line arrives), then closes them.
//! ```
//!
//! Conversations pause `think-ms` (±50%, like a caller speaking) between turns and grow their
//! history as a real call does; samples during the warm-up are dropped.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Region};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseStreamOutput, Message,
};
use futures_util::{SinkExt, StreamExt};
use shared::principal::{AuthMethod, Principal};
use shared::relay::{AGENT_ID_PARAM_ALIAS, GREETING_BY_CARRIER, GREETING_PARAM};
use shared::signing::{BodyHash, SignedRequest, sign};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut rest = rest.peekable();
        while let Some(flag) = rest.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
            let value = rest
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Self(map))
    }

    fn text(&self, name: &str) -> Result<String, String> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| format!("--{name} is required"))
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name} must be a number")),
        }
    }
}

/// A tiny deterministic generator for think-time jitter (no dependency needed).
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `base` ± 50%.
    fn around(&mut self, base: u64) -> Duration {
        if base == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(base / 2 + self.next() % base.max(1))
    }
}

#[derive(Default)]
struct Samples {
    ttft_ms: Vec<f64>,
    errors: u64,
    turns: u64,
}

impl Samples {
    /// One turn sent at `sent`: its time to first token when it had one and did not fail,
    /// counted when it was sent inside the measured window.
    fn record(
        &mut self,
        window: (Instant, Instant),
        sent: Instant,
        first: Option<Duration>,
        failed: bool,
    ) {
        self.turns += 1;
        match first {
            Some(ttft) if !failed => {
                if sent >= window.0 && sent < window.1 {
                    self.ttft_ms.push(ttft.as_secs_f64() * 1000.0);
                }
            }
            _ => self.errors += 1,
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(
    mode: &str,
    conversations: u64,
    samples: Samples,
    elapsed: Duration,
) -> serde_json::Value {
    let mut sorted = samples.ttft_ms;
    sorted.sort_by(f64::total_cmp);
    serde_json::json!({
        "mode": mode,
        "conversations": conversations,
        "samples": sorted.len(),
        "turns": samples.turns,
        "errors": samples.errors,
        "seconds": elapsed.as_secs_f64(),
        "p50_ms": percentile(&sorted, 50.0),
        "p90_ms": percentile(&sorted, 90.0),
        "p99_ms": percentile(&sorted, 99.0),
        "max_ms": sorted.last().copied().unwrap_or(f64::NAN),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().unwrap_or_default();
    let result = match Args::parse(argv) {
        Ok(args) => match mode.as_str() {
            "direct" => direct(&args).await,
            "relay" => relay(&args).await,
            "sse" => sse(&args).await,
            "hold" => hold(&args).await,
            _ => Err("usage: origin-load direct|relay|sse|hold --flag value …".into()),
        },
        Err(error) => Err(error),
    };
    match result {
        Ok(report) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("origin-load: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn direct(args: &Args) -> Result<serde_json::Value, String> {
    let emulator = args.text("emulator")?;
    let model = args.text("model")?;
    let conversations = args.number("conversations", 1)?;
    let seconds = args.number("seconds", 5)?;
    let warmup = args.number("warmup", 1)?;
    let think = args.number("think-ms", 1000)?;
    // The origin's settings: one attempt, rustls + ring, static test credentials.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_bedrockruntime::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .http_client(http)
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDBENCH",
            "bench",
            None,
            None,
            "bench",
        ))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .endpoint_url(emulator)
        .build();
    let client = Client::from_conf(config);
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(warmup);
    let until = measure_from + Duration::from_secs(seconds);
    let samples = Arc::new(Mutex::new(Samples::default()));
    let mut tasks = Vec::new();
    for index in 0..conversations {
        let client = client.clone();
        let model = model.clone();
        let samples = Arc::clone(&samples);
        tasks.push(tokio::spawn(async move {
            let mut jitter = Jitter(0x9E37_79B9_7F4A_7C15 ^ (index + 1));
            tokio::time::sleep(jitter.around(think)).await;
            let mut history: Vec<Message> = Vec::new();
            let mut turn = 0;
            while Instant::now() < until {
                turn += 1;
                let user = Message::builder()
                    .role(ConversationRole::User)
                    .content(ContentBlock::Text(format!(
                        "Turn {turn} of conversation {index}"
                    )))
                    .build();
                let Ok(user) = user else { return };
                history.push(user);
                let sent = Instant::now();
                let outcome = async {
                    let output = client
                        .converse_stream()
                        .model_id(&model)
                        .set_messages(Some(history.clone()))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut stream = output.stream;
                    let mut ttft = None;
                    let mut reply = String::new();
                    while let Some(event) = stream.recv().await.map_err(|e| e.to_string())? {
                        if let ConverseStreamOutput::ContentBlockDelta(delta) = event
                            && let Some(ContentBlockDelta::Text(text)) = delta.delta
                        {
                            ttft.get_or_insert_with(|| sent.elapsed());
                            reply.push_str(&text);
                        }
                    }
                    Ok::<_, String>((ttft, reply))
                }
                .await;
                let mut samples = samples.lock().await;
                samples.turns += 1;
                match outcome {
                    Ok((Some(ttft), reply)) => {
                        if sent >= measure_from && sent < until {
                            samples.ttft_ms.push(ttft.as_secs_f64() * 1000.0);
                        }
                        drop(samples);
                        if let Ok(assistant) = Message::builder()
                            .role(ConversationRole::Assistant)
                            .content(ContentBlock::Text(reply))
                            .build()
                        {
                            history.push(assistant);
                        }
                    }
                    _ => {
                        samples.errors += 1;
                        drop(samples);
                        history.pop();
                    }
                }
                tokio::time::sleep(jitter.around(think)).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let samples = Arc::try_unwrap(samples)
        .map_err(|_| "samples still shared".to_owned())?
        .into_inner();
    Ok(summary("direct", conversations, samples, started.elapsed()))
}

/// The origin, reached as the edge reaches it (signed headers naming the principal).
struct Relay {
    base: String,
    secret: String,
    principal: Principal,
}

impl Relay {
    fn from(args: &Args) -> Result<Self, String> {
        Ok(Self {
            base: args.text("origin")?,
            secret: args.text("secret")?,
            principal: Principal {
                tenant_id: args.text("tenant")?,
                subject: "origin-load".into(),
                scopes: vec!["calls:write".into()],
                plan: "pro".into(),
                method: AuthMethod::SessionToken,
            },
        })
    }

    /// The edge's signed headers for one request (`body`: its hash, or a WebSocket's marker),
    /// with its request id.
    fn edge_headers(
        &self,
        method: &str,
        path: &str,
        body: BodyHash,
    ) -> Result<[(&'static str, String); 5], String> {
        let principal = self.principal.to_header();
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let nonce = uuid::Uuid::new_v4().to_string();
        let signature = sign(
            self.secret.as_bytes(),
            &SignedRequest {
                method,
                path_and_query: path,
                timestamp,
                nonce: &nonce,
                body,
                principal: &principal,
            },
        )
        .map_err(|e| e.to_string())?;
        Ok([
            (shared::headers::EDGE_TIMESTAMP, timestamp.to_string()),
            (shared::headers::EDGE_NONCE, nonce),
            (shared::headers::EDGE_SIGNATURE, signature),
            (shared::headers::EDGE_PRINCIPAL, principal),
            // The edge names every request it forwards (voice-router's `origin.rs`).
            (
                shared::headers::REQUEST_ID,
                uuid::Uuid::new_v4().to_string(),
            ),
        ])
    }

    /// Connects a call's relay socket with the edge's signed headers.
    async fn connect(&self, call_id: &str) -> Result<Socket, String> {
        let path = format!("/v1/calls/{call_id}/relay");
        let mut request = format!("{}{path}", self.base.replacen("http://", "ws://", 1))
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        for (name, value) in self.edge_headers("GET", &path, BodyHash::Stream)? {
            headers.insert(name, value.parse().map_err(|_| "bad header".to_owned())?);
        }
        // Small buffers: the hold test opens ten thousand of these in one process.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(|e| e.to_string())?;
        Ok(socket)
    }
}

async fn send_json(socket: &mut Socket, value: &serde_json::Value) -> Result<(), String> {
    socket
        .send(WsMessage::Text(value.to_string().into()))
        .await
        .map_err(|e| e.to_string())
}

async fn next_json(socket: &mut Socket) -> Result<serde_json::Value, String> {
    loop {
        match socket.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| e.to_string());
            }
            Some(Ok(WsMessage::Close(_))) | None => return Err("closed".into()),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.to_string()),
        }
    }
}

fn setup(call_id: &str, agent: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "setup", "sessionId": format!("VX{call_id}"), "callSid": call_id,
        "from": "+14155550100", "to": "+14155550199", "direction": "inbound",
        "customParameters": {AGENT_ID_PARAM_ALIAS: agent, GREETING_PARAM: GREETING_BY_CARRIER},
    })
}

async fn relay(args: &Args) -> Result<serde_json::Value, String> {
    let relay = Arc::new(Relay::from(args)?);
    let agent = args.text("agent")?;
    let run = args.text("run")?;
    let conversations = args.number("conversations", 1)?;
    let seconds = args.number("seconds", 5)?;
    let warmup = args.number("warmup", 1)?;
    let think = args.number("think-ms", 1000)?;
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(warmup);
    let until = measure_from + Duration::from_secs(seconds);
    let samples = run_conversations(conversations, |index, samples| {
        let relay = Arc::clone(&relay);
        let (agent, call_id) = (agent.clone(), format!("bench-{run}-{index}"));
        async move {
            let mut jitter = Jitter(0x9E37_79B9_7F4A_7C15 ^ (index + 1));
            {
                let mut socket = relay.connect(&call_id).await?;
                send_json(&mut socket, &setup(&call_id, &agent)).await?;
                tokio::time::sleep(jitter.around(think)).await;
                let mut turn = 0;
                while Instant::now() < until {
                    turn += 1;
                    let prompt = serde_json::json!({
                        "type": "prompt", "voicePrompt": format!("Turn {turn} of conversation {index}"),
                        "lang": "en-US", "last": true,
                    });
                    send_json(&mut socket, &prompt).await?;
                    let sent = Instant::now();
                    let mut first = None;
                    let mut failed = false;
                    loop {
                        let message = next_json(&mut socket).await?;
                        match message["type"].as_str() {
                            Some("text") => {
                                first.get_or_insert_with(|| sent.elapsed());
                                if message["last"] == true {
                                    break;
                                }
                            }
                            Some("error") => failed = true,
                            _ => {}
                        }
                    }
                    samples
                        .lock()
                        .await
                        .record((measure_from, until), sent, first, failed);
                    tokio::time::sleep(jitter.around(think)).await;
                }
                let _ = socket.close(None).await;
                Ok::<(), String>(())
            }
        }
    })
    .await?;
    Ok(summary("relay", conversations, samples, started.elapsed()))
}

/// An HTTP/1.1 client to the origin, keeping connections alive between turns.
type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

impl Relay {
    /// A signed POST with a JSON `body`, ready to send.
    fn signed_post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<hyper::Request<http_body_util::Full<bytes::Bytes>>, String> {
        let body = body.to_string();
        let mut request = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (name, value) in self.edge_headers("POST", path, BodyHash::of(body.as_bytes()))? {
            request = request.header(name, value);
        }
        request
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())
    }
}

/// Sends a request; the response as it arrives.
async fn send(
    client: &HttpClient,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    client.request(request).await.map_err(|e| e.to_string())
}

/// Reads an SSE reply to its end: when its first `token` event arrived (after `sent`), and
/// whether it carried an `error` event.
async fn read_reply(
    response: hyper::Response<hyper::body::Incoming>,
    sent: Instant,
) -> Result<(Option<Duration>, bool), String> {
    use http_body_util::BodyExt;
    if !response.status().is_success() {
        return Err(format!("turn answered {}", response.status()));
    }
    let token = format!("event: {}\n", shared::turn::EVENT_TOKEN);
    let error = format!("event: {}\n", shared::turn::EVENT_ERROR);
    let (mut first, mut failed, mut seen) = (None, false, String::new());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        seen.push_str(&String::from_utf8_lossy(data));
        if first.is_none() && seen.contains(&token) {
            first = Some(sent.elapsed());
        }
        failed |= seen.contains(&error);
        // Only the tail can hold the start of an event name split across frames.
        if seen.len() > 64 {
            let keep = seen.len() - 32;
            let cut = (keep..seen.len())
                .find(|&at| seen.is_char_boundary(at))
                .unwrap_or(seen.len());
            seen.drain(..cut);
        }
    }
    Ok((first, failed))
}

async fn sse(args: &Args) -> Result<serde_json::Value, String> {
    let api = Arc::new(Relay::from(args)?);
    let agent = args.text("agent")?;
    let run = args.text("run")?;
    let conversations = args.number("conversations", 1)?;
    let seconds = args.number("seconds", 5)?;
    let warmup = args.number("warmup", 1)?;
    let think = args.number("think-ms", 1000)?;
    // Small requests go out at once, as the edge's do (no Nagle delay behind the last ACK).
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(warmup);
    let until = measure_from + Duration::from_secs(seconds);
    let samples = run_conversations(conversations, |index, samples| {
        let (api, client) = (Arc::clone(&api), client.clone());
        let (agent, call_id) = (agent.clone(), format!("sse-{run}-{index}"));
        async move {
            let mut jitter = Jitter(0x9E37_79B9_7F4A_7C15 ^ (index + 1));
            {
                let create = serde_json::json!({"id": call_id, "agent_id": agent, "source": "api"});
                let created = send(&client, api.signed_post("/v1/calls", &create)?).await?;
                if !created.status().is_success() {
                    return Err(format!("call answered {}", created.status()));
                }
                let path = format!("/v1/calls/{call_id}/turns");
                tokio::time::sleep(jitter.around(think)).await;
                let mut turn = 0;
                while Instant::now() < until {
                    turn += 1;
                    let text = format!("Turn {turn} of conversation {index}");
                    let request = api
                        .signed_post(&path, &serde_json::json!({"text": text, "lang": "en-US"}))?;
                    // As for the relay, the clock starts once the prompt is ready to go (the
                    // relay's once its frame is written; here just before the request is).
                    let sent = Instant::now();
                    let response = send(&client, request).await?;
                    let (first, failed) = read_reply(response, sent).await?;
                    samples
                        .lock()
                        .await
                        .record((measure_from, until), sent, first, failed);
                    tokio::time::sleep(jitter.around(think)).await;
                }
                Ok::<(), String>(())
            }
        }
    })
    .await?;
    Ok(summary("sse", conversations, samples, started.elapsed()))
}

/// Runs `count` conversations at once, each the future `converse(index, samples)` makes, to
/// their end; a conversation that fails counts one error (and says why on stderr).
async fn run_conversations<F, Fut>(count: u64, converse: F) -> Result<Samples, String>
where
    F: Fn(u64, Arc<Mutex<Samples>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let samples = Arc::new(Mutex::new(Samples::default()));
    let mut tasks = Vec::new();
    for index in 0..count {
        let conversation = converse(index, Arc::clone(&samples));
        let samples = Arc::clone(&samples);
        tasks.push(tokio::spawn(async move {
            if let Err(error) = conversation.await {
                eprintln!("conversation {index}: {error}");
                samples.lock().await.errors += 1;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(samples)
        .map(Mutex::into_inner)
        .map_err(|_| "samples still shared".to_owned())
}

async fn hold(args: &Args) -> Result<serde_json::Value, String> {
    let relay = Arc::new(Relay::from(args)?);
    let agent = args.text("agent")?;
    let run = args.text("run")?;
    let connections = args.number("connections", 100)?;
    let parallel = usize::try_from(args.number("parallel", 128)?).unwrap_or(128);
    let started = Instant::now();
    let failed = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut opening = Vec::new();
    for index in 0..connections {
        let (relay, gate, failed) = (Arc::clone(&relay), Arc::clone(&gate), Arc::clone(&failed));
        let (agent, call_id) = (agent.clone(), format!("hold-{run}-{index}"));
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.ok()?;
            let opened = async {
                let mut socket = relay.connect(&call_id).await?;
                send_json(&mut socket, &setup(&call_id, &agent)).await?;
                Ok::<Socket, String>(socket)
            }
            .await;
            match opened {
                Ok(socket) => Some(socket),
                Err(error) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("connection {index}: {error}");
                    }
                    None
                }
            }
        }));
    }
    let mut sockets = Vec::with_capacity(opening.len());
    for task in opening {
        if let Ok(Some(socket)) = task.await {
            sockets.push(socket);
        }
    }
    let open_ms = started.elapsed().as_secs_f64() * 1000.0;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{}",
            serde_json::json!({"mode": "hold", "opened": sockets.len(), "failed": failed.load(Ordering::Relaxed), "open_ms": open_ms})
        );
    }
    // Hold until told (a line or EOF on stdin).
    let sockets = Arc::new(Mutex::new(sockets));
    let mut line = String::new();
    let _ = tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    let mut still_open = 0;
    for mut socket in std::mem::take(&mut *sockets.lock().await) {
        if socket.close(None).await.is_ok() {
            still_open += 1;
        }
    }
    Ok(serde_json::json!({"mode": "hold", "closed": still_open}))
}
