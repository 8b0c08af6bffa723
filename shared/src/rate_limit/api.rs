//! rate-limiter's internal API, as voice-router calls it over the `RATE_LIMITER` binding.
//!
//! - `POST /check` with a [`CheckRequest`] (one or several checks, e.g. the client IP and the
//!   principal of one request) answers a [`CheckResponse`]: every decision, in request order.
//! - `POST /leases/acquire`, `/leases/renew` with a [`LeaseRequest`] answer a
//!   [`LeaseResponse`]; `POST /leases/release` answers a [`ReleaseResponse`].
//!
//! Parsing here checks everything that does not need the policy; [`check_fits`] checks the
//! rest once the policy is known.

use serde::{Deserialize, Serialize};

use super::decision::Decision;
use super::key::{KeyError, check_key};
use super::lease::{LeaseGrant, MAX_LEASE_ID_LEN, is_valid_lease_id};
use super::policy::{Policy, PolicyError, PolicyName, ScopeId};

/// Route: decide one or several checks.
pub const CHECK_PATH: &str = "/check";
/// Route: acquire a concurrency lease.
pub const ACQUIRE_PATH: &str = "/leases/acquire";
/// Route: renew a concurrency lease.
pub const RENEW_PATH: &str = "/leases/renew";
/// Route: release a concurrency lease.
pub const RELEASE_PATH: &str = "/leases/release";

/// Most checks in one request.
pub const MAX_CHECKS: usize = 8;
/// Error code of a renewal (404) naming a lease that is not live: it expired and was
/// reclaimed, was released, or was never acquired. The caller takes it again if it may.
pub const LEASE_NOT_HELD: &str = "lease_not_held";
/// Largest cost of one check, whatever the policy.
pub const MAX_COST: u64 = 1_000_000;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Why a request was refused before or after its policy was known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the body is {len} bytes, more than {max}")]
    BodyTooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The body is not the expected JSON.
    #[error("the body is not a valid request: {0}")]
    NotJson(String),
    /// `checks` is empty.
    #[error("no checks")]
    NoChecks,
    /// More than [`MAX_CHECKS`] checks.
    #[error("{count} checks, more than {max}")]
    TooManyChecks {
        /// How many.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// `policy` is absent or empty.
    #[error("no policy named")]
    MissingPolicy,
    /// `key` is absent or empty.
    #[error("no key")]
    MissingKey,
    /// `key` is too long.
    #[error("the key is {len} bytes, more than {max}")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// `cost` is negative.
    #[error("cost {0} is negative")]
    NegativeCost(i64),
    /// `cost` is above [`MAX_COST`].
    #[error("cost {cost} is more than {max}")]
    CostTooLarge {
        /// The cost.
        cost: u64,
        /// The maximum.
        max: u64,
    },
    /// `lease_id` is absent or not a valid call id.
    #[error("lease_id must be 1-{MAX_LEASE_ID_LEN} characters of A-Z, a-z, 0-9 and ._:-")]
    InvalidLeaseId,
    /// The policy name, tenant or plan is invalid, or no such policy exists.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The cost is above the policy's capacity: it could never be admitted.
    #[error("cost {cost} exceeds the capacity {capacity} of policy {policy}")]
    CostExceedsCapacity {
        /// The policy.
        policy: String,
        /// The cost.
        cost: u64,
        /// The policy's capacity.
        capacity: u64,
    },
    /// A rate check against a concurrency policy.
    #[error("policy {0} limits concurrent leases; use the lease routes")]
    NotARatePolicy(String),
    /// A lease operation against a rate policy.
    #[error("policy {0} limits a rate; use /check")]
    NotAConcurrencyPolicy(String),
}

impl From<KeyError> for RequestError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Empty => RequestError::MissingKey,
            KeyError::TooLong { len, max } => RequestError::KeyTooLong { len, max },
        }
    }
}

/// `POST /check` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    /// The checks, decided independently and in parallel…
    pub checks: Vec<Check>,
    /// …or, when true, one after another in their order, stopping at the first refusal: the
    /// checks after it are neither counted nor answered (as if each had been its own request,
    /// sent only when the previous one allowed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_order: bool,
}

