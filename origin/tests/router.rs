//! The origin with fakes behind its traits (a scripted model, a store that can fail on demand)
//! and SQLite: trust, input validation, tenant scoping, statuses, SSE turns, shutdown.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shared::model::ModelFailure;
use shared::signing::BodyHash;
use support::{
    Db, FakeLlm, FakeReply, Options, Origin, edge_headers_with_nonce, fresh_nonce, now_secs,
    principal,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

async fn fake_origin() -> (Origin, Arc<FakeLlm>) {
    let llm = Arc::new(FakeLlm::default());
    let mut options = Options::new(Db::Sqlite);
    options.llm = Some(llm.clone());
    (Origin::start(options).await, llm)
}

/// One request through the router, no socket.
async fn oneshot(
    origin: &Origin,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    oneshot_with(origin.state.clone(), request).await
}

/// One request through the router built on `state` (e.g. with another clock).
async fn oneshot_with(
    state: origin::AppState,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = origin::app(state)
        .oneshot(request)
        .await
        .expect("router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, headers, json)
}

fn signed(
    method: &str,
    path: &str,
    body: &[u8],
    tenant: Option<&str>,
    timestamp: u64,
) -> Request<Body> {
    signed_with_nonce(method, path, body, tenant, timestamp, &fresh_nonce())
}

/// A request signed with the given nonce: sent twice, the second is a replay.
fn signed_with_nonce(
    method: &str,
    path: &str,
    body: &[u8],
    tenant: Option<&str>,
    timestamp: u64,
    nonce: &str,
) -> Request<Body> {
    let principal = tenant.map(principal);
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in edge_headers_with_nonce(
        method,
        path,
        BodyHash::of(body),
        principal.as_ref(),
        timestamp,
        nonce,
    ) {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body.to_vec())).expect("request")
}

#[tokio::test]
async fn health_needs_no_signature_and_names_the_service() {
    let (origin, _) = fake_origin().await;
    let request = Request::get("/health")
        .body(Body::empty())
        .expect("request");
    let (status, headers, body) = oneshot(&origin, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["service"], "origin");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn every_other_route_refuses_a_missing_wrong_or_stale_signature() {
    let (origin, _) = fake_origin().await;
    let now = now_secs();
    // Missing.
    let request = Request::get("/v1/agents")
        .body(Body::empty())
        .expect("request");
    let (status, headers, body) = oneshot(&origin, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no edge signature")
    );
    assert_eq!(headers["www-authenticate"], "AYBIZA-EDGE-HMAC-SHA256");
    assert_eq!(
        body["error"]["request_id"],
        headers["x-request-id"].to_str().expect("id")
    );

    // Stale: well past the 60 s skew either way. Not 61 s: the origin reads its clock after
    // `now` was taken, and a second boundary in between turned "61 s ahead" into 60 (a flake).
    for timestamp in [now - 70, now + 70] {
        let (status, _, body) = oneshot(
            &origin,
            signed("GET", "/v1/agents", b"", Some("t1"), timestamp),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("away from now"),
            "{body}"
        );
    }
    // Within the skew is fine.
    let (status, _, _) = oneshot(
        &origin,
        signed("GET", "/v1/agents", b"", Some("t1"), now - 59),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Wrong: signed for another path.
    let mut request = signed("GET", "/v1/agents?limit=1", b"", Some("t1"), now);
    *request.uri_mut() = "/v1/agents?limit=2".parse().expect("uri");
    let (status, _, body) = oneshot(&origin, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("does not match")
    );

    // Signed by someone with another secret.
    let mut request = signed("GET", "/v1/agents", b"", Some("t1"), now);
    request.headers_mut().insert(
        "x-edge-signature",
        "v2=0000000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .expect("value"),
    );
    let (status, _, _) = oneshot(&origin, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Another tenant swapped into a request signed for t1.
    let mut request = signed("GET", "/v1/agents", b"", Some("t1"), now);
    request.headers_mut().insert(
        "x-edge-principal",
        principal("t2").to_header().parse().expect("value"),
    );
    let (status, _, _) = oneshot(&origin, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_signature_replayed_with_another_body_is_refused() {
    let (origin, _) = fake_origin().await;
    let good = json!({"agent_id": "a1"}).to_string();
    let mut request = signed("POST", "/v1/calls", good.as_bytes(), Some("t1"), now_secs());
    *request.body_mut() = Body::from(json!({"agent_id": "a2"}).to_string());
    let (status, _, body) = oneshot(&origin, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn a_clock_injected_into_the_state_decides_staleness() {
    let (origin, _) = fake_origin().await;
    let frozen = Arc::new(AtomicU64::new(1_800_000_000_000));
    let clock_value = Arc::clone(&frozen);
    let state = origin
        .state
        .clone()
        .with_clock(Arc::new(move || clock_value.load(Ordering::SeqCst)));
    let request = || signed("GET", "/ready", b"", None, 1_800_000_000);
    let answer = |request: Request<Body>| {
        let state = state.clone();
        async move {
            origin::app(state)
                .oneshot(request)
                .await
                .expect("infallible")
                .status()
        }
    };
    assert_eq!(
        answer(request()).await,
        StatusCode::OK,
        "signed /ready without a principal"
    );
    frozen.store(1_800_000_061_000, Ordering::SeqCst);
    assert_eq!(
        answer(request()).await,
        StatusCode::UNAUTHORIZED,
        "61 s later"
    );
}

#[tokio::test]
async fn an_exact_replay_is_refused_in_process_and_after_its_window_by_the_timestamp() {
    let (origin, _) = fake_origin().await;
    let client = origin.client("t1");
    client.agent("a1", "m1", &[]).await;
    let signed_at = 1_800_000_000;
    let frozen = Arc::new(AtomicU64::new(signed_at * 1000));
    let clock_value = Arc::clone(&frozen);
    let state = origin
        .state
        .clone()
        .with_clock(Arc::new(move || clock_value.load(Ordering::SeqCst)));
    let body = json!({"agent_id": "a1"}).to_string();
    let nonce = "3b0f2c6e-1f4d-4a8b-9c2d-5e6f7a8b9c0d";
    let send = |at_secs: u64| {
        frozen.store(at_secs * 1000, Ordering::SeqCst);
        let request = signed_with_nonce(
            "POST",
            "/v1/calls",
            body.as_bytes(),
            Some("t1"),
            signed_at,
            nonce,
        );
        let state = state.clone();
        async move {
            let (status, _, json) = oneshot_with(state, request).await;
            (status, json)
        }
    };

    let (status, first) = send(signed_at).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    for later in [signed_at, signed_at + 1, signed_at + 60] {
        let (status, body) = send(later).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "replayed_request", "{body}");
    }
    // Past the window, the in-process cache may forget the nonce: the stale timestamp alone
    // refuses the copy.
    for later in [signed_at + 61, signed_at + 600] {
        let (status, body) = send(later).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("away from now"),
            "{body}"
        );
    }
    // One call was created, not two.
    let (status, calls) = client.json("GET", "/v1/calls", None).await;
    assert_eq!(status, 200);
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(1), "{calls}");
}

#[tokio::test]
async fn a_request_without_a_well_formed_nonce_is_refused() {
    let (origin, _) = fake_origin().await;
    let now = now_secs();
    let mut missing = signed("GET", "/v1/agents", b"", Some("t1"), now);
    missing.headers_mut().remove("x-edge-nonce");
    let (status, _, body) = oneshot(&origin, missing).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no edge nonce"),
        "{body}"
    );
    for bad in ["short", "has spaces in it, see", "0123456789abcdef:x"] {
        let request = signed_with_nonce("GET", "/v1/agents", b"", Some("t1"), now, bad);
        let (status, _, body) = oneshot(&origin, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("edge nonce is not"),
            "{body}"
        );
    }
    // A nonce only counts once the signature verifies: a forged request cannot burn one.
    let nonce = "9a8b7c6d-5e4f-4321-8fed-cba987654321";
    let mut forged = signed_with_nonce("GET", "/v1/agents", b"", Some("t1"), now, nonce);
    forged.headers_mut().insert(
        "x-edge-signature",
        format!("v2={}", "0".repeat(64)).parse().expect("value"),
    );
    let (status, _, _) = oneshot(&origin, forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = oneshot(
        &origin,
        signed_with_nonce("GET", "/v1/agents", b"", Some("t1"), now, nonce),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn tenant_routes_need_a_principal_and_a_readable_one() {
    let (origin, _) = fake_origin().await;
    let (status, _, body) =
        oneshot(&origin, signed("GET", "/v1/agents", b"", None, now_secs())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("principal")
    );
}

#[tokio::test]
async fn bad_input_gets_the_envelope_and_the_right_status() {
    let (origin, _) = fake_origin().await;
    let client = origin.client("t1");
    client.agent("a1", "m1", &[]).await;
    let call = client.call("a1").await;

    // Malformed JSON.
    let response = client
        .send(
            "POST",
            &format!("/v1/calls/{call}/turns"),
            Some(b"{not json"),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "malformed_json");

    // A megabyte of turn text.
    let huge = json!({ "text": "a".repeat(1024 * 1024) }).to_string();
    let response = client
        .send(
            "POST",
            &format!("/v1/calls/{call}/turns"),
            Some(huge.as_bytes()),
        )
        .await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "payload_too_large");

    // Over the text limit but under the body limit.
    let (status, body) = client
        .json(
            "POST",
            &format!("/v1/calls/{call}/turns"),
            Some(json!({"text": "a".repeat(9000)})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_turn");

    // Unknown call.
    let (status, body) = client
        .json("POST", "/v1/calls/nope/turns", Some(json!({"text": "hi"})))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = client
        .json(
            "POST",
            "/v1/calls/bad%20id/turns",
            Some(json!({"text": "hi"})),
        )
        .await;
    assert_eq!(status, 400);

    // Ended call.
    let (status, _) = client
        .json(
            "POST",
            &format!("/v1/calls/{call}/end"),
            Some(json!({"reason": "completed"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = client
        .json(
            "POST",
            &format!("/v1/calls/{call}/turns"),
            Some(json!({"text": "hi"})),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "call_ended");
    let (status, _) = client
        .json(
            "POST",
            &format!("/v1/calls/{call}/end"),
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(status, 409);

    // Invalid agent, unknown field, unknown agent for a call.
    let (status, body) = client
        .json(
            "PUT",
            "/v1/agents/a2",
            Some(json!({"name": "x", "system_prompt": "y", "inference": {"temperature": 3}})),
        )
        .await;
    assert_eq!(
        (
            status,
            body["error"]["code"].as_str(),
            body["error"]["field"].as_str()
        ),
        (400, Some("invalid_agent"), Some("inference.temperature"))
    );
    let (status, body) = client
        .json(
            "PUT",
            "/v1/agents/a2",
            Some(json!({"name": "x", "system_prompt": "y", "temprature": 0.1})),
        )
        .await;
    assert_eq!(status, 400);
    // Not a field of the spec: the error is about the body as a whole.
    assert_eq!(body["error"].get("field"), None);
    let (status, _) = client
        .json("POST", "/v1/calls", Some(json!({"agent_id": "ghost"})))
        .await;
    assert_eq!(status, 404);
    // Wrong method.
    let (status, body) = client.json("DELETE", "/v1/usage", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn one_tenant_never_sees_another_tenants_agents_calls_or_usage() {
    let (origin, _) = fake_origin().await;
    let alice = origin.client("alice");
    let mallory = origin.client("mallory");
    alice.agent("shared-name", "m1", &[]).await;
    let call = alice.call("shared-name").await;
    let (status, _) = alice.turn(&call, "hello").await;
    assert_eq!(status, 200);

    for (method, path, body) in [
        ("GET", "/v1/agents/shared-name".to_owned(), None),
        ("DELETE", "/v1/agents/shared-name".to_owned(), None),
        ("GET", format!("/v1/calls/{call}"), None),
        ("GET", format!("/v1/calls/{call}/turns"), None),
        (
            "POST",
            format!("/v1/calls/{call}/turns"),
            Some(json!({"text": "hi"})),
        ),
        (
            "POST",
            format!("/v1/calls/{call}/end"),
            Some(json!({"reason": "x"})),
        ),
        ("GET", format!("/v1/calls/{call}/events"), None),
    ] {
        let (status, answer) = mallory.json(method, &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }
    let (_, agents) = mallory.json("GET", "/v1/agents", None).await;
    assert_eq!(agents["agents"], json!([]));
    let (_, usage) = mallory.json("GET", "/v1/usage", None).await;
    assert_eq!(usage["totals"]["turns"], 0);
    let (_, usage) = alice.json("GET", "/v1/usage", None).await;
    assert_eq!(usage["totals"]["turns"], 1);
    assert_eq!(usage["totals"]["calls"], 1);
    // The call is still Alice's, untouched.
    let (status, call) = alice.json("GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!((status, call["status"].as_str()), (200, Some("active")));
}

#[tokio::test]
async fn an_sse_turn_streams_pieces_then_done_once_durable() {
    let (origin, llm) = fake_origin().await;
    llm.reply(
        "m1",
        FakeReply::Tokens(
            vec!["Sure", ", I can", " help with that", ". What", " date?"]
                .into_iter()
                .map(Into::into)
                .collect(),
        ),
    );
    let client = origin.client("t1");
    client.agent("a1", "m1", &[]).await;
    let call = client.call("a1").await;
    let (status, events) = client.turn(&call, "Book a table").await;
    assert_eq!(status, 200);
    let tokens: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.data["text"].as_str().expect("text"))
        .collect();
    assert_eq!(tokens, vec!["Sure, I can help with that. ", "What date?"]);
    let done = events.last().expect("events");
    assert_eq!(done.event, "done", "{events:?}");
    assert_eq!(done.data["model"], "m1");
    assert_eq!(done.data["usage"]["output_tokens"], 5);
    assert_eq!(done.data["turn"], 2);

    let (_, list) = client
        .json("GET", &format!("/v1/calls/{call}/turns"), None)
        .await;
    let turns = list["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0]["role"], "user");
    assert_eq!(turns[0]["text"], "Book a table");
    assert_eq!(turns[1]["role"], "assistant");
    assert_eq!(turns[1]["text"], "Sure, I can help with that. What date?");
    assert_eq!(turns[1]["model"], "m1");
    assert!(turns[1]["ttft_ms"].is_number());
}

/// The texts of the conversation the model was sent for its `index`th request.
fn model_saw(llm: &FakeLlm, index: usize) -> Vec<String> {
    let requests = llm.requests.lock().expect("lock");
    requests[index]
        .messages
        .iter()
        .map(|message| message.text.clone())
        .collect()
}

/// A counter of the origin's `/metrics` (0 when absent).
async fn counter(client: &support::Client, line: &str) -> u64 {
    let response = client.send("GET", "/metrics", None).await;
    let text = response.text().await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_sse_turn_keeps_its_conversation_until_the_call_changes_elsewhere() {
    let (origin, llm) = fake_origin().await;
    let client = origin.client("t1");
    client.agent("a1", "m1", &[]).await;
    let call = client.call("a1").await;
    for text in ["One", "Two"] {
        let (status, events) = client.turn(&call, text).await;
        assert_eq!(status, 200);
        assert_eq!(events.last().map(|e| e.event.as_str()), Some("done"));
    }
    // The second turn read nothing from the database, yet the model heard the first.
    let kept = "origin_conversation_reads_total{source=\"kept\"}";
    let read = "origin_conversation_reads_total{source=\"database\"}";
    assert_eq!(
        (counter(&client, kept).await, counter(&client, read).await),
        (1, 1)
    );
    assert_eq!(
        model_saw(&llm, 1),
        vec!["One", "Hello there. Bye.", "Two"],
        "the kept history is the stored one"
    );

    // The same call on the phone relay: its turn reaches the next SSE turn.
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    relay.prompt("By phone").await;
    assert!(!relay.reply().await.is_empty());
    relay.close().await;
    let (status, _) = client.turn(&call, "Three").await;
    assert_eq!(status, 200);
    let heard = model_saw(&llm, 3);
    assert_eq!(
        heard[heard.len() - 3..],
        ["By phone", "Hello there. Bye.", "Three"]
    );
    assert_eq!(
        counter(&client, read).await,
        2,
        "read again after the phone turn"
    );

    // Ended: the next turn is refused before it streams, as before.
    let (status, _) = client
        .json(
            "POST",
            &format!("/v1/calls/{call}/end"),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, events) = client.turn(&call, "Four").await;
    assert_eq!(status, 409, "{events:?}");
    assert_eq!(events[0].data["error"]["code"], "call_ended");
}

#[tokio::test]
async fn an_sse_turn_body_ends_after_its_last_event_on_a_kept_alive_connection() {
    let (origin, _) = fake_origin().await;
    let client = origin.client("t1");
    client.agent("a1", "m1", &[]).await;
    let call = client.call("a1").await;
    let addr = origin.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let path = format!("/v1/calls/{call}/turns");
    let body = br#"{"text":"Hi"}"#;
    // Two turns on one connection: the first body must end (chunked, `0\r\n\r\n`) with the
    // connection left open, or a client waiting for the end never sends the second.
    for _ in 0..2 {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: origin\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n",
            body.len()
        );
        let principal = principal("t1");
        for (name, value) in support::edge_headers(
            "POST",
            &path,
            BodyHash::of(body),
            Some(&principal),
            now_secs(),
        ) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("sent");
        stream.write_all(body).await.expect("sent");
        let mut answer = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buffer = [0_u8; 4096];
            while !answer.ends_with(b"\r\n0\r\n\r\n") {
                let n = stream.read(&mut buffer).await.expect("read");
                assert!(n > 0, "the connection closed instead");
                answer.extend_from_slice(&buffer[..n]);
            }
        })
        .await;
        let text = String::from_utf8_lossy(&answer);
        assert!(ended.is_ok(), "the body did not end: {text}");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("event: done"), "{text}");
        let last_event = text.rfind("event: ").expect("events");
        assert!(text[last_event..].starts_with("event: done"), "{text}");
    }
}

#[tokio::test]
async fn throttling_before_the_first_token_falls_back_and_says_so() {
    let (origin, llm) = fake_origin().await;
    llm.reply("m1", FakeReply::FailBefore(ModelFailure::Throttled));
    llm.reply("m2", FakeReply::FailBefore(ModelFailure::NotReady));
    llm.reply("m3", FakeReply::Tokens(vec!["Fine.".into()]));
    let client = origin.client("t1");
    client.agent("a1", "m1", &["m2", "m3"]).await;
    let call = client.call("a1").await;
    let (_, events) = client.turn(&call, "hi").await;
    let done = events.last().expect("done");
    assert_eq!(done.event, "done", "{events:?}");
    assert_eq!(done.data["model"], "m3");
    assert_eq!(
        done.data["fallbacks"],
        json!([{"model":"m1","reason":"throttled"},{"model":"m2","reason":"model_not_ready"}])
    );
    let metrics = origin.state.metrics.render();
    assert!(
        metrics.contains(r#"origin_model_fallbacks_total{model="m1",reason="throttled"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_validation_error_does_not_fall_back() {
    let (origin, llm) = fake_origin().await;
    llm.reply("m1", FakeReply::FailBefore(ModelFailure::Invalid));
    let client = origin.client("t1");
    client.agent("a1", "m1", &["m2"]).await;
    let call = client.call("a1").await;
    let (_, events) = client.turn(&call, "hi").await;
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("error"),
        "{events:?}"
    );
    let models: Vec<String> = llm
        .requests
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.model.clone())
        .collect();
    assert_eq!(models, vec!["m1"]);
}

#[tokio::test]
async fn a_model_failing_mid_reply_ends_the_stream_with_an_error_event() {
    let (origin, llm) = fake_origin().await;
    llm.reply(
        "m1",
        FakeReply::FailAfter(
            vec!["Let me check. ".into(), "One".into()],
            ModelFailure::StreamError,
        ),
    );
    let client = origin.client("t1");
    client.agent("a1", "m1", &["m2"]).await;
    let call = client.call("a1").await;
    let (status, events) = client.turn(&call, "hi").await;
    assert_eq!(status, 200);
    assert_eq!(events[0].event, "token");
    assert_eq!(events[0].data["text"], "Let me check. ");
    let last = events.last().expect("events");
    assert_eq!(last.event, "error");
    assert_eq!(last.data["error"]["code"], "model_unavailable");
    // No fallback after the caller heard the first model: m2 was never asked.
    assert_eq!(llm.requests.lock().expect("lock").len(), 1);
    // The caller is not left with half a sentence: the agent's fallback utterance follows.
    let apology = shared::agent::DEFAULT_FALLBACK_UTTERANCE;
    assert_eq!(events[events.len() - 2].event, "token");
    assert_eq!(events[events.len() - 2].data["text"], apology);
    // What was said is stored, so the next turn's context matches what the caller heard, and
    // the turn says why it failed.
    let (_, list) = client
        .json("GET", &format!("/v1/calls/{call}/turns"), None)
        .await;
    assert_eq!(list["turns"][1]["text"], format!("Let me check. {apology}"));
    assert_eq!(list["turns"][1]["failure_reason"], "stream_error");
}

#[tokio::test]
async fn with_the_database_down_new_calls_and_turns_fail_fast_with_503_then_recover() {
    let llm = Arc::new(FakeLlm::default());
    let down = Arc::new(AtomicBool::new(false));
    let mut options = Options::new(Db::Sqlite);
    options.llm = Some(llm);
    options.flaky = Some(Arc::clone(&down));
    let origin = Origin::start(options).await;
    let client = origin.client("t1");
    client.agent("a1", "m1", &[]).await;
    let call = client.call("a1").await;

    down.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let response = client
        .send("POST", "/v1/calls", Some(br#"{"agent_id":"a1"}"#))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "database_unavailable");
    let (status, _) = client.turn(&call, "hi").await;
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fast: {:?}",
        started.elapsed()
    );
    let (status, ready) = client.json("GET", "/ready", None).await;
    assert_eq!(status, 503);
    assert_eq!(ready["bindings"]["DATABASE"]["ok"], false);
    assert!(
        origin
            .state
            .metrics
            .render()
            .contains("origin_db_errors_total{kind=\"unavailable\"}")
    );

    down.store(false, Ordering::SeqCst);
    // The background probe finds it back within its interval.
    origin.until_ready().await;
    let (status, events) = client.turn(&call, "hi again").await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("done"));
    let (status, _) = client.json("GET", "/ready", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn agents_crud_pagination_and_phone_number_lookup() {
    let (origin, _) = fake_origin().await;
    let client = origin.client("t1");
    let spec = |number: &str| {
        json!({"name": "Desk", "system_prompt": "Be brief.", "greeting": "Hi!", "phone_numbers": [number],
               "inference": {"max_tokens": 300, "temperature": 0.4, "top_p": 0.9, "stop_sequences": ["END"]},
               "voice": {"voice": "en-US-Journey-O", "language": "en-US"}})
    };
    let (status, created) = client
        .json("PUT", "/v1/agents/desk", Some(spec("+14155550100")))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], 1);
    let (status, updated) = client
        .json("PUT", "/v1/agents/desk", Some(spec("+14155550101")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(updated["version"], 2);
    let (_, fetched) = client.json("GET", "/v1/agents/desk", None).await;
    assert_eq!(fetched["phone_numbers"], json!(["+14155550101"]));
    assert_eq!(fetched["inference"]["temperature"], json!(0.4));
    assert_eq!(fetched["inference"]["stop_sequences"], json!(["END"]));
    assert_eq!(fetched["voice"]["language"], "en-US");

    let (status, by_number) = client
        .json("GET", "/v1/phone-numbers/+14155550101/agent", None)
        .await;
    assert_eq!((status, by_number["id"].as_str()), (200, Some("desk")));
    let (status, _) = client
        .json("GET", "/v1/phone-numbers/+14155550100/agent", None)
        .await;
    assert_eq!(status, 404, "the old number was released");
    let (status, body) = client
        .json("PUT", "/v1/agents/other", Some(spec("+14155550101")))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("phone_number_taken"))
    );
    // A call by number finds the agent.
    let (status, call) = client
        .json(
            "POST",
            "/v1/calls",
            Some(json!({"to": "+14155550101", "source": "phone"})),
        )
        .await;
    assert_eq!((status, call["agent_id"].as_str()), (201, Some("desk")));

    for id in ["b", "c", "d"] {
        client
            .json(
                "PUT",
                &format!("/v1/agents/{id}"),
                Some(json!({"name": id, "system_prompt": "p"})),
            )
            .await;
    }
    let (_, page) = client.json("GET", "/v1/agents?limit=2", None).await;
    assert_eq!(page["agents"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["next_after"], "c");
    let (_, page) = client.json("GET", "/v1/agents?limit=2&after=c", None).await;
    let ids: Vec<&str> = page["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, vec!["d", "desk"]);
    let (status, _) = client.json("GET", "/v1/agents?limit=0", None).await;
    assert_eq!(status, 400);

    let (status, _) = client.json("DELETE", "/v1/agents/desk", None).await;
    assert_eq!(status, 204);
    let (status, _) = client.json("GET", "/v1/agents/desk", None).await;
    assert_eq!(status, 404, "deleted, and the cache was invalidated");
    let (status, _) = client.json("DELETE", "/v1/agents/desk", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn every_relay_setting_is_stored_and_bad_ones_are_refused_naming_the_field() {
    let (origin, _) = fake_origin().await;
    let client = origin.client("t1");
    let full = json!({
        "name": "Full", "system_prompt": "p", "greeting": "Hola & hello",
        "voice": {
            "voice": "en-US-Journey-O", "language": "en-US", "tts_provider": "ElevenLabs",
            "transcription_provider": "Deepgram", "tts_language": "en-US", "transcription_language": "multi",
            "speech_model": "nova-3-general", "welcome_greeting_interruptible": "none",
            "interruptible": "speech", "preemptible": true, "interrupt_sensitivity": "high",
            "dtmf_detection": true, "hints": ["AYBIZA"], "partial_prompts": true,
            "profanity_filter": false, "report_input_during_agent_speech": "dtmf",
            "elevenlabs_text_normalization": "off", "intelligence_service": "GA0123",
            "debug": ["speaker-events"],
            "languages": [{"code": "es-ES", "tts_provider": "Google", "voice": "es-ES-Neural2-B"}],
        },
        "fallback_utterance": "Sorry!", "idle_reprompt_secs": 20, "idle_reprompt": "Still there?",
        "idle_reprompts": 3, "idle_goodbye": "Bye.",
        "guardrail": {"identifier": "gr1", "version": "DRAFT", "trace": "disabled", "stream_processing_mode": "async"},
        "inference": {"max_tokens": 200},
    });
    let (status, created) = client
        .json("PUT", "/v1/agents/full", Some(full.clone()))
        .await;
    assert_eq!(status, 201, "{created}");
    // Read back from the database (a fresh origin on the same file would see the same).
    origin.state.fanout.invalidate_agent("t1", "full").await;
    let (_, fetched) = client.json("GET", "/v1/agents/full", None).await;
    for field in [
        "voice",
        "fallback_utterance",
        "idle_reprompt_secs",
        "idle_reprompt",
        "idle_reprompts",
        "idle_goodbye",
        "guardrail",
    ] {
        assert_eq!(fetched[field], full[field], "{field}");
    }
    // The defaults are shown for an agent that set nothing.
    let minimal = client.agent("plain", "m1", &[]).await;
    assert_eq!(minimal["idle_reprompt_secs"], 10);
    assert_eq!(minimal["idle_reprompts"], 2);
    assert_eq!(
        minimal["fallback_utterance"],
        shared::agent::DEFAULT_FALLBACK_UTTERANCE
    );

    let refused = [
        (
            json!({"voice": {"interruptible": "sometimes"}}),
            "voice.interruptible: ",
        ),
        (
            json!({"voice": {"interuptible": "any"}}),
            "voice.interuptible: unknown field `interuptible`",
        ),
        (
            json!({"voice": {"languages": [{"code": "es-ES", "pitch": 1}]}}),
            "voice.languages[0].pitch: unknown field `pitch`",
        ),
        (
            json!({"voice": {"language": "multi", "transcription_provider": "Google"}}),
            "voice.transcription_provider contradicts voice.language",
        ),
        (
            json!({"voice": {"welcome_greeting_interruptible": "any"}}),
            "voice.welcome_greeting_interruptible contradicts greeting",
        ),
        (
            json!({"voice": {"languages": [{"code": "es-ES"}]}}),
            "voice.languages[0] must be",
        ),
        (
            json!({"idle_reprompt_secs": 601}),
            "idle_reprompt_secs must be",
        ),
        (
            json!({"fallback_utterance": ""}),
            "fallback_utterance must be",
        ),
        (
            json!({"guardrail": {"identifier": "GR 1", "version": "1"}}),
            "guardrail.identifier must be",
        ),
        (
            json!({"guardrail": {"identifier": "gr1"}}),
            "guardrail: missing field `version`",
        ),
        (
            json!({"inference": {"latency": "fastest"}}),
            "inference.latency: ",
        ),
    ];
    for (extra, message) in refused {
        let mut spec = json!({"name": "x", "system_prompt": "p"});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let (status, body) = client.json("PUT", "/v1/agents/bad", Some(spec)).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["code"], "invalid_agent", "{extra}: {body}");
        let text = body["error"]["message"].as_str().unwrap_or("");
        assert!(text.starts_with(message), "{extra}: {text}");
    }
    let (status, _) = client.json("GET", "/v1/agents/bad", None).await;
    assert_eq!(status, 404, "nothing refused was stored");
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_requests() {
    let (origin, _) = fake_origin().await;
    let client = origin.client("t1");
    client.json("GET", "/v1/agents", None).await;
    client.agent("a1", "m1", &[]).await;
    let call = client.call("a1").await;
    client.turn(&call, "hi").await;
    let response = client.send("GET", "/metrics", None).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.expect("text");
    for name in [
        "origin_requests_total{route=\"/v1/agents\",method=\"GET\",status=\"200\"} 1",
        "# TYPE origin_turn_ttft_seconds histogram",
        "origin_turn_ttft_seconds_count{model=\"m1\"} 1",
        "origin_turns_total{outcome=\"completed\"} 1",
        "origin_tokens_total{direction=\"output\"} 2",
        "origin_interruptions_total 0",
        "origin_relay_connections 0",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[tokio::test]
async fn usage_ranges_are_validated() {
    let (origin, _) = fake_origin().await;
    let client = origin.client("t1");
    let (status, body) = client.json("GET", "/v1/usage?from=2026-02-30", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_range"))
    );
    let (status, body) = client
        .json("GET", "/v1/usage?from=2026-01-01&to=2026-01-31", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["from"], "2026-01-01");
    assert_eq!(body["tenant_id"], "t1");
}

/// One HTTP/1.1 exchange over a fresh connection.
async fn raw_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: origin\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn serve_stops_accepting_on_the_shutdown_signal() {
    let (mut origin, _) = fake_origin().await;
    let addr = origin.base.trim_start_matches("http://").to_owned();
    let answer = raw_get(&addr, "/health").await.expect("served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), origin.shutdown())
        .await
        .expect("serve returns promptly")
        .expect("clean");
    assert!(
        raw_get(&addr, "/health").await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_even_with_a_client_holding_a_connection() {
    let (mut origin, _) = fake_origin().await;
    let addr = origin.base.trim_start_matches("http://").to_owned();
    // A client that sends half a request and then goes quiet keeps its connection live.
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nhost: origin\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), origin.shutdown())
        .await
        .expect("serve returns within the 2 s grace")
        .expect("clean");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn healthcheck_reads_the_status_of_a_live_origin_and_fails_on_a_dead_one() {
    let (mut origin, _) = fake_origin().await;
    let addr: std::net::SocketAddr = origin
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    assert_eq!(
        origin::healthcheck::status_of_health(addr)
            .await
            .expect("answers"),
        200
    );
    origin.shutdown().await.expect("clean");
    assert!(origin::healthcheck::status_of_health(addr).await.is_err());
}

#[tokio::test]
async fn a_signed_unknown_route_is_a_json_404_with_the_edge_request_id() {
    let (origin, _) = fake_origin().await;
    let mut request = signed("GET", "/nope", b"", Some("t1"), now_secs());
    request
        .headers_mut()
        .insert("x-request-id", "edge-abc-123".parse().expect("value"));
    let (status, headers, body) = oneshot(&origin, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["request_id"], "edge-abc-123");
    assert_eq!(headers["x-request-id"], "edge-abc-123");
}

/// The Grafana dashboard beside the CloudFormation template (`origin/deploy/`) queries only
/// series the origin exports, each with the suffix its type gives it (OpenMetrics: a counter
/// `x` is sampled as `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`).
#[tokio::test]
async fn every_series_the_grafana_dashboard_queries_is_exported() {
    let (origin, llm) = fake_origin().await;
    // A turn that falls back: requests, turns, tokens, time to first token and fallbacks get
    // samples (prometheus_client leaves a family without any out of the text).
    llm.reply("m1", FakeReply::FailBefore(ModelFailure::Throttled));
    llm.reply("m2", FakeReply::Tokens(vec!["Fine.".into()]));
    let client = origin.client("t1");
    client.agent("a1", "m1", &["m2"]).await;
    let call = client.call("a1").await;
    assert_eq!(client.turn(&call, "hi").await.0, 200);
    // Families sampled only when something fails or a tool runs.
    let metrics = &origin.state.metrics;
    metrics.db_error(&origin::store::StoreError::Unavailable("test".into()));
    metrics.redis_error("test");
    metrics
        .tool_calls
        .get_or_create(&vec![("kind", "tenant".into()), ("outcome", "ok".into())])
        .inc();
    let (status, _, body) =
        oneshot(&origin, signed("GET", "/metrics", b"", None, now_secs())).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("Prometheus text").to_owned();
    let families: std::collections::HashMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    assert!(families.contains_key("origin_requests"), "{text}");

    let dashboard: Value =
        serde_json::from_str(include_str!("../deploy/grafana-dashboard.json")).expect("JSON");
    let expressions: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(expressions.len() >= 7, "{expressions:?}");
    let mut checked = 0;
    for expr in &expressions {
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("origin_"));
        for name in names {
            let (family, kind) = [
                ("_total", "counter"),
                ("_bucket", "histogram"),
                ("_sum", "histogram"),
                ("_count", "histogram"),
            ]
            .iter()
            .find_map(|(suffix, kind)| name.strip_suffix(suffix).map(|f| (f, *kind)))
            .unwrap_or((name, "gauge"));
            assert_eq!(
                families.get(family),
                Some(&kind),
                "`{name}` in `{expr}` is not a {kind} the origin exports"
            );
            checked += 1;
        }
    }
    assert!(checked >= expressions.len(), "every query names a series");
}
