//! Post-call webhooks: endpoints through `/v1/webhooks`, events written to the outbox with the
//! change they report, delivered signed to a local receiver (which fails on demand) with
//! backoff on an injected clock, the delivery log and its retry, the disable rule, the outbox
//! surviving a restart and a database outage, two replicas sharing one outbox, and every
//! route's failure modes — on SQLite and the test command's PostgreSQL.

#[macro_use]
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use origin::Clock;
use serde_json::{Value, json};
use shared::outbound_signature;
use support::{Client, Db, Options, Origin, eventually};

on_both_databases!(
    deliveries_are_signed_retried_with_backoff_and_logged,
    call_ended_carries_the_transcript_and_turns_are_opt_in,
    an_endpoint_failing_for_a_day_is_disabled_then_re_enabled_and_retried,
    the_outbox_survives_an_origin_restart_and_a_database_outage,
    two_replicas_send_each_delivery_once,
    every_route_refuses_what_it_must,
);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    signature: String,
    idempotency_key: String,
    event_type: String,
    raw: Vec<u8>,
    body: Value,
}

#[derive(Default)]
struct ReceiverState {
    hits: Mutex<Vec<Hit>>,
    /// Requests still to be answered 500.
    fail_next: AtomicU32,
    /// Answer 500 to everything while set.
    failing: AtomicBool,
}

/// A tenant's webhook receiver on loopback.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    state.hits.lock().expect("lock").push(Hit {
        signature: header(outbound_signature::HEADER),
        idempotency_key: header(shared::webhook::IDEMPOTENCY_HEADER),
        event_type: header(shared::webhook::EVENT_TYPE_HEADER),
        raw: body.to_vec(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let fail_once = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail_once || state.failing.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&state));
        Self {
            url: format!("{}/hook", support::serve_locally(app).await),
            state,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().expect("lock").clone()
    }

    fn of_type(&self, kind: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|hit| hit.event_type == kind)
            .collect()
    }

    async fn wait_for(&self, count: usize, what: &str) {
        eventually(Duration::from_secs(10), what, || async {
            self.hits().len() >= count
        })
        .await;
    }
}

/// A clock that runs with the system's, plus an offset the test moves (the origin checks the
/// edge's signatures against it too, so API calls are made with the offset back at 0).
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn clock(&self) -> Clock {
        let offset = Arc::clone(&self.0);
        Arc::new(move || support::now_secs() * 1_000 + offset.load(Ordering::SeqCst))
    }

    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    fn reset(&self) {
        self.0.store(0, Ordering::SeqCst);
    }

    fn now_secs(&self) -> u64 {
        support::now_secs() + self.0.load(Ordering::SeqCst) / 1_000
    }
}

fn options(db: Db, clock: &TestClock) -> Options {
    let mut options = Options::new(db)
        .var("ORIGIN_ENVIRONMENT", "development")
        .var("WEBHOOK_POLL_MS", "20");
    options.clock = Some(clock.clock());
    options
}

async fn secret_of(client: &Client) -> String {
    let (status, answer) = client.json("GET", "/v1/signing-secret", None).await;
    assert_eq!(status, 201, "the first read creates it: {answer}");
    answer["secret"].as_str().expect("shown once").to_owned()
}

async fn endpoint(client: &Client, spec: Value) -> String {
    let (status, answer) = client.json("POST", "/v1/webhooks", Some(spec)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["enabled"], true, "{answer}");
    answer["id"].as_str().expect("id").to_owned()
}

async fn deliveries(client: &Client, endpoint: &str) -> Vec<Value> {
    let (status, answer) = client
        .json("GET", &format!("/v1/webhooks/{endpoint}/deliveries"), None)
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["deliveries"].as_array().cloned().unwrap_or_default()
}

