//! The edge's first stage: who may reach the platform at all, decided before any credential is
//! looked at. IP/CIDR deny and allow lists (IPv4 and IPv6), a country allow-list for API routes,
//! a bot-score floor when Cloudflare provides one, and body size limits.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error_body::ErrorCode;

/// An IP network in CIDR notation, e.g. `203.0.113.0/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    BadAddress(String),
    /// The prefix length is not a number within the family's width.
    #[error("{0:?} is not a valid prefix length")]
    BadPrefix(String),
    /// Bits are set after the prefix (`10.0.0.1/8`): almost always a typo, so refused.
    #[error("{0:?} has host bits set beyond its prefix")]
    HostBitsSet(String),
}

impl IpNet {
    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// matches IPv4 networks, since that is how some stacks present IPv4 clients.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(ip).into(), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Keeps the top `prefix` bits of a `width`-bit address.
fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = u32::from(width - prefix);
    (bits >> shift) << shift
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let parsed: IpAddr = address
            .parse()
            .map_err(|_| IpNetError::BadAddress(text.to_owned()))?;
        let parsed_width: u8 = if parsed.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => parsed_width,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= parsed_width)
                .ok_or_else(|| IpNetError::BadPrefix(text.to_owned()))?,
        };
        // `::ffff:a.b.c.d/N` with N >= 96 is an IPv4 network written in IPv6 form.
        let (network, prefix) = match canonical(parsed) {
            IpAddr::V4(v4) if parsed.is_ipv6() && prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            _ => (parsed, prefix),
        };
        let width = if network.is_ipv4() { 32 } else { 128 };
        let bits = match network {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        if masked(bits, width, prefix) != bits {
            return Err(IpNetError::HostBitsSet(text.to_owned()));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which kind of public route a request is for; the stages apply per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `/api/v1/…`: API clients. The country allow-list applies.
    Api,
    /// `/voice/…`: the carrier's webhooks and the relay WebSocket.
    Voice,
    /// `/health` and CORS preflights.
    Open,
}

/// The firewall's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// ISO 3166-1 alpha-2 codes allowed on API routes; `None` allows every country.
    pub api_countries: Option<BTreeSet<String>>,
    /// Networks that skip the country and bot stages (trusted partners, the carrier's ranges).
    pub ip_allow: Vec<IpNet>,
    /// Networks refused outright, before anything else.
    pub ip_deny: Vec<IpNet>,
    /// Refuse when Cloudflare's bot score (1 = automated … 99 = human) is below this.
    pub min_bot_score: Option<u8>,
}

impl FirewallConfig {
    /// The seed's country allow-list for the API.
    pub const SEED_API_COUNTRIES: [&str; 10] =
        ["US", "CA", "GB", "AU", "DE", "FR", "NL", "SE", "NO", "DK"];

    /// The seed configuration: the seed countries, no IP lists, no bot floor.
    pub fn seed() -> Self {
        Self {
            api_countries: Some(
                Self::SEED_API_COUNTRIES
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
            ),
            ip_allow: Vec::new(),
            ip_deny: Vec::new(),
            min_bot_score: None,
        }
    }
}

/// What the edge knows about a client before authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFacts<'a> {
    /// `CF-Connecting-IP`, when the runtime gave one.
    pub ip: Option<IpAddr>,
    /// `request.cf.country`, when present.
    pub country: Option<&'a str>,
    /// `request.cf.botManagement.score`, when the zone has Bot Management.
    pub bot_score: Option<u8>,
}

/// The facts the firewall reads from `request.cf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CfFacts {
    /// `country`, upper case.
    pub country: Option<String>,
    /// `botManagement.score` (1–99), when the zone has Bot Management.
    pub bot_score: Option<u8>,
}

impl CfFacts {
    /// Reads `request.cf` serialised as JSON; anything missing or malformed is simply unknown.
    pub fn from_cf_json(text: &str) -> Self {
        let Ok(cf) = serde_json::from_str::<serde_json::Value>(text) else {
            return Self::default();
        };
        let country = cf
            .get("country")
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty())
            .map(str::to_ascii_uppercase);
        let bot_score = cf
            .get("botManagement")
            .and_then(|b| b.get("score"))
            .and_then(|s| s.as_u64())
            .and_then(|s| u8::try_from(s).ok())
            .filter(|s| (1..=99).contains(s));
        Self { country, bot_score }
    }
}

/// The firewall's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Proceed to authentication.
    Pass,
    /// Refuse with 403; the reason is safe to show the client.
    Block(BlockReason),
}

