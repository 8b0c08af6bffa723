//! Which limit applies to a key: named policies, their JSON form (the same in KV and on the wire
//! to the Durable Object), the built-in defaults, and overrides per tenant, plan or globally.
//!
//! A policy document in KV is a JSON object of policies by name, e.g. under
//! `policies:plan:pro`: `{"principal": {"algorithm": "gcra", "limit": 600, "period_ms": 60000}}`.
//! Resolution takes the tenant's document, then the plan's, then the global one, then the
//! built-in default; an entry that does not validate is rejected (the caller logs it) and the
//! next level applies.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Built-in policy: requests per client IP, on every route.
pub const IP: &str = "ip";
/// Built-in policy: requests per authenticated principal, on the API.
pub const PRINCIPAL: &str = "principal";
/// Built-in policy: live calls per tenant.
pub const TENANT_CALLS: &str = "tenant-calls";
/// Built-in policy: outbound calls placed per second per carrier account (key
/// `{carrier}:{account}`). Twilio grants each account one call per second on `/Calls` by
/// default and queues the excess (<https://www.twilio.com/docs/voice/api/call-resource>, "Calls
/// Per Second"); pacing at the edge refuses a tenant asking faster instead of letting calls
/// queue invisibly. Raised per tenant or plan in KV like any policy.
pub const CARRIER_CPS: &str = "carrier-cps";

/// KV key of the document that applies to every tenant and plan.
pub const GLOBAL_DOC_KEY: &str = "policies:global";

/// Longest policy name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest tenant or plan id.
pub const MAX_SCOPE_LEN: usize = 128;
/// Largest quota of any policy.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// Longest rate period or window: 31 days.
pub const MAX_PERIOD_MS: u64 = 31 * 24 * 60 * 60 * 1_000;
/// Most concurrent leases one key may hold.
pub const MAX_LEASES: u64 = 10_000;
/// Shortest lease: a live call renews well within it.
pub const MIN_LEASE_TTL_MS: u64 = 1_000;
/// Longest lease: a vanished call holds capacity at most this long.
pub const MAX_LEASE_TTL_MS: u64 = 24 * 60 * 60 * 1_000;
/// Most entries a sliding window may keep (bounds the state written per decision).
pub const MAX_WINDOW_ENTRIES: u64 = 10_000;
/// Longest time an empty GCRA bucket may take to refill (bounds its state): 366 days.
pub const MAX_BURST_HORIZON_MS: u64 = 366 * 24 * 60 * 60 * 1_000;
/// Lease lifetime when a concurrency policy names none.
pub const DEFAULT_LEASE_TTL_MS: u64 = 60_000;

const NS_PER_MS: u128 = 1_000_000;

/// Why a policy, a policy name or a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Names are 1–64 of `a-z`, `0-9`, `-`, starting with a letter or digit.
    #[error("policy name {0:?} is not 1-64 characters of a-z, 0-9 and '-'")]
    InvalidName(String),
    /// Neither built in nor defined for this tenant, plan or globally.
    #[error("no policy named {0:?}")]
    Unknown(String),
    /// A tenant or plan id that cannot be part of a KV key.
    #[error("tenant or plan id {0:?} is not 1-128 characters of A-Z, a-z, 0-9 and ._:@-")]
    InvalidScope(String),
    /// The KV document is not a JSON object.
    #[error("not a JSON object of policies by name: {0}")]
    NotADocument(String),
    /// The policy is not an object of known fields with the right types.
    #[error("not a policy object: {0}")]
    Malformed(String),
    /// `algorithm` is none of the three.
    #[error("unknown algorithm {0:?}; expected gcra, sliding_window or concurrency")]
    UnknownAlgorithm(String),
    /// A field the algorithm needs is absent.
    #[error("a {algorithm} policy needs `{field}`")]
    MissingField {
        /// The policy's algorithm.
        algorithm: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A field of another algorithm is present (likely a mistake).
    #[error("`{field}` does not apply to a {algorithm} policy")]
    FieldNotApplicable {
        /// The policy's algorithm.
        algorithm: &'static str,
        /// The field that does not apply.
        field: &'static str,
    },
    /// A number outside what the limiter supports.
    #[error("`{field}` = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// An empty bucket would take longer than [`MAX_BURST_HORIZON_MS`] to refill.
    #[error("a burst of {burst} at this rate takes longer than 366 days to refill")]
    BurstHorizonTooLong {
        /// The burst.
        burst: u64,
    },
    /// The window would keep more than [`MAX_WINDOW_ENTRIES`] entries.
    #[error("the window may need {entries} entries, more than {max}; raise precision_ms")]
    WindowTooFine {
        /// Entries the window may need.
        entries: u64,
        /// The most allowed.
        max: u64,
    },
}

