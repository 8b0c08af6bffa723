//! What a live carrier sends and today's Bedrock does, through a real relay WebSocket signed as
//! the edge signs it, the Bedrock emulator behind the real AWS SDK, SQLite and the test
//! command's PostgreSQL: every model failing, a silent caller, the interrupt's string form, a
//! language switch, a guardrail's intervention, latency-optimized inference, and the caller
//! details `setup` brings.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use bedrock_emulator::{FaultKind, GuardrailScript, ModelScript};
use serde_json::{Value, json};
use support::{Client, Db, Options, Origin, Relay, eventually, fault, slow, turns_of};

on_both_databases!(
    every_model_failing_is_an_apology_the_turn_is_stored_as_failed_and_the_call_goes_on,
    a_silent_caller_is_reprompted_told_goodbye_and_the_session_ended,
    an_interrupt_with_the_duration_as_a_string_cancels_the_stream,
    a_caller_who_switches_language_is_answered_in_it,
    a_guardrail_intervention_ends_the_turn_with_its_message,
    setup_stores_who_is_calling,
);

async fn put_agent(client: &Client, id: &str, spec: Value) {
    let (status, body) = client
        .json("PUT", &format!("/v1/agents/{id}"), Some(spec))
        .await;
    assert!(status == 201 || status == 200, "{status} {body}");
}

/// A relay bound to a new call of `agent`.
async fn relay_for(client: &Client, agent: &str) -> (String, Relay) {
    let call = client.call(agent).await;
    let mut relay = client.relay(&call).await;
    relay.setup(&call, json!({})).await;
    (call, relay)
}

/// The `text` messages of one talk cycle, up to `last: true`, as sent.
async fn talk_cycle(relay: &mut Relay) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let message = relay.next().await;
        assert_eq!(message["type"], "text", "{message}");
        let last = message["last"] == true;
        messages.push(message);
        if last {
            return messages;
        }
    }
}

fn spoken(messages: &[Value]) -> String {
    messages
        .iter()
        .map(|m| m["token"].as_str().unwrap_or(""))
        .collect()
}

async fn every_model_failing_is_an_apology_the_turn_is_stored_as_failed_and_the_call_goes_on(
    db: Db,
) {
    let origin = Origin::start(Options::new(db).var("BEDROCK_FIRST_TOKEN_TIMEOUT_MS", "300")).await;
    origin.script("busy", fault(FaultKind::Throttle));
    origin.script("broken", fault(FaultKind::ServerError));
    let client = origin.client("acme");
    put_agent(
        &client,
        "desk",
        json!({"name": "Desk", "system_prompt": "p", "model": "busy", "fallback_models": ["broken"],
               "fallback_utterance": "Sorry, I missed that. One more time?"}),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "desk").await;

    relay.prompt("When do you open?").await;
    let cycle = talk_cycle(&mut relay).await;
    assert_eq!(spoken(&cycle), "Sorry, I missed that. One more time?");
    assert_eq!(cycle.last().map(|m| m["last"].clone()), Some(json!(true)));
    // The edge's log gets a note of why (the Durable Object never forwards it).
    let note = relay.next().await;
    assert_eq!(
        (note["type"].as_str(), note["code"].as_str()),
        (Some("error"), Some("model_unavailable")),
        "{note}"
    );
    assert_eq!(origin.emulator.model_stats("busy").requests, 1);
    assert_eq!(origin.emulator.model_stats("broken").requests, 1);

    // Stored as a failed turn, with the reason: what the caller heard, no model.
    let turns = turns_of(&client, &call).await;
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!(turns[1]["role"], "assistant");
    assert_eq!(turns[1]["text"], "Sorry, I missed that. One more time?");
    assert_eq!(turns[1]["failure_reason"], "server_error");
    assert!(turns[1].get("model").is_none(), "{}", turns[1]);
    let metrics = origin.state.metrics.render();
    assert!(
        metrics.contains(r#"origin_turns_total{outcome="failed"} 1"#),
        "{metrics}"
    );

    // The call goes on: the model is back, the next prompt is answered, with the apology in
    // its context.
    origin.script("busy", slow("We open at nine.", 1));
    relay.prompt("When do you open?").await;
    assert_eq!(relay.reply().await, "We open at nine.");
    let last = origin.emulator.requests("busy").pop().expect("request");
    assert_eq!(
        last["messages"][1]["content"][0]["text"],
        "Sorry, I missed that. One more time?"
    );

    // The API's turn gets the same treatment in its shape: the apology as `token`, stored,
    // then `error`.
    origin.script("busy", fault(FaultKind::Unavailable));
    let api_call = client.call("desk").await;
    let (status, events) = client.turn(&api_call, "hello").await;
    assert_eq!(status, 200);
    let tokens: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "token")
        .filter_map(|e| e.data["text"].as_str())
        .collect();
    assert_eq!(tokens.concat(), "Sorry, I missed that. One more time?");
    let end = events.last().expect("events");
    assert_eq!(end.event, "error", "{events:?}");
    assert_eq!(end.data["error"]["code"], "model_unavailable");
    let stored = turns_of(&client, &api_call).await;
    assert_eq!(stored[1]["failure_reason"], "server_error");
    assert_eq!(stored[1]["text"], "Sorry, I missed that. One more time?");
}

