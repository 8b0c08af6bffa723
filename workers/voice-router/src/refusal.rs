//! voice-router's one status map: every way the edge (the Worker and its `CallSession` objects)
//! refuses a request, and [`rejection`], the one function that gives each its status, code and
//! message. Handlers return a [`Refusal`]; nothing else picks a status.

use edge_io::Rejection;
use shared::call_list::CallListError;
use shared::call_session::SessionRefusal;
use shared::carrier::{CarrierKind, PlacementError};
use shared::error_body::ErrorCode;
use shared::firewall::BlockReason;
use worker::console_error;

use crate::services::ServiceError;

/// Why the edge did not do what was asked.
#[derive(Debug)]
pub enum Refusal {
    /// No route has this method and path.
    NoRoute,
    /// The path exists, not for this method.
    MethodNotAllowed,
    /// A path segment that must be an id is not one.
    BadId(String),
    /// The body or a parameter is not what the route takes (the sentence says what).
    InvalidRequest(String),
    /// The call list's query is not one it takes (bad filter, limit or cursor).
    InvalidListQuery(CallListError),
    /// The body is larger than the route accepts (the sentence says the limit).
    PayloadTooLarge(String),
    /// A WebSocket route called without an upgrade.
    UpgradeRequired,
    /// A browser origin that is not configured (the sentence says why).
    CorsRefused(String),
    /// The firewall stage blocked the client.
    Firewall(BlockReason),
    /// Over a rate limit (the `Retry-After` and `RateLimit` headers come with every answer).
    RateLimited,
    /// The tenant is at its concurrent-call limit.
    ConcurrentCalls {
        /// The limit.
        limit: u64,
        /// When a line may be free, in whole seconds.
        retry_after_s: u64,
    },
    /// The call's session refused (unknown call, ended, …).
    Session(SessionRefusal),
    /// No such agent.
    UnknownAgent,
    /// A request signed by another carrier than the route's.
    WrongCarrier(CarrierKind),
    /// An outbound call's caller id is not one of the tenant's numbers.
    CallerIdNotAllowed(String),
    /// No carrier account of the tenant places calls from this caller id.
    OutboundNotConfigured(String),
    /// The carrier did not place an outbound call.
    Carrier(PlacementError),
    /// No region's origin answered a forwarded request.
    OriginUnavailable,
    /// A call could not be started (its origin or its session did not take it).
    CallNotStarted,
    /// The origins refuse new work for now; their status, code and `Retry-After` are passed on.
    OriginRefused(crate::call_start::OriginRefusal),
    /// An internal service refused (its own answer, passed on) or could not be reached.
    Service(ServiceError),
    /// The edge's configuration is broken (the cause is logged where it is read).
    Misconfigured,
    /// The runtime failed underneath; the cause is logged, never sent.
    Internal(worker::Error),
}

impl From<worker::Error> for Refusal {
    fn from(error: worker::Error) -> Self {
        Refusal::Internal(error)
    }
}

impl From<edge_io::Failure> for Refusal {
    fn from(failure: edge_io::Failure) -> Self {
        match failure {
            edge_io::Failure::NotFound => Refusal::NoRoute,
            edge_io::Failure::MethodNotAllowed => Refusal::MethodNotAllowed,
            edge_io::Failure::Rejected(rejection) => {
                Refusal::Service(ServiceError::Refused(rejection))
            }
            edge_io::Failure::Internal(error) => Refusal::Internal(error),
        }
    }
}

impl From<SessionRefusal> for Refusal {
    fn from(refusal: SessionRefusal) -> Self {
        Refusal::Session(refusal)
    }
}

impl From<ServiceError> for Refusal {
    fn from(error: ServiceError) -> Self {
        Refusal::Service(error)
    }
}

/// How a carrier's refusal to place a call reaches the client: the numbers it refused are the
/// client's to fix (422, the carrier's words); everything else is the edge's or the carrier's
/// trouble (502, or 503 with `Retry-After` when the carrier asks to slow down), logged.
fn carrier_rejection(error: PlacementError, tag: &dyn std::fmt::Display) -> Rejection {
    use ErrorCode as Code;
    match &error {
        PlacementError::Destination(_) => Rejection::new(
            422,
            Code::CarrierRefusedDestination.as_str(),
            error.to_string(),
        ),
        PlacementError::CallerId(_) => Rejection::new(
            422,
            Code::CarrierRefusedCallerId.as_str(),
            error.to_string(),
        ),
        PlacementError::Refused { .. } => {
            console_error!("{tag}: {error}");
            Rejection::new(502, Code::CarrierRefused.as_str(), error.to_string())
        }
        PlacementError::RateLimited => Rejection::new(
            503,
            Code::CarrierUnavailable.as_str(),
            "the carrier asks to slow down; retry shortly",
        )
        .with_header("retry-after", "1"),
        PlacementError::Credentials { .. } | PlacementError::Unavailable { .. } => {
            console_error!("{tag}: {error}");
            Rejection::new(
                502,
                Code::CarrierUnavailable.as_str(),
                "the carrier did not place the call; quote the request id when reporting it",
            )
        }
    }
}

