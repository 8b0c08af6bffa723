//! Policy documents from KV (global, per plan, per tenant), cached in the isolate for
//! `POLICY_CACHE_TTL_MS`. A malformed document or entry is logged once per read and ignored, so
//! the next level (plan, global, built-in default) applies.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use shared::rate_limit::api::Scope;
use shared::rate_limit::policy::{
    GLOBAL_DOC_KEY, Policy, PolicyCache, PolicyDoc, PolicyError, PolicyName, plan_doc_key, resolve,
    tenant_doc_key,
};
use worker::{Env, console_error};

use crate::RATE_LIMIT_KV;

/// KV's own edge cache takes whole seconds, at least 60.
const KV_MIN_CACHE_TTL_S: u64 = 60;

thread_local! {
    static CACHE: RefCell<Option<PolicyCache>> = const { RefCell::new(None) };
}

/// The documents one request may need, by KV key; `None` when KV has none (or a broken one).
pub struct Docs {
    docs: HashMap<String, Option<Arc<PolicyDoc>>>,
}

impl Docs {
    /// The policy named `name` for `scope`: tenant, plan, global, then built in.
    pub fn resolve(&self, name: &PolicyName, scope: &Scope) -> Result<Policy, PolicyError> {
        let doc = |key: String| self.docs.get(&key).cloned().flatten();
        let tenant = scope.tenant.as_ref().and_then(|t| doc(tenant_doc_key(t)));
        let plan = scope.plan.as_ref().and_then(|p| doc(plan_doc_key(p)));
        let global = doc(GLOBAL_DOC_KEY.to_owned());
        resolve(name, tenant.as_deref(), plan.as_deref(), global.as_deref())
            .map(|(policy, _source)| policy)
    }
}

/// Loads the global document and those of every scope, from the cache or KV (in parallel).
pub async fn load<'a>(env: &Env, ttl_ms: u64, scopes: impl Iterator<Item = &'a Scope>) -> Docs {
    let mut keys = BTreeSet::from([GLOBAL_DOC_KEY.to_owned()]);
    for scope in scopes {
        keys.extend(scope.tenant.as_ref().map(tenant_doc_key));
        keys.extend(scope.plan.as_ref().map(plan_doc_key));
    }
    let now_ms = edge_io::clock::now_ms();
    let mut docs = HashMap::with_capacity(keys.len());
    let mut missing = Vec::new();
    CACHE.with(|cell| {
        let mut cache = cell.borrow_mut();
        let cache = cache.get_or_insert_with(|| PolicyCache::new(ttl_ms));
        for key in keys {
            match cache.get(&key, now_ms) {
                Some(doc) => {
                    docs.insert(key, doc);
                }
                None => missing.push(key),
            }
        }
    });
    if missing.is_empty() {
        return Docs { docs };
    }
    let read = futures::future::join_all(missing.iter().map(|key| read(env, key, ttl_ms))).await;
    CACHE.with(|cell| {
        let mut cache = cell.borrow_mut();
        let cache = cache.get_or_insert_with(|| PolicyCache::new(ttl_ms));
        for (key, outcome) in missing.into_iter().zip(read) {
            match outcome {
                Ok(doc) => {
                    cache.insert(key.clone(), doc.clone(), now_ms);
                    docs.insert(key, doc);
                }
                // KV itself failed: use the defaults now, try KV again next time.
                Err(()) => {
                    docs.insert(key, None);
                }
            }
        }
    });
    Docs { docs }
}

/// One document from KV: `Ok(None)` when absent or unusable, `Err` when KV failed.
async fn read(env: &Env, key: &str, ttl_ms: u64) -> Result<Option<Arc<PolicyDoc>>, ()> {
    let store = env.kv(RATE_LIMIT_KV).map_err(|error| {
        console_error!("rate-limit policies: KV binding {RATE_LIMIT_KV} unavailable ({error}); built-in defaults apply");
    })?;
    let mut get = store.get(key);
    if ttl_ms / 1_000 >= KV_MIN_CACHE_TTL_S {
        get = get.cache_ttl(ttl_ms / 1_000);
    }
    let text = get.text().await.map_err(|error| {
        console_error!(
            "rate-limit policies: reading KV {key} failed ({error}); the next level applies"
        );
    })?;
    let Some(text) = text else {
        return Ok(None);
    };
    match PolicyDoc::parse(&text) {
        Ok((doc, rejected)) => {
            for entry in rejected {
                console_error!(
                    "rate-limit policy {:?} in KV {key} is malformed and ignored ({}); the next level applies",
                    entry.name,
                    entry.error
                );
            }
            Ok(Some(Arc::new(doc)))
        }
        Err(error) => {
            console_error!(
                "rate-limit policy document KV {key} is malformed and ignored ({error}); the next level applies"
            );
            Ok(None)
        }
    }
}
