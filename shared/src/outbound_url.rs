//! Where the origin may send a request on a tenant's behalf (a tool's URL now, a webhook's
//! next): the rule against server-side request forgery, checked twice.
//!
//! 1. When the URL is configured ([`OutboundUrl::parse`]): `https`, no credentials in it, and a
//!    literal address must be one the policy lets through. Plain `http` is accepted only for a
//!    loopback host (`localhost`, `127.0.0.0/8`, `::1`) under [`OutboundPolicy::LoopbackToo`]
//!    (a development origin); a name is not resolved here.
//! 2. At every request, by the origin: the host's name is resolved and **every** address it
//!    resolves to is checked with [`allowed`] before connecting, and the connection goes to one of
//!    those checked addresses — so a name that later resolves elsewhere (DNS rebinding) is caught
//!    where it matters.
//!
//! Refused whatever the policy: private (RFC 1918, IPv6 unique-local), carrier-grade NAT,
//! link-local (which holds the cloud metadata address `169.254.169.254`; AWS's IPv6 one,
//! `fd00:ec2::254`, is unique-local), unspecified, broadcast, multicast, documentation and
//! reserved ranges, and IPv4 addresses hidden in IPv6 (mapped, NAT64) that are any of those.
//! Loopback is refused too unless the policy is [`OutboundPolicy::LoopbackToo`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest URL accepted.
pub const MAX_URL_CHARS: usize = 2_048;

/// Which addresses outbound requests may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundPolicy {
    /// Production: public addresses only.
    PublicOnly,
    /// Development: public addresses and loopback (`http` allowed to loopback).
    LoopbackToo,
}

/// What kind of address an IP is, for this rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Routable on the internet.
    Public,
    /// This machine.
    Loopback,
    /// Anything else: private, link-local (metadata), reserved, multicast, …
    Internal,
}

/// Classifies an address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether a request may go to `ip` under `policy`.
pub fn allowed(ip: IpAddr, policy: OutboundPolicy) -> bool {
    match classify(ip) {
        AddressClass::Public => true,
        AddressClass::Loopback => policy == OutboundPolicy::LoopbackToo,
        AddressClass::Internal => false,
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if a == 127 {
        return AddressClass::Loopback;
    }
    let internal = a == 0                                   // "this network", unspecified
        || a == 10                                          // private
        || (a == 100 && (64..=127).contains(&b))            // carrier-grade NAT
        || (a == 169 && b == 254)                           // link-local, cloud metadata
        || (a == 172 && (16..=31).contains(&b))             // private
        || (a == 192 && b == 0 && c == 0)                   // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                   // TEST-NET-1
        || (a == 192 && b == 168)                           // private
        || (a == 198 && (18..=19).contains(&b))             // benchmarking
        || (a == 198 && b == 51 && c == 100)                // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)                 // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    if internal {
        AddressClass::Internal
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip == Ipv6Addr::LOCALHOST {
        return AddressClass::Loopback;
    }
    let segments = ip.segments();
    // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) carry an IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, high, low] = segments;
        let v4 = Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
        return classify_v4(v4);
    }
    let first = segments[0];
    let internal = ip.is_unspecified()
        || (first & 0xfe00) == 0xfc00       // unique-local (fd00:ec2::254 metadata)
        || (first & 0xffc0) == 0xfe80       // link-local
        || (first & 0xff00) == 0xff00       // multicast
        || (first == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[..6] == [0, 0, 0, 0, 0, 0]; // IPv4-compatible (deprecated) and the like
    if internal {
        AddressClass::Internal
    } else {
        AddressClass::Public
    }
}

/// A URL the origin may call, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundUrl {
    /// `https` (or `http` to loopback in development).
    pub https: bool,
    /// The host as written: a name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    /// The port, when written.
    pub port: Option<u16>,
}