/// A validated policy name, which is also the namespace of the keys it limits (`ip:…`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PolicyName(String);

impl PolicyName {
    /// Validates a policy name.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let valid = !text.is_empty()
            && text.len() <= MAX_NAME_LEN
            && !text.starts_with('-')
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(PolicyError::InvalidName(text.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PolicyName {
    type Error = PolicyError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<PolicyName> for String {
    fn from(name: PolicyName) -> Self {
        name.0
    }
}

/// A validated tenant or plan id, safe inside a KV key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopeId(String);

impl ScopeId {
    /// Validates a tenant or plan id.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let valid = !text.is_empty()
            && text.len() <= MAX_SCOPE_LEN
            && text.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')
            });
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(PolicyError::InvalidScope(text.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// KV key of a plan's policy document.
pub fn plan_doc_key(plan: &ScopeId) -> String {
    format!("policies:plan:{}", plan.0)
}

/// KV key of a tenant's policy document.
pub fn tenant_doc_key(tenant: &ScopeId) -> String {
    format!("policies:tenant:{}", tenant.0)
}

/// What the limiter does when it cannot decide (Durable Object unreachable or failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let the request through, marked degraded. The default: a limiter outage must not hang
    /// up on callers; limits protect capacity, and a short unlimited spell is the lesser harm.
    #[default]
    Open,
    /// Refuse the request, marked degraded: for limits whose excess costs more than an outage.
    Closed,
}

/// GCRA: `rate` per `period_ms` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraParams {
    /// Units per period, sustained.
    pub rate: u64,
    /// The period of `rate`.
    pub period_ms: u64,
    /// Units that may be taken at once from a full bucket.
    pub burst: u64,
}

impl GcraParams {
    /// Nanoseconds per unit, rounded up so the limiter never runs faster than its rate.
    pub fn emission_interval_ns(&self) -> u64 {
        let rate = u128::from(self.rate.max(1));
        let ns = (u128::from(self.period_ms) * NS_PER_MS).div_ceil(rate);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// How long an empty bucket takes to refill, in nanoseconds.
    pub fn horizon_ns(&self) -> u128 {
        u128::from(self.burst) * u128::from(self.emission_interval_ns())
    }
}

/// Sliding window: at most `limit` units in any `window_ms`, counted in `precision_ms` buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowParams {
    /// Units per window.
    pub limit: u64,
    /// The window.
    pub window_ms: u64,
    /// Bucket width: a unit taken at `t` counts until its bucket's last millisecond plus the
    /// window, so the limiter is exact at 1 and at most one bucket conservative otherwise.
    pub precision_ms: u64,
}

/// Concurrency: at most `limit` leases held, each expiring `lease_ttl_ms` after its last renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyParams {
    /// Leases held at once.
    pub limit: u64,
    /// Lifetime of a lease from acquisition or renewal.
    pub lease_ttl_ms: u64,
}

/// The limit a policy enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Rate with bursts.
    Gcra(GcraParams),
    /// Quota per sliding window.
    SlidingWindow(WindowParams),
    /// Concurrent leases.
    Concurrency(ConcurrencyParams),
}

impl Limit {
    /// The capacity: burst, window quota or leases.
    pub fn capacity(&self) -> u64 {
        match self {
            Limit::Gcra(p) => p.burst,
            Limit::SlidingWindow(p) => p.limit,
            Limit::Concurrency(p) => p.limit,
        }
    }

