//! The read API against both databases (SQLite and the test command's PostgreSQL): the call list
//! (every filter, cursor pages walked to the end, equal start times, a call arriving between
//! pages, tenants), usage minutes, a call's event stream (its stored history, then live, resumed
//! after `Last-Event-ID`, ended with the call) and the tenant's stream. Calls are seeded through
//! the real store with chosen times; reads go over HTTP, signed like the edge.

#[macro_use]
mod support;

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use shared::call::{Call, CallSource, CallStatus, CallerDetails};
use shared::call_list::{CallListQuery, CallPage, newest_first};
use shared::signing::BodyHash;
use shared::turn::TurnRole;
use shared::usage::format_day;
use support::{Client, Db, Options, Origin, edge_headers, now_secs};

on_both_databases!(
    the_call_list_pages_newest_first_through_every_filter,
    the_call_list_never_shows_another_tenants_calls,
    usage_counts_minutes_of_ended_calls_on_the_day_they_started,
    a_calls_event_stream_replays_its_history_then_goes_live_and_ends_with_the_call,
    the_tenant_stream_carries_every_call_of_the_tenant_and_no_other,
);

const MS_PER_DAY: u64 = 86_400_000;
/// 2024-10-04 00:00 UTC: a day far from today, so real traffic of a test never lands on it.
const DAY: u64 = 20_000;

fn seeded(tenant: &str, id: &str, agent: &str, source: CallSource, started_at_ms: u64) -> Call {
    Call {
        id: id.into(),
        tenant_id: tenant.into(),
        agent_id: agent.into(),
        source,
        carrier_call_sid: None,
        from: None,
        to: None,
        region: "us-east-1".into(),
        status: CallStatus::Active,
        turn_count: 0,
        started_at_ms,
        ended_at_ms: None,
        end_reason: None,
        caller: CallerDetails::default(),
        direction: shared::call::CallDirection::Inbound,
        carrier: None,
        answered_by: None,
        voicemail_message: None,
        voicemail_left_at_ms: None,
        metadata: None,
    }
}

async fn create(origin: &Origin, call: &Call) {
    origin.state.store.create_call(call).await.expect("stored");
}

async fn end(origin: &Origin, call: &mut Call, at_ms: u64) {
    origin
        .state
        .store
        .end_call(&call.tenant_id, &call.id, "completed", None, at_ms)
        .await
        .expect("ended");
    call.status = CallStatus::Ended;
    call.ended_at_ms = Some(at_ms);
}

