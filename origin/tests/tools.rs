//! The agent acts: tools called during a call through the real AWS SDK and the Bedrock
//! emulator's tool use (ConverseStream's wire format), a tenant tool served by a local server
//! that checks `X-Aybiza-Signature`, the built-ins on a real relay WebSocket, the SSRF rule, and
//! the signing-secret API — on SQLite and the test command's PostgreSQL.

#[macro_use]
mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bedrock_emulator::{ModelScript, ScriptedToolCall, ToolUseScript};
use serde_json::{Value, json};
use support::{Client, Db, Options, Origin, Relay, eventually, turns_of};

on_both_databases!(
    a_tool_is_called_signed_and_its_result_fed_back,
    two_tools_in_one_round_then_a_second_round,
    a_tool_timing_out_is_an_error_result_the_model_apologises_for,
    builtins_act_on_the_relay_session,
);

/// What the tool server received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    body: Value,
    signature: String,
    raw: Vec<u8>,
}

#[derive(Default)]
struct ToolServerState {
    received: Mutex<Vec<Received>>,
    /// Requests whose handler was dropped before answering (the origin hung up).
    cancelled: Mutex<u32>,
}

/// A tenant's tool server on loopback. Routes: `/ok/{name}` answers `{"tool": name, "status":
/// "shipped"}`, `/slow/{ms}` answers the same after `ms`, `/big` 70 KB of JSON, `/html` a web
/// page, `/fail` a 503 with a JSON body, `/list` a JSON array.
struct ToolServer {
    base: String,
    state: Arc<ToolServerState>,
}

struct CancelGuard(Arc<ToolServerState>, bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            *self.0.cancelled.lock().expect("lock") += 1;
        }
    }
}

async fn tool_handler(
    State(state): State<Arc<ToolServerState>>,
    Path((kind, arg)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.received.lock().expect("lock").push(Received {
        path: format!("/{kind}/{arg}"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature: headers
            .get("x-aybiza-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        raw: body.to_vec(),
    });
    let mut guard = CancelGuard(Arc::clone(&state), false);
    let answer = match kind.as_str() {
        "ok" => json!({"tool": arg, "status": "shipped"})
            .to_string()
            .into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
            json!({"status": "shipped", "waited_ms": arg})
                .to_string()
                .into_response()
        }
        "big" => json!({"pad": "x".repeat(70 * 1024)})
            .to_string()
            .into_response(),
        "html" => "<html><body>Hello</body></html>".into_response(),
        "fail" => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"orders are down"}"#,
        )
            .into_response(),
        "list" => "[1,2,3]".into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    };
    guard.1 = true;
    answer
}

impl ToolServer {
    async fn start() -> Self {
        let state = Arc::new(ToolServerState::default());
        let app = Router::new()
            .route("/{kind}/{arg}", post(tool_handler))
            .with_state(Arc::clone(&state));
        Self {
            base: support::serve_locally(app).await,
            state,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    fn cancelled(&self) -> u32 {
        *self.state.cancelled.lock().expect("lock")
    }
}

/// A development origin (tools may be on loopback).
async fn dev_origin(db: Db) -> Origin {
    Origin::start(Options::new(db).var("ORIGIN_ENVIRONMENT", "development")).await
}

fn tool(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "description": format!("The {name} tool."),
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
        "url": url,
    })
}

async fn put_agent(client: &Client, id: &str, spec: Value) {
    let mut body = json!({"name": id, "system_prompt": "You help callers.", "model": "m", "fallback_models": []});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), spec.as_object()) {
        body.extend(extra.clone());
    }
    let (status, answer) = client
        .json("PUT", &format!("/v1/agents/{id}"), Some(body))
        .await;
    assert!(status == 200 || status == 201, "{status} {answer}");
}

fn uses(when: &str, rounds: Vec<Vec<(&str, Value)>>, reply: &str) -> ToolUseScript {
    ToolUseScript {
        when: when.into(),
        before: None,
        rounds: rounds
            .into_iter()
            .map(|round| {
                round
                    .into_iter()
                    .map(|(name, input)| ScriptedToolCall {
                        name: name.into(),
                        input,
                    })
                    .collect()
            })
            .collect(),
        reply: reply.into(),
        error_reply: None,
    }
}

