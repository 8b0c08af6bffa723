//! CORS for browser API clients: preflights answered at the edge, and the headers an actual
//! response carries, for the configured origins only.

use std::collections::BTreeSet;

use crate::auth::{API_KEY, AUTHORIZATION};

/// Which browser origins may call the API, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Exact origins (`https://app.example.com`); no wildcard, since requests carry credentials.
    pub origins: BTreeSet<String>,
    /// How long a browser may cache a preflight, in seconds.
    pub max_age_secs: u32,
}

/// Methods the public API answers.
pub const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers a browser client may send (lower case).
pub const ALLOWED_HEADERS: [&str; 5] = [
    AUTHORIZATION,
    "content-type",
    API_KEY,
    "idempotency-key",
    crate::headers::LAST_EVENT_ID,
];
/// Response headers a browser client may read beyond the CORS-safelisted ones.
pub const EXPOSED_HEADERS: &str = "x-request-id, retry-after, ratelimit, ratelimit-policy, ratelimit-limit, ratelimit-remaining, ratelimit-reset";

/// The answer to a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// 204 with these headers.
    Allowed(Vec<(&'static str, String)>),
    /// 403: the origin, method or a header is not allowed; the reason is for the client.
    Refused(PreflightRefusal),
}

/// Why a preflight was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightRefusal {
    /// Not a CORS preflight: `Origin` or `Access-Control-Request-Method` is missing.
    #[error("not a CORS preflight request")]
    NotPreflight,
    /// The origin is not configured.
    #[error("origin {0} is not allowed")]
    OriginNotAllowed(String),
    /// The method is not offered.
    #[error("method {0} is not allowed")]
    MethodNotAllowed(String),
    /// A requested header is not accepted.
    #[error("request header {0} is not allowed")]
    HeaderNotAllowed(String),
}

impl CorsPolicy {
    /// Answers `OPTIONS` with `Origin`, `Access-Control-Request-Method` and optionally
    /// `Access-Control-Request-Headers`.
    pub fn preflight(
        &self,
        origin: Option<&str>,
        request_method: Option<&str>,
        request_headers: Option<&str>,
    ) -> Preflight {
        let (Some(origin), Some(method)) = (origin, request_method) else {
            return Preflight::Refused(PreflightRefusal::NotPreflight);
        };
        if !self.origins.contains(origin) {
            return Preflight::Refused(PreflightRefusal::OriginNotAllowed(origin.to_owned()));
        }
        let method = method.trim().to_ascii_uppercase();
        if !ALLOWED_METHODS.split(", ").any(|allowed| allowed == method) {
            return Preflight::Refused(PreflightRefusal::MethodNotAllowed(method));
        }
        let requested: Vec<String> = request_headers
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(refused) = requested
            .iter()
            .find(|h| !ALLOWED_HEADERS.contains(&h.as_str()))
        {
            return Preflight::Refused(PreflightRefusal::HeaderNotAllowed(refused.clone()));
        }
        Preflight::Allowed(vec![
            ("access-control-allow-origin", origin.to_owned()),
            ("access-control-allow-methods", ALLOWED_METHODS.to_owned()),
            ("access-control-allow-headers", ALLOWED_HEADERS.join(", ")),
            ("access-control-allow-credentials", "true".to_owned()),
            ("access-control-max-age", self.max_age_secs.to_string()),
            ("vary", "Origin".to_owned()),
        ])
    }

    /// Headers for an actual (non-preflight) response to `origin`; empty when the origin is
    /// absent or not allowed, so the browser withholds the response from the page.
    pub fn response_headers(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        match origin {
            Some(origin) if self.origins.contains(origin) => vec![
                ("access-control-allow-origin", origin.to_owned()),
                ("access-control-allow-credentials", "true".to_owned()),
                ("access-control-expose-headers", EXPOSED_HEADERS.to_owned()),
                ("vary", "Origin".to_owned()),
            ],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CorsPolicy {
        CorsPolicy {
            origins: ["https://app.example.com".to_owned()].into(),
            max_age_secs: 600,
        }
    }

    fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn allowed_preflight_echoes_the_origin_and_lists_what_is_allowed() {
        let Preflight::Allowed(headers) = policy().preflight(
            Some("https://app.example.com"),
            Some("post"),
            Some("Content-Type, Authorization"),
        ) else {
            panic!("expected allowed");
        };
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(header(&headers, "access-control-max-age"), Some("600"));
        assert_eq!(header(&headers, "vary"), Some("Origin"));
    }

    #[test]
    fn preflight_refusals_name_the_cause() {
        let p = policy();
        assert_eq!(
            p.preflight(None, Some("GET"), None),
            Preflight::Refused(PreflightRefusal::NotPreflight)
        );
        assert_eq!(
            p.preflight(Some("https://evil.example"), Some("GET"), None),
            Preflight::Refused(PreflightRefusal::OriginNotAllowed(
                "https://evil.example".into()
            ))
        );
        assert_eq!(
            p.preflight(Some("https://app.example.com"), Some("TRACE"), None),
            Preflight::Refused(PreflightRefusal::MethodNotAllowed("TRACE".into()))
        );
        assert_eq!(
            p.preflight(
                Some("https://app.example.com"),
                Some("GET"),
                Some("x-edge-signature")
            ),
            Preflight::Refused(PreflightRefusal::HeaderNotAllowed(
                "x-edge-signature".into()
            ))
        );
    }

    #[test]
    fn actual_responses_carry_cors_headers_only_for_allowed_origins() {
        let p = policy();
        let headers = p.response_headers(Some("https://app.example.com"));
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert!(
            header(&headers, "access-control-expose-headers")
                .is_some_and(|v| v.contains("ratelimit"))
        );
        assert!(p.response_headers(Some("https://other.example")).is_empty());
        assert!(p.response_headers(None).is_empty());
    }
}