    /// The window clients are told about: a GCRA bucket's refill time, a sliding window's width,
    /// none for concurrency.
    pub fn window_ms(&self) -> Option<u64> {
        match self {
            Limit::Gcra(p) => {
                Some(u64::try_from(p.horizon_ns().div_ceil(NS_PER_MS)).unwrap_or(u64::MAX))
            }
            Limit::SlidingWindow(p) => Some(p.window_ms),
            Limit::Concurrency(_) => None,
        }
    }

    /// Whether this limits concurrent leases rather than a rate.
    pub fn is_concurrency(&self) -> bool {
        matches!(self, Limit::Concurrency(_))
    }
}

/// A policy: its limit, whether it only observes, and what to do when the limiter is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy", into = "RawPolicy")]
pub struct Policy {
    /// What is limited and how.
    pub limit: Limit,
    /// Decide and count, but never deny.
    pub shadow: bool,
    /// Open or closed when the limiter cannot decide.
    pub failure_mode: FailureMode,
}

/// The JSON form of a policy: flat, strict about unknown fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    precision_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_ttl_ms: Option<u64>,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    failure_mode: FailureMode,
}

const GCRA: &str = "gcra";
const SLIDING_WINDOW: &str = "sliding_window";
const CONCURRENCY: &str = "concurrency";

impl TryFrom<RawPolicy> for Policy {
    type Error = PolicyError;

    fn try_from(raw: RawPolicy) -> Result<Self, Self::Error> {
        let limit = match raw.algorithm.as_str() {
            GCRA => {
                not_applicable(
                    GCRA,
                    &[
                        ("window_ms", raw.window_ms),
                        ("precision_ms", raw.precision_ms),
                        ("lease_ttl_ms", raw.lease_ttl_ms),
                    ],
                )?;
                let rate = in_range("limit", required(GCRA, "limit", raw.limit)?, 1, MAX_LIMIT)?;
                let period_ms = in_range(
                    "period_ms",
                    required(GCRA, "period_ms", raw.period_ms)?,
                    1,
                    MAX_PERIOD_MS,
                )?;
                let burst = in_range("burst", raw.burst.unwrap_or(rate), 1, MAX_LIMIT)?;
                let params = GcraParams {
                    rate,
                    period_ms,
                    burst,
                };
                if params.horizon_ns() > u128::from(MAX_BURST_HORIZON_MS) * NS_PER_MS {
                    return Err(PolicyError::BurstHorizonTooLong { burst });
                }
                Limit::Gcra(params)
            }
            SLIDING_WINDOW => {
                not_applicable(
                    SLIDING_WINDOW,
                    &[
                        ("period_ms", raw.period_ms),
                        ("burst", raw.burst),
                        ("lease_ttl_ms", raw.lease_ttl_ms),
                    ],
                )?;
                let limit = in_range(
                    "limit",
                    required(SLIDING_WINDOW, "limit", raw.limit)?,
                    1,
                    MAX_LIMIT,
                )?;
                let window_ms = in_range(
                    "window_ms",
                    required(SLIDING_WINDOW, "window_ms", raw.window_ms)?,
                    1,
                    MAX_PERIOD_MS,
                )?;
                let precision_ms = in_range(
                    "precision_ms",
                    raw.precision_ms.unwrap_or((window_ms / 1_000).max(1)),
                    1,
                    window_ms,
                )?;
                // Each entry holds at least one unit and one bucket, and buckets older than the
                // window are gone: whichever bound is smaller caps the entries.
                let entries = limit.min(window_ms.div_ceil(precision_ms) + 1);
                if entries > MAX_WINDOW_ENTRIES {
                    return Err(PolicyError::WindowTooFine {
                        entries,
                        max: MAX_WINDOW_ENTRIES,
                    });
                }
                Limit::SlidingWindow(WindowParams {
                    limit,
                    window_ms,
                    precision_ms,
                })
            }
            CONCURRENCY => {
                not_applicable(
                    CONCURRENCY,
                    &[
                        ("period_ms", raw.period_ms),
                        ("burst", raw.burst),
                        ("window_ms", raw.window_ms),
                        ("precision_ms", raw.precision_ms),
                    ],
                )?;
                let limit = in_range(
                    "limit",
                    required(CONCURRENCY, "limit", raw.limit)?,
                    1,
                    MAX_LEASES,
                )?;
                let lease_ttl_ms = in_range(
                    "lease_ttl_ms",
                    raw.lease_ttl_ms.unwrap_or(DEFAULT_LEASE_TTL_MS),
                    MIN_LEASE_TTL_MS,
                    MAX_LEASE_TTL_MS,
                )?;
                Limit::Concurrency(ConcurrencyParams {
                    limit,
                    lease_ttl_ms,
                })
            }
            other => return Err(PolicyError::UnknownAlgorithm(other.to_owned())),
        };
        Ok(Policy {
            limit,
            shadow: raw.shadow,
            failure_mode: raw.failure_mode,
        })
    }
}