fn script(tool_use: Vec<ToolUseScript>) -> ModelScript {
    ModelScript {
        ttft_ms: 5,
        inter_token_ms: 1,
        reply: Some("Anything else?".into()),
        tool_use,
        ..ModelScript::default()
    }
}

/// A relay bound to a new call of `agent`.
async fn relay_for(client: &Client, agent: &str) -> (String, Relay) {
    let call = client.call(agent).await;
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    (call, relay)
}

/// The tenant's signing secret, created by reading it.
async fn secret_of(client: &Client) -> String {
    let (status, answer) = client.json("GET", "/v1/signing-secret", None).await;
    assert_eq!(status, 201, "the first read creates it: {answer}");
    answer["secret"].as_str().expect("shown once").to_owned()
}

fn verified(received: &Received, secret: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    shared::outbound_signature::verify(
        &received.signature,
        &received.raw,
        &[secret.as_bytes()],
        now,
        shared::outbound_signature::RECOMMENDED_TOLERANCE_SECS,
    )
    .is_ok()
}

async fn a_tool_is_called_signed_and_its_result_fed_back(db: Db) {
    let origin = dev_origin(db).await;
    let tools = ToolServer::start().await;
    let client = origin.client("acme");
    let secret = secret_of(&client).await;
    let mut order = uses(
        "order",
        vec![vec![("lookup_order", json!({"id": "42"}))]],
        "Your order ships tomorrow.",
    );
    order.before = Some("Let me check.".into());
    origin.script("m", script(vec![order]));
    put_agent(
        &client,
        "desk",
        json!({"tools": [tool("lookup_order", &tools.url("/ok/lookup_order"))]}),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "desk").await;

    relay.prompt("Where is my order?").await;
    let first = relay.next().await;
    assert_eq!(
        first["token"], "Let me check.",
        "said before the call, kept: {first}"
    );
    assert_eq!(
        relay.reply().await,
        " Your order ships tomorrow.",
        "spaced from what came before"
    );

    // The tool got one signed POST naming the call, the tool and the model's input.
    let received = tools.received();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.path, "/ok/lookup_order");
    assert_eq!(got.body["call_id"], call.as_str());
    assert_eq!(got.body["agent_id"], "desk");
    assert_eq!(got.body["tool"], "lookup_order");
    assert_eq!(got.body["input"], json!({"id": "42"}));
    assert!(
        got.body["tool_use_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("tooluse_"))
    );
    assert!(verified(got, &secret), "signature {}", got.signature);

    // The model got the matching toolResult, and what it said before the call.
    let stats = origin.emulator.model_stats("m");
    assert_eq!(
        (
            stats.tool_uses,
            stats.tool_results,
            stats.tool_result_mismatches
        ),
        (1, 1, 0)
    );
    assert_eq!(stats.last_tools_offered, vec!["lookup_order"]);
    let second = origin.emulator.requests("m").pop().expect("the follow-up");
    let messages = second["messages"].as_array().expect("messages");
    let asked = &messages[messages.len() - 2];
    assert_eq!(asked["role"], "assistant");
    assert_eq!(asked["content"][0]["text"], "Let me check.");
    assert_eq!(asked["content"][1]["toolUse"]["name"], "lookup_order");
    let answered = &messages[messages.len() - 1]["content"][0]["toolResult"];
    assert_eq!(answered["status"], "success");
    assert_eq!(
        answered["content"][0]["json"],
        json!({"tool": "lookup_order", "status": "shipped"})
    );
    assert_eq!(
        second["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"],
        "object"
    );

    // Stored with the reply, counted in usage and metrics.
    let turns = turns_of(&client, &call).await;
    let reply = &turns[1];
    assert_eq!(reply["text"], "Let me check. Your order ships tomorrow.");
    let calls = reply["tool_calls"].as_array().expect("tool calls stored");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["name"], "lookup_order");
    assert_eq!(calls[0]["outcome"], "ok");
    assert_eq!(calls[0]["input"], json!({"id": "42"}));
    assert_eq!(calls[0]["result"]["status"], "shipped");
    assert!(calls[0]["duration_ms"].as_u64().is_some());
    let (_, usage) = client.json("GET", "/v1/usage", None).await;
    assert_eq!(usage["totals"]["tool_calls"], 1, "{usage}");
    let metrics = origin.state.metrics.render();
    assert!(
        metrics.contains(r#"origin_tool_calls_total{kind="tenant",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("origin_tool_call_duration_seconds_count{kind=\"tenant\"} 1"));

    // The next turn's model sees the call as a note.
    relay.prompt("Thanks. Anything else?").await;
    assert_eq!(relay.reply().await, "Anything else?");
    let third = origin.emulator.requests("m").pop().expect("request");
    let context = third["messages"][1]["content"][0]["text"]
        .as_str()
        .unwrap_or("");
    assert!(
        context.starts_with("[You called the tool lookup_order with {\"id\":\"42\"}; it returned"),
        "{context}"
    );
}

async fn two_tools_in_one_round_then_a_second_round(db: Db) {
    let origin = dev_origin(db).await;
    let tools = ToolServer::start().await;
    let client = origin.client("acme");
    origin.script(
        "m",
        script(vec![uses(
            "refund",
            vec![
                vec![
                    ("lookup_order", json!({"id": "1"})),
                    ("lookup_customer", json!({"id": "c"})),
                ],
                vec![("refund", json!({"id": "1"}))],
            ],
            "Your refund is on its way.",
        )]),
    );
    put_agent(
        &client,
        "desk",
        json!({"tools": [
            tool("lookup_order", &tools.url("/slow/150")),
            tool("lookup_customer", &tools.url("/slow/150")),
            tool("refund", &tools.url("/ok/refund")),
        ]}),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "desk").await;
    let started = Instant::now();
    relay.prompt("I want a refund").await;
    assert_eq!(relay.reply().await, "Your refund is on its way.");
    // The two calls of the first round ran at once (each takes 150 ms).
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "{:?}",
        started.elapsed()
    );
    let paths: Vec<String> = tools
        .received()
        .iter()
        .map(|r| r.body["tool"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(
        paths[..2].contains(&"lookup_order".to_owned())
            && paths[..2].contains(&"lookup_customer".to_owned())
    );
    assert_eq!(paths[2], "refund");
    let stats = origin.emulator.model_stats("m");
    assert_eq!(
        (
            stats.tool_uses,
            stats.tool_results,
            stats.tool_result_mismatches
        ),
        (3, 3, 0)
    );
    let turns = turns_of(&client, &call).await;
    let names: Vec<&str> = turns[1]["tool_calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["lookup_order", "lookup_customer", "refund"],
        "in the model's order"
    );
}

async fn a_tool_timing_out_is_an_error_result_the_model_apologises_for(db: Db) {
    let origin = dev_origin(db).await;
    let tools = ToolServer::start().await;
    let client = origin.client("acme");
    let mut order = uses(
        "order",
        vec![vec![("lookup_order", json!({"id": "9"}))]],
        "It ships tomorrow.",
    );
    order.error_reply = Some("Sorry, I could not check that right now.".into());
    origin.script("m", script(vec![order]));
    let mut slow = tool("lookup_order", &tools.url("/slow/1500"));
    slow["timeout_ms"] = json!(200);
    put_agent(
        &client,
        "desk",
        json!({"tools": [slow], "filler_after_ms": 5000}),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "desk").await;
    let started = Instant::now();
    relay.prompt("Where is my order?").await;
    assert_eq!(
        relay.reply().await,
        "Sorry, I could not check that right now."
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_200),
        "the deadline held: {:?}",
        started.elapsed()
    );
    let last = origin.emulator.requests("m").pop().expect("request");
    let result = &last["messages"]
        .as_array()
        .expect("m")
        .last()
        .expect("last")["content"][0]["toolResult"];
    assert_eq!(result["status"], "error");
    assert_eq!(
        result["content"][0]["text"],
        "the tool did not answer within 200 ms"
    );
    let turns = turns_of(&client, &call).await;
    assert_eq!(turns[1]["tool_calls"][0]["outcome"], "timeout");
    assert_eq!(
        turns[1]["tool_calls"][0]["error"],
        "the tool did not answer within 200 ms"
    );
    assert!(turns[1]["tool_calls"][0].get("result").is_none());
    let metrics = origin.state.metrics.render();
    assert!(
        metrics.contains(r#"origin_tool_calls_total{kind="tenant",outcome="timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_tool_gets_the_filler_line_and_an_interrupt_cancels_a_call() {
    let origin = dev_origin(Db::Sqlite).await;
    let tools = ToolServer::start().await;
    let client = origin.client("acme");
    origin.script(
        "m",
        script(vec![
            uses(
                "order",
                vec![vec![("lookup_order", json!({}))]],
                "It ships tomorrow.",
            ),
            uses(
                "slowly",
                vec![vec![("slow_lookup", json!({}))]],
                "Never heard.",
            ),
        ]),
    );
    put_agent(
        &client,
        "desk",
        json!({"tools": [tool("lookup_order", &tools.url("/slow/400")), tool("slow_lookup", &tools.url("/slow/5000"))],
               "filler_after_ms": 100, "filler_utterance": "Bear with me."}),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "desk").await;
    relay.prompt("Where is my order?").await;
    let filler = relay.next().await;
    assert_eq!(
        filler,
        json!({"type": "text", "token": "Bear with me. ", "last": false})
    );
    assert_eq!(relay.reply().await, "It ships tomorrow.");

    // An interrupt while a call runs cancels it: the tool's request is dropped, the model is
    // not asked again, and the call is recorded as cancelled.
    relay.prompt("Check it slowly").await;
    let filler = relay.next().await;
    assert_eq!(filler["token"], "Bear with me. ");
    let asked = origin.emulator.model_stats("m").requests;
    relay
        .send(json!({"type": "interrupt", "utteranceUntilInterrupt": "Bear with", "durationUntilInterruptMs": 300}))
        .await;
    eventually(
        Duration::from_secs(3),
        "the tool's request was dropped",
        || async { tools.cancelled() == 1 },
    )
    .await;
    assert!(
        relay
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing more is said"
    );
    assert_eq!(
        origin.emulator.model_stats("m").requests,
        asked,
        "no follow-up request"
    );
    let turns = turns_of(&client, &call).await;
    let cut = turns.last().expect("the interrupted reply");
    assert_eq!(
        (cut["text"].as_str(), cut["interrupted"].as_bool()),
        (Some("Bear with"), Some(true))
    );
    assert_eq!(cut["tool_calls"][0]["outcome"], "cancelled");
}

#[tokio::test]
async fn answers_that_are_too_large_not_json_or_failing_are_error_results() {
    let origin = dev_origin(Db::Sqlite).await;
    let tools = ToolServer::start().await;
    let client = origin.client("acme");
    origin.script(
        "m",
        script(vec![uses(
            "everything",
            vec![vec![
                ("big", json!({})),
                ("html", json!({})),
                ("fail", json!({})),
                ("list", json!({})),
                ("nonesuch", json!({})),
            ]],
            "Done.",
        )]),
    );
    put_agent(
        &client,
        "desk",
        json!({"tools": [
            tool("big", &tools.url("/big/x")), tool("html", &tools.url("/html/x")),
            tool("fail", &tools.url("/fail/x")), tool("list", &tools.url("/list/x")),
            tool("nonesuch", &tools.url("/nope/x")),
        ]}),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "desk").await;
    relay.prompt("Try everything").await;
    assert_eq!(relay.reply().await, "Done.");
    let request = origin.emulator.requests("m").pop().expect("request");
    let results: Vec<Value> = request["messages"]
        .as_array()
        .expect("m")
        .last()
        .expect("last")["content"]
        .as_array()
        .expect("results")
        .iter()
        .map(|block| block["toolResult"].clone())
        .collect();
    let text = |i: usize| {
        results[i]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(results[0]["status"], "error");
    assert_eq!(text(0), "the tool's answer was larger than 64 KB");
    assert_eq!(text(1), "the tool's answer was not JSON");
    assert_eq!(
        text(2),
        r#"the tool answered HTTP 503: {"error":"orders are down"}"#
    );
    assert_eq!(results[3]["status"], "success");
    assert_eq!(
        results[3]["content"][0]["json"],
        json!({"result": [1, 2, 3]}),
        "a non-object is wrapped"
    );
    assert_eq!(text(4), "the tool answered HTTP 404");
    let outcomes: Vec<String> = turns_of(&client, &call).await[1]["tool_calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["outcome"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        outcomes,
        vec!["too_large", "not_json", "failed", "ok", "failed"]
    );
}

/// Resolves every name from a table (a name resolving to an internal address, as DNS
/// rebinding would make it).
struct Table(HashMap<String, Vec<IpAddr>>);

#[async_trait]
impl origin::outbound::Resolve for Table {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        match self.0.get(host) {
            Some(addresses) => Ok(addresses.clone()),
            None => origin::outbound::SystemResolver.resolve(host).await,
        }
    }
}

#[tokio::test]
async fn ssrf_tool_urls_to_internal_addresses_are_refused_at_put_and_at_call_time() {
    let tools = ToolServer::start().await;
    let port = tools.base.rsplit(':').next().expect("port").to_owned();
    let mut options = Options::new(Db::Sqlite);
    let internal: IpAddr = "10.0.0.7".parse().expect("ip");
    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    options.resolver = Some(Arc::new(Table(HashMap::from([
        ("orders.tenant.example".to_owned(), vec![internal]),
        (
            "rebound.tenant.example".to_owned(),
            vec!["93.184.216.34".parse().expect("ip"), loopback],
        ),
    ]))));
    // A production origin (the default).
    let origin = Origin::start(options).await;
    let client = origin.client("acme");
    for (url, why) in [
        (tools.url("/ok/x"), "https"),
        (
            "https://169.254.169.254/latest/meta-data".to_owned(),
            "internal",
        ),
        ("https://10.1.2.3/x".to_owned(), "internal"),
        ("https://[::1]/x".to_owned(), "internal"),
        (
            "https://user:pw@tools.example.com/x".to_owned(),
            "credentials",
        ),
    ] {
        let (status, answer) = client
            .json(
                "PUT",
                "/v1/agents/bad",
                Some(json!({"name": "b", "system_prompt": "p", "tools": [tool("t", &url)]})),
            )
            .await;
        assert_eq!(status, 400, "{url}: {answer}");
        assert_eq!(answer["error"]["field"], "tools[0].url", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(why),
            "{answer}"
        );
    }

    // Names are checked at call time: every address they resolve to.
    origin.script(
        "m",
        script(vec![uses(
            "order",
            vec![vec![
                ("internal", json!({})),
                ("rebound", json!({})),
                ("local", json!({})),
            ]],
            "It ships tomorrow.",
        )]),
    );
    put_agent(
        &client,
        "desk",
        json!({"tools": [
            tool("internal", "https://orders.tenant.example/x"),
            tool("rebound", "https://rebound.tenant.example/x"),
            tool("local", &format!("https://localhost:{port}/ok/x")),
        ]}),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "desk").await;
    relay.prompt("Where is my order?").await;
    assert_eq!(relay.reply().await, "It ships tomorrow.");
    assert!(
        tools.received().is_empty(),
        "nothing reached the tool server"
    );
    let calls = turns_of(&client, &call).await[1]["tool_calls"].clone();
    for index in 0..3 {
        assert_eq!(calls[index]["outcome"], "refused", "{calls}");
        assert_eq!(
            calls[index]["error"],
            "the tool's address may not be reached from here"
        );
    }
    let metrics = origin.state.metrics.render();
    assert!(
        metrics.contains(r#"origin_tool_calls_total{kind="tenant",outcome="refused"} 3"#),
        "{metrics}"
    );
}

async fn builtins_act_on_the_relay_session(db: Db) {
    let origin = dev_origin(db).await;
    let client = origin.client("acme");
    origin.script(
        "m",
        script(vec![
            uses(
                "menu",
                vec![vec![("send_digits", json!({"digits": "1w2#"}))]],
                "I chose billing.",
            ),
            uses(
                "spanish",
                vec![vec![("switch_language", json!({"language": "es-ES"}))]],
                "Claro.",
            ),
            uses(
                "bad digits",
                vec![vec![("send_digits", json!({"digits": "12x"}))]],
                "Oops.",
            ),
            uses(
                "human",
                vec![vec![(
                    "transfer_call",
                    json!({"target": "sales", "summary": "Wants to upgrade."}),
                )]],
                "unused",
            ),
            uses(
                "bye",
                vec![vec![("end_call", json!({"reason": "done"}))]],
                "unused",
            ),
        ]),
    );
    put_agent(
        &client,
        "desk",
        json!({
            "voice": {"language": "en-US", "languages": [{"code": "es-ES", "voice": "es-ES-Neural2-B"}]},
            "builtin_tools": {
                "end_call": {"goodbye": "Goodbye from Ava."},
                "send_digits": {}, "switch_language": {},
                "transfer_call": {"targets": [{"name": "sales", "to": "+14155550123"}], "caller_id": "+18005550100", "whisper": true},
            },
        }),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "desk").await;
    relay.prompt("Navigate the menu").await;
    assert_eq!(
        relay.next().await,
        json!({"type": "sendDigits", "digits": "1w2#"})
    );
    assert_eq!(relay.reply().await, "I chose billing.");
    relay.prompt("Hablemos en spanish").await;
    // From here the caller speaks Spanish (an English prompt would switch back).
    let prompt_es =
        |text: &str| json!({"type": "prompt", "voicePrompt": text, "lang": "es-ES", "last": true});
    assert_eq!(
        relay.next().await,
        json!({"type": "language", "ttsLanguage": "es-ES", "transcriptionLanguage": "es-ES"})
    );
    assert_eq!(relay.reply().await, "Claro.");
    relay.send(prompt_es("Press bad digits")).await;
    assert_eq!(relay.reply().await, "Oops.", "no sendDigits went out");
    let request = origin.emulator.requests("m").pop().expect("request");
    let result = &request["messages"]
        .as_array()
        .expect("m")
        .last()
        .expect("l")["content"][0]["toolResult"];
    assert_eq!(result["status"], "error");
    let offered = origin.emulator.model_stats("m").last_tools_offered;
    assert_eq!(
        offered,
        vec![
            "end_call",
            "transfer_call",
            "send_digits",
            "switch_language"
        ]
    );

    // A transfer: the announcement (the model said nothing), then `end` with the handoff.
    relay.send(prompt_es("Get me a human")).await;
    assert_eq!(
        relay.next().await,
        json!({"type": "text", "token": "Please hold while I transfer your call.", "last": false})
    );
    assert_eq!(
        relay.next().await,
        json!({"type": "text", "token": "", "last": true})
    );
    let end = relay.next().await;
    assert_eq!(end["type"], "end", "{end}");
    let handoff: Value =
        serde_json::from_str(end["handoffData"].as_str().expect("text")).expect("json");
    assert_eq!(
        handoff,
        json!({"reason": "transfer", "callId": call, "target": "+14155550123", "summary": "Wants to upgrade.",
               "callerId": "+18005550100", "whisper": true})
    );
    assert_eq!(relay.close_code(Duration::from_secs(2)).await, Some(1000));
    let (_, stored) = client.json("GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!(
        (stored["status"].as_str(), stored["end_reason"].as_str()),
        (Some("ended"), Some("transferred"))
    );
    let turns = turns_of(&client, &call).await;
    let last = turns.last().expect("the transfer reply");
    assert_eq!(last["text"], "Please hold while I transfer your call.");
    assert_eq!(last["tool_calls"][0]["name"], "transfer_call");

    // end_call on another call: the goodbye, then `end` (agent_ended).
    let (call, mut relay) = relay_for(&client, "desk").await;
    relay.prompt("bye").await;
    assert_eq!(relay.reply().await, "Goodbye from Ava.");
    let end = relay.next().await;
    let handoff: Value =
        serde_json::from_str(end["handoffData"].as_str().expect("text")).expect("json");
    assert_eq!(handoff, json!({"reason": "agent_ended", "callId": call}));
    let (_, stored) = client.json("GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!(stored["end_reason"], "agent_ended");
    let metrics = origin.state.metrics.render();
    for kind in ["end_call", "transfer_call", "switch_language"] {
        assert!(
            metrics.contains(&format!(
                r#"origin_tool_calls_total{{kind="{kind}",outcome="ok"}} 1"#
            )),
            "{kind}: {metrics}"
        );
    }
    assert!(metrics.contains(r#"origin_tool_calls_total{kind="send_digits",outcome="invalid"} 1"#));
}

#[tokio::test]
async fn an_sse_turn_offers_only_the_tenants_tools_and_tool_rounds_are_bounded() {
    let origin = dev_origin(Db::Sqlite).await;
    let tools = ToolServer::start().await;
    let client = origin.client("acme");
    let looping: Vec<Vec<(&str, Value)>> =
        (0..6).map(|_| vec![("lookup_order", json!({}))]).collect();
    origin.script(
        "m",
        script(vec![
            uses("bye", vec![vec![("end_call", json!({}))]], "unused"),
            uses("loop", looping, "never"),
        ]),
    );
    put_agent(
        &client,
        "desk",
        json!({"tools": [tool("lookup_order", &tools.url("/ok/x"))], "builtin_tools": {"end_call": {}},
               "fallback_utterance": "Sorry, something went wrong."}),
    )
    .await;
    let call = client.call("desk").await;
    let (status, events) = client.turn(&call, "bye").await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("done"));
    let stats = origin.emulator.model_stats("m");
    assert_eq!(
        stats.last_tools_offered,
        vec!["lookup_order"],
        "no built-in without a relay"
    );
    assert_eq!(stats.tools_not_offered, 1);

    // A model calling tools round after round is stopped after five rounds.
    let (_, events) = client.turn(&call, "loop please").await;
    let spoken: String = events
        .iter()
        .filter(|e| e.event == "token")
        .filter_map(|e| e.data["text"].as_str())
        .collect();
    assert_eq!(spoken, "Sorry, something went wrong.");
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("error"));
    assert_eq!(tools.received().len(), 5);
    let turns = turns_of(&client, &call).await;
    let failed = turns.last().expect("reply");
    assert_eq!(failed["failure_reason"], "tool_rounds_exceeded");
    assert_eq!(failed["tool_calls"].as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn the_signing_secret_is_shown_once_rotated_with_a_grace_and_signs_with_both_meanwhile() {
    let origin = dev_origin(Db::Sqlite).await;
    let tools = ToolServer::start().await;
    let client = origin.client("acme");
    let first = secret_of(&client).await;
    assert!(shared::outbound_signature::is_secret(&first), "{first}");
    let (status, read) = client.json("GET", "/v1/signing-secret", None).await;
    assert_eq!(status, 200);
    assert!(read.get("secret").is_none(), "never shown again: {read}");
    assert_eq!(read["hint"], shared::outbound_signature::hint(&first));
    assert_eq!(read["header"], "X-Aybiza-Signature");
    let response = client.send("GET", "/v1/signing-secret", None).await;
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    // Another tenant has its own.
    assert_eq!(
        client_of(&origin, "other")
            .json("GET", "/v1/signing-secret", None)
            .await
            .0,
        201
    );

    let (status, rotated) = client
        .json(
            "POST",
            "/v1/signing-secret/rotate",
            Some(json!({"previous_valid_for_secs": 3600})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["secret"]
        .as_str()
        .expect("shown on rotation")
        .to_owned();
    assert_ne!(second, first);
    assert_eq!(
        rotated["previous_hint"],
        shared::outbound_signature::hint(&first)
    );
    assert!(rotated["previous_expires_at_ms"].as_u64().is_some());

    origin.script(
        "m",
        script(vec![uses(
            "order",
            vec![vec![("t", json!({}))]],
            "Shipped.",
        )]),
    );
    put_agent(
        &client,
        "desk",
        json!({"tools": [tool("t", &tools.url("/ok/t"))]}),
    )
    .await;
    let (_, mut relay) = relay_for(&client, "desk").await;
    relay.prompt("order").await;
    relay.reply().await;
    let got = tools.received().pop().expect("a call");
    assert_eq!(
        got.signature.matches("v1=").count(),
        2,
        "both secrets sign during the grace"
    );
    assert!(verified(&got, &first) && verified(&got, &second));

    // A rotation without grace (a leak): only the new secret signs.
    let (_, rotated) = client
        .json(
            "POST",
            "/v1/signing-secret/rotate",
            Some(json!({"previous_valid_for_secs": 0})),
        )
        .await;
    let third = rotated["secret"].as_str().expect("shown").to_owned();
    assert!(rotated.get("previous_hint").is_none(), "{rotated}");
    relay.prompt("order").await;
    relay.reply().await;
    let got = tools.received().pop().expect("a call");
    assert_eq!(got.signature.matches("v1=").count(), 1);
    assert!(verified(&got, &third) && !verified(&got, &second));

    let (status, refused) = client
        .json(
            "POST",
            "/v1/signing-secret/rotate",
            Some(json!({"previous_valid_for_secs": 999_999_999})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["field"], "previous_valid_for_secs");
    let (status, _) = client
        .json(
            "POST",
            "/v1/signing-secret/rotate",
            Some(json!({"grace": 1})),
        )
        .await;
    assert_eq!(status, 400, "unknown fields are refused");
}

fn client_of(origin: &Origin, tenant: &str) -> Client {
    origin.client(tenant)
}
