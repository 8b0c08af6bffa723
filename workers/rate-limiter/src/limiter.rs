//! The `RateLimiter` Durable Object: one instance per (policy, key), named by
//! `shared::rate_limit::key`. It loads the key's state from its SQLite storage, calls
//! `shared::rate_limit::object`, stores what comes back and answers. Reading, deciding and
//! writing happen with no `await` in between, so concurrent requests to one key are decided one
//! after the other: a limit is exact.
//!
//! Besides the Worker's `/apply` (a resolved policy and an operation), the object answers
//! checks sent straight to it (`shared::rate_limit::object`, "Checks sent straight to the
//! object"): it resolves the policy from this script's KV and its own isolate's cache, as the
//! Worker would, after checking that its name is the keyed hash of that policy and key.
//!
//! Storage: one row, `limiter(id = 1, state TEXT, alarm_at_ms INTEGER)`, `state` being the JSON
//! of `shared::rate_limit::object::Stored`. The alarm reclaims expired leases and deletes state
//! that no longer limits anything, so idle keys cost no storage.
//!
//! The object keeps a write-through copy of its row in memory: a Durable Object is the only
//! writer of its storage and runs one request at a time, so after the first request the copy is
//! the row. A hot key then skips the read and the JSON parse, and a decision that changes nothing
//! (a refusal under GCRA) skips the write. Any storage error drops the copy, so the next request
//! reads the row again; an evicted object starts without one.

use std::cell::{Cell, RefCell};

use edge_io::Failure;
use serde::Deserialize;
use shared::health::HEALTH_PATH;
use shared::rate_limit::api::{self, ValidCheck};
use shared::rate_limit::key::{KeyHasher, LOGGED_NAME_LEN};
use shared::rate_limit::object::{
    self, CHECK_PATH, CheckedReply, Clock, ObjectReply, ObjectRequest, Op, Stored, Transition,
};
use shared::rate_limit::policy::PolicyName;
use shared::request_id::Trust;
use worker::{
    DurableObject, Env, Method, Request, Response, Result, SqlStorage, SqlStorageValue, State,
    console_error, console_log, durable_object,
};

use crate::{Refusal, policies};

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
    env: Env,
    /// The policy and key this instance's name was last found to be the hash of.
    named_for: RefCell<Option<(PolicyName, String)>>,
    clock: Cell<Clock>,
    /// The row as stored, once read or written (see the module documentation).
    row: RefCell<Option<CachedRow>>,
}

