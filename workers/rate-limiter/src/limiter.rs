//! The `RateLimiter` Durable Object: one instance per (policy, key), named by
//! `shared::rate_limit::key`. It loads the key's state from its SQLite storage, calls
//! `shared::rate_limit::object`, stores what comes back and answers. Reading, deciding and
//! writing happen with no `await` in between, so concurrent requests to one key are decided one
//! after the other: a limit is exact.
//!
//! Storage: one row, `limiter(id = 1, state TEXT, alarm_at_ms INTEGER)`, `state` being the JSON
//! of `shared::rate_limit::object::Stored`. The alarm reclaims expired leases and deletes state
//! that no longer limits anything, so idle keys cost no storage.

use std::cell::Cell;

use serde::Deserialize;
use shared::rate_limit::object::{self, Clock, ObjectRequest, Stored, Transition};
use worker::js_sys;
use worker::{
    Date, DurableObject, Env, Method, Request, Response, Result, ScheduledTime, SqlStorage,
    SqlStorageValue, State, console_error, console_log, durable_object,
};

/// Log lines name an object by this many hex digits of its name: enough to find it, and the
/// name is a keyed hash, so it reveals nothing about the key.
pub const LOGGED_NAME_LEN: usize = 12;

/// Where the Worker sends operations.
pub const APPLY_URL: &str = "https://rate-limiter.object/apply";
const APPLY_PATH: &str = "/apply";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS limiter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    alarm_at_ms INTEGER
)";
const SELECT: &str = "SELECT state, alarm_at_ms FROM limiter WHERE id = 1";
const UPSERT: &str = "INSERT INTO limiter (id, state) VALUES (1, ?)
    ON CONFLICT (id) DO UPDATE SET state = excluded.state";
const DELETE: &str = "DELETE FROM limiter WHERE id = 1";
const SET_ALARM_AT: &str = "UPDATE limiter SET alarm_at_ms = ? WHERE id = 1";

#[durable_object]
pub struct RateLimiter {
    state: State,
    clock: Cell<Clock>,
}

/// The stored row.
#[derive(Deserialize)]
struct Row {
    state: String,
    alarm_at_ms: Option<f64>,
}

/// The key's state as loaded.
struct Loaded {
    stored: Option<Stored>,
    alarm_at_ms: Option<u64>,
}

impl DurableObject for RateLimiter {
    fn new(state: State, _env: Env) -> Self {
        if let Err(error) = state.storage().sql().exec(CREATE_TABLE, None) {
            // Every request will fail and be answered degraded; say why once.
            console_error!("RateLimiter: creating its table failed: {error}");
        }
        Self {
            state,
            clock: Cell::new(Clock::default()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match (req.method(), req.path().as_str()) {
            // Answering proves the class is deployed and its instance can be reached.
            (Method::Get, "/health") => Response::from_json(&serde_json::json!({ "ok": true })),
            (Method::Post, APPLY_PATH) => {
                let body = req.text().await?;
                let request: ObjectRequest = match serde_json::from_str(&body) {
                    Ok(request) => request,
                    Err(error) => {
                        return Response::error(format!("not an object request: {error}"), 400);
                    }
                };
                self.apply(&request).await
            }
            _ => Response::error("no such Durable Object route", 404),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let now_ms = self.now_ms();
        let sql = self.state.storage().sql();
        let loaded = load(&sql)?;
        // This alarm is the one recorded; whatever comes next is scheduled below.
        sql.exec(SET_ALARM_AT, vec![SqlStorageValue::Null])?;
        let (transition, reclaimed) = object::on_alarm(loaded.stored, now_ms);
        store(&sql, &transition)?;
        if reclaimed > 0 {
            let name = self.state.id().name().unwrap_or_default();
            console_log!(
                "RateLimiter {}: alarm reclaimed {reclaimed} expired lease(s)",
                name.get(..LOGGED_NAME_LEN).unwrap_or(&name)
            );
        }
        self.schedule(&sql, None, transition.wake_at_ms).await?;
        Response::ok("")
    }
}

impl RateLimiter {
    async fn apply(&self, request: &ObjectRequest) -> Result<Response> {
        let now_ms = self.now_ms();
        let sql = self.state.storage().sql();
        // Load, decide, store: synchronous, so no other request interleaves.
        let loaded = load(&sql)?;
        let (transition, reply) = match object::apply(loaded.stored, request, now_ms) {
            Ok(outcome) => outcome,
            // The Worker validates before calling, so this is a bug worth a loud answer.
            Err(error) => return Response::error(error.to_string(), 400),
        };
        store(&sql, &transition)?;
        self.schedule(&sql, loaded.alarm_at_ms, transition.wake_at_ms)
            .await?;
        Response::from_json(&reply)
    }

    /// Sets the alarm for `wake_at_ms` unless one is already due no later.
    async fn schedule(
        &self,
        sql: &SqlStorage,
        alarm_at_ms: Option<u64>,
        wake_at_ms: Option<u64>,
    ) -> Result<()> {
        let Some(wake_at_ms) = wake_at_ms else {
            return Ok(());
        };
        if alarm_at_ms.is_some_and(|at| at <= wake_at_ms) {
            return Ok(());
        }
        // An alarm is a point in time; `Date` takes milliseconds as a JS number.
        let at = js_sys::Date::new(&js_sys::Number::from(wake_at_ms as f64));
        self.state
            .storage()
            .set_alarm(ScheduledTime::new(at))
            .await?;
        let recorded = i64::try_from(wake_at_ms).unwrap_or(i64::MAX);
        sql.exec(SET_ALARM_AT, vec![SqlStorageValue::from(recorded)])?;
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        let mut clock = self.clock.get();
        let now_ms = clock.observe(Date::now().as_millis());
        self.clock.set(clock);
        now_ms
    }
}

/// The stored row. Unreadable state (a bug or a format change) is logged and replaced by
/// fresh state rather than failing the key forever.
fn load(sql: &SqlStorage) -> Result<Loaded> {
    let rows: Vec<Row> = sql.exec(SELECT, None)?.to_array()?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(Loaded {
            stored: None,
            alarm_at_ms: None,
        });
    };
    let stored = match serde_json::from_str::<Stored>(&row.state) {
        Ok(stored) => Some(stored),
        Err(error) => {
            console_error!("RateLimiter: unreadable state replaced by fresh state: {error}");
            None
        }
    };
    Ok(Loaded {
        stored,
        alarm_at_ms: row.alarm_at_ms.map(|at| at as u64),
    })
}

fn store(sql: &SqlStorage, transition: &Transition) -> Result<()> {
    match &transition.stored {
        Some(stored) => {
            let text = serde_json::to_string(stored)?;
            sql.exec(UPSERT, vec![SqlStorageValue::from(text)])?;
        }
        None => {
            sql.exec(DELETE, None)?;
        }
    }
    Ok(())
}