async fn a_silent_caller_is_reprompted_told_goodbye_and_the_session_ended(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    origin.script("m", slow("Hi.", 1));
    let client = origin.client("acme");
    put_agent(
        &client,
        "quiet",
        json!({"name": "Quiet", "system_prompt": "p", "model": "m",
               "idle_reprompt_secs": 1, "idle_reprompts": 1,
               "idle_reprompt": "Hello?", "idle_goodbye": "Bye now."}),
    )
    .await;
    let started = Instant::now();
    let (call, mut relay) = relay_for(&client, "quiet").await;

    // The caller speaks once: the count starts over after the reply.
    relay.prompt("hi").await;
    relay.reply().await;
    let replied = Instant::now();

    let reprompt = relay.next().await;
    assert_eq!(
        reprompt,
        json!({"type": "text", "token": "Hello?", "last": true})
    );
    let waited = replied.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "a second of silence (plus the reply's playback) first: {waited:?}"
    );
    let goodbye = relay.next().await;
    assert_eq!(
        goodbye,
        json!({"type": "text", "token": "Bye now.", "last": true})
    );
    let end = relay.next().await;
    assert_eq!(end["type"], "end", "{end}");
    let handoff: Value =
        serde_json::from_str(end["handoffData"].as_str().expect("a string")).expect("JSON");
    assert_eq!(handoff, json!({"reason": "idle_timeout", "callId": call}));
    assert_eq!(relay.close_code(Duration::from_secs(2)).await, Some(1000));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    let (_, stored) = client.json("GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!(stored["status"], "ended");
    assert_eq!(stored["end_reason"], "idle_timeout");
    let texts: Vec<Value> = turns_of(&client, &call)
        .await
        .iter()
        .map(|t| json!([t["role"], t["text"]]))
        .collect();
    assert_eq!(
        texts[2..],
        [
            json!(["assistant", "Hello?"]),
            json!(["assistant", "Bye now."])
        ]
    );
    let metrics = origin.state.metrics.render();
    for action in ["reprompt", "goodbye", "end"] {
        assert!(
            metrics.contains(&format!(
                r#"origin_idle_actions_total{{action="{action}"}} 1"#
            )),
            "{action}: {metrics}"
        );
    }

    // An agent with the reprompt off says nothing to silence.
    put_agent(
        &client,
        "patient",
        json!({"name": "Patient", "system_prompt": "p", "model": "m", "idle_reprompt_secs": 0}),
    )
    .await;
    let (_, mut relay) = relay_for(&client, "patient").await;
    assert_eq!(relay.next_within(Duration::from_millis(1_500)).await, None);
}

async fn an_interrupt_with_the_duration_as_a_string_cancels_the_stream(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    origin.script(
        "talker",
        ModelScript {
            ttft_ms: 5,
            inter_token_ms: 40,
            reply: Some(
                "Life is a complex set of things. Let me go on about it for a while.".into(),
            ),
            ..ModelScript::default()
        },
    );
    let client = origin.client("acme");
    client.agent("a1", "talker", &[]).await;
    let (call, mut relay) = relay_for(&client, "a1").await;
    relay.prompt("Tell me about life").await;
    assert_eq!(
        relay.next().await["token"],
        "Life is a complex set of things. "
    );
    // Exactly as Twilio's page shows it: the duration as a string.
    relay
        .send(json!({"type": "interrupt", "utteranceUntilInterrupt": "Life is a complex set of", "durationUntilInterruptMs": "460"}))
        .await;
    eventually(
        Duration::from_secs(2),
        "the Bedrock stream is cancelled",
        || async { origin.emulator.model_stats("talker").cancelled == 1 },
    )
    .await;
    // Not refused as malformed: nothing comes back at all.
    assert_eq!(relay.next_within(Duration::from_millis(300)).await, None);
    let turns = turns_of(&client, &call).await;
    assert_eq!(turns[1]["text"], "Life is a complex set of");
    assert_eq!(turns[1]["interrupted"], true);
    assert!(
        !origin
            .state
            .metrics
            .render()
            .contains("origin_relay_messages_rejected_total"),
        "no message was refused"
    );
}