/// One check: take `cost` units from `key` under `policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Policy name, e.g. `ip` or `principal`; also the key's namespace.
    #[serde(default)]
    pub policy: String,
    /// What is limited: an IP, `tenant/subject`, … Hashed, never stored or logged as is.
    #[serde(default)]
    pub key: String,
    /// Units to take (default 1; 0 reads without taking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<i64>,
    /// Tenant whose policy overrides apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Plan whose policy overrides apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// `POST /check` answer (200): every decision, in the order of the checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResponse {
    /// Whether every decision allows the request.
    pub allowed: bool,
    /// One decision per check.
    pub decisions: Vec<Decision>,
}

/// `POST /leases/{acquire,renew,release}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Concurrency policy name, e.g. `tenant-calls`.
    #[serde(default)]
    pub policy: String,
    /// What is limited, e.g. the tenant id.
    #[serde(default)]
    pub key: String,
    /// The call id.
    #[serde(default)]
    pub lease_id: String,
    /// Tenant whose policy overrides apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Plan whose policy overrides apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

impl LeaseRequest {
    /// The lease a live call holds under its tenant's `tenant-calls` policy.
    pub fn for_call(tenant_id: &str, plan: &str, call_id: &str) -> Self {
        Self {
            policy: super::policy::TENANT_CALLS.to_owned(),
            key: tenant_id.to_owned(),
            lease_id: call_id.to_owned(),
            tenant: Some(tenant_id.to_owned()),
            plan: Some(plan.to_owned()),
        }
    }
}

/// Acquire or renew answer (200). A refused acquisition has no lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// The decision; `allowed` false when the cap is reached.
    pub decision: Decision,
    /// The lease held, with its expiry; absent when refused or degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseGrant>,
}

/// Release answer (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResponse {
    /// Whether a live lease was released (false: already released or expired).
    pub released: bool,
    /// The limiter was unreachable: the lease lapses at its expiry instead.
    pub degraded: bool,
}

/// Whose policy documents apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The tenant, if known.
    pub tenant: Option<ScopeId>,
    /// The plan, if known.
    pub plan: Option<ScopeId>,
}

/// A check that passed every test not needing its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCheck {
    /// The policy name.
    pub policy: PolicyName,
    /// The key.
    pub key: String,
    /// Units to take.
    pub cost: u64,
    /// Whose overrides apply.
    pub scope: Scope,
}

/// A lease request that passed every test not needing its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidLease {
    /// The policy name.
    pub policy: PolicyName,
    /// The key.
    pub key: String,
    /// The call id.
    pub lease_id: String,
    /// Whose overrides apply.
    pub scope: Scope,
}

/// Parses and checks a `POST /check` body.
pub fn parse_check_request(body: &str) -> Result<Vec<ValidCheck>, RequestError> {
    parse_check_plan(body).map(|(checks, _)| checks)
}

/// [`parse_check_request`], with whether the checks are decided in order
/// ([`CheckRequest::in_order`]).
pub fn parse_check_plan(body: &str) -> Result<(Vec<ValidCheck>, bool), RequestError> {
    let request: CheckRequest = parse_json(body)?;
    let in_order = request.in_order;
    if request.checks.is_empty() {
        return Err(RequestError::NoChecks);
    }
    if request.checks.len() > MAX_CHECKS {
        return Err(RequestError::TooManyChecks {
            count: request.checks.len(),
            max: MAX_CHECKS,
        });
    }
    request
        .checks
        .into_iter()
        .map(valid_check)
        .collect::<Result<Vec<_>, _>>()
        .map(|checks| (checks, in_order))
}

/// Parses and checks the body of a check sent straight to its object: one [`Check`]
/// (`shared::rate_limit::object`, "Checks sent straight to the object").
pub fn parse_object_check(body: &str) -> Result<ValidCheck, RequestError> {
    valid_check(parse_json(body)?)
}

/// Checks everything about one check that does not need its policy.
pub fn valid_check(check: Check) -> Result<ValidCheck, RequestError> {
    let cost = match check.cost {
        None => 1,
        Some(cost) if cost < 0 => return Err(RequestError::NegativeCost(cost)),
        Some(cost) => cost.unsigned_abs(),
    };
    if cost > MAX_COST {
        return Err(RequestError::CostTooLarge {
            cost,
            max: MAX_COST,
        });
    }
    Ok(ValidCheck {
        policy: policy_name(&check.policy)?,
        key: valid_key(check.key)?,
        cost,
        scope: scope(check.tenant.as_deref(), check.plan.as_deref())?,
    })
}