/// Why a URL was refused; each reads after the field's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `https://host…`, or too long, or with spaces.
    #[error("must be an https:// URL of at most {MAX_URL_CHARS} characters")]
    NotHttps,
    /// `http://` to something other than loopback, or outside development.
    #[error("must be https (http is accepted only to loopback on a development origin)")]
    PlainHttp,
    /// `user:password@` in the URL.
    #[error("must not carry credentials (user@ or user:password@)")]
    Credentials,
    /// No host, or a port that is not a number from 1 to 65535.
    #[error("has no valid host and port")]
    BadHost,
    /// A literal address the policy refuses.
    #[error("points at a private, loopback, link-local or otherwise internal address")]
    InternalAddress,
}

impl OutboundUrl {
    /// Checks `url` under `policy` without resolving anything (see the module's rule 1).
    pub fn parse(url: &str, policy: OutboundPolicy) -> Result<Self, UrlError> {
        if url.len() > MAX_URL_CHARS || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::NotHttps);
        }
        let lower = url.to_ascii_lowercase();
        let (https, rest) = if let Some(rest) = lower.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = lower.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(UrlError::NotHttps);
        };
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if authority.contains('@') {
            return Err(UrlError::Credentials);
        }
        let (host, port) = split_host_port(authority).ok_or(UrlError::BadHost)?;
        let literal = host.parse::<IpAddr>().ok();
        let loopback = match literal {
            Some(ip) => classify(ip) == AddressClass::Loopback,
            None => host == "localhost" || host.ends_with(".localhost"),
        };
        let plain_http_allowed = loopback && policy == OutboundPolicy::LoopbackToo;
        if !(https || plain_http_allowed) {
            return Err(UrlError::PlainHttp);
        }
        if let Some(ip) = literal
            && !allowed(ip, policy)
        {
            return Err(UrlError::InternalAddress);
        }
        Ok(Self {
            https,
            host: host.to_owned(),
            port,
        })
    }
}