async fn a_caller_who_switches_language_is_answered_in_it(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    origin.script("m", slow("Answer.", 1));
    let client = origin.client("acme");
    put_agent(
        &client,
        "polyglot",
        json!({"name": "Polyglot", "system_prompt": "p", "model": "m",
               "voice": {"language": "en-US", "interruptible": "speech", "preemptible": true,
                         "languages": [{"code": "es-ES", "tts_provider": "Google", "voice": "es-ES-Neural2-B"}]}}),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "polyglot").await;
    let say = |text: &str, lang: &str| json!({"type": "prompt", "voicePrompt": text, "lang": lang, "last": true});

    // The agent's own language: replies carry its interruptible/preemptible, no lang.
    relay.send(say("Hello", "en-US")).await;
    let cycle = talk_cycle(&mut relay).await;
    assert_eq!(
        cycle[0],
        json!({"type": "text", "token": "Answer.", "last": false, "interruptible": true, "preemptible": true})
    );

    // A configured language: the carrier is switched first, then the reply.
    relay.send(say("Hola", "es-ES")).await;
    assert_eq!(
        relay.next().await,
        json!({"type": "language", "ttsLanguage": "es-ES", "transcriptionLanguage": "es-ES"})
    );
    assert_eq!(spoken(&talk_cycle(&mut relay).await), "Answer.");
    let request = origin.emulator.requests("m").pop().expect("request");
    let note = request["system"][1]["text"].as_str().unwrap_or("");
    assert!(note.contains("BCP 47 tag es-ES"), "{request}");

    // A language the agent did not configure: the reply's text says which it is in.
    relay.send(say("Bonjour", "fr-FR")).await;
    let cycle = talk_cycle(&mut relay).await;
    assert_eq!(cycle[0]["lang"], "fr-FR", "{cycle:?}");

    // Back to the agent's own language.
    relay.send(say("Thanks", "en")).await;
    assert_eq!(
        relay.next().await,
        json!({"type": "language", "ttsLanguage": "en-US", "transcriptionLanguage": "en-US"})
    );
    talk_cycle(&mut relay).await;

    let langs: Vec<Value> = turns_of(&client, &call)
        .await
        .iter()
        .map(|t| json!([t["role"], t.get("lang")]))
        .collect();
    assert_eq!(
        langs,
        [
            json!(["user", "en-US"]),
            json!(["assistant", null]),
            json!(["user", "es-ES"]),
            json!(["assistant", null]),
            json!(["user", "fr-FR"]),
            json!(["assistant", "fr-FR"]),
            json!(["user", "en"]),
            json!(["assistant", null]),
        ]
    );
}