/// What the storage row holds, as last read or written.
#[derive(Default)]
struct CachedRow {
    /// The `state` column's text; `None` when there is no row.
    text: Option<String>,
    /// The decoded state.
    stored: Option<Stored>,
    /// The `alarm_at_ms` column.
    alarm_at_ms: Option<u64>,
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
    fn new(state: State, env: Env) -> Self {
        if let Err(error) = state.storage().sql().exec(CREATE_TABLE, None) {
            // Every request will fail and be answered degraded; say why once.
            console_error!("RateLimiter: creating its table failed: {error}");
        }
        Self {
            state,
            env,
            named_for: RefCell::new(None),
            clock: Cell::new(Clock::default()),
            row: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match (req.method(), req.path().as_str()) {
            // Answering proves the class is deployed and its instance can be reached.
            (Method::Get, HEALTH_PATH) => Response::from_json(&serde_json::json!({ "ok": true })),
            (Method::Post, APPLY_PATH) => {
                let body = req.text().await?;
                let request: ObjectRequest = match serde_json::from_str(&body) {
                    Ok(request) => request,
                    Err(error) => {
                        return Response::error(format!("not an object request: {error}"), 400);
                    }
                };
                match self.apply(&request).await? {
                    Ok(reply) => Response::from_json(&reply),
                    Err(error) => Response::error(error.to_string(), 400),
                }
            }
            (Method::Post, CHECK_PATH) => {
                let request_id = edge_io::request_id(&req, Trust::Internal);
                let body = req.text().await?;
                edge_io::respond(self.check(&body, &request_id).await, &request_id)
            }
            _ => Response::error("no such Durable Object route", 404),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let now_ms = self.now_ms();
        let sql = self.state.storage().sql();
        let loaded = self.load(&sql)?;
        // This alarm is the one recorded; whatever comes next is scheduled below.
        self.record_alarm(&sql, None)?;
        let (transition, reclaimed) = object::on_alarm(loaded.stored, now_ms);
        self.store(&sql, &transition)?;
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
    /// Applies `request`: storage trouble is the outer error, an operation that does not apply
    /// to the policy the inner one.
    async fn apply(
        &self,
        request: &ObjectRequest,
    ) -> Result<std::result::Result<ObjectReply, object::ObjectError>> {
        let now_ms = self.now_ms();
        let sql = self.state.storage().sql();
        // Load, decide, store: synchronous, so no other request interleaves.
        let loaded = self.load(&sql)?;
        let (transition, reply) = match object::apply(loaded.stored, request, now_ms) {
            Ok(outcome) => outcome,
            // Callers validate before calling, so this is a bug worth a loud answer. The state
            // was handed over: read it again next time.
            Err(error) => {
                self.row.replace(None);
                return Ok(Err(error));
            }
        };
        self.store(&sql, &transition)?;
        self.schedule(&sql, loaded.alarm_at_ms, transition.wake_at_ms)
            .await?;
        Ok(Ok(reply))
    }

    /// A check sent straight to this object: validated, its policy resolved as the Worker's
    /// `/check` does, then applied.
    async fn check(&self, body: &str, request_id: &str) -> std::result::Result<Response, Failure> {
        let service = crate::service(&self.env)?;
        let check = api::parse_object_check(body).map_err(Refusal::from)?;
        self.is_named_for(&service.hasher, &check)?;
        let docs = policies::load(
            &self.env,
            service.config.policy_cache_ttl_ms,
            std::iter::once(&check.scope),
        )
        .await;
        let policy = docs
            .resolve(&check.policy, &check.scope)
            .map_err(Refusal::from)?;
        api::check_fits(&check.policy, &policy, check.cost).map_err(Refusal::from)?;
        let request = ObjectRequest {
            policy_name: check.policy,
            policy,
            op: Op::Check { cost: check.cost },
        };
        match self.apply(&request).await? {
            Ok(ObjectReply::Decided { decision, .. }) => {
                edge_io::json(200, &CheckedReply { decision, policy }, request_id)
            }
            Ok(other) => {
                Err(worker::Error::RustError(format!("a check was answered {other:?}")).into())
            }
            Err(error) => Err(worker::Error::RustError(error.to_string()).into()),
        }
    }

    /// Whether this instance is the one rate-limiter names for the check's policy and key: a
    /// caller keyed with another secret reaches other instances, and would split every limit.
    fn is_named_for(
        &self,
        hasher: &KeyHasher,
        check: &ValidCheck,
    ) -> std::result::Result<(), Refusal> {
        let known = self
            .named_for
            .borrow()
            .as_ref()
            .is_some_and(|(policy, key)| *policy == check.policy && *key == check.key);
        if known {
            return Ok(());
        }
        // Available inside the object since March 2026 (Cloudflare changelog,
        // 2026-03-15-durable-object-id-name): the name given to getByName/idFromName.
        let name = self.state.id().name().unwrap_or_default();
        if name != hasher.object_name(&check.policy, &check.key) {
            return Err(Refusal::WrongObject);
        }
        self.named_for
            .replace(Some((check.policy.clone(), check.key.clone())));
        Ok(())
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
        self.state
            .storage()
            .set_alarm(edge_io::clock::alarm_at(wake_at_ms))
            .await?;
        self.record_alarm(sql, Some(wake_at_ms))
    }

    /// The row: the copy in memory, or storage when there is none.
    fn load(&self, sql: &SqlStorage) -> Result<Loaded> {
        if let Some(row) = self.row.borrow_mut().as_mut() {
            return Ok(Loaded {
                stored: row.stored.take(),
                alarm_at_ms: row.alarm_at_ms,
            });
        }
        let (text, loaded) = read(sql)?;
        self.row.replace(Some(CachedRow {
            text,
            stored: None,
            alarm_at_ms: loaded.alarm_at_ms,
        }));
        Ok(loaded)
    }

    /// Writes what `transition` keeps, unless the row already holds exactly that.
    fn store(&self, sql: &SqlStorage, transition: &Transition) -> Result<()> {
        let text = match &transition.stored {
            Some(stored) => Some(serde_json::to_string(stored)?),
            None => None,
        };
        let unchanged = self
            .row
            .borrow()
            .as_ref()
            .is_some_and(|row| row.text == text);
        if !unchanged {
            let written = match &text {
                Some(text) => sql.exec(UPSERT, vec![SqlStorageValue::from(text.clone())]),
                None => sql.exec(DELETE, None),
            };
            if let Err(error) = written {
                self.row.replace(None);
                return Err(error);
            }
        }
        let mut row = self.row.borrow_mut();
        let row = row.get_or_insert_with(CachedRow::default);
        if text.is_none() {
            // No row any more, so no recorded alarm either.
            row.alarm_at_ms = None;
        }
        row.text = text;
        row.stored = transition.stored.clone();
        Ok(())
    }

    /// Records in the row when the alarm is set for (`None`: no alarm).
    fn record_alarm(&self, sql: &SqlStorage, at_ms: Option<u64>) -> Result<()> {
        let value = at_ms.map_or(SqlStorageValue::Null, |at| {
            SqlStorageValue::from(i64::try_from(at).unwrap_or(i64::MAX))
        });
        if let Err(error) = sql.exec(SET_ALARM_AT, vec![value]) {
            self.row.replace(None);
            return Err(error);
        }
        if let Some(row) = self.row.borrow_mut().as_mut() {
            // The UPDATE touches an existing row only.
            if row.text.is_some() {
                row.alarm_at_ms = at_ms;
            }
        }
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        let mut clock = self.clock.get();
        let now_ms = clock.observe(edge_io::clock::now_ms());
        self.clock.set(clock);
        now_ms
    }
}

/// Reads the stored row: its text and what it decodes to. Unreadable state (a bug or a format
/// change) is logged and replaced by fresh state rather than failing the key forever.
fn read(sql: &SqlStorage) -> Result<(Option<String>, Loaded)> {
    let rows: Vec<Row> = sql.exec(SELECT, None)?.to_array()?;
    let Some(row) = rows.into_iter().next() else {
        let empty = Loaded {
            stored: None,
            alarm_at_ms: None,
        };
        return Ok((None, empty));
    };
    let stored = match serde_json::from_str::<Stored>(&row.state) {
        Ok(stored) => Some(stored),
        Err(error) => {
            console_error!("RateLimiter: unreadable state replaced by fresh state: {error}");
            None
        }
    };
    let loaded = Loaded {
        stored,
        alarm_at_ms: row.alarm_at_ms.map(|at| at as u64),
    };
    Ok((Some(row.state), loaded))
}