/// Every page of `query` (a query string without `?` and without `cursor`), walked with
/// `limit`; checks each page's shape on the way and returns the ids in the order listed.
async fn walk(client: &Client, query: &str, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..200 {
        let mut path = format!("/v1/calls?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, body) = client.json("GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let page: CallPage = serde_json::from_value(body).expect("a CallPage");
        assert!(page.calls.len() <= limit as usize, "{path}: over the limit");
        ids.extend(page.calls.iter().map(|call| call.id.clone()));
        match page.next_cursor {
            Some(next) => {
                assert_eq!(
                    page.calls.len(),
                    limit as usize,
                    "{path}: a short page with a cursor"
                );
                cursor = Some(next);
            }
            None => return ids,
        }
    }
    panic!("{query}: more than 200 pages");
}

/// The ids `query` admits, in list order: the rule `shared` states, which the SQL must follow.
fn expected(calls: &[Call], query: &str) -> Vec<String> {
    let query = CallListQuery::parse(query).expect("a valid query");
    let mut admitted: Vec<&Call> = calls.iter().filter(|call| query.admits(call)).collect();
    admitted.sort_by(|a, b| newest_first(a, b));
    admitted.iter().map(|call| call.id.clone()).collect()
}

async fn the_call_list_pages_newest_first_through_every_filter(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let client = origin.client("alice");
    let base = DAY * MS_PER_DAY;
    // Fourteen calls, three at a time sharing a start time, ids chosen so byte order and a
    // locale's order differ ("C…" < "_" < "a…" byte-wise).
    let ids = [
        "c00", "c01", "c02", "C03", "c_04", "c-05", "ca06", "c07", "c08", "c09", "c10", "c11",
        "c12", "c13",
    ];
    let mut calls: Vec<Call> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let agent = if i % 2 == 0 { "a1" } else { "a2" };
            let source = if i % 4 == 0 {
                CallSource::Phone
            } else {
                CallSource::Api
            };
            seeded("alice", id, agent, source, base + (i as u64 / 3) * 1_000)
        })
        .collect();
    for call in &calls {
        create(&origin, call).await;
    }
    for call in calls.iter_mut().step_by(3) {
        let at = call.started_at_ms + 90_000;
        end(&origin, call, at).await;
    }

    let middle = base + 2_000;
    for query in [
        String::new(),
        "status=active".into(),
        "status=ended".into(),
        "agent_id=a2".into(),
        "agent_id=nobody".into(),
        "source=phone".into(),
        "source=api&status=active".into(),
        format!("started_after_ms={middle}"),
        format!("started_before_ms={middle}"),
        format!(
            "started_after_ms={}&started_before_ms={}",
            base,
            base + 3_000
        ),
        format!(
            "agent_id=a1&source=phone&started_before_ms={}",
            base + 4_000
        ),
    ] {
        let want = expected(&calls, &query);
        for limit in [1, 2, 3, 5, 100] {
            assert_eq!(
                walk(&client, &query, limit).await,
                want,
                "{query:?}, limit {limit}"
            );
        }
        if !want.is_empty() {
            // Exactly a page's worth: one page, and no cursor to an empty one.
            let exact = u32::try_from(want.len()).expect("few");
            assert_eq!(
                walk(&client, &query, exact).await,
                want,
                "{query:?}, limit = count"
            );
        }
    }
    assert_eq!(
        walk(&client, "", 100).await.first().map(String::as_str),
        Some("c13"),
        "the newest first"
    );

    // A call starting between two page reads does not shift the pages after the first.
    let (_, first) = client.json("GET", "/v1/calls?limit=4", None).await;
    let first: CallPage = serde_json::from_value(first).expect("page");
    let newcomer = seeded("alice", "c99", "a1", CallSource::Api, base + 60_000);
    create(&origin, &newcomer).await;
    let cursor = first.next_cursor.expect("more pages");
    let (_, second) = client
        .json("GET", &format!("/v1/calls?limit=4&cursor={cursor}"), None)
        .await;
    let second: CallPage = serde_json::from_value(second).expect("page");
    let all = expected(&calls, "");
    assert_eq!(
        second
            .calls
            .iter()
            .map(|c| c.id.clone())
            .collect::<Vec<_>>(),
        all[4..8].to_vec()
    );
    calls.push(newcomer);

    // Each entry is the call as `GET /v1/calls/{id}` shows it; `turn_count` counts the
    // caller's turns only.
    origin
        .state
        .store
        .append_turns(
            "alice",
            "c13",
            &[
                origin::store::NewTurn::said(TurnRole::User, "hello", base + 5_000),
                origin::store::NewTurn::said(TurnRole::Assistant, "hi", base + 5_001),
            ],
        )
        .await
        .expect("turns");
    let (_, page) = client
        .json("GET", "/v1/calls?agent_id=a2&limit=1", None)
        .await;
    let (_, single) = client.json("GET", "/v1/calls/c13", None).await;
    assert_eq!(page["calls"][0], single);
    assert_eq!(single["turn_count"], 1);

    // A cursor past every call is an empty last page.
    let past = shared::call_list::Cursor {
        started_at_ms: 1,
        id: "a".into(),
    };
    let (status, page) = client
        .json("GET", &format!("/v1/calls?cursor={}", past.encode()), None)
        .await;
    assert_eq!((status, page), (200, json!({"calls": []})));
}