async fn a_guardrail_intervention_ends_the_turn_with_its_message(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let guarded = ModelScript {
        guardrail: Some(GuardrailScript {
            after_tokens: 3,
            message: " Sorry, I can't help with that.".into(),
            action_reason: "Guardrail blocked.".into(),
        }),
        ..slow("Let me explain. First you take the", 1)
    };
    origin.script("guarded", guarded);
    let client = origin.client("acme");
    put_agent(
        &client,
        "safe",
        json!({"name": "Safe", "system_prompt": "p", "model": "guarded", "fallback_models": [],
               "guardrail": {"identifier": "gr1abc", "version": "1"}}),
    )
    .await;
    let (call, mut relay) = relay_for(&client, "safe").await;
    relay.prompt("How do I do the dangerous thing?").await;
    assert_eq!(
        spoken(&talk_cycle(&mut relay).await),
        "Let me explain. Sorry, I can't help with that."
    );
    // The guardrail reached Bedrock through the SDK as configured.
    let stats = origin.emulator.model_stats("guarded");
    assert_eq!((stats.guarded, stats.guardrail_interventions), (1, 1));
    assert_eq!(
        stats.last_guardrail_config,
        Some(
            json!({"guardrailIdentifier": "gr1abc", "guardrailVersion": "1", "trace": "enabled", "streamProcessingMode": "sync"})
        )
    );
    let turns = turns_of(&client, &call).await;
    assert_eq!(
        turns[1]["text"],
        "Let me explain. Sorry, I can't help with that."
    );
    assert_eq!(turns[1]["stop_reason"], "guardrail_intervened");
    assert!(turns[1].get("failure_reason").is_none());
    let metrics = origin.state.metrics.render();
    assert!(
        metrics.contains(r#"origin_guardrail_interventions_total{model="guarded"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"origin_turns_total{outcome="guardrail_intervened"} 1"#),
        "{metrics}"
    );
    // The call goes on.
    relay.prompt("OK, what time is it?").await;
    assert!(!relay.reply().await.is_empty());

    // Over the API: the tokens, then `done` saying why the reply stopped.
    let api_call = client.call("safe").await;
    let (_, events) = client.turn(&api_call, "again").await;
    let done = events.last().expect("events");
    assert_eq!(done.event, "done", "{events:?}");
    assert_eq!(done.data["stop_reason"], "guardrail_intervened");
}

async fn setup_stores_who_is_calling(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    let mut relay = client.relay(&call).await;
    // Twilio's documented setup, every field.
    relay
        .send(json!({
            "type": "setup", "sessionId": "VX00000000000000000000000000000000",
            "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "parentCallSid": "", "callSid": call,
            "from": "+18005550100", "to": "+18005550101", "forwardedFrom": "+18005550102",
            "callType": "PSTN", "callerName": "Ada Lovelace", "direction": "inbound",
            "callStatus": "RINGING", "customParameters": {"callReference": "bar"},
        }))
        .await;
    relay.prompt("hi").await;
    relay.reply().await;
    let (_, stored) = client.json("GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!(stored["caller_name"], "Ada Lovelace");
    assert_eq!(stored["forwarded_from"], "+18005550102");
    assert_eq!(stored["call_type"], "PSTN");
    relay.close().await;

    // A reconnect whose setup leaves a detail out does not erase it.
    let mut relay = client.relay(&call).await;
    relay
        .send(json!({"type": "setup", "callSid": call, "callType": "SIP", "debugExtra": {"a": 1}}))
        .await;
    relay.prompt("still me").await;
    relay.reply().await;
    let (_, stored) = client.json("GET", &format!("/v1/calls/{call}"), None).await;
    assert_eq!(
        (stored["caller_name"].clone(), stored["call_type"].clone()),
        (json!("Ada Lovelace"), json!("SIP"))
    );
}

#[tokio::test]
async fn info_messages_are_logged_and_answered_with_nothing() {
    let origin = Origin::start(Options::new(Db::Sqlite)).await;
    let client = origin.client("acme");
    client.agent("a1", "m", &[]).await;
    let (_, mut relay) = relay_for(&client, "a1").await;
    relay
        .send(json!({"type": "info", "name": "agentSpeaking", "value": "on"}))
        .await;
    assert_eq!(relay.next_within(Duration::from_millis(300)).await, None);
    relay.prompt("hello").await;
    assert!(relay.reply().await.starts_with("I heard 1 message."));
    assert!(
        origin
            .state
            .metrics
            .render()
            .contains(r#"origin_relay_messages_ignored_total{type="info"} 1"#)
    );
}

#[tokio::test]
async fn latency_optimized_inference_is_asked_only_of_models_that_offer_it() {
    let origin =
        Origin::start(Options::new(Db::Sqlite).var("BEDROCK_FIRST_TOKEN_TIMEOUT_MS", "300")).await;
    let optimized = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
    origin.script(optimized, fault(FaultKind::Throttle));
    origin.script("plain", slow("Hi.", 1));
    let client = origin.client("acme");
    put_agent(
        &client,
        "fast",
        json!({"name": "Fast", "system_prompt": "p", "model": optimized, "fallback_models": ["plain"],
               "inference": {"latency": "optimized"}}),
    )
    .await;
    let call = client.call("fast").await;
    let (_, events) = client.turn(&call, "hi").await;
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("done"));
    let first = origin.emulator.model_stats(optimized);
    assert_eq!(first.latency_optimized, 1);
    assert_eq!(
        first.last_performance_config,
        Some(json!({"latency": "optimized"}))
    );
    let second = origin.emulator.model_stats("plain");
    assert_eq!((second.requests, second.latency_optimized), (1, 0));
    assert_eq!(second.last_performance_config, None);

    // And an agent naming a model without it is refused, naming the contradiction.
    let (status, body) = client
        .json(
            "PUT",
            "/v1/agents/slow",
            Some(
                json!({"name": "x", "system_prompt": "p", "model": "us.anthropic.claude-sonnet-4-6",
                        "inference": {"latency": "optimized"}}),
            ),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("inference.latency contradicts model")),
        "{body}"
    );
}