/// Why a client was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum BlockReason {
    /// The client's address is on the deny list.
    IpDenied,
    /// API access is not offered in the client's country (or the country is unknown).
    CountryNotAllowed {
        /// The country seen, if any.
        country: Option<String>,
    },
    /// The request looks automated.
    BotScoreTooLow {
        /// The score seen.
        score: u8,
    },
}

impl BlockReason {
    /// Stable error code for the JSON envelope.
    pub fn code(&self) -> ErrorCode {
        match self {
            BlockReason::IpDenied => ErrorCode::IpDenied,
            BlockReason::CountryNotAllowed { .. } => ErrorCode::CountryNotAllowed,
            BlockReason::BotScoreTooLow { .. } => ErrorCode::BotScoreTooLow,
        }
    }

    /// A sentence for the client.
    pub fn message(&self) -> String {
        match self {
            BlockReason::IpDenied => "requests from this address are not accepted".to_owned(),
            BlockReason::CountryNotAllowed { country: Some(c) } => {
                format!("the API is not available from {c}")
            }
            BlockReason::CountryNotAllowed { country: None } => {
                "the API is not available from an unknown location".to_owned()
            }
            BlockReason::BotScoreTooLow { .. } => "automated traffic is not accepted".to_owned(),
        }
    }
}

/// Runs the stages in order: deny list, allow list (which skips the rest), country
/// (API routes only), bot score.
pub fn evaluate(config: &FirewallConfig, route: RouteKind, client: &ClientFacts<'_>) -> Verdict {
    if let Some(ip) = client.ip {
        if config.ip_deny.iter().any(|net| net.contains(ip)) {
            return Verdict::Block(BlockReason::IpDenied);
        }
        if config.ip_allow.iter().any(|net| net.contains(ip)) {
            return Verdict::Pass;
        }
    }
    if route == RouteKind::Api
        && let Some(allowed) = &config.api_countries
    {
        let country = client.country.map(str::to_ascii_uppercase);
        if !country.as_ref().is_some_and(|c| allowed.contains(c)) {
            return Verdict::Block(BlockReason::CountryNotAllowed { country });
        }
    }
    if route != RouteKind::Open
        && let (Some(floor), Some(score)) = (config.min_bot_score, client.bot_score)
        && score < floor
    {
        return Verdict::Block(BlockReason::BotScoreTooLow { score });
    }
    Verdict::Pass
}

/// A body larger than the route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("body of {declared} bytes exceeds the limit of {limit} bytes")]
pub struct TooLarge {
    /// What the client declared (or what was read before giving up).
    pub declared: u64,
    /// The route's limit.
    pub limit: u64,
}

