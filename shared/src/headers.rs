//! Header names of the edge ↔ origin contract, declared once.

/// Correlates one request across every hop and log line.
pub const REQUEST_ID: &str = "x-request-id";
/// The caller's country as Cloudflare saw it.
pub const CF_COUNTRY: &str = "x-cf-country";
/// The AWS region the edge chose for this request.
pub const CF_REGION: &str = "x-cf-region";
/// base64url JSON of the authenticated principal.
pub const EDGE_PRINCIPAL: &str = "x-edge-principal";
/// Unix seconds at which the edge signed the request.
pub const EDGE_TIMESTAMP: &str = "x-edge-timestamp";
/// HMAC-SHA256 of the request, proving it came through the edge.
pub const EDGE_SIGNATURE: &str = "x-edge-signature";
/// A fresh random value per forwarded request, signed, so the origin can refuse a replay.
pub const EDGE_NONCE: &str = "x-edge-nonce";

/// W3C Trace Context parent (`shared::trace_context`): set by the edge on every forward to the
/// origin and on the relay, adopted by the origin as the parent of its spans. Not signed: it
/// grants nothing, and a tracing proxy on the path may legitimately rewrite it.
pub const TRACEPARENT: &str = "traceparent";

/// Every header only the edge may set; a client-sent copy is stripped before forwarding.
pub const EDGE_SET: [&str; 7] = [
    REQUEST_ID,
    CF_COUNTRY,
    CF_REGION,
    EDGE_PRINCIPAL,
    EDGE_TIMESTAMP,
    EDGE_SIGNATURE,
    EDGE_NONCE,
];

/// Headers on every response of the public edge: no sniffing, no framing, no referrer leaks,
/// HTTPS only, and a Content-Security-Policy that lets a JSON answer load nothing.
pub const SECURITY: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
];

/// The client's address as Cloudflare saw it.
pub const CONNECTING_IP: &str = "cf-connecting-ip";
/// The id of the last Server-Sent Event a reconnecting client saw (HTML, "Server-sent events"):
/// passed from the client through the edge to the origin, which resumes after it.
pub const LAST_EVENT_ID: &str = "last-event-id";