/// The status, code, message and headers a client sees for `refusal`. 5xx messages are generic
/// and the cause goes to the log under `tag` (the request id and trace id).
pub fn rejection(refusal: Refusal, tag: &dyn std::fmt::Display) -> Rejection {
    use ErrorCode as Code;
    let plain = |status: u16, code: ErrorCode, message: &str| {
        Rejection::new(status, code.as_str(), message.to_owned())
    };
    match refusal {
        Refusal::NoRoute => plain(404, Code::NotFound, "no such route"),
        Refusal::MethodNotAllowed => plain(
            405,
            Code::MethodNotAllowed,
            "method not allowed on this route",
        ),
        Refusal::BadId(segment) => Rejection::new(
            400,
            Code::InvalidId.as_str(),
            format!("{segment:?} is not a valid id"),
        ),
        Refusal::InvalidRequest(why) => Rejection::new(400, Code::InvalidRequest.as_str(), why),
        Refusal::InvalidListQuery(error) => {
            Rejection::new(400, error.code().as_str(), error.to_string())
        }
        Refusal::PayloadTooLarge(why) => Rejection::new(413, Code::PayloadTooLarge.as_str(), why),
        Refusal::UpgradeRequired => plain(426, Code::UpgradeRequired, "this route is a WebSocket")
            .with_header("upgrade", "websocket"),
        Refusal::CorsRefused(why) => Rejection::new(403, Code::CorsRefused.as_str(), why),
        Refusal::Firewall(reason) => Rejection::new(403, reason.code().as_str(), reason.message()),
        Refusal::RateLimited => plain(
            429,
            Code::RateLimited,
            "too many requests; retry after the time in Retry-After",
        ),
        Refusal::ConcurrentCalls {
            limit,
            retry_after_s,
        } => Rejection::new(
            429,
            Code::ConcurrentCallsExceeded.as_str(),
            format!("the tenant already has {limit} live calls"),
        )
        .with_header("retry-after", retry_after_s.max(1).to_string()),
        Refusal::Session(refusal) => {
            let status = match refusal {
                SessionRefusal::UnknownCall => 404,
                SessionRefusal::CallEnded
                | SessionRefusal::CallExists
                | SessionRefusal::CarrierMismatch => 409,
                SessionRefusal::NoRegion => 400,
            };
            Rejection::new(status, refusal.code().as_str(), refusal.to_string())
        }
        Refusal::UnknownAgent => plain(404, Code::UnknownAgent, "no such agent"),
        Refusal::WrongCarrier(carrier) => Rejection::new(
            403,
            Code::WrongCarrier.as_str(),
            format!("this route takes requests signed by {}", carrier.as_str()),
        ),
        Refusal::CallerIdNotAllowed(number) => Rejection::new(
            403,
            Code::CallerIdNotAllowed.as_str(),
            format!("{number} is not one of the tenant's phone numbers"),
        ),
        Refusal::OutboundNotConfigured(number) => Rejection::new(
            422,
            Code::OutboundNotConfigured.as_str(),
            format!("no carrier account of the tenant places calls from {number}"),
        ),
        Refusal::Carrier(error) => carrier_rejection(error, tag),
        Refusal::OriginUnavailable => plain(502, Code::OriginUnavailable, "no origin answered"),
        Refusal::CallNotStarted => plain(
            503,
            Code::OriginUnavailable,
            "the call could not be started; retry shortly",
        )
        .with_header("retry-after", "1"),
        Refusal::OriginRefused(refusal) => Rejection::new(
            refusal.status,
            refusal
                .code
                .unwrap_or_else(|| Code::OriginUnavailable.as_str().to_owned()),
            "the call could not be started now; retry after the time in Retry-After",
        )
        .with_header(
            "retry-after",
            refusal.retry_after.unwrap_or_else(|| "1".into()),
        ),
        Refusal::Service(ServiceError::Refused(rejection)) => rejection,
        Refusal::Service(ServiceError::Unavailable { service, cause }) => {
            console_error!("{tag}: {service} unavailable: {cause}");
            plain(
                503,
                Code::ServiceUnavailable,
                "a dependency of the edge is unavailable; retry shortly",
            )
            .with_header("retry-after", "1")
        }
        Refusal::Misconfigured => plain(
            500,
            Code::Misconfigured,
            "the edge is misconfigured; quote the request id when reporting it",
        ),
        Refusal::Internal(cause) => {
            console_error!("{tag} failed: {cause}");
            plain(
                500,
                Code::Internal,
                "internal error; quote the request id when reporting it",
            )
        }
    }
}