impl From<Policy> for RawPolicy {
    fn from(policy: Policy) -> Self {
        let mut raw = RawPolicy {
            shadow: policy.shadow,
            failure_mode: policy.failure_mode,
            ..RawPolicy::default()
        };
        match policy.limit {
            Limit::Gcra(p) => {
                raw.algorithm = GCRA.into();
                raw.limit = Some(p.rate);
                raw.period_ms = Some(p.period_ms);
                raw.burst = Some(p.burst);
            }
            Limit::SlidingWindow(p) => {
                raw.algorithm = SLIDING_WINDOW.into();
                raw.limit = Some(p.limit);
                raw.window_ms = Some(p.window_ms);
                raw.precision_ms = Some(p.precision_ms);
            }
            Limit::Concurrency(p) => {
                raw.algorithm = CONCURRENCY.into();
                raw.limit = Some(p.limit);
                raw.lease_ttl_ms = Some(p.lease_ttl_ms);
            }
        }
        raw
    }
}

fn required(
    algorithm: &'static str,
    field: &'static str,
    value: Option<u64>,
) -> Result<u64, PolicyError> {
    value.ok_or(PolicyError::MissingField { algorithm, field })
}

fn not_applicable(
    algorithm: &'static str,
    fields: &[(&'static str, Option<u64>)],
) -> Result<(), PolicyError> {
    match fields.iter().find(|(_, value)| value.is_some()) {
        Some((field, _)) => Err(PolicyError::FieldNotApplicable { algorithm, field }),
        None => Ok(()),
    }
}

fn in_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<u64, PolicyError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(PolicyError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

impl Policy {
    /// Whether a request proceeds when the limiter cannot decide: a shadow policy never denies,
    /// otherwise the failure mode says.
    pub fn fails_open(&self) -> bool {
        self.shadow || self.failure_mode == FailureMode::Open
    }

    /// Parses and validates one policy from JSON.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_str(text).map_err(|e| PolicyError::Malformed(e.to_string()))?;
        Policy::try_from(raw)
    }

    fn from_value(value: serde_json::Value) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_value(value).map_err(|e| PolicyError::Malformed(e.to_string()))?;
        Policy::try_from(raw)
    }
}

/// The seed policies, used when KV defines none: 100 requests a minute per client IP (sliding
/// window), 60 a minute per principal with bursts of 60 (GCRA), 10 live calls per tenant, one
/// outbound call per second per carrier account (GCRA, no burst).
pub fn builtin(name: &PolicyName) -> Option<Policy> {
    let limit = match name.as_str() {
        IP => Limit::SlidingWindow(WindowParams {
            limit: 100,
            window_ms: 60_000,
            precision_ms: 60,
        }),
        PRINCIPAL => Limit::Gcra(GcraParams {
            rate: 60,
            period_ms: 60_000,
            burst: 60,
        }),
        TENANT_CALLS => Limit::Concurrency(ConcurrencyParams {
            limit: 10,
            lease_ttl_ms: DEFAULT_LEASE_TTL_MS,
        }),
        CARRIER_CPS => Limit::Gcra(GcraParams {
            rate: 1,
            period_ms: 1_000,
            burst: 1,
        }),
        _ => return None,
    };
    Some(Policy {
        limit,
        shadow: false,
        failure_mode: FailureMode::Open,
    })
}

/// One policy of a document that did not validate, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The entry's name as written.
    pub name: String,
    /// Why it was refused.
    pub error: PolicyError,
}