/// `host[:port]` or `[v6][:port]`; the host non-empty, the port 1–65535.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let port_of = |text: Option<&str>| match text {
        None => Some(None),
        Some(text) => text.parse::<u16>().ok().filter(|p| *p > 0).map(Some),
    };
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            port => Some(port.strip_prefix(':')?),
        };
        return Some((host, port_of(port)?));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let valid_name = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    valid_name.then_some(())?;
    Some((host, port_of(port)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        let cases = [
            ("93.184.216.34", AddressClass::Public),
            ("8.8.8.8", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Internal),
            ("172.16.0.1", AddressClass::Internal),
            ("172.31.255.255", AddressClass::Internal),
            ("172.32.0.1", AddressClass::Public),
            ("192.168.1.1", AddressClass::Internal),
            ("169.254.169.254", AddressClass::Internal),
            ("100.64.0.1", AddressClass::Internal),
            ("100.100.100.200", AddressClass::Internal),
            ("100.128.0.1", AddressClass::Public),
            ("0.0.0.0", AddressClass::Internal),
            ("255.255.255.255", AddressClass::Internal),
            ("224.0.0.1", AddressClass::Internal),
            ("198.18.0.1", AddressClass::Internal),
            ("192.0.2.5", AddressClass::Internal),
            ("2606:4700::1111", AddressClass::Public),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Internal),
            ("fd00:ec2::254", AddressClass::Internal),
            ("fe80::1", AddressClass::Internal),
            ("ff02::1", AddressClass::Internal),
            ("2001:db8::1", AddressClass::Internal),
            ("::ffff:169.254.169.254", AddressClass::Internal),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:93.184.216.34", AddressClass::Public),
            ("64:ff9b::a9fe:a9fe", AddressClass::Internal),
            ("64:ff9b::5db8:d822", AddressClass::Public),
            ("::169.254.169.254", AddressClass::Internal),
        ];
        for (text, class) in cases {
            let ip: IpAddr = text.parse().expect("an address");
            assert_eq!(classify(ip), class, "{text}");
        }
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(!allowed(loopback, OutboundPolicy::PublicOnly));
        assert!(allowed(loopback, OutboundPolicy::LoopbackToo));
        let metadata: IpAddr = "169.254.169.254".parse().expect("ip");
        assert!(!allowed(metadata, OutboundPolicy::LoopbackToo));
    }

    #[test]
    fn urls_as_configured() {
        use OutboundPolicy::{LoopbackToo, PublicOnly};
        let ok = |https, host: &str, port| {
            Ok(OutboundUrl {
                https,
                host: host.to_owned(),
                port,
            })
        };
        let cases = [
            (
                "https://tools.example.com/orders",
                PublicOnly,
                ok(true, "tools.example.com", None),
            ),
            (
                "HTTPS://Tools.Example.com:8443/x?y#z",
                PublicOnly,
                ok(true, "tools.example.com", Some(8443)),
            ),
            (
                "https://93.184.216.34/x",
                PublicOnly,
                ok(true, "93.184.216.34", None),
            ),
            (
                "https://[2606:4700::1111]:443/",
                PublicOnly,
                ok(true, "2606:4700::1111", Some(443)),
            ),
            // A name is resolved at call time, not here.
            (
                "https://localhost:9/x",
                PublicOnly,
                ok(true, "localhost", Some(9)),
            ),
            (
                "http://127.0.0.1:9/x",
                LoopbackToo,
                ok(false, "127.0.0.1", Some(9)),
            ),
            (
                "http://localhost:9/x",
                LoopbackToo,
                ok(false, "localhost", Some(9)),
            ),
            ("http://[::1]:9/x", LoopbackToo, ok(false, "::1", Some(9))),
            ("http://127.0.0.1:9/x", PublicOnly, Err(UrlError::PlainHttp)),
            (
                "http://tools.example.com/x",
                LoopbackToo,
                Err(UrlError::PlainHttp),
            ),
            (
                "https://127.0.0.1/x",
                PublicOnly,
                Err(UrlError::InternalAddress),
            ),
            (
                "https://169.254.169.254/latest/meta-data",
                LoopbackToo,
                Err(UrlError::InternalAddress),
            ),
            (
                "https://10.0.0.5/x",
                LoopbackToo,
                Err(UrlError::InternalAddress),
            ),
            (
                "https://[fd00:ec2::254]/",
                PublicOnly,
                Err(UrlError::InternalAddress),
            ),
            (
                "https://[::ffff:10.0.0.1]/",
                PublicOnly,
                Err(UrlError::InternalAddress),
            ),
            (
                "https://user:pw@tools.example.com/",
                PublicOnly,
                Err(UrlError::Credentials),
            ),
            (
                "ftp://tools.example.com/",
                PublicOnly,
                Err(UrlError::NotHttps),
            ),
            ("tools.example.com", PublicOnly, Err(UrlError::NotHttps)),
            (
                "https://tools.example.com/a b",
                PublicOnly,
                Err(UrlError::NotHttps),
            ),
            ("https:///x", PublicOnly, Err(UrlError::BadHost)),
            (
                "https://tools.example.com:0/",
                PublicOnly,
                Err(UrlError::BadHost),
            ),
            (
                "https://tools.example.com:99999/",
                PublicOnly,
                Err(UrlError::BadHost),
            ),
            ("https://[not-v6]/", PublicOnly, Err(UrlError::BadHost)),
            ("https://a%2f@b/", PublicOnly, Err(UrlError::Credentials)),
            ("https://::1/", PublicOnly, Err(UrlError::BadHost)),
            ("https://a:b:c/", PublicOnly, Err(UrlError::BadHost)),
        ];
        for (url, policy, expected) in cases {
            assert_eq!(
                OutboundUrl::parse(url, policy),
                expected,
                "{url} {policy:?}"
            );
        }
        let long = format!("https://tools.example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(
            OutboundUrl::parse(&long, OutboundPolicy::PublicOnly),
            Err(UrlError::NotHttps)
        );
    }
}