/// Checks a declared `Content-Length` against a limit, so a huge body is refused before it is
/// read. Without a declared length the reader must enforce the limit while reading.
pub fn check_declared_length(content_length: Option<u64>, limit: u64) -> Result<(), TooLarge> {
    match content_length {
        Some(declared) if declared > limit => Err(TooLarge { declared, limit }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("valid CIDR")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid IP")
    }

    #[test]
    fn cidr_membership_table() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("203.0.113.7", "203.0.113.7", true),
            ("203.0.113.7", "203.0.113.8", false),
            ("0.0.0.0/0", "198.51.100.1", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "::1", true),
            ("192.0.2.0/24", "::ffff:192.0.2.44", true),
            ("::ffff:192.0.2.0/120", "192.0.2.1", true),
            ("fe80::/10", "fe80::1", true),
            ("fe80::/10", "fec0::1", false),
        ];
        for (cidr, address, expected) in cases {
            assert_eq!(
                net(cidr).contains(ip(address)),
                expected,
                "{cidr} ∋ {address}"
            );
        }
    }

    #[test]
    fn malformed_cidrs_are_refused_with_the_reason() {
        assert!(matches!(
            "10.0.0/8".parse::<IpNet>(),
            Err(IpNetError::BadAddress(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetError::BadPrefix(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<IpNet>(),
            Err(IpNetError::BadPrefix(_))
        ));
        assert!(matches!(
            "2001:db8::/129".parse::<IpNet>(),
            Err(IpNetError::BadPrefix(_))
        ));
        assert!(matches!(
            "10.0.0.1/8".parse::<IpNet>(),
            Err(IpNetError::HostBitsSet(_))
        ));
    }

    #[test]
    fn displays_in_cidr_notation() {
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("2001:db8::1").to_string(), "2001:db8::1/128");
    }

    fn facts<'a>(
        ip_text: Option<&str>,
        country: Option<&'a str>,
        bot: Option<u8>,
    ) -> ClientFacts<'a> {
        ClientFacts {
            ip: ip_text.map(ip),
            country,
            bot_score: bot,
        }
    }

    #[test]
    fn seed_countries_pass_the_api_and_others_do_not() {
        let config = FirewallConfig::seed();
        for country in FirewallConfig::SEED_API_COUNTRIES {
            assert_eq!(
                evaluate(&config, RouteKind::Api, &facts(None, Some(country), None)),
                Verdict::Pass
            );
        }
        assert_eq!(
            evaluate(&config, RouteKind::Api, &facts(None, Some("br"), None)),
            Verdict::Block(BlockReason::CountryNotAllowed {
                country: Some("BR".into())
            })
        );
        assert_eq!(
            evaluate(&config, RouteKind::Api, &facts(None, None, None)),
            Verdict::Block(BlockReason::CountryNotAllowed { country: None })
        );
    }

    #[test]
    fn country_list_does_not_apply_to_voice_or_open_routes() {
        let config = FirewallConfig::seed();
        for route in [RouteKind::Voice, RouteKind::Open] {
            assert_eq!(
                evaluate(&config, route, &facts(None, Some("BR"), None)),
                Verdict::Pass
            );
        }
    }

    #[test]
    fn deny_beats_allow_and_allow_skips_country_and_bot_stages() {
        let config = FirewallConfig {
            ip_allow: vec![net("198.51.100.0/24"), net("2001:db8::/32")],
            ip_deny: vec![net("198.51.100.66")],
            min_bot_score: Some(30),
            ..FirewallConfig::seed()
        };
        assert_eq!(
            evaluate(
                &config,
                RouteKind::Api,
                &facts(Some("198.51.100.66"), Some("US"), None)
            ),
            Verdict::Block(BlockReason::IpDenied)
        );
        assert_eq!(
            evaluate(
                &config,
                RouteKind::Api,
                &facts(Some("198.51.100.7"), Some("BR"), Some(1))
            ),
            Verdict::Pass
        );
        assert_eq!(
            evaluate(
                &config,
                RouteKind::Api,
                &facts(Some("2001:db8::5"), None, None)
            ),
            Verdict::Pass
        );
        assert_eq!(
            evaluate(
                &config,
                RouteKind::Open,
                &facts(Some("198.51.100.66"), None, None)
            ),
            Verdict::Block(BlockReason::IpDenied),
            "a denied address is refused everywhere"
        );
    }

    #[test]
    fn bot_floor_applies_only_when_a_score_is_present() {
        let config = FirewallConfig {
            min_bot_score: Some(30),
            ..FirewallConfig::seed()
        };
        assert_eq!(
            evaluate(
                &config,
                RouteKind::Voice,
                &facts(None, Some("US"), Some(29))
            ),
            Verdict::Block(BlockReason::BotScoreTooLow { score: 29 })
        );
        assert_eq!(
            evaluate(
                &config,
                RouteKind::Voice,
                &facts(None, Some("US"), Some(30))
            ),
            Verdict::Pass
        );
        assert_eq!(
            evaluate(&config, RouteKind::Voice, &facts(None, Some("US"), None)),
            Verdict::Pass
        );
        assert_eq!(
            evaluate(&config, RouteKind::Open, &facts(None, None, Some(1))),
            Verdict::Pass,
            "health checks from monitors are not bot-filtered"
        );
    }

    #[test]
    fn cf_facts_are_read_leniently() {
        assert_eq!(
            CfFacts::from_cf_json(r#"{"country":"gb","colo":"LHR","botManagement":{"score":12}}"#),
            CfFacts {
                country: Some("GB".into()),
                bot_score: Some(12)
            }
        );
        assert_eq!(
            CfFacts::from_cf_json(r#"{"botManagement":{"score":0}}"#),
            CfFacts::default()
        );
        assert_eq!(CfFacts::from_cf_json("not json"), CfFacts::default());
        assert_eq!(
            CfFacts::from_cf_json(r#"{"country":""}"#),
            CfFacts::default()
        );
    }

    #[test]
    fn declared_length_limit() {
        assert_eq!(check_declared_length(None, 10), Ok(()));
        assert_eq!(check_declared_length(Some(10), 10), Ok(()));
        assert_eq!(
            check_declared_length(Some(11), 10),
            Err(TooLarge {
                declared: 11,
                limit: 10
            })
        );
    }
}
