//! The origin against real servers: the Bedrock emulator through the real AWS SDK, SQLite and
//! the test command's PostgreSQL (a schema per test), its Redis (a key prefix per test).
//! Tests marked for both databases run twice.

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use bedrock_emulator::{Fault, FaultKind, ModelScript};
use serde_json::{Value, json};
use support::{
    Db, Options, Origin, Proxy, authority_of, eventually, fault, postgres_url, redis_url, slow,
    turns_of, with_authority,
};

on_both_databases!(
    a_full_conversation_over_the_relay,
    an_interrupt_mid_reply_cancels_the_bedrock_stream_and_stores_what_was_heard,
    an_interrupt_after_the_reply_corrects_what_was_stored,
    the_fallback_chain_runs_through_the_real_sdk,
    a_reconnect_continues_the_conversation,
    durable_usage_counts_what_bedrock_reported,
    one_tenant_never_reaches_another_tenants_agents_calls_or_usage,
    a_machine_after_its_greeting_gets_the_voicemail_message_then_the_call_ends,
    detection_before_the_relay_connects_is_acted_on_at_setup,
);

/// An outbound call (as the edge creates it) on an agent with a voicemail message.
async fn outbound_call(client: &support::Client, agent: &str) -> String {
    let (status, answer) = client
        .json(
            "PUT",
            &format!("/v1/agents/{agent}"),
            Some(json!({
                "name": "Ava", "system_prompt": "p", "model": "m",
                "greeting": "Hello, this is Ava.",
                "voicemail_message": "Hi, this is Ava. Please call us back.",
                "phone_numbers": ["+18005550100"],
            })),
        )
        .await;
    assert!(status == 201 || status == 200, "agent: {status} {answer}");
    let (status, call) = client
        .json(
            "POST",
            "/v1/calls",
            Some(json!({
                "id": format!("call_{agent}"), "agent_id": agent, "source": "phone",
                "from": "+18005550100", "to": "+14155550123", "direction": "outbound",
                "carrier": "telnyx", "metadata": {"campaign": "renewals"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(
        (&call["direction"], &call["carrier"], &call["metadata"]),
        (
            &json!("outbound"),
            &json!("telnyx"),
            &json!({"campaign": "renewals"})
        )
    );
    call["id"].as_str().expect("id").to_owned()
}

async fn a_machine_after_its_greeting_gets_the_voicemail_message_then_the_call_ends(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let client = origin.client("acme");
    let call = outbound_call(&client, "ava").await;
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({"greeting": "carrier"})).await;
    // A person would talk to the agent; a `human` result changes nothing.
    let answered = |value: &str| json!({ "answered_by": value });
    let path = format!("/v1/calls/{call}/answered-by");
    let (status, stored) = client.json("POST", &path, Some(answered("human"))).await;
    assert_eq!((status, &stored["answered_by"]), (200, &json!("human")));
    assert_eq!(relay.next_within(Duration::from_millis(300)).await, None);

    // The first result stays; this one is a second opinion, stored nowhere but the log.
    let second = format!("/v1/calls/{call}/answered-by");
    let (status, stored) = client
        .json("POST", &second, Some(answered("machine_end_beep")))
        .await;
    assert_eq!((status, &stored["answered_by"]), (200, &json!("human")));
    assert_eq!(relay.next_within(Duration::from_millis(300)).await, None);
    relay.close().await;

    // A fresh call whose first result is a machine at the end of its greeting.
    let (status, _) = client
        .json(
            "POST",
            "/v1/calls",
            Some(json!({"id": "call_beep", "agent_id": "ava", "source": "phone", "direction": "outbound"})),
        )
        .await;
    assert_eq!(status, 201);
    let mut relay = client.relay("call_beep").await;
    relay
        .setup("call_beep", json!({"greeting": "carrier"}))
        .await;
    let started = std::time::Instant::now();
    let (status, _) = client
        .json(
            "POST",
            "/v1/calls/call_beep/answered-by",
            Some(answered("machine_end_beep")),
        )
        .await;
    assert_eq!(status, 200);
    let said = relay.next().await;
    assert_eq!(
        said,
        json!({"type": "text", "token": "Hi, this is Ava. Please call us back.", "last": true})
    );
    // What the machine says meanwhile (its own beep, transcribed) is not answered.
    relay.prompt("beep").await;
    let end = relay.next().await;
    assert_eq!(end["type"], "end");
    assert!(
        started.elapsed() >= Duration::from_millis(3_500),
        "the message had time to be said: {:?}",
        started.elapsed()
    );
    let handoff: Value =
        serde_json::from_str(end["handoffData"].as_str().expect("string")).expect("json");
    assert_eq!(handoff["reason"], "voicemail_left");
    assert_eq!(relay.close_code(Duration::from_secs(2)).await, Some(1000));
    let (_, record) = client.json("GET", "/v1/calls/call_beep", None).await;
    assert_eq!(record["status"], "ended");
    assert_eq!(record["end_reason"], "voicemail_left");
    assert_eq!(record["answered_by"], "machine_end_beep");
    assert_eq!(
        record["voicemail_message"],
        "Hi, this is Ava. Please call us back."
    );
    assert!(record["voicemail_left_at_ms"].as_u64().is_some());
    assert!(
        turns_of(&client, "call_beep").await.is_empty(),
        "the machine's beep was no turn"
    );
    // Once ended, a late result is refused.
    let (status, error) = client
        .json(
            "POST",
            "/v1/calls/call_beep/answered-by",
            Some(answered("human")),
        )
        .await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (409, &json!("call_ended"))
    );
}

async fn detection_before_the_relay_connects_is_acted_on_at_setup(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let client = origin.client("acme");
    let call = outbound_call(&client, "early").await;
    // `detect`: a machine found as its greeting starts is hung up on, without a message.
    let (status, _) = client
        .json(
            "POST",
            &format!("/v1/calls/{call}/answered-by"),
            Some(json!({"answered_by": "machine_start"})),
        )
        .await;
    assert_eq!(status, 200);
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    let end = relay.next().await;
    assert_eq!(end["type"], "end", "no greeting for a machine: {end}");
    let handoff: Value =
        serde_json::from_str(end["handoffData"].as_str().expect("string")).expect("json");
    assert_eq!(handoff["reason"], "machine_answered");
    let (_, record) = client.json("GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!(
        (
            &record["end_reason"],
            &record["answered_by"],
            record.get("voicemail_message")
        ),
        (&json!("machine_answered"), &json!("machine_start"), None)
    );
}

async fn a_full_conversation_over_the_relay(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let client = origin.client("acme");
    let (status, _) = client
        .json(
            "PUT",
            "/v1/agents/desk",
            Some(json!({
                "name": "Front desk",
                "system_prompt": "You are the front desk of a restaurant.",
                "greeting": "Hello, thanks for calling. How can I help?",
                "model": "desk-model",
                "phone_numbers": ["+14155550199"],
            })),
        )
        .await;
    assert_eq!(status, 201);

    // The carrier connects for a call the edge has not created: setup creates it, finding the
    // agent by the called number.
    let mut relay = client.relay("CA0001").await;
    relay.setup("CA0001", json!({})).await;
    assert_eq!(
        relay.reply().await,
        "Hello, thanks for calling. How can I help?"
    );

    relay.prompt("I would like a table for two").await;
    let first = relay.reply().await;
    assert_eq!(
        first,
        "I heard 1 message. You said: I would like a table for two. This reply comes from desk-model."
    );

    relay.send(json!({"type": "dtmf", "digit": "5"})).await;
    relay.prompt("at seven").await;
    let second = relay.reply().await;
    assert!(second.starts_with("I heard 3 messages."), "{second}");

    // What Bedrock received: the greeting as a note after the system prompt, the key press
    // joined to the caller's words, and a SigV4-signed request from the real SDK.
    let requests = origin.emulator.requests("desk-model");
    let last = requests.last().expect("requests");
    assert_eq!(
        last["system"][0]["text"],
        "You are the front desk of a restaurant."
    );
    assert_eq!(
        last["system"][1]["text"],
        "The call began with you saying: \"Hello, thanks for calling. How can I help?\"\n\
         The caller is speaking the language with the BCP 47 tag en-US. Answer in that language."
    );
    assert_eq!(
        last["messages"][2]["content"][0]["text"],
        "[The caller pressed the 5 key.]\nat seven"
    );
    let stats = origin.emulator.model_stats("desk-model");
    assert_eq!((stats.requests, stats.completed, stats.signed), (2, 2, 2));

    let (_, call) = client.json("GET", "/v1/calls/CA0001", None).await;
    assert_eq!(call["agent_id"], "desk");
    assert_eq!(call["source"], "phone");
    assert_eq!(call["carrier_call_sid"], "CA0001");
    // Caller turns: two prompts and a key press (the greeting and replies are the agent's).
    assert_eq!(call["turn_count"], 3);
    let turns = turns_of(&client, "CA0001").await;
    let roles: Vec<&str> = turns
        .iter()
        .map(|t| t["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        roles,
        [
            "assistant",
            "user",
            "assistant",
            "dtmf",
            "user",
            "assistant"
        ]
    );
    assert_eq!(turns[2]["text"], first);
    assert_eq!(turns[2]["model"], "desk-model");
    assert!(turns[2]["ttft_ms"].as_u64().is_some_and(|ms| ms >= 5));
    relay.close().await;
}

async fn an_interrupt_mid_reply_cancels_the_bedrock_stream_and_stores_what_was_heard(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    origin.script(
        "talker",
        slow(
            "Our specials today are many. We have soup, we have fish, we have a long list of desserts to describe.",
            40,
        ),
    );
    let client = origin.client("acme");
    client.agent("a1", "talker", &[]).await;
    let call = client.call("a1").await;
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    relay.prompt("What are the specials?").await;
    let first = relay.next().await;
    assert_eq!(first["token"], "Our specials today are many. ");
    assert_eq!(origin.emulator.model_stats("talker").in_flight, 1);

    relay
        .send(json!({"type": "interrupt", "utteranceUntilInterrupt": "Our specials today", "durationUntilInterruptMs": 900}))
        .await;
    // The Bedrock stream is really cancelled: the emulator saw the client hang up.
    eventually(
        Duration::from_secs(2),
        "the emulator counts a cancelled stream",
        || async { origin.emulator.model_stats("talker").cancelled == 1 },
    )
    .await;
    let stats = origin.emulator.model_stats("talker");
    assert_eq!((stats.completed, stats.in_flight), (0, 0));
    // Nothing more is spoken for the cancelled reply, not even its closing message.
    assert_eq!(relay.next_within(Duration::from_millis(300)).await, None);

    eventually(
        Duration::from_secs(2),
        "the interrupted reply is stored",
        || async { turns_of(&client, &call).await.len() == 2 },
    )
    .await;
    let turns = turns_of(&client, &call).await;
    assert_eq!(turns[1]["text"], "Our specials today");
    assert_eq!(turns[1]["interrupted"], true);
    assert!(
        origin
            .state
            .metrics
            .render()
            .contains("origin_interruptions_total 1")
    );

    // The conversation goes on, with what was heard as context.
    origin.script("talker", slow("Sure.", 1));
    relay.prompt("Just the soup").await;
    assert_eq!(relay.reply().await, "Sure.");
    let last = origin.emulator.requests("talker").pop().expect("request");
    assert_eq!(
        last["messages"][1]["content"][0]["text"],
        "Our specials today"
    );
}

async fn an_interrupt_after_the_reply_corrects_what_was_stored(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    origin.script("m", slow("One two three. Four five six.", 1));
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    relay.prompt("count").await;
    assert_eq!(relay.reply().await, "One two three. Four five six.");
    // Text-to-speech was still playing when the caller spoke.
    relay
        .send(json!({"type": "interrupt", "utteranceUntilInterrupt": "One two three.", "durationUntilInterruptMs": 1500}))
        .await;
    eventually(
        Duration::from_secs(2),
        "the stored reply becomes what was heard",
        || async {
            turns_of(&client, &call)
                .await
                .get(1)
                .map(|t| t["text"].clone())
                == Some(json!("One two three."))
        },
    )
    .await;
    assert_eq!(turns_of(&client, &call).await[1]["interrupted"], true);
}

async fn the_fallback_chain_runs_through_the_real_sdk(db: Db) {
    let origin = Origin::start(Options::new(db).var("BEDROCK_FIRST_TOKEN_TIMEOUT_MS", "300")).await;
    origin.script("throttled", fault(FaultKind::Throttle));
    origin.script("not-ready", fault(FaultKind::NotReady));
    origin.script("broken", fault(FaultKind::ServerError));
    origin.script(
        "slow",
        ModelScript {
            ttft_ms: 5_000,
            ..ModelScript::default()
        },
    );
    origin.script("unavailable", fault(FaultKind::Unavailable));
    origin.script("good", slow("At last.", 1));
    let client = origin.client("acme");
    client
        .agent(
            "a1",
            "throttled",
            &["not-ready", "broken", "slow", "unavailable", "good"],
        )
        .await;
    let call = client.call("a1").await;
    let started = std::time::Instant::now();
    let (status, events) = client.turn(&call, "hello").await;
    assert_eq!(status, 200);
    let done = events.last().expect("events");
    assert_eq!(done.event, "done", "{events:?}");
    assert_eq!(done.data["model"], "good");
    assert_eq!(
        done.data["fallbacks"],
        json!([
            {"model": "throttled", "reason": "throttled"},
            {"model": "not-ready", "reason": "model_not_ready"},
            {"model": "broken", "reason": "server_error"},
            {"model": "slow", "reason": "timeout"},
            {"model": "unavailable", "reason": "unavailable"},
        ])
    );
    // One request per model: the SDK's own retries are off, the chain is the retry policy.
    for model in [
        "throttled",
        "not-ready",
        "broken",
        "slow",
        "unavailable",
        "good",
    ] {
        assert_eq!(origin.emulator.model_stats(model).requests, 1, "{model}");
    }
    // The slow model's request was abandoned, not left running.
    eventually(
        Duration::from_secs(2),
        "the slow stream is cancelled",
        || async { origin.emulator.model_stats("slow").cancelled == 1 },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A mid-stream exception after tokens reached the caller is an error event, no fallback.
    origin.script(
        "breaks-late",
        ModelScript {
            reply: Some("Let me see. Hmm, one moment please.".into()),
            inter_token_ms: 1,
            ttft_ms: 5,
            fault: Some(Fault {
                kind: FaultKind::ExceptionMidStream,
                after_tokens: 4,
                exception: "modelStreamErrorException".into(),
                times: None,
            }),
            ..ModelScript::default()
        },
    );
    client.agent("a2", "breaks-late", &["good"]).await;
    let call = client.call("a2").await;
    let (_, events) = client.turn(&call, "hello").await;
    assert_eq!(events[0].event, "token");
    assert_eq!(events[0].data["text"], "Let me see. ");
    let last = events.last().expect("events");
    assert_eq!(last.event, "error", "{events:?}");
    assert_eq!(
        origin.emulator.model_stats("good").requests,
        1,
        "no fallback after speaking"
    );

    // A stall mid-reply ends the turn at the stall deadline and cancels the stream.
    origin.script(
        "stalls",
        ModelScript {
            reply: Some("Starting. And then nothing".into()),
            inter_token_ms: 1,
            ttft_ms: 5,
            fault: Some(Fault {
                kind: FaultKind::Stall,
                after_tokens: 2,
                exception: String::new(),
                times: None,
            }),
            ..ModelScript::default()
        },
    );
    client.agent("a3", "stalls", &[]).await;
    let call = client.call("a3").await;
    let (_, events) = client.turn(&call, "hello").await;
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("error"),
        "{events:?}"
    );
    eventually(
        Duration::from_secs(2),
        "the stalled stream is cancelled",
        || async { origin.emulator.model_stats("stalls").cancelled == 1 },
    )
    .await;
}

async fn a_reconnect_continues_the_conversation(db: Db) {
    let first = Origin::start(Options::new(db)).await;
    let client = first.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    relay.prompt("My name is Ada").await;
    relay.reply().await;
    relay.close().await;

    // Another replica (same database, same emulator) takes the reconnect.
    let mut options = Options::new(db);
    options.shared_db = Some(first.db_name.clone());
    options.emulator = Some((first.emulator.clone(), first.emulator_url.clone()));
    let second = Origin::start(options).await;
    let mut relay = second.client("acme").relay(&call).await;
    relay.setup(&call, json!({})).await;
    relay.prompt("What is my name?").await;
    let reply = relay.reply().await;
    assert!(reply.starts_with("I heard 3 messages."), "{reply}");
    let last = first.emulator.requests("m").pop().expect("request");
    assert_eq!(last["messages"][0]["content"][0]["text"], "My name is Ada");
    assert_eq!(
        last["messages"][2]["content"][0]["text"],
        "What is my name?"
    );
}

async fn durable_usage_counts_what_bedrock_reported(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    origin.script(
        "m",
        ModelScript {
            reply: Some("Fine.".into()),
            usage: Some(bedrock_emulator::ScriptedUsage {
                input_tokens: 120,
                output_tokens: 7,
            }),
            ttft_ms: 5,
            ..ModelScript::default()
        },
    );
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    for _ in 0..2 {
        let (_, events) = client.turn(&call, "hi").await;
        let done = events.last().expect("done");
        assert_eq!(
            done.data["usage"],
            json!({"input_tokens": 120, "output_tokens": 7})
        );
    }
    let (_, usage) = client.json("GET", "/v1/usage", None).await;
    assert_eq!(usage["totals"]["calls"], 1);
    assert_eq!(usage["totals"]["turns"], 2);
    assert_eq!(usage["totals"]["input_tokens"], 240);
    assert_eq!(usage["totals"]["output_tokens"], 14);
    assert_eq!(usage["days"].as_array().map(Vec::len), Some(1));
}

async fn one_tenant_never_reaches_another_tenants_agents_calls_or_usage(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let alice = origin.client("alice");
    let mallory = origin.client("mallory");
    alice.agent("same-id", "m", &[]).await;
    let call = alice.call("same-id").await;
    assert_eq!(alice.turn(&call, "my secret is 42").await.0, 200);

    for (method, path, body) in [
        ("GET", "/v1/agents/same-id".to_owned(), None),
        ("DELETE", "/v1/agents/same-id".to_owned(), None),
        ("GET", format!("/v1/calls/{call}"), None),
        ("GET", format!("/v1/calls/{call}/turns"), None),
        (
            "POST",
            format!("/v1/calls/{call}/turns"),
            Some(json!({"text": "what is the secret?"})),
        ),
        (
            "POST",
            format!("/v1/calls/{call}/end"),
            Some(json!({"reason": "hijack"})),
        ),
        ("GET", format!("/v1/calls/{call}/events"), None),
    ] {
        let (status, answer) = mallory.json(method, &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }
    // The same ids in Mallory's own namespace are independent of Alice's.
    mallory.agent("same-id", "m", &[]).await;
    let (status, _) = mallory
        .json(
            "POST",
            "/v1/calls",
            Some(json!({"id": call, "agent_id": "same-id"})),
        )
        .await;
    assert_eq!(
        status, 201,
        "Mallory may use the same call id for her own call"
    );
    let (_, turns) = mallory
        .json("GET", &format!("/v1/calls/{call}/turns"), None)
        .await;
    assert_eq!(turns["turns"], json!([]), "and sees none of Alice's turns");
    // A relay from Mallory to that id binds her call, with her (empty) context.
    let mut relay = mallory.relay(&call).await;
    relay.setup(&call, json!({})).await;
    relay.prompt("hello").await;
    assert!(relay.reply().await.starts_with("I heard 1 message."));
    let (_, usage) = mallory.json("GET", "/v1/usage", None).await;
    assert_eq!(
        (
            usage["totals"]["calls"].clone(),
            usage["totals"]["turns"].clone()
        ),
        (json!(1), json!(1))
    );
    let (_, usage) = alice.json("GET", "/v1/usage", None).await;
    assert_eq!(
        (
            usage["totals"]["calls"].clone(),
            usage["totals"]["turns"].clone()
        ),
        (json!(1), json!(1))
    );
    let (status, call_of_alice) = alice.json("GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!(
        (status, call_of_alice["status"].clone()),
        (200, json!("active"))
    );
    assert_eq!(turns_of(&alice, &call).await.len(), 2);
}

#[tokio::test]
async fn prompt_caching_and_inference_settings_reach_bedrock() {
    let origin = Origin::start(Options::new(Db::Sqlite)).await;
    let client = origin.client("acme");
    let caching = "us.anthropic.claude-3-7-sonnet-20250219-v1:0";
    let plain = "anthropic.claude-3-haiku-20240307-v1:0";
    for (id, model) in [("cached", caching), ("plain", plain)] {
        let (status, _) = client
            .json(
                "PUT",
                &format!("/v1/agents/{id}"),
                Some(json!({
                    "name": id, "system_prompt": "Long and stable prompt.", "model": model, "fallback_models": [],
                    "inference": {"max_tokens": 200, "temperature": 0.3, "top_p": 0.8, "stop_sequences": ["STOP"]},
                })),
            )
            .await;
        assert_eq!(status, 201);
        let call = client.call(id).await;
        client.turn(&call, "hi").await;
    }
    let cached = origin.emulator.requests(caching).pop().expect("request");
    assert_eq!(
        cached["system"][1],
        json!({"cachePoint": {"type": "default"}})
    );
    let config = &cached["inferenceConfig"];
    assert_eq!(config["maxTokens"], 200);
    assert!((config["temperature"].as_f64().unwrap_or(0.0) - 0.3).abs() < 1e-6);
    assert!((config["topP"].as_f64().unwrap_or(0.0) - 0.8).abs() < 1e-6);
    assert_eq!(config["stopSequences"], json!(["STOP"]));
    let plain_request = origin.emulator.requests(plain).pop().expect("request");
    assert_eq!(
        plain_request["system"].as_array().map(Vec::len),
        Some(1),
        "no cache point"
    );
}

#[tokio::test]
async fn relay_messages_it_cannot_use_get_an_error_reply_and_the_socket_stays() {
    let origin = Origin::start(Options::new(Db::Sqlite)).await;
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    let mut relay = client.relay(&call).await;
    relay.prompt("too early").await;
    assert_eq!(relay.next().await["code"], "unexpected_message");
    relay.send_text("this is not json").await;
    assert_eq!(
        relay.next().await,
        json!({"type": "error", "code": "malformed_message", "description": "the message is not a JSON object"})
    );
    relay.send(json!({"type": "teleport"})).await;
    assert_eq!(relay.next().await["code"], "unknown_message_type");
    relay.setup(&call, json!({})).await;
    relay
        .send(json!({"type": "prompt", "voicePrompt": 42}))
        .await;
    assert_eq!(relay.next().await["code"], "malformed_message");
    relay.send(json!({"type": "dtmf", "digit": "x"})).await;
    assert_eq!(relay.next().await["code"], "bad_digit");
    relay.setup(&call, json!({})).await;
    assert_eq!(relay.next().await["code"], "unexpected_message");
    // Still a working conversation.
    relay.prompt("hello").await;
    assert!(relay.reply().await.starts_with("I heard 1 message."));
    assert!(
        origin
            .state
            .metrics
            .render()
            .contains("origin_relay_messages_rejected_total{code=\"malformed_message\"} 2")
    );
}

#[tokio::test]
async fn relay_refuses_unsigned_and_ended_calls_before_upgrading() {
    let origin = Origin::start(Options::new(Db::Sqlite)).await;
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    // Unsigned.
    let url = format!(
        "{}/v1/calls/{call}/relay",
        origin.base.replacen("http", "ws", 1)
    );
    let error = tokio_tungstenite::connect_async(url)
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("401"), "{error}");
    // Ended.
    client
        .json(
            "POST",
            &format!("/v1/calls/{call}/end"),
            Some(json!({"reason": "done"})),
        )
        .await;
    let error = support::Relay::try_connect(
        &origin.base,
        &format!("/v1/calls/{call}/relay"),
        &client.principal,
    )
    .await
    .err()
    .expect("refused");
    assert!(error.to_string().contains("409"), "{error}");
}

#[tokio::test]
async fn answered_by_refuses_what_it_cannot_use() {
    let origin = Origin::start(Options::new(Db::Sqlite)).await;
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    let path = format!("/v1/calls/{call}/answered-by");
    let cases = [
        (
            "/v1/calls/call_nope/answered-by",
            json!({"answered_by": "human"}),
            404,
        ),
        (path.as_str(), json!({"answered_by": "robot"}), 400),
        (
            path.as_str(),
            json!({"answered_by": "human", "extra": 1}),
            400,
        ),
        (
            "/v1/calls/a.b/answered-by",
            json!({"answered_by": "human"}),
            400,
        ),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = client.json("POST", path, Some(body)).await;
        assert_eq!(status, expected, "{path}: {answer}");
    }
    // Another tenant's call does not exist for it.
    let (status, _) = origin
        .client("other")
        .json("POST", &path, Some(json!({"answered_by": "human"})))
        .await;
    assert_eq!(status, 404);
    // Unsigned: refused before anything.
    let unsigned = reqwest::Client::new()
        .post(format!("{}{path}", origin.base))
        .json(&json!({"answered_by": "human"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(unsigned.status(), 401);
}

#[tokio::test]
async fn the_greeting_is_not_repeated_when_the_carrier_spoke_it() {
    let origin = Origin::start(Options::new(Db::Sqlite)).await;
    let client = origin.client("acme");
    client
        .json(
            "PUT",
            "/v1/agents/a1",
            Some(json!({"name": "a", "system_prompt": "p", "greeting": "Welcome!", "model": "m"})),
        )
        .await;
    let call = client.call("a1").await;
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({"greeting": "carrier"})).await;
    relay.prompt("hi").await;
    assert!(relay.reply().await.starts_with("I heard 1 message."));
    assert_eq!(turns_of(&client, &call).await.len(), 2);
}

#[tokio::test]
async fn shutdown_drains_new_work_gets_503_the_live_turn_finishes_then_the_relay_closes_for_a_reconnect()
 {
    let mut origin = Origin::start(Options::new(Db::Sqlite).var("SHUTDOWN_GRACE_SECS", "5")).await;
    origin.script("m", slow("One. Two. Three. Four. Five. Six.", 80));
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    let other = client.call("a1").await;
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    relay.prompt("count").await;
    assert_eq!(relay.next().await["token"], "One. ");
    let base = origin.base.clone();
    let stopping = tokio::spawn(async move {
        origin.shutdown().await.expect("clean");
        origin
    });
    // Still accepting connections while the live turn runs, but not new work.
    eventually(Duration::from_secs(2), "the origin drains", || async {
        reqwest::get(format!("{base}/health"))
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    let health: Value = reqwest::get(format!("{base}/health"))
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert_eq!(health["bindings"]["DRAINING"]["ok"], false, "{health}");
    let (status, ready) = client.json("GET", "/ready", None).await;
    assert_eq!(status, 503);
    assert_eq!(ready["bindings"]["DRAINING"]["ok"], false, "{ready}");
    let response = client
        .send("POST", "/v1/calls", Some(br#"{"agent_id":"a1"}"#))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "draining", "{body}");
    let refused = support::Relay::try_connect(
        &base,
        &format!("/v1/calls/{other}/relay"),
        &support::principal("acme"),
    )
    .await
    .err()
    .expect("a new relay socket is refused");
    assert!(refused.to_string().contains("503"), "{refused}");

    assert_eq!(
        relay.reply().await,
        "Two. Three. Four. Five. Six.",
        "the live turn finishes"
    );
    assert_eq!(relay.close_code(Duration::from_secs(3)).await, Some(1012));
    let started = std::time::Instant::now();
    let origin = stopping.await.expect("no panic");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "serve returns once the relay is gone, not at the end of the grace"
    );
    let stored = origin
        .state
        .store
        .list_turns("acme", &call)
        .await
        .expect("turns");
    assert_eq!(
        stored.len(),
        2,
        "the reply was made durable before the close"
    );
    assert!(!stored[1].interrupted);
}

/// An origin on the test command's PostgreSQL, reached through a proxy the test can cut.
async fn origin_behind_a_cuttable_database() -> (Proxy, Origin) {
    let upstream = authority_of(&postgres_url());
    let proxy = Proxy::start(&upstream).await;
    let mut options = Options::new(Db::Postgres);
    options.database_url = Some(with_authority(&postgres_url(), &proxy.addr.to_string()));
    (proxy, Origin::start(options).await)
}

#[tokio::test]
async fn the_database_going_away_fails_fast_with_503_and_the_origin_recovers_by_itself() {
    let (proxy, origin) = origin_behind_a_cuttable_database().await;
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    relay.prompt("first").await;
    relay.reply().await;

    proxy.down();
    let started = std::time::Instant::now();
    let response = client
        .send("POST", "/v1/calls", Some(br#"{"agent_id":"a1"}"#))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let (status, _) = client.turn(&call, "hello").await;
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fails fast: {:?}",
        started.elapsed()
    );
    let (status, ready) = client.json("GET", "/ready", None).await;
    assert_eq!(status, 503);
    assert_eq!(ready["bindings"]["DATABASE"]["ok"], false);
    // On the relay the call goes on: every reply closes its talk cycle, and every turn (words,
    // replies, a key press, a late interruption) waits in the call's journal, in order.
    relay.prompt("are you there").await;
    assert!(relay.reply().await.starts_with("I heard"));
    relay.send(json!({"type": "dtmf", "digit": "5"})).await;
    relay.prompt("one more").await;
    assert!(relay.reply().await.starts_with("I heard"));
    relay
        .send(json!({"type": "interrupt", "utteranceUntilInterrupt": "I heard", "durationUntilInterruptMs": 400}))
        .await;
    eventually(Duration::from_secs(5), "six entries wait", || async {
        let (_, ready) = client.json("GET", "/ready", None).await;
        ready["journal"]["depth"] == 6
    })
    .await;

    proxy.up();
    eventually(
        Duration::from_secs(10),
        "the origin serves again",
        || async { client.json("GET", "/ready", None).await.0 == 200 },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the journal is written",
        || async {
            let (_, ready) = client.json("GET", "/ready", None).await;
            ready["journal"]["depth"] == 0
        },
    )
    .await;
    // Everything said during the outage is stored, in the order it was said, once.
    let turns = turns_of(&client, &call).await;
    let said: Vec<(String, String, bool)> = turns
        .iter()
        .map(|t| {
            (
                t["role"].as_str().unwrap_or_default().to_owned(),
                t["text"].as_str().unwrap_or_default().to_owned(),
                t["interrupted"] == true,
            )
        })
        .collect();
    let said: Vec<(&str, &str, bool)> = said
        .iter()
        .map(|(role, text, interrupted)| (role.as_str(), text.as_str(), *interrupted))
        .collect();
    assert_eq!(said.len(), 7, "{turns:?}");
    assert_eq!(said[0], ("user", "first", false));
    assert_eq!(said[2], ("user", "are you there", false));
    assert_eq!(said[3].0, "assistant");
    assert!(said[3].1.starts_with("I heard") && !said[3].2);
    assert_eq!(said[4], ("dtmf", "5", false));
    assert_eq!(said[5], ("user", "one more", false));
    assert_eq!(
        said[6],
        ("assistant", "I heard", true),
        "corrected to what was heard"
    );
    let seqs: Vec<u64> = turns.iter().filter_map(|t| t["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let metrics = origin.state.metrics.render();
    assert!(
        metrics.contains("origin_journal_dropped_total 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("origin_journal_written_late_total 0"),
        "{metrics}"
    );

    let (status, events) = client.turn(&call, "hello again").await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("done"));
    relay.prompt("still there?").await;
    assert!(relay.reply().await.starts_with("I heard"));
}

#[tokio::test]
async fn an_api_turn_whose_reply_cannot_be_stored_ends_with_an_error_not_done() {
    let (proxy, origin) = origin_behind_a_cuttable_database().await;
    origin.script(
        "counter",
        slow("One. Two. Three. Four. Five. Six. Seven. Eight.", 60),
    );
    let client = origin.client("acme");
    client.agent("a1", "counter", &[]).await;
    let call = client.call("a1").await;

    // The database goes away while the reply streams: `done` says durable, so it never comes.
    let ((status, events), ()) = tokio::join!(client.turn(&call, "count to eight"), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.down();
    });
    assert_eq!(status, 200, "the stream had started: {events:?}");
    assert!(
        events.iter().any(|e| e.event == "token"),
        "tokens streamed before the outage: {events:?}"
    );
    assert!(
        events.iter().all(|e| e.event != "done"),
        "no done for a reply that is not stored: {events:?}"
    );
    let last = events
        .last()
        .map(|e| (e.event.as_str(), e.data["error"]["code"].as_str()));
    assert_eq!(last, Some(("error", Some("not_durable"))), "{events:?}");

    proxy.up();
    eventually(
        Duration::from_secs(10),
        "the origin serves again",
        || async { client.json("GET", "/ready", None).await.0 == 200 },
    )
    .await;
    // What was stored is what was said, nothing the client was not told is durable.
    let turns = turns_of(&client, &call).await;
    assert!(
        turns.iter().all(|t| t["role"] != "assistant"),
        "no reply stored: {turns:?}"
    );
    let (status, events) = client.turn(&call, "again").await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("done"));
}

#[tokio::test]
async fn events_fan_out_across_replicas_and_ending_a_call_anywhere_ends_its_relay() {
    let mut a_options = Options::new(Db::Postgres);
    a_options.redis = true;
    let a = Origin::start(a_options).await;
    let mut b_options = Options::new(Db::Postgres);
    b_options.redis = true;
    b_options.shared_db = Some(a.db_name.clone());
    b_options.redis_prefix = Some(a.redis_prefix.clone());
    b_options.emulator = Some((a.emulator.clone(), a.emulator_url.clone()));
    let b = Origin::start(b_options).await;
    let on_a = a.client("acme");
    let on_b = b.client("acme");
    on_a.agent("a1", "m", &[]).await;
    let call = on_a.call("a1").await;

    let mut monitor = on_b.events(&call).await;
    let mut relay = on_a.relay(&call).await;
    relay.setup(&call, json!({})).await;
    relay.prompt("hello").await;
    relay.reply().await;
    let started = monitor.expect("turn_started", Duration::from_secs(5)).await;
    assert_eq!(started.data["seq"], 1);
    let finished = monitor
        .expect("turn_finished", Duration::from_secs(5))
        .await;
    assert_eq!(finished.data["seq"], 2);
    assert_eq!(finished.data["model"], "m");

    // Another tenant's monitor hears nothing of it: it cannot even open the stream.
    let response = b
        .client("other")
        .send("GET", &format!("/v1/calls/{call}/events"), None)
        .await;
    assert_eq!(response.status(), 404);

    // Ended through replica B, the relay on replica A says `end` with the handoff data.
    let (status, _) = on_b
        .json(
            "POST",
            &format!("/v1/calls/{call}/end"),
            Some(json!({"reason": "transfer", "handoff_data": {"queue": "sales"}})),
        )
        .await;
    assert_eq!(status, 200);
    let end = relay.next().await;
    assert_eq!(end["type"], "end");
    let handoff: Value =
        serde_json::from_str(end["handoffData"].as_str().expect("string")).expect("json");
    assert_eq!(
        handoff,
        json!({"reason": "transfer", "callId": call, "data": {"queue": "sales"}})
    );
    assert_eq!(relay.close_code(Duration::from_secs(2)).await, Some(1000));
    let ended = monitor.expect("call_ended", Duration::from_secs(5)).await;
    assert_eq!(ended.data["reason"], "transfer");
}

#[tokio::test]
async fn an_agent_update_on_one_replica_is_seen_at_once_on_another() {
    let (a, b) = two_replicas().await;
    let on_a = a.client("acme");
    let on_b = b.client("acme");
    on_a.agent("a1", "m1", &[]).await;
    assert_eq!(
        on_b.json("GET", "/v1/agents/a1", None).await.1["model"],
        "m1"
    );
    assert_eq!(
        on_a.json("GET", "/v1/agents/a1", None).await.1["model"],
        "m1"
    );
    on_b.agent("a1", "m2", &[]).await;
    assert_eq!(
        on_a.json("GET", "/v1/agents/a1", None).await.1["model"],
        "m2"
    );
    on_b.json("DELETE", "/v1/agents/a1", None).await;
    assert_eq!(on_a.json("GET", "/v1/agents/a1", None).await.0, 404);
}

/// Two replicas of one deployment: the same PostgreSQL schema, the same Redis and key prefix.
async fn two_replicas() -> (Origin, Origin) {
    let mut a_options = Options::new(Db::Postgres);
    a_options.redis = true;
    let a = Origin::start(a_options).await;
    let mut b_options = Options::new(Db::Postgres);
    b_options.redis = true;
    b_options.shared_db = Some(a.db_name.clone());
    b_options.redis_prefix = Some(a.redis_prefix.clone());
    let b = Origin::start(b_options).await;
    (a, b)
}

/// Sends a POST signed once, with `nonce`, to `base`: what a captured request replayed sends.
async fn post_signed_once(
    base: &str,
    path: &str,
    body: &str,
    timestamp: u64,
    nonce: &str,
) -> (u16, Value) {
    let principal = support::principal("acme");
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in support::edge_headers_with_nonce(
        "POST",
        path,
        shared::signing::BodyHash::of(body.as_bytes()),
        Some(&principal),
        timestamp,
        nonce,
    ) {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("origin answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_replay_to_another_replica_sharing_redis_is_refused() {
    let (a, b) = two_replicas().await;
    a.client("acme").agent("a1", "m1", &[]).await;

    let body = json!({"agent_id": "a1"}).to_string();
    let nonce = support::fresh_nonce();
    let now = support::now_secs();
    let (status, call) = post_signed_once(&a.base, "/v1/calls", &body, now, &nonce).await;
    assert_eq!(status, 201, "{call}");
    for replica in [&b.base, &a.base] {
        let (status, refused) = post_signed_once(replica, "/v1/calls", &body, now, &nonce).await;
        assert_eq!(status, 401, "{refused}");
        assert_eq!(refused["error"]["code"], "replayed_request", "{refused}");
    }
    // The same request signed anew (another nonce) is an ordinary second call.
    let (status, _) =
        post_signed_once(&b.base, "/v1/calls", &body, now, &support::fresh_nonce()).await;
    assert_eq!(status, 201);
    let (_, calls) = a.client("acme").json("GET", "/v1/calls", None).await;
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(2), "{calls}");
    // Redis holds the nonce only for its window (66 s from now, at most).
    let ttl = redis_ttl(&format!("{}nonce:{nonce}", a.redis_prefix)).await;
    assert!((1..=66).contains(&ttl), "ttl {ttl}");
}

/// The TTL of a Redis key, read with a plain RESP exchange (no client needed for one command).
async fn redis_ttl(key: &str) -> i64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(authority_of(&redis_url()))
        .await
        .expect("Redis");
    let command = format!("*2\r\n$3\r\nTTL\r\n${}\r\n{key}\r\n", key.len());
    stream.write_all(command.as_bytes()).await.expect("write");
    let mut reply = vec![0_u8; 64];
    let read = stream.read(&mut reply).await.expect("read");
    let text = String::from_utf8_lossy(&reply[..read]);
    text.trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("TTL answer {text:?}"))
}

#[tokio::test]
async fn redis_going_away_degrades_to_in_process_without_failing_calls_and_comes_back() {
    let proxy = Proxy::start(&authority_of(&redis_url())).await;
    let mut options = Options::new(Db::Sqlite);
    options.redis = true;
    options.redis_url = Some(with_authority(&redis_url(), &proxy.addr.to_string()));
    let origin = Origin::start(options).await;
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    let mut monitor = client.events(&call).await;
    let (status, ready) = client.json("GET", "/ready", None).await;
    assert_eq!(
        (status, ready["bindings"]["REDIS"]["ok"].clone()),
        (200, json!(true))
    );

    proxy.down();
    eventually(
        Duration::from_secs(5),
        "the origin notices Redis is gone",
        || async { client.json("GET", "/ready", None).await.1["bindings"]["REDIS"]["ok"] == false },
    )
    .await;
    // Calls go on; events reach this replica's listeners in-process; the cache falls back.
    let (status, events) = client.turn(&call, "hello").await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("done"));
    monitor
        .expect("turn_finished", Duration::from_secs(5))
        .await;
    assert_eq!(client.json("GET", "/v1/agents/a1", None).await.0, 200);
    let (status, _) = client.json("GET", "/ready", None).await;
    assert_eq!(status, 200, "Redis degrades readiness, it does not fail it");
    assert!(
        origin
            .state
            .metrics
            .render()
            .contains("origin_redis_errors_total")
    );

    proxy.up();
    eventually(Duration::from_secs(10), "Redis is used again", || async {
        client.json("GET", "/ready", None).await.1["bindings"]["REDIS"]["ok"] == true
    })
    .await;
    // Through Redis again: a second replica on the same Redis hears this one's events.
    let mut other_options = Options::new(Db::Sqlite);
    other_options.redis = true;
    other_options.shared_db = Some(origin.db_name.clone());
    other_options.redis_prefix = Some(origin.redis_prefix.clone());
    let other = Origin::start(other_options).await;
    let mut remote_monitor = other.client("acme").events(&call).await;
    // Let the resubscription settle, then prove delivery.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        client.turn(&call, "ping").await;
        if remote_monitor
            .next_within(Duration::from_millis(500))
            .await
            .is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never crossed replicas through Redis"
        );
    }
}

/// A stand-in for the ECS container agent's task-protection endpoint: records each PUT's body
/// and refuses the first one the way the agent does when ECS refuses (a `failure` object).
async fn ecs_agent() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let recorded = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/api/task-1/task-protection/v1/state",
        axum::routing::put(move |axum::Json(body): axum::Json<Value>| {
            let recorded = Arc::clone(&recorded);
            async move {
                let mut seen = recorded.lock().unwrap_or_else(|e| e.into_inner());
                seen.push(body.clone());
                if seen.len() == 1 {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        axum::Json(json!({"failure": {"Arn": "task-1", "Reason": "THROTTLED"}})),
                    );
                }
                let enabled = body["ProtectionEnabled"] == true;
                (
                    axum::http::StatusCode::OK,
                    axum::Json(
                        json!({"protection": {"ProtectionEnabled": enabled, "TaskArn": "task-1"}}),
                    ),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/api/task-1"), seen)
}

#[tokio::test]
async fn a_task_holding_live_calls_protects_itself_from_scale_in_and_gives_it_back_after() {
    let (agent_uri, seen) = ecs_agent().await;
    let mut options = Options::new(Db::Sqlite);
    options.env = vec![
        ("ECS_AGENT_URI".into(), agent_uri),
        ("TASK_PROTECTION_MINUTES".into(), "90".into()),
    ];
    let origin = Origin::start(options).await;
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        seen.lock().unwrap_or_else(|e| e.into_inner()).is_empty(),
        "no live call, nothing asked"
    );

    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    // The first request is refused; the next check asks again.
    eventually(Duration::from_secs(5), "ECS protects the task", || async {
        origin
            .state
            .metrics
            .render()
            .lines()
            .any(|line| line == "origin_task_protected 1")
    })
    .await;
    let protects = |seen: &[Value]| {
        seen.iter()
            .filter(|b| **b == json!({"ProtectionEnabled": true, "ExpiresInMinutes": 90}))
            .count()
    };
    let asked = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        protects(&asked),
        2,
        "asked twice, refused then granted: {asked:?}"
    );

    relay.close().await;
    eventually(
        Duration::from_secs(5),
        "the protection is given back",
        || async {
            origin
                .state
                .metrics
                .render()
                .lines()
                .any(|line| line == "origin_task_protected 0")
        },
    )
    .await;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        seen.last(),
        Some(&json!({"ProtectionEnabled": false})),
        "{seen:?}"
    );
    assert_eq!(protects(&seen), 2, "not renewed before half time: {seen:?}");
}