async fn the_call_list_never_shows_another_tenants_calls(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let base = DAY * MS_PER_DAY;
    // The same ids in both tenants, interleaved in time.
    for i in 0..6_u64 {
        for tenant in ["alice", "mallory"] {
            let call = seeded(
                tenant,
                &format!("same-{i}"),
                "a1",
                CallSource::Api,
                base + i * 10 + u64::from(tenant == "mallory"),
            );
            create(&origin, &call).await;
        }
    }
    let alice = origin.client("alice");
    let mallory = origin.client("mallory");
    let (_, page) = alice.json("GET", "/v1/calls?limit=100", None).await;
    let page: CallPage = serde_json::from_value(page).expect("page");
    assert_eq!(page.calls.len(), 6);
    assert!(page.calls.iter().all(|call| call.tenant_id == "alice"));
    // Alice's cursor is only a place in a list: in Mallory's hands it walks Mallory's calls.
    let (_, first) = alice.json("GET", "/v1/calls?limit=2", None).await;
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    let (_, theirs) = mallory
        .json("GET", &format!("/v1/calls?limit=100&cursor={cursor}"), None)
        .await;
    let theirs: CallPage = serde_json::from_value(theirs).expect("page");
    assert!(!theirs.calls.is_empty());
    assert!(theirs.calls.iter().all(|call| call.tenant_id == "mallory"));
    let (_, nobody) = origin.client("nobody").json("GET", "/v1/calls", None).await;
    assert_eq!(nobody, json!({"calls": []}));
}

async fn usage_counts_minutes_of_ended_calls_on_the_day_they_started(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let day = DAY * MS_PER_DAY;
    let hour = 3_600_000;
    // (tenant, id, start, length: None while live)
    let plan: [(&str, &str, u64, Option<u64>); 8] = [
        ("alice", "long", day + hour, Some(61_000)), // 2 minutes, rounded up
        ("alice", "blip", day + 2 * hour, Some(1)),  // 1 minute
        ("alice", "none", day + 3 * hour, Some(0)),  // no time at all
        ("alice", "live", day + 4 * hour, None),     // still live: not yet counted
        ("alice", "late", day + 24 * hour - 1_000, Some(120_000)), // ends the next day: 2, day 1
        ("alice", "next", day + 25 * hour, Some(300_000)), // exactly 5
        ("alice", "before", day - hour, Some(600_000)), // the day before the range
        ("mallory", "theirs", day + hour, Some(3_600_000)), // another tenant
    ];
    for (tenant, id, start, length) in plan {
        let mut call = seeded(tenant, id, "a1", CallSource::Phone, start);
        create(&origin, &call).await;
        if let Some(length) = length {
            end(&origin, &mut call, start + length).await;
        }
    }
    let (status, usage) = origin
        .client("alice")
        .json(
            "GET",
            &format!(
                "/v1/usage?from={}&to={}",
                format_day(DAY as i64),
                format_day(DAY as i64 + 1)
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{usage}");
    let days: Vec<(Value, Value, Value, Value)> = usage["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| {
            (
                d["day"].clone(),
                d["calls"].clone(),
                d["minutes"].clone(),
                d["tool_calls"].clone(),
            )
        })
        .collect();
    assert_eq!(
        days,
        [
            (json!(format_day(DAY as i64)), json!(5), json!(5), json!(0)),
            (
                json!(format_day(DAY as i64 + 1)),
                json!(1),
                json!(5),
                json!(0)
            ),
        ]
    );
    assert_eq!(usage["totals"]["minutes"], 10);
    assert_eq!(usage["totals"]["tool_calls"], 0);
}

/// One event as received: name, id, data.
#[derive(Debug)]
struct Received {
    event: String,
    id: Option<String>,
    data: Value,
}

/// What came next on a stream.
#[derive(Debug)]
enum Next {
    Event(Received),
    Ended,
    Quiet,
}

struct EventStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

/// `GET path` signed as `client`'s principal, with `Last-Event-ID` when given.
async fn get_stream(client: &Client, path: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{}{path}", client.base));
    for (name, value) in edge_headers(
        "GET",
        path,
        BodyHash::of(b""),
        Some(&client.principal),
        now_secs(),
    ) {
        request = request.header(name, value);
    }
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.expect("origin answers")
}

async fn open(client: &Client, path: &str, last_event_id: Option<&str>) -> EventStream {
    let response = get_stream(client, path, last_event_id).await;
    assert_eq!(response.status(), 200, "{path} opens");
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{path}"
    );
    EventStream {
        body: Box::pin(response.bytes_stream()),
        buffer: String::new(),
    }
}