/// Waits until the store has recorded `attempts` attempts of the endpoint's newest delivery
/// (read from the store: the API would refuse a moved clock's signatures).
async fn recorded(origin: &Origin, endpoint: &str, attempts: u32) {
    eventually(
        Duration::from_secs(10),
        "the attempt is recorded",
        || async {
            origin
                .state
                .store
                .list_deliveries("acme", endpoint, 1)
                .await
                .ok()
                .and_then(|log| log.first().map(|delivery| delivery.attempts))
                == Some(attempts)
        },
    )
    .await;
}

fn verifies(hit: &Hit, secret: &str, now_secs: u64) -> bool {
    outbound_signature::verify(
        &hit.signature,
        &hit.raw,
        &[secret.as_bytes()],
        now_secs,
        outbound_signature::RECOMMENDED_TOLERANCE_SECS,
    )
    .is_ok()
}

async fn metrics(client: &Client) -> String {
    client
        .send("GET", "/metrics", None)
        .await
        .text()
        .await
        .expect("metrics")
}

async fn deliveries_are_signed_retried_with_backoff_and_logged(db: Db) {
    let clock = TestClock::default();
    let origin = Origin::start(options(db, &clock)).await;
    let receiver = Receiver::start().await;
    let client = origin.client("acme");
    let secret = secret_of(&client).await;
    client.agent("desk", "m", &[]).await;
    client.agent("other", "m", &[]).await;
    let hook = endpoint(&client, json!({"url": receiver.url})).await;
    // Scoped to another agent: hears nothing of desk's calls.
    let scoped = endpoint(&client, json!({"url": receiver.url, "agent_id": "other"})).await;
    receiver.state.fail_next.store(2, Ordering::SeqCst);

    let call = client.call("desk").await;
    receiver.wait_for(1, "the first attempt, at once").await;
    recorded(&origin, &hook, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.hits().len(), 1, "the retry waits for its backoff");
    // The first retry is due 15–30 s later, the second 30–60 s after that.
    clock.advance(31_000);
    receiver.wait_for(2, "the first retry").await;
    recorded(&origin, &hook, 2).await;
    clock.advance(61_000);
    receiver.wait_for(3, "the second retry").await;
    recorded(&origin, &hook, 3).await;
    let attempts_at = clock.now_secs();
    clock.reset();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let hits = receiver.hits();
    assert_eq!(
        hits.len(),
        3,
        "delivered on the third attempt, then no more"
    );
    let event = &hits[0].body;
    assert_eq!(event["type"], "call.started");
    assert_eq!(event["tenant_id"], "acme");
    assert_eq!(event["data"]["call"]["id"], call.as_str());
    assert_eq!(event["data"]["call"]["agent_id"], "desk");
    let id = event["id"].as_str().expect("event id");
    for hit in &hits {
        assert_eq!(hit.idempotency_key, id, "one key for every attempt");
        assert_eq!(hit.event_type, "call.started");
        assert_eq!(hit.raw, hits[0].raw, "the same body every time");
        assert!(
            verifies(hit, &secret, attempts_at),
            "signed: {}",
            hit.signature
        );
        assert!(!verifies(hit, "whsec_someone_else", attempts_at));
    }

    let log = deliveries(&client, &hook).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["id"], id);
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["attempts"], 3);
    assert_eq!(log[0]["last_status_code"], 204);
    assert_eq!(log[0]["call_id"], call.as_str());
    assert!(log[0].get("next_attempt_at_ms").is_none(), "{log:?}");
    assert!(deliveries(&client, &scoped).await.is_empty());

    // Retried by hand: sent again with the same key, logged as a fourth attempt.
    let (status, retried) = client
        .json(
            "POST",
            &format!("/v1/webhooks/{hook}/deliveries/{id}/retry"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(retried["status"], "pending");
    receiver.wait_for(4, "the retry asked for").await;
    assert_eq!(receiver.hits()[3].idempotency_key, id);
    eventually(Duration::from_secs(5), "the retry is logged", || async {
        deliveries(&client, &hook).await[0]["attempts"] == 4
    })
    .await;

    let text = metrics(&client).await;
    for line in [
        "origin_webhook_attempts_total{event=\"call.started\",outcome=\"failed\"} 2",
        "origin_webhook_attempts_total{event=\"call.started\",outcome=\"delivered\"} 2",
        "# TYPE origin_webhook_pending gauge",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

async fn call_ended_carries_the_transcript_and_turns_are_opt_in(db: Db) {
    let clock = TestClock::default();
    let origin = Origin::start(options(db, &clock)).await;
    let receiver = Receiver::start().await;
    let client = origin.client("acme");
    client.agent("desk", "m", &[]).await;
    origin.script(
        "m",
        bedrock_emulator::ModelScript {
            ttft_ms: 5,
            inter_token_ms: 1,
            reply: Some("Happy to help.".into()),
            ..bedrock_emulator::ModelScript::default()
        },
    );
    let all = endpoint(
        &client,
        json!({"url": receiver.url, "events": ["call.ended", "turn.completed"]}),
    )
    .await;
    let call = client.call("desk").await;
    let (status, _) = client.turn(&call, "Hello there").await;
    assert_eq!(status, 200);
    let (status, ended) = client
        .json(
            "POST",
            &format!("/v1/calls/{call}/end"),
            Some(json!({"reason": "completed", "handoff_data": {"ticket": "T-1"}})),
        )
        .await;
    assert_eq!(status, 200, "{ended}");
    receiver.wait_for(2, "turn.completed and call.ended").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    assert!(
        receiver.of_type("call.started").is_empty(),
        "not subscribed"
    );
    let turns = receiver.of_type("turn.completed");
    assert_eq!(turns.len(), 1, "one reply: {:?}", receiver.hits());
    assert_eq!(turns[0].body["data"]["turn"]["role"], "assistant");
    assert_eq!(turns[0].body["data"]["turn"]["text"], "Happy to help.");
    assert_eq!(turns[0].body["data"]["call_id"], call.as_str());
    let ended = receiver.of_type("call.ended");
    assert_eq!(ended.len(), 1);
    let data = &ended[0].body["data"];
    assert_eq!(data["end_reason"], "completed");
    assert_eq!(data["call"]["status"], "ended");
    assert_eq!(data["handoff"]["ticket"], "T-1");
    assert_eq!(data["transcript"][0]["role"], "user");
    assert_eq!(data["transcript"][0]["text"], "Hello there");
    assert_eq!(data["transcript"][1]["text"], "Happy to help.");
    assert_eq!(data["usage"]["replies"], 1);
    assert_eq!(data["usage"]["caller_turns"], 1);
    assert!(
        data["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0,
        "{data}"
    );
    assert!(data["timings"]["duration_ms"].is_u64(), "{data}");
    assert_eq!(data["tool_calls"], json!([]));
    assert_eq!(deliveries(&client, &all).await.len(), 2);

    // What answering-machine detection found rides on call.ended.
    let machine = client.call("desk").await;
    let (status, _) = client
        .json(
            "POST",
            &format!("/v1/calls/{machine}/answered-by"),
            Some(json!({"answered_by": "machine_end_beep"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = client
        .json(
            "POST",
            &format!("/v1/calls/{machine}/end"),
            Some(json!({"reason": "completed"})),
        )
        .await;
    assert_eq!(status, 200);
    eventually(
        Duration::from_secs(10),
        "the machine's call.ended",
        || async {
            receiver
                .of_type("call.ended")
                .iter()
                .any(|hit| hit.body["data"]["call"]["id"] == machine.as_str())
        },
    )
    .await;
    let machine_ended = receiver
        .of_type("call.ended")
        .into_iter()
        .find(|hit| hit.body["data"]["call"]["id"] == machine.as_str())
        .expect("found");
    assert_eq!(
        machine_ended.body["data"]["answered_by"],
        "machine_end_beep"
    );
    assert_eq!(machine_ended.body["data"]["voicemail"], Value::Null);

    // A transfer ended by the API reports call.transferred beside call.ended.
    let transfers = endpoint(
        &client,
        json!({"url": receiver.url, "events": ["call.transferred"]}),
    )
    .await;
    let second = client.call("desk").await;
    let (status, _) = client
        .json(
            "POST",
            &format!("/v1/calls/{second}/end"),
            Some(json!({"reason": "transferred", "handoff_data": {"target": "+14155550123"}})),
        )
        .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(10), "call.transferred", || async {
        !receiver.of_type("call.transferred").is_empty()
    })
    .await;
    let transferred = &receiver.of_type("call.transferred")[0].body["data"];
    assert_eq!(transferred["call"]["id"], second.as_str());
    assert_eq!(transferred["handoff"]["target"], "+14155550123");
    assert_eq!(deliveries(&client, &transfers).await.len(), 1);
}

async fn an_endpoint_failing_for_a_day_is_disabled_then_re_enabled_and_retried(db: Db) {
    let clock = TestClock::default();
    let origin = Origin::start(options(db, &clock)).await;
    let receiver = Receiver::start().await;
    receiver.state.failing.store(true, Ordering::SeqCst);
    let client = origin.client("acme");
    client.agent("desk", "m", &[]).await;
    let hook = endpoint(&client, json!({"url": receiver.url})).await;
    client.call("desk").await;
    receiver.wait_for(1, "the first attempt").await;
    recorded(&origin, &hook, 1).await;

    // Two hours at a time (longer than the longest backoff): an attempt each time, until the
    // endpoint has failed ten times over a day.
    let store = Arc::clone(&origin.state.store);
    let mut disabled = None;
    for step in 1..=20 {
        clock.advance(2 * 3_600_000);
        receiver.wait_for(step + 1, "the next attempt").await;
        recorded(&origin, &hook, u32::try_from(step + 1).expect("small")).await;
        let endpoint = store
            .get_webhook("acme", &hook)
            .await
            .expect("store")
            .expect("endpoint");
        if !endpoint.enabled {
            disabled = Some((step, endpoint));
            break;
        }
        assert_eq!(endpoint.consecutive_failures as usize, step + 1);
    }
    let (step, endpoint) = disabled.expect("disabled within 20 steps");
    assert_eq!(step, 12, "24 h of failures");
    assert!(
        endpoint
            .disabled_reason
            .as_deref()
            .is_some_and(|why| why.contains("failed attempts in a row")),
        "{endpoint:?}"
    );
    let attempts = receiver.hits().len();
    clock.advance(2 * 3_600_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.hits().len(),
        attempts,
        "a disabled endpoint gets nothing"
    );
    clock.reset();

    let (status, shown) = client
        .json("GET", &format!("/v1/webhooks/{hook}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["enabled"], false);
    assert!(shown["disabled_reason"].is_string(), "{shown}");
    let log = deliveries(&client, &hook).await;
    assert_eq!(
        log[0]["status"], "failed",
        "the retry window is over: {log:?}"
    );
    let event = log[0]["id"].as_str().expect("id").to_owned();
    let retry = format!("/v1/webhooks/{hook}/deliveries/{event}/retry");
    let (status, refused) = client.json("POST", &retry, None).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "endpoint_disabled");

    receiver.state.failing.store(false, Ordering::SeqCst);
    let (status, enabled) = client
        .json(
            "PATCH",
            &format!("/v1/webhooks/{hook}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{enabled}");
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["consecutive_failures"], 0);
    assert!(enabled.get("disabled_reason").is_none(), "{enabled}");
    let (status, _) = client.json("POST", &retry, None).await;
    assert_eq!(status, 202);
    receiver
        .wait_for(attempts + 1, "the retried delivery")
        .await;
    eventually(Duration::from_secs(5), "logged delivered", || async {
        deliveries(&client, &hook).await[0]["status"] == "delivered"
    })
    .await;
    assert!(
        metrics(&client)
            .await
            .contains("origin_webhook_endpoints_disabled_total 1")
    );
}

async fn the_outbox_survives_an_origin_restart_and_a_database_outage(db: Db) {
    let clock = TestClock::default();
    let mut first = Origin::start(options(db, &clock)).await;
    let receiver = Receiver::start().await;
    receiver.state.failing.store(true, Ordering::SeqCst);
    let client = first.client("acme");
    client.agent("desk", "m", &[]).await;
    let hook = endpoint(&client, json!({"url": receiver.url})).await;
    client.call("desk").await;
    receiver.wait_for(1, "the first attempt fails").await;
    recorded(&first, &hook, 1).await;
    first.shutdown().await.expect("stops");

    // A new origin on the same database, its store down at first.
    receiver.state.failing.store(false, Ordering::SeqCst);
    let down = Arc::new(AtomicBool::new(true));
    let mut second = options(db, &clock);
    second.shared_db = Some(first.db_name.clone());
    second.flaky = Some(Arc::clone(&down));
    let second = Origin::start(second).await;
    clock.advance(31_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.hits().len(),
        1,
        "nothing is sent while the database is away"
    );
    down.store(false, Ordering::SeqCst);
    receiver
        .wait_for(2, "the pending delivery, after the restart")
        .await;
    clock.reset();
    let hits = receiver.hits();
    assert_eq!(hits[0].idempotency_key, hits[1].idempotency_key);
    // The API answers once the database probe has seen the store back (the delivery task does
    // not wait for it: a claim that fails is tried again).
    second.until_ready().await;
    let log = deliveries(&second.client("acme"), &hook).await;
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["attempts"], 2);
}

async fn two_replicas_send_each_delivery_once(db: Db) {
    let clock = TestClock::default();
    let first = Origin::start(options(db, &clock)).await;
    let mut second = options(db, &clock);
    second.shared_db = Some(first.db_name.clone());
    let second = Origin::start(second).await;
    let receiver = Receiver::start().await;
    let client = first.client("acme");
    client.agent("desk", "m", &[]).await;
    endpoint(&client, json!({"url": receiver.url})).await;
    // Calls start on both replicas; both poll the same outbox.
    let other = second.client("acme");
    for n in 0..12 {
        if n % 2 == 0 {
            client.call("desk").await;
        } else {
            other.call("desk").await;
        }
    }
    receiver.wait_for(12, "every call.started").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys: Vec<String> = receiver
        .hits()
        .into_iter()
        .map(|hit| hit.idempotency_key)
        .collect();
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), 12, "each sent once: {keys:?}");
    assert_eq!(unique.len(), 12);
}

async fn every_route_refuses_what_it_must(db: Db) {
    // A production origin: loopback and internal addresses are refused.
    let origin = Origin::start(Options::new(db)).await;
    let client = origin.client("acme");
    let stranger = origin.client("globex");
    client.agent("desk", "m", &[]).await;

    let refusals = [
        (json!({"url": "http://127.0.0.1:9/hook"}), "url"),
        (json!({"url": "https://169.254.169.254/latest"}), "url"),
        (json!({"url": "https://10.0.0.7/hook"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": "https://hooks.example.com", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com", "agent_id": "nobody"}),
            "agent_id",
        ),
        (
            json!({"url": "https://hooks.example.com", "agent_id": "a/b"}),
            "agent_id",
        ),
        (
            json!({"url": "https://hooks.example.com", "description": "x".repeat(201)}),
            "description",
        ),
    ];
    for (body, field) in refusals {
        let (status, answer) = client
            .json("POST", "/v1/webhooks", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], "invalid_webhook", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    for body in [
        json!({"url": "https://hooks.example.com", "events": ["call.nope"]}),
        json!({"url": "https://hooks.example.com", "secret": "mine"}),
        json!({"events": ["call.ended"]}),
    ] {
        let (status, answer) = client
            .json("POST", "/v1/webhooks", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], "invalid_webhook", "{answer}");
    }
    let response = client
        .send("POST", "/v1/webhooks", Some(b"{not json"))
        .await;
    assert_eq!(response.status().as_u16(), 400);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "malformed_json");

    let hook = endpoint(&client, json!({"url": "https://hooks.example.com/aybiza"})).await;
    let (status, list) = client.json("GET", "/v1/webhooks", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["endpoints"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        list["endpoints"][0]["events"],
        json!(["call.started", "call.ended", "call.transferred"])
    );
    let (_, theirs) = stranger.json("GET", "/v1/webhooks", None).await;
    assert_eq!(theirs["endpoints"], json!([]), "another tenant sees none");

    // Another tenant's endpoint, an unknown one and a malformed id.
    let paths = [
        ("GET", format!("/v1/webhooks/{hook}")),
        ("PATCH", format!("/v1/webhooks/{hook}")),
        ("DELETE", format!("/v1/webhooks/{hook}")),
        ("GET", format!("/v1/webhooks/{hook}/deliveries")),
        (
            "POST",
            format!("/v1/webhooks/{hook}/deliveries/evt_1/retry"),
        ),
    ];
    for (method, path) in &paths {
        let body = (*method == "PATCH").then(|| json!({"description": "x"}));
        let (status, answer) = stranger.json(method, path, body.clone()).await;
        assert_eq!(status, 404, "{method} {path} as another tenant: {answer}");
        assert_eq!(answer["error"]["code"], "not_found");
        let unknown = path.replace(&hook, "we_unknown");
        let (status, _) = client.json(method, &unknown, body.clone()).await;
        assert_eq!(status, 404, "{method} {unknown}");
        let malformed = path.replace(&hook, "we.bad");
        let (status, answer) = client.json(method, &malformed, body).await;
        assert_eq!(status, 400, "{method} {malformed}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_id");
    }
    let (status, _) = client
        .json(
            "POST",
            &format!("/v1/webhooks/{hook}/deliveries/evt_nothing/retry"),
            None,
        )
        .await;
    assert_eq!(status, 404, "no such delivery");
    let (status, answer) = client
        .json(
            "GET",
            &format!("/v1/webhooks/{hook}/deliveries?limit=0"),
            None,
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (400, json!("invalid_query"))
    );
    let (status, _) = client
        .json(
            "GET",
            &format!("/v1/webhooks/{hook}/deliveries?bogus=1"),
            None,
        )
        .await;
    assert_eq!(status, 400);

    // A patch is checked like a new endpoint.
    let path = format!("/v1/webhooks/{hook}");
    let (status, answer) = client
        .json("PATCH", &path, Some(json!({"url": "https://127.0.0.1/x"})))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].clone()),
        (400, json!("url"))
    );
    let response = client.send("PATCH", &path, Some(b"[")).await;
    assert_eq!(response.status().as_u16(), 400);
    let (status, answer) = client
        .json("PATCH", &path, Some(json!({"enabled": "yes"})))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (400, json!("invalid_webhook"))
    );
    let (status, patched) = client
        .json(
            "PATCH",
            &path,
            Some(json!({"events": ["turn.completed"], "description": "CRM"})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["events"], json!(["turn.completed"]));
    assert_eq!(patched["url"], "https://hooks.example.com/aybiza");
    let (status, off) = client
        .json("PATCH", &path, Some(json!({"enabled": false})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(off["disabled_reason"], "disabled by request");

    let (status, _) = client.json("PUT", "/v1/webhooks", Some(json!({}))).await;
    assert_eq!(status, 405);
    let (status, _) = client.json("DELETE", &path, None).await;
    assert_eq!(status, 204);
    let (status, _) = client.json("GET", &path, None).await;
    assert_eq!(status, 404);
}