/// A KV policy document: the valid policies of one scope (tenant, plan or global).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDoc {
    policies: BTreeMap<PolicyName, Policy>,
}

impl PolicyDoc {
    /// Parses a document, keeping the valid entries and listing the refused ones.
    pub fn parse(text: &str) -> Result<(Self, Vec<Rejected>), PolicyError> {
        let entries: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| PolicyError::NotADocument(e.to_string()))?;
        let mut policies = BTreeMap::new();
        let mut rejected = Vec::new();
        for (name, value) in entries {
            match PolicyName::parse(&name).and_then(|valid| Ok((valid, Policy::from_value(value)?)))
            {
                Ok((valid, policy)) => {
                    policies.insert(valid, policy);
                }
                Err(error) => rejected.push(Rejected { name, error }),
            }
        }
        Ok((Self { policies }, rejected))
    }

    /// The document's policy of that name.
    pub fn get(&self, name: &PolicyName) -> Option<&Policy> {
        self.policies.get(name)
    }

    /// How many valid policies the document holds.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the document holds no valid policy.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// Where a resolved policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The tenant's document.
    Tenant,
    /// The plan's document.
    Plan,
    /// The global document.
    Global,
    /// [`builtin`].
    BuiltIn,
}

/// The policy that applies: the most specific document that defines it, else the built-in one.
pub fn resolve(
    name: &PolicyName,
    tenant: Option<&PolicyDoc>,
    plan: Option<&PolicyDoc>,
    global: Option<&PolicyDoc>,
) -> Result<(Policy, Source), PolicyError> {
    let documents = [
        (tenant, Source::Tenant),
        (plan, Source::Plan),
        (global, Source::Global),
    ];
    documents
        .into_iter()
        .find_map(|(doc, source)| doc.and_then(|doc| doc.get(name)).map(|p| (*p, source)))
        .or_else(|| builtin(name).map(|p| (p, Source::BuiltIn)))
        .ok_or_else(|| PolicyError::Unknown(name.as_str().to_owned()))
}

/// Most documents one isolate keeps.
pub const POLICY_CACHE_ENTRIES: usize = 1_024;

/// An isolate's memory of KV policy documents (and of their absence), each for a time-to-live.
#[derive(Debug, Clone, Default)]
pub struct PolicyCache {
    ttl_ms: u64,
    entries: HashMap<String, (u64, Option<Arc<PolicyDoc>>)>,
}

impl PolicyCache {
    /// A cache whose entries live `ttl_ms` (0: nothing is cached).
    pub fn new(ttl_ms: u64) -> Self {
        Self {
            ttl_ms,
            entries: HashMap::new(),
        }
    }

    /// The cached document under `key` at `now_ms`: `Some(None)` means "KV has none".
    pub fn get(&self, key: &str, now_ms: u64) -> Option<Option<Arc<PolicyDoc>>> {
        let (fetched_at, doc) = self.entries.get(key)?;
        (now_ms.saturating_sub(*fetched_at) < self.ttl_ms).then(|| doc.clone())
    }