impl EventStream {
    async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if !data.is_empty() {
                    return Next::Event(Received {
                        event,
                        id,
                        data: serde_json::from_str(&data).expect("JSON data"),
                    });
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Next::Quiet,
                Ok(None) => return Next::Ended,
                Ok(Some(chunk)) => self
                    .buffer
                    .push_str(&String::from_utf8_lossy(&chunk.expect("chunk"))),
            }
        }
    }

    /// The next `n` events as `event id`.
    async fn take(&mut self, n: usize) -> Vec<String> {
        let mut seen = Vec::new();
        while seen.len() < n {
            match self.next(Duration::from_secs(5)).await {
                Next::Event(received) => seen.push(format!(
                    "{} {}",
                    received.event,
                    received.id.unwrap_or_default()
                )),
                other => panic!("expected {n} events, got {seen:?} then {other:?}"),
            }
        }
        seen
    }
}

async fn a_calls_event_stream_replays_its_history_then_goes_live_and_ends_with_the_call(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let client = origin.client("alice");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    assert_eq!(client.turn(&call, "first").await.0, 200);
    let path = format!("/v1/calls/{call}/events");

    // A late subscriber gets the call's history first: it started, a turn, a reply.
    let mut late = open(&client, &path, None).await;
    assert_eq!(
        late.take(3).await,
        ["call_started 0", "turn_started 1", "turn_finished 2"]
    );
    assert!(matches!(
        late.next(Duration::from_millis(200)).await,
        Next::Quiet
    ));

    // Then it is live.
    assert_eq!(client.turn(&call, "second").await.0, 200);
    assert_eq!(late.take(2).await, ["turn_started 3", "turn_finished 4"]);
    let Next::Event(first) = open(&client, &path, None)
        .await
        .next(Duration::from_secs(5))
        .await
    else {
        panic!("no first event");
    };
    assert_eq!(first.data["call_id"], call.as_str());
    assert_eq!(first.data["kind"], "call_started");

    // A client back after `2` gets what followed, and stays for the rest.
    let mut resumed = open(&client, &path, Some("2")).await;
    assert_eq!(resumed.take(2).await, ["turn_started 3", "turn_finished 4"]);

    // The call ends: both streams say so, with its reason, and close.
    let (status, _) = client
        .json(
            "POST",
            &format!("/v1/calls/{call}/end"),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert_eq!(status, 200);
    for stream in [&mut late, &mut resumed] {
        match stream.next(Duration::from_secs(5)).await {
            Next::Event(ended) => {
                assert_eq!(
                    (ended.event.as_str(), ended.id.as_deref()),
                    ("call_ended", Some("end"))
                );
                assert_eq!(ended.data["reason"], "done");
            }
            other => panic!("expected call_ended, got {other:?}"),
        }
        assert!(matches!(
            stream.next(Duration::from_secs(5)).await,
            Next::Ended
        ));
    }

    // An ended call's stream is its whole history, then the end of the stream.
    let mut after = open(&client, &path, None).await;
    assert_eq!(
        after.take(6).await,
        [
            "call_started 0",
            "turn_started 1",
            "turn_finished 2",
            "turn_started 3",
            "turn_finished 4",
            "call_ended end"
        ]
    );
    assert!(matches!(
        after.next(Duration::from_secs(5)).await,
        Next::Ended
    ));
    // Nothing after the end: 204, which stops a browser's EventSource from reconnecting.
    let response = get_stream(&client, &path, Some("end")).await;
    assert_eq!(response.status(), 204);
    // An id this stream never gave, and another tenant, are refused.
    let response = get_stream(&client, &path, Some("yesterday")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_request");
    let response = get_stream(&origin.client("mallory"), &path, None).await;
    assert_eq!(response.status(), 404);
}

async fn the_tenant_stream_carries_every_call_of_the_tenant_and_no_other(db: Db) {
    let origin = Origin::start(Options::new(db)).await;
    let alice = origin.client("alice");
    let mallory = origin.client("mallory");
    alice.agent("a1", "m", &[]).await;
    mallory.agent("a1", "m", &[]).await;
    let mut stream = open(&alice, "/v1/events", None).await;
    // Mallory's call comes first: had it leaked, it would be the first event.
    let theirs = mallory.call("a1").await;
    assert_eq!(mallory.turn(&theirs, "psst").await.0, 200);
    let first = alice.call("a1").await;
    let second = alice.call("a1").await;
    assert_eq!(alice.turn(&second, "hello").await.0, 200);
    let (status, _) = alice
        .json(
            "POST",
            &format!("/v1/calls/{first}/end"),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert_eq!(status, 200);
    let mut seen = Vec::new();
    for _ in 0..5 {
        match stream.next(Duration::from_secs(5)).await {
            Next::Event(received) => {
                assert_eq!(received.id, None, "no ids on the tenant stream");
                assert_eq!(received.data["tenant_id"], "alice");
                let call = received.data["call_id"].as_str().unwrap_or_default();
                let which = if call == first {
                    "first"
                } else if call == second {
                    "second"
                } else {
                    "?"
                };
                seen.push(format!("{} {which}", received.event));
            }
            other => panic!("expected an event after {seen:?}, got {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "call_started first",
            "call_started second",
            "turn_started second",
            "turn_finished second",
            "call_ended first"
        ]
    );
    // It stays open: the tenant's next call is still to come.
    assert!(matches!(
        stream.next(Duration::from_millis(200)).await,
        Next::Quiet
    ));
}

#[tokio::test]
async fn a_bad_list_query_is_400_with_its_code_and_reason() {
    let origin = Origin::start(Options::new(Db::Sqlite)).await;
    let client = origin.client("alice");
    for (query, code, says) in [
        ("stauts=active", "invalid_query", "unknown query parameter"),
        (
            "status=paused",
            "invalid_query",
            "status must be active or ended",
        ),
        ("limit=0", "invalid_query", "limit must be 1 to 100"),
        ("limit=101", "invalid_query", "limit must be 1 to 100"),
        (
            "status=active&status=ended",
            "invalid_query",
            "more than once",
        ),
        (
            "started_after_ms=yesterday",
            "invalid_query",
            "started_after_ms must be",
        ),
        (
            "started_after_ms=9&started_before_ms=9",
            "invalid_query",
            "less than",
        ),
        ("agent_id=..%2F..", "invalid_query", "agent_id must be"),
        ("source=fax", "invalid_query", "source must be phone or api"),
        ("cursor=Zm9yZ2Vk", "invalid_cursor", "not a next_cursor"),
    ] {
        let (status, body) = client
            .json("GET", &format!("/v1/calls?{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{query}: {message}");
    }
}

#[tokio::test]
async fn with_the_database_down_reads_fail_fast_with_503() {
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut options = Options::new(Db::Sqlite);
    options.flaky = Some(std::sync::Arc::clone(&down));
    let origin = Origin::start(options).await;
    let client = origin.client("alice");
    client.agent("a1", "m", &[]).await;
    let call = client.call("a1").await;
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    for path in [
        "/v1/calls".to_owned(),
        format!("/v1/calls/{call}/turns"),
        format!("/v1/calls/{call}/events"),
        "/v1/usage".to_owned(),
    ] {
        let response = client.send("GET", &path, None).await;
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()["retry-after"], "2", "{path}");
    }
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    // The background probe finds it back within its interval.
    origin.until_ready().await;
    let (status, page) = client.json("GET", "/v1/calls", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["calls"][0]["id"], call.as_str());
}
