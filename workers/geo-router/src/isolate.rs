//! What one isolate keeps between requests: the parsed configuration and a copy of the health
//! table, so a route decision reads neither vars nor KV on the hot path.
//!
//! Staleness accepted: a decision may use a copy up to `GEO_HEALTH_CACHE_MS` old (5 s by
//! default) as is; up to 60 s old it is used while a background read refreshes it (KV itself
//! takes up to about a minute to carry a write to other locations, so an older copy is no worse
//! than a fresh KV read there); older than that, the decision waits for KV. The isolate that
//! runs the Cron Trigger or takes a report updates its own copy at once.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use edge_io::clock::now_ms;
use edge_io::config::lookup;
use shared::geo::health::{CacheUse, cache_use};
use shared::geo::{ConfigError, GeoConfig, HealthTable};
use worker::{Context, Env, console_error};

/// KV: the origins' health table, written by the Cron Trigger and by reports.
pub const GEO_KV: &str = "GEO_KV";
/// KV key of the health table (JSON of `shared::geo::HealthTable`).
pub const HEALTH_KEY: &str = "health:v1";
/// KV's shortest edge-cache time, in seconds: reads see other locations' writes soonest.
const KV_CACHE_TTL_SECS: u64 = 30;

struct Copy {
    table: Rc<HealthTable>,
    loaded_at_ms: u64,
}

thread_local! {
    static CONFIG: OnceCell<Result<Rc<GeoConfig>, ConfigError>> = const { OnceCell::new() };
    static HEALTH: RefCell<Option<Copy>> = const { RefCell::new(None) };
    static REFRESHING: Cell<bool> = const { Cell::new(false) };
}

/// The configuration, parsed from the vars on the isolate's first request. Vars cannot change
/// within an isolate: a new deploy starts new isolates.
pub fn config(env: &Env) -> Result<Rc<GeoConfig>, ConfigError> {
    CONFIG.with(|cell| {
        cell.get_or_init(|| GeoConfig::from_lookup(|name| lookup(env, name)).map(Rc::new))
            .clone()
    })
}

/// The health table for a route decision: the isolate's copy when fresh enough, else KV.
/// Never fails: without a readable table every region counts as `unknown`, i.e. usable.
pub async fn health_for_decision(env: &Env, ctx: &Context, cache_ms: u64) -> Rc<HealthTable> {
    let now = now_ms();
    let held = HEALTH.with_borrow(|copy| {
        copy.as_ref().map(|copy| {
            (
                copy.table.clone(),
                cache_use(copy.loaded_at_ms, now, cache_ms),
            )
        })
    });
    match held {
        Some((table, CacheUse::Fresh)) => table,
        Some((table, CacheUse::Stale)) => {
            if !REFRESHING.replace(true) {
                let env = env.clone();
                ctx.wait_until(async move {
                    if let Err(error) = reload(&env).await {
                        console_error!("refreshing the health table from KV failed: {error}");
                    }
                    REFRESHING.set(false);
                });
            }
            table
        }
        Some((table, CacheUse::Expired)) => reload(env).await.unwrap_or_else(|error| {
            console_error!("reading the health table from KV failed, using the held copy: {error}");
            table
        }),
        None => reload(env).await.unwrap_or_else(|error| {
            console_error!(
                "reading the health table from KV failed, taking every region as unknown: {error}"
            );
            Rc::new(HealthTable::default())
        }),
    }
}

/// Reads the table from KV into the isolate's copy and returns the newer of the two: KV can
/// hand back an older copy than the one this isolate wrote itself.
pub async fn reload(env: &Env) -> worker::Result<Rc<HealthTable>> {
    let table = read(env).await?;
    Ok(adopt(table))
}

/// Reads the table from KV; a missing or unreadable table is an empty one (logged).
async fn read(env: &Env) -> worker::Result<HealthTable> {
    let text = env
        .kv(GEO_KV)?
        .get(HEALTH_KEY)
        .cache_ttl(KV_CACHE_TTL_SECS)
        .text()
        .await
        .map_err(worker::Error::from)?;
    Ok(match text {
        None => HealthTable::default(),
        Some(text) => HealthTable::from_json(&text).unwrap_or_else(|error| {
            console_error!("{error}; starting from an empty table");
            HealthTable::default()
        }),
    })
}

/// Writes the table to KV.
pub async fn write(env: &Env, table: &HealthTable) -> worker::Result<()> {
    env.kv(GEO_KV)?
        .put(HEALTH_KEY, table.to_json())
        .map_err(worker::Error::from)?
        .execute()
        .await
        .map_err(worker::Error::from)
}

/// The isolate's copy as it is, or an empty table when it holds none.
pub fn held() -> HealthTable {
    HEALTH.with_borrow(|held| {
        held.as_ref()
            .map(|copy| (*copy.table).clone())
            .unwrap_or_default()
    })
}

/// Makes `table` the isolate's copy unless the copy held is newer; returns the one kept.
pub fn adopt(table: HealthTable) -> Rc<HealthTable> {
    let now = now_ms();
    HEALTH.with_borrow_mut(|held| {
        let kept = match held.take() {
            Some(copy) if !table.supersedes(&copy.table) => copy.table,
            _ => Rc::new(table),
        };
        *held = Some(Copy {
            table: kept.clone(),
            loaded_at_ms: now,
        });
        kept
    })
}
