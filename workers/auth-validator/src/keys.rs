//! The keys a JWT may be verified with: configured keys plus the JWKS fetched from `JWKS_URL`,
//! cached in this isolate's memory and in KV (shared by isolates, with a TTL). A hot path reads
//! neither KV nor the network. When to fetch is decided by `shared::jwks::CacheState::refresh`.
//!
//! A token whose key is not in memory costs one KV read (another isolate may already hold the
//! rotated set), but never more than one fetch per `JWKS_REFETCH_MIN_INTERVAL_S`: invented key
//! ids cannot be turned into traffic to the key server.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use shared::jwks::{self, CacheState, KeySet, KeySource, StoredJwks};
use shared::jwt::{Header, select_key};
use worker::{
    AbortController, Context, Env, Fetch, Headers, Method, Request, RequestInit, console_error,
    console_log,
};

use crate::{AUTH_KV, Refusal};

/// Longest wait for the key server.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long KV keeps a fetched set: long past its freshness, so a key server outage is ridden
/// out on the last good copy.
const KV_RETENTION_S: u64 = 24 * 60 * 60;

/// This isolate's copy of the fetched set.
struct Cached {
    url: String,
    keys: Rc<KeySet>,
    state: CacheState,
}

thread_local! {
    static FETCHED: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

/// The keys to verify a token with `header`: configured keys first, then the fetched set, which
/// is fetched again when stale or when it lacks the token's key (throttled).
pub async fn for_token(
    header: &Header,
    jwt: &shared::auth::config::JwtConfig,
    env: &Env,
    ctx: &Context,
    now_ms: u64,
) -> Result<KeySet, Refusal> {
    let Some(url) = jwt.jwks_url.as_deref() else {
        return Ok(jwt.static_keys.clone());
    };
    let policy = &jwt.cache;
    let has_key = |keys: &KeySet| match select_key(keys, header) {
        Ok(_) => true,
        Err(error) => !error.may_need_fresh_keys(),
    };

    let (mut fetched, mut state) = from_memory(url);
    let mut merged = jwt.static_keys.merged(&fetched);
    if state.refresh(has_key(&merged), now_ms, policy) == jwks::Refresh::UseCached {
        return Ok(merged);
    }

    // Another isolate may have fetched a newer copy.
    let storage_key = jwks::storage_key(url);
    if let Some(stored) = read_kv(env, &storage_key).await {
        state = state.merge(CacheState {
            fetched_at_ms: Some(stored.fetched_at_ms),
            last_attempt_ms: None,
        });
        if let Some(keys) = newer_than_memory(url, &stored) {
            fetched = keys;
            merged = jwt.static_keys.merged(&fetched);
        }
    }

    match state.refresh(has_key(&merged), now_ms, policy) {
        jwks::Refresh::UseCached | jwks::Refresh::Throttled { .. } => {}
        jwks::Refresh::Fetch => {
            state.last_attempt_ms = Some(now_ms);
            remember(url, fetched.clone(), state);
            match fetch(url).await {
                Ok(document) => match jwks::parse_jwks(&document, KeySource::Remote) {
                    Ok(parsed) => {
                        for skipped in &parsed.skipped {
                            console_log!("JWKS: skipped key {:?}: {}", skipped.kid, skipped.reason);
                        }
                        let fetched_at_ms = edge_io::clock::now_ms();
                        fetched = Rc::new(parsed.keys);
                        state.fetched_at_ms = Some(fetched_at_ms);
                        remember(url, fetched.clone(), state);
                        store_kv(env, ctx, storage_key, fetched_at_ms, document);
                        merged = jwt.static_keys.merged(&fetched);
                    }
                    Err(error) => console_error!("JWKS from {url} refused: {error}"),
                },
                Err(cause) => console_error!("JWKS fetch from {url} failed: {cause}"),
            }
        }
    }
    if merged.is_empty() {
        return Err(Refusal::JwksUnavailable);
    }
    Ok(merged)
}

fn from_memory(url: &str) -> (Rc<KeySet>, CacheState) {
    FETCHED.with(|cell| match cell.borrow().as_ref() {
        Some(cached) if cached.url == url => (cached.keys.clone(), cached.state),
        _ => (Rc::new(KeySet::default()), CacheState::default()),
    })
}

fn remember(url: &str, keys: Rc<KeySet>, state: CacheState) {
    FETCHED.with(|cell| {
        *cell.borrow_mut() = Some(Cached {
            url: url.to_owned(),
            keys,
            state,
        });
    });
}

/// Adopts KV's copy when it is newer than this isolate's.
fn newer_than_memory(url: &str, stored: &StoredJwks) -> Option<Rc<KeySet>> {
    let (_, memory) = from_memory(url);
    if memory
        .fetched_at_ms
        .is_some_and(|at| at >= stored.fetched_at_ms)
    {
        return None;
    }
    match jwks::parse_jwks(&stored.jwks, KeySource::Remote) {
        Ok(parsed) => {
            let keys = Rc::new(parsed.keys);
            let state = memory.merge(CacheState {
                fetched_at_ms: Some(stored.fetched_at_ms),
                last_attempt_ms: None,
            });
            remember(url, keys.clone(), state);
            Some(keys)
        }
        Err(error) => {
            console_error!("JWKS cached in KV refused: {error}");
            None
        }
    }
}

async fn read_kv(env: &Env, storage_key: &str) -> Option<StoredJwks> {
    let store = env.kv(AUTH_KV).ok()?;
    match store.get(storage_key).text().await {
        Ok(Some(text)) => serde_json::from_str(&text).ok(),
        Ok(None) => None,
        Err(error) => {
            console_error!("JWKS cache read failed: {error}");
            None
        }
    }
}

/// Writes the fetched set to KV after the response: no caller waits for it.
fn store_kv(env: &Env, ctx: &Context, storage_key: String, fetched_at_ms: u64, jwks: String) {
    let env = env.clone();
    ctx.wait_until(async move {
        let stored = StoredJwks {
            fetched_at_ms,
            jwks,
        };
        let Ok(text) = serde_json::to_string(&stored) else {
            return;
        };
        let written = match env.kv(AUTH_KV) {
            Ok(store) => match store.put(&storage_key, text) {
                Ok(put) => put.expiration_ttl(KV_RETENTION_S).execute().await,
                Err(error) => Err(error),
            },
            Err(error) => {
                console_error!("JWKS cache write failed: {error}");
                return;
            }
        };
        if let Err(error) = written {
            console_error!("JWKS cache write failed: {error}");
        }
    });
}

/// GET the key set, bounded in time and size.
async fn fetch(url: &str) -> Result<String, String> {
    let headers = Headers::new();
    headers
        .set("accept", "application/json")
        .map_err(|error| error.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let request = Request::new_with_init(url, &init).map_err(|error| error.to_string())?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let outcome = edge_io::clock::within(
        FETCH_TIMEOUT,
        Fetch::Request(request).send_with_signal(&signal),
    )
    .await;
    let Some(outcome) = outcome else {
        controller.abort();
        return Err(format!("no answer within {} ms", FETCH_TIMEOUT.as_millis()));
    };
    let mut response = outcome.map_err(|error| error.to_string())?;
    if response.status_code() != 200 {
        return Err(format!("answered {}", response.status_code()));
    }
    let declared = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|length| length.parse::<usize>().ok());
    if declared.is_some_and(|length| length > jwks::MAX_JWKS_BYTES) {
        return Err("key set too large".into());
    }
    let body = response.text().await.map_err(|error| error.to_string())?;
    if body.len() > jwks::MAX_JWKS_BYTES {
        return Err("key set too large".into());
    }
    Ok(body)
}
