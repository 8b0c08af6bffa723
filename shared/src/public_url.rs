//! The URL a client or carrier called, as the public edge received it (scheme, host, path and
//! query exactly as sent). Split by hand rather than with the `url` crate, whose IDNA tables
//! would weigh on every Worker's wasm; auth needs only the query and the port.

use std::borrow::Cow;

/// Why a URL could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No `scheme://` prefix.
    #[error("the URL has no scheme")]
    NoScheme,
    /// Not http, https, ws or wss.
    #[error("the URL's scheme is not http, https, ws or wss")]
    UnsupportedScheme,
    /// Nothing between `://` and the path.
    #[error("the URL has no host")]
    NoHost,
    /// A port that is not 1 to 5 digits.
    #[error("the URL's port is not a number")]
    BadPort,
}

/// An absolute http(s)/ws(s) URL, split into the parts auth cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicUrl<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    /// Path, query and fragment, exactly as given (may be empty).
    rest: &'a str,
}

/// Splits an absolute URL.
pub fn parse(url: &str) -> Result<PublicUrl<'_>, UrlError> {
    let (scheme, after) = url.split_once("://").ok_or(UrlError::NoScheme)?;
    if !["http", "https", "ws", "wss"]
        .iter()
        .any(|known| scheme.eq_ignore_ascii_case(known))
    {
        return Err(UrlError::UnsupportedScheme);
    }
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(authority_end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (host, port) = if host_port.starts_with('[') {
        // An IPv6 literal: the port, if any, follows the closing bracket.
        let close = host_port.find(']').ok_or(UrlError::NoHost)?;
        let (host, tail) = host_port.split_at(close + 1);
        match tail.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if tail.is_empty() => (host, None),
            None => return Err(UrlError::BadPort),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(UrlError::BadPort);
    }
    Ok(PublicUrl {
        scheme,
        userinfo,
        host,
        port,
        rest,
    })
}

impl<'a> PublicUrl<'a> {
    /// The scheme as written.
    pub fn scheme(&self) -> &'a str {
        self.scheme
    }

    /// The host as written (an IPv6 literal keeps its brackets).
    pub fn host(&self) -> &'a str {
        self.host
    }

    /// The port as written, if any.
    pub fn port(&self) -> Option<&'a str> {
        self.port
    }

    /// The query string without `?` and without any fragment.
    pub fn query(&self) -> Option<&'a str> {
        let (_, query) = self.rest.split_once('?')?;
        Some(query.split_once('#').map_or(query, |(query, _)| query))
    }

    /// The first value of a query parameter, form-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'a, str>> {
        form_urlencoded::parse(self.query()?.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Whether the scheme is `ws` or `wss` (a WebSocket handshake as the client wrote it).
    pub fn is_websocket(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("ws") || self.scheme.eq_ignore_ascii_case("wss")
    }

    /// The port a client uses when the URL names none.
    pub fn default_port(&self) -> &'static str {
        if self.scheme.eq_ignore_ascii_case("https") || self.scheme.eq_ignore_ascii_case("wss") {
            "443"
        } else {
            "80"
        }
    }

    /// The same URL with another scheme (`wss` ↔ `https`), everything else unchanged.
    pub fn with_scheme(&self, scheme: &'a str) -> PublicUrl<'a> {
        PublicUrl { scheme, ..*self }
    }

    /// The URL with no port.
    pub fn without_port(&self) -> String {
        self.assemble(None)
    }

    /// The URL with its port, or the scheme's default port when it names none.
    pub fn with_port(&self) -> String {
        self.assemble(Some(self.port.unwrap_or(self.default_port())))
    }

    fn assemble(&self, port: Option<&str>) -> String {
        let mut url =
            String::with_capacity(self.scheme.len() + self.host.len() + self.rest.len() + 16);
        url.push_str(self.scheme);
        url.push_str("://");
        if let Some(userinfo) = self.userinfo {
            url.push_str(userinfo);
            url.push('@');
        }
        url.push_str(self.host);
        if let Some(port) = port {
            url.push(':');
            url.push_str(port);
        }
        url.push_str(self.rest);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_reassembles() {
        let url = parse("https://mycompany.com/myapp.php?foo=1&bar=2").expect("parses");
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.port(), None);
        assert_eq!(url.query(), Some("foo=1&bar=2"));
        assert_eq!(url.query_param("bar").as_deref(), Some("2"));
        assert_eq!(url.query_param("baz"), None);
        assert_eq!(
            url.without_port(),
            "https://mycompany.com/myapp.php?foo=1&bar=2"
        );
        assert_eq!(
            url.with_port(),
            "https://mycompany.com:443/myapp.php?foo=1&bar=2"
        );
    }

    #[test]
    fn ports_userinfo_ipv6_and_bare_hosts() {
        let url = parse("http://user:pw@example.com:8080?x=a+b%21#frag").expect("parses");
        assert_eq!(url.port(), Some("8080"));
        assert_eq!(url.query(), Some("x=a+b%21"));
        assert_eq!(url.query_param("x").as_deref(), Some("a b!"));
        assert_eq!(
            url.without_port(),
            "http://user:pw@example.com?x=a+b%21#frag"
        );
        assert_eq!(
            url.with_port(),
            "http://user:pw@example.com:8080?x=a+b%21#frag"
        );

        let url = parse("ws://[::1]:9000/relay").expect("parses");
        assert!(url.is_websocket());
        assert_eq!(url.without_port(), "ws://[::1]/relay");
        assert_eq!(
            url.with_scheme("http").with_port(),
            "http://[::1]:9000/relay"
        );

        assert_eq!(
            parse("wss://edge.example").expect("parses").with_port(),
            "wss://edge.example:443"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(parse("edge.example/path"), Err(UrlError::NoScheme));
        assert_eq!(
            parse("ftp://edge.example/"),
            Err(UrlError::UnsupportedScheme)
        );
        assert_eq!(parse("https:///path"), Err(UrlError::NoHost));
        assert_eq!(parse("https://:443/path"), Err(UrlError::NoHost));
        assert_eq!(parse("https://host:44x/"), Err(UrlError::BadPort));
        assert_eq!(parse("https://host:/"), Err(UrlError::BadPort));
        assert_eq!(parse("https://[::1]x/"), Err(UrlError::BadPort));
    }
}