/// Parses and checks a lease route's body.
pub fn parse_lease_request(body: &str) -> Result<ValidLease, RequestError> {
    let request: LeaseRequest = parse_json(body)?;
    let policy = policy_name(&request.policy)?;
    let key = valid_key(request.key)?;
    if !is_valid_lease_id(&request.lease_id) {
        return Err(RequestError::InvalidLeaseId);
    }
    Ok(ValidLease {
        policy,
        key,
        lease_id: request.lease_id,
        scope: scope(request.tenant.as_deref(), request.plan.as_deref())?,
    })
}

/// Whether a check of `cost` can be decided under `policy`: a rate policy, and a cost that a
/// full bucket or an empty window could admit.
pub fn check_fits(name: &PolicyName, policy: &Policy, cost: u64) -> Result<(), RequestError> {
    if policy.limit.is_concurrency() {
        return Err(RequestError::NotARatePolicy(name.as_str().to_owned()));
    }
    let capacity = policy.limit.capacity();
    if cost > capacity {
        return Err(RequestError::CostExceedsCapacity {
            policy: name.as_str().to_owned(),
            cost,
            capacity,
        });
    }
    Ok(())
}

/// Whether lease operations apply to `policy`.
pub fn lease_fits(name: &PolicyName, policy: &Policy) -> Result<(), RequestError> {
    if policy.limit.is_concurrency() {
        Ok(())
    } else {
        Err(RequestError::NotAConcurrencyPolicy(
            name.as_str().to_owned(),
        ))
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, RequestError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(RequestError::BodyTooLarge {
            len: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    serde_json::from_str(body).map_err(|e| RequestError::NotJson(e.to_string()))
}

fn policy_name(text: &str) -> Result<PolicyName, RequestError> {
    if text.is_empty() {
        return Err(RequestError::MissingPolicy);
    }
    Ok(PolicyName::parse(text)?)
}

fn valid_key(key: String) -> Result<String, RequestError> {
    check_key(&key)?;
    Ok(key)
}

fn scope(tenant: Option<&str>, plan: Option<&str>) -> Result<Scope, RequestError> {
    Ok(Scope {
        tenant: tenant.map(ScopeId::parse).transpose()?,
        plan: plan.map(ScopeId::parse).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::key::MAX_KEY_LEN;
    use crate::rate_limit::policy::builtin;

    #[test]
    fn a_call_lease_is_keyed_by_tenant_and_names_the_call() {
        let lease = LeaseRequest::for_call("t1", "pro", "call_1");
        assert_eq!(
            serde_json::to_value(&lease).expect("serializes"),
            serde_json::json!({"policy":"tenant-calls","key":"t1","lease_id":"call_1","tenant":"t1","plan":"pro"})
        );
    }

    #[test]
    fn checks_are_parallel_unless_asked_in_order() {
        let body = |flag: &str| format!(r#"{{"checks":[{{"policy":"ip","key":"k"}}]{flag}}}"#);
        let plan = |flag: &str| parse_check_plan(&body(flag)).map(|(_, in_order)| in_order);
        assert_eq!(plan(""), Ok(false));
        assert_eq!(plan(r#","in_order":false"#), Ok(false));
        assert_eq!(plan(r#","in_order":true"#), Ok(true));
        let request = CheckRequest {
            checks: vec![],
            in_order: false,
        };
        assert_eq!(
            serde_json::to_string(&request).expect("serializes"),
            r#"{"checks":[]}"#,
            "the parallel default is not spelled out"
        );
    }

    #[test]
    fn a_two_check_request_parses_with_defaults() {
        let checks = parse_check_request(
            r#"{"checks":[{"policy":"ip","key":"203.0.113.7"},
                {"policy":"principal","key":"t1/u1","cost":3,"tenant":"t1","plan":"pro"}]}"#,
        )
        .expect("valid");
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].cost, 1);
        assert_eq!(checks[0].scope, Scope::default());
        assert_eq!(checks[1].cost, 3);
        assert_eq!(
            checks[1].scope.tenant.as_ref().map(ScopeId::as_str),
            Some("t1")
        );
        assert_eq!(
            checks[1].scope.plan.as_ref().map(ScopeId::as_str),
            Some("pro")
        );
    }

    #[test]
    fn bad_checks_are_refused_with_the_reason() {
        let long_key = "k".repeat(MAX_KEY_LEN + 1);
        let too_many = format!(
            r#"{{"checks":[{}]}}"#,
            [r#"{"policy":"ip","key":"k"}"#; MAX_CHECKS + 1].join(",")
        );
        let cases: Vec<(String, RequestError)> = vec![
            (r#"{"checks":[]}"#.into(), RequestError::NoChecks),
            (
                too_many,
                RequestError::TooManyChecks {
                    count: MAX_CHECKS + 1,
                    max: MAX_CHECKS,
                },
            ),
            (
                r#"{"checks":[{"key":"k"}]}"#.into(),
                RequestError::MissingPolicy,
            ),
            (
                r#"{"checks":[{"policy":"ip"}]}"#.into(),
                RequestError::MissingKey,
            ),
            (
                r#"{"checks":[{"policy":"ip","key":""}]}"#.into(),
                RequestError::MissingKey,
            ),
            (
                format!(r#"{{"checks":[{{"policy":"ip","key":"{long_key}"}}]}}"#),
                RequestError::KeyTooLong {
                    len: MAX_KEY_LEN + 1,
                    max: MAX_KEY_LEN,
                },
            ),
            (
                r#"{"checks":[{"policy":"ip","key":"k","cost":-1}]}"#.into(),
                RequestError::NegativeCost(-1),
            ),
            (
                r#"{"checks":[{"policy":"ip","key":"k","cost":1000000000000}]}"#.into(),
                RequestError::CostTooLarge {
                    cost: 1_000_000_000_000,
                    max: MAX_COST,
                },
            ),
            (
                r#"{"checks":[{"policy":"IP","key":"k"}]}"#.into(),
                RequestError::Policy(PolicyError::InvalidName("IP".into())),
            ),
            (
                r#"{"checks":[{"policy":"ip","key":"k","tenant":"a b"}]}"#.into(),
                RequestError::Policy(PolicyError::InvalidScope("a b".into())),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(parse_check_request(&body), Err(expected), "{body}");
        }
        for body in [
            "",
            "{}",
            "[]",
            r#"{"checks":[{"policy":"ip","key":"k","cost":1.5}]}"#,
        ] {
            assert!(
                matches!(parse_check_request(body), Err(RequestError::NotJson(_))),
                "{body}"
            );
        }
        let huge = " ".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(
            parse_check_request(&huge),
            Err(RequestError::BodyTooLarge {
                len: MAX_BODY_BYTES + 1,
                max: MAX_BODY_BYTES
            })
        );
    }

    #[test]
    fn lease_requests_need_a_valid_call_id() {
        let valid = parse_lease_request(
            r#"{"policy":"tenant-calls","key":"t1","lease_id":"CA0123","tenant":"t1"}"#,
        )
        .expect("valid");
        assert_eq!(valid.lease_id, "CA0123");
        for body in [
            r#"{"policy":"tenant-calls","key":"t1"}"#,
            r#"{"policy":"tenant-calls","key":"t1","lease_id":"a/b"}"#,
        ] {
            assert_eq!(
                parse_lease_request(body),
                Err(RequestError::InvalidLeaseId),
                "{body}"
            );
        }
        assert_eq!(
            parse_lease_request(r#"{"policy":"tenant-calls","lease_id":"c"}"#),
            Err(RequestError::MissingKey)
        );
    }

    #[test]
    fn the_policy_decides_whether_a_check_fits() {
        let ip = PolicyName::parse("ip").expect("valid");
        let calls = PolicyName::parse("tenant-calls").expect("valid");
        let ip_policy = builtin(&ip).expect("built in");
        let calls_policy = builtin(&calls).expect("built in");
        assert_eq!(check_fits(&ip, &ip_policy, 100), Ok(()));
        assert_eq!(check_fits(&ip, &ip_policy, 0), Ok(()));
        assert_eq!(
            check_fits(&ip, &ip_policy, 101),
            Err(RequestError::CostExceedsCapacity {
                policy: "ip".into(),
                cost: 101,
                capacity: 100
            })
        );
        assert_eq!(
            check_fits(&calls, &calls_policy, 1),
            Err(RequestError::NotARatePolicy("tenant-calls".into()))
        );
        assert_eq!(lease_fits(&calls, &calls_policy), Ok(()));
        assert_eq!(
            lease_fits(&ip, &ip_policy),
            Err(RequestError::NotAConcurrencyPolicy("ip".into()))
        );
    }

    #[test]
    fn responses_serialise_to_the_documented_shape() {
        let response = ReleaseResponse {
            released: true,
            degraded: false,
        };
        assert_eq!(
            serde_json::to_value(&response).expect("serialises"),
            serde_json::json!({"released": true, "degraded": false})
        );
    }
}