    /// Remembers what KV holds under `key`, read at `now_ms`. When full, expired entries go
    /// first, and everything if that is not enough.
    pub fn insert(&mut self, key: String, doc: Option<Arc<PolicyDoc>>, now_ms: u64) {
        if self.ttl_ms == 0 {
            return;
        }
        if self.entries.len() >= POLICY_CACHE_ENTRIES && !self.entries.contains_key(&key) {
            let ttl_ms = self.ttl_ms;
            self.entries
                .retain(|_, (fetched_at, _)| now_ms.saturating_sub(*fetched_at) < ttl_ms);
            if self.entries.len() >= POLICY_CACHE_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (now_ms, doc));
    }

    /// How many documents are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> PolicyName {
        PolicyName::parse(text).expect("valid name")
    }

    #[test]
    fn names_are_checked() {
        for good in [
            "ip",
            "tenant-calls",
            "a",
            "turns2",
            &"x".repeat(MAX_NAME_LEN),
        ] {
            assert!(PolicyName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "IP",
            "ip:x",
            "-ip",
            "a b",
            "é",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert_eq!(
                PolicyName::parse(bad),
                Err(PolicyError::InvalidName(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn scopes_are_checked_and_make_kv_keys() {
        let plan = ScopeId::parse("pro").expect("valid");
        assert_eq!(plan_doc_key(&plan), "policies:plan:pro");
        let tenant = ScopeId::parse("t_1.acme@eu:prod-2").expect("valid");
        assert_eq!(
            tenant_doc_key(&tenant),
            "policies:tenant:t_1.acme@eu:prod-2"
        );
        for bad in ["", "a b", "a/b", "a\nb", &"t".repeat(MAX_SCOPE_LEN + 1)] {
            assert!(ScopeId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seed_policies_are_built_in() {
        let ip = builtin(&name(IP)).expect("ip");
        assert_eq!(ip.limit.capacity(), 100);
        assert_eq!(ip.limit.window_ms(), Some(60_000));
        let principal = builtin(&name(PRINCIPAL)).expect("principal");
        assert_eq!(principal.limit.capacity(), 60);
        assert_eq!(principal.limit.window_ms(), Some(60_000));
        let calls = builtin(&name(TENANT_CALLS)).expect("tenant-calls");
        assert_eq!(calls.limit.capacity(), 10);
        assert!(calls.limit.is_concurrency());
        assert_eq!(calls.limit.window_ms(), None);
        let cps = builtin(&name(CARRIER_CPS)).expect("carrier-cps");
        assert_eq!(
            cps.limit,
            Limit::Gcra(GcraParams {
                rate: 1,
                period_ms: 1_000,
                burst: 1
            }),
            "one call per second, the carriers' own default"
        );
        for policy in [ip, principal, calls, cps] {
            assert!(!policy.shadow);
            assert_eq!(policy.failure_mode, FailureMode::Open);
        }
        assert_eq!(builtin(&name("turns")), None);
    }

    #[test]
    fn the_three_algorithms_parse_with_defaults() {
        let gcra =
            Policy::from_json(r#"{"algorithm":"gcra","limit":10,"period_ms":1000}"#).expect("gcra");
        assert_eq!(
            gcra.limit,
            Limit::Gcra(GcraParams {
                rate: 10,
                period_ms: 1_000,
                burst: 10
            })
        );
        let window = Policy::from_json(
            r#"{"algorithm":"sliding_window","limit":5,"window_ms":60000,"shadow":true,"failure_mode":"closed"}"#,
        )
        .expect("window");
        assert_eq!(
            window.limit,
            Limit::SlidingWindow(WindowParams {
                limit: 5,
                window_ms: 60_000,
                precision_ms: 60
            })
        );
        assert!(window.shadow);
        assert_eq!(window.failure_mode, FailureMode::Closed);
        let calls = Policy::from_json(r#"{"algorithm":"concurrency","limit":3}"#).expect("calls");
        assert_eq!(
            calls.limit,
            Limit::Concurrency(ConcurrencyParams {
                limit: 3,
                lease_ttl_ms: DEFAULT_LEASE_TTL_MS
            })
        );
    }

    #[test]
    fn json_round_trips() {
        for name in [IP, PRINCIPAL, TENANT_CALLS, CARRIER_CPS] {
            let policy = builtin(&PolicyName::parse(name).expect("valid")).expect("built in");
            let text = serde_json::to_string(&policy).expect("serialises");
            assert_eq!(Policy::from_json(&text), Ok(policy), "{text}");
        }
    }

    #[test]
    fn malformed_policies_are_refused_with_the_reason() {
        let cases: [(&str, PolicyError); 9] = [
            (
                r#"{"algorithm":"leaky","limit":1}"#,
                PolicyError::UnknownAlgorithm("leaky".into()),
            ),
            (
                r#"{"algorithm":"gcra","period_ms":1000}"#,
                PolicyError::MissingField {
                    algorithm: "gcra",
                    field: "limit",
                },
            ),
            (
                r#"{"algorithm":"sliding_window","limit":1}"#,
                PolicyError::MissingField {
                    algorithm: "sliding_window",
                    field: "window_ms",
                },
            ),
            (
                r#"{"algorithm":"gcra","limit":0,"period_ms":1000}"#,
                PolicyError::OutOfRange {
                    field: "limit",
                    value: 0,
                    min: 1,
                    max: MAX_LIMIT,
                },
            ),
            (
                r#"{"algorithm":"gcra","limit":1,"period_ms":1000,"window_ms":5}"#,
                PolicyError::FieldNotApplicable {
                    algorithm: "gcra",
                    field: "window_ms",
                },
            ),
            (
                r#"{"algorithm":"concurrency","limit":3,"lease_ttl_ms":10}"#,
                PolicyError::OutOfRange {
                    field: "lease_ttl_ms",
                    value: 10,
                    min: MIN_LEASE_TTL_MS,
                    max: MAX_LEASE_TTL_MS,
                },
            ),
            (
                r#"{"algorithm":"concurrency","limit":10001}"#,
                PolicyError::OutOfRange {
                    field: "limit",
                    value: 10_001,
                    min: 1,
                    max: MAX_LEASES,
                },
            ),
            (
                r#"{"algorithm":"gcra","limit":1,"period_ms":2678400000,"burst":1000}"#,
                PolicyError::BurstHorizonTooLong { burst: 1_000 },
            ),
            (
                r#"{"algorithm":"sliding_window","limit":1000000,"window_ms":60000,"precision_ms":1}"#,
                PolicyError::WindowTooFine {
                    entries: 60_001,
                    max: MAX_WINDOW_ENTRIES,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Policy::from_json(text), Err(expected), "{text}");
        }
        for text in [
            r#"{"algorithm":"gcra","limit":1,"period_ms":1000,"shadw":true}"#,
            r#"{"algorithm":"gcra","limit":-1,"period_ms":1000}"#,
            r#"{"algorithm":"gcra","limit":1,"period_ms":1000,"failure_mode":"sideways"}"#,
            r#"{"limit":1}"#,
            "[]",
        ] {
            assert!(
                matches!(Policy::from_json(text), Err(PolicyError::Malformed(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn a_document_keeps_valid_entries_and_lists_the_rest() {
        let (doc, rejected) = PolicyDoc::parse(
            r#"{"principal":{"algorithm":"gcra","limit":600,"period_ms":60000},
                "ip":{"algorithm":"gcra"},
                "Bad Name":{"algorithm":"concurrency","limit":1}}"#,
        )
        .expect("an object");
        assert_eq!(doc.len(), 1);
        assert!(doc.get(&name(PRINCIPAL)).is_some());
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].name, "Bad Name");
        assert!(matches!(rejected[0].error, PolicyError::InvalidName(_)));
        assert_eq!(rejected[1].name, "ip");
        assert_eq!(
            rejected[1].error,
            PolicyError::MissingField {
                algorithm: "gcra",
                field: "limit"
            }
        );
        assert!(matches!(
            PolicyDoc::parse("not json"),
            Err(PolicyError::NotADocument(_))
        ));
        assert!(matches!(
            PolicyDoc::parse("[1]"),
            Err(PolicyError::NotADocument(_))
        ));
    }

    #[test]
    fn resolution_prefers_tenant_then_plan_then_global_then_built_in() {
        let doc = |limit: u64| {
            PolicyDoc::parse(&format!(
                r#"{{"principal":{{"algorithm":"gcra","limit":{limit},"period_ms":60000}}}}"#
            ))
            .expect("valid")
            .0
        };
        let (tenant, plan, global) = (doc(1), doc(2), doc(3));
        let empty = PolicyDoc::default();
        let principal = name(PRINCIPAL);
        let capacity = |t, p, g| {
            resolve(&principal, t, p, g).map(|(policy, source)| (policy.limit.capacity(), source))
        };
        assert_eq!(
            capacity(Some(&tenant), Some(&plan), Some(&global)),
            Ok((1, Source::Tenant))
        );
        assert_eq!(
            capacity(Some(&empty), Some(&plan), Some(&global)),
            Ok((2, Source::Plan))
        );
        assert_eq!(capacity(None, None, Some(&global)), Ok((3, Source::Global)));
        assert_eq!(
            capacity(Some(&empty), None, Some(&empty)),
            Ok((60, Source::BuiltIn))
        );
        assert_eq!(
            resolve(&name("turns"), Some(&tenant), None, None),
            Err(PolicyError::Unknown("turns".into()))
        );
    }

    #[test]
    fn gcra_interval_rounds_up() {
        let params = GcraParams {
            rate: 7,
            period_ms: 1_000,
            burst: 1,
        };
        // 1 s / 7 = 142_857_142.857… ns: rounding down would admit faster than 7 per second.
        assert_eq!(params.emission_interval_ns(), 142_857_143);
        let window = Limit::Gcra(GcraParams {
            rate: 3,
            period_ms: 1_000,
            burst: 2,
        })
        .window_ms();
        assert_eq!(window, Some(667));
    }

    #[test]
    fn the_cache_remembers_documents_and_absences_for_its_ttl() {
        let mut cache = PolicyCache::new(1_000);
        let doc = Arc::new(PolicyDoc::default());
        cache.insert("policies:global".into(), Some(doc.clone()), 5_000);
        cache.insert("policies:plan:free".into(), None, 5_000);
        assert_eq!(cache.get("policies:global", 5_999), Some(Some(doc)));
        assert_eq!(
            cache.get("policies:plan:free", 5_999),
            Some(None),
            "absence is cached"
        );
        assert_eq!(cache.get("policies:global", 6_000), None, "expired");
        assert_eq!(cache.get("policies:tenant:t", 5_000), None, "never read");
        let mut off = PolicyCache::new(0);
        off.insert("k".into(), None, 0);
        assert!(off.is_empty());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut cache = PolicyCache::new(1_000);
        for i in 0..POLICY_CACHE_ENTRIES {
            cache.insert(format!("old{i}"), None, 0);
        }
        cache.insert("fresh".into(), None, 500);
        assert_eq!(cache.len(), 1, "all live: cleared, then the new one");
        for i in 0..POLICY_CACHE_ENTRIES - 1 {
            cache.insert(format!("k{i}"), None, 600);
        }
        cache.insert("late".into(), None, 1_550);
        assert_eq!(cache.get("late", 1_550), Some(None));
        assert!(cache.len() <= POLICY_CACHE_ENTRIES);
    }
}
