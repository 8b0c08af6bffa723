//! Requests the origin makes to tenants' URLs — tool calls and webhooks — signed with the
//! tenant's secret (`shared::outbound_signature`, see [`crate::signing_secret`]) and held to
//! the SSRF rule of `shared::outbound_url`:
//!
//! - the URL is checked again at call time (a literal internal address is refused whatever was
//!   accepted when it was configured);
//! - names are resolved by [`GuardedResolver`], which refuses the request when **any** address
//!   the name resolves to may not be reached, and the connection is made only to those checked
//!   addresses (no second lookup between check and connect, so DNS rebinding cannot slip in);
//! - no redirects are followed (a 3xx is an answer like any other), no proxy is used;
//! - the answer is read up to a cap ([`MAX_RESPONSE_BYTES`] for tools), the whole exchange
//!   under one deadline.
//!
//! One pooled HTTP/1.1 client (rustls with ring, the system's roots) serves every tenant, so a
//! tool called again on a call reuses its connection.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use shared::outbound_url::{OutboundPolicy, OutboundUrl, allowed};

/// Largest answer a tool may give (webhooks keep less: `shared::webhook::MAX_RESPONSE_BYTES`).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// `User-Agent` of every outbound request.
pub const USER_AGENT: &str = concat!("aybiza-origin/", env!("CARGO_PKG_VERSION"));

/// Resolves a host name to its addresses (the system's resolver; tests give a fixed table).
#[async_trait]
pub trait Resolve: Send + Sync {
    /// Every address `host` resolves to.
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|address| address.ip())
            .collect())
    }
}

/// A name that resolves to an address the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {address}, which the origin may not reach")]
pub struct RefusedAddress {
    host: String,
    address: IpAddr,
}

/// The connector's resolver: resolves, then refuses the whole name if any address is internal.
#[derive(Clone)]
pub struct GuardedResolver {
    inner: Arc<dyn Resolve>,
    policy: OutboundPolicy,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses = inner.resolve(&host).await?;
            if let Some(address) = addresses.iter().find(|ip| !allowed(**ip, policy)) {
                return Err(Box::new(RefusedAddress {
                    host,
                    address: *address,
                }) as Box<dyn StdError + Send + Sync>);
            }
            if addresses.is_empty() {
                return Err(format!("{host} resolves to no address").into());
            }
            Ok(addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// Why an outbound request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The URL or an address it resolves to may not be reached.
    #[error("refused: {0}")]
    Refused(String),
    /// No complete answer within the deadline.
    #[error("no answer within {0} ms")]
    Timeout(u128),
    /// The connection could not be made or broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The answer was larger than the cap.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// An answer.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    /// HTTP status.
    pub status: u16,
    /// The body, within the cap.
    pub body: Bytes,
}

/// A signed JSON POST to make.
pub struct Post<'a> {
    /// Where.
    pub url: &'a str,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The `X-Aybiza-Signature` value for that body.
    pub signature: String,
    /// Deadline for the whole exchange.
    pub timeout: Duration,
    /// Largest answer read.
    pub max_response: usize,
    /// More headers (a webhook's idempotency key and event type).
    pub headers: Vec<(&'static str, String)>,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// The origin's client for tenants' URLs.
pub struct OutboundClient {
    client: Client<Connector, Full<Bytes>>,
    policy: OutboundPolicy,
}

impl OutboundClient {
    /// A client under `policy`, resolving names with `resolver`.
    pub fn new(policy: OutboundPolicy, resolver: Arc<dyn Resolve>) -> Self {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            inner: resolver,
            policy,
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(Arc::clone(&provider)) {
            Ok(builder) => builder,
            Err(error) => {
                // No system roots (a bare container): https calls fail to verify, loudly.
                tracing::error!(%error, "no system root certificates: https tool calls will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports rustls's default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client, policy }
    }

    /// POSTs `post`, returning the answer within its deadline and cap.
    pub async fn post(&self, post: Post<'_>) -> Result<OutboundResponse, OutboundError> {
        OutboundUrl::parse(post.url, self.policy)
            .map_err(|error| OutboundError::Refused(format!("the URL {error}")))?;
        let mut request = http::Request::post(post.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(shared::outbound_signature::HEADER, post.signature);
        for (name, value) in post.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(post.body)))
            .map_err(|error| OutboundError::Refused(format!("the URL is unusable: {error}")))?;
        let max = post.max_response;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| match refusal_in(&error) {
                    Some(refused) => OutboundError::Refused(refused.to_string()),
                    None => OutboundError::Unreachable(chain(&error)),
                })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), max)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        OutboundError::TooLarge(max)
                    } else {
                        OutboundError::Unreachable(error.to_string())
                    }
                })?
                .to_bytes();
            Ok(OutboundResponse { status, body })
        };
        tokio::time::timeout(post.timeout, exchange)
            .await
            .map_err(|_| OutboundError::Timeout(post.timeout.as_millis()))?
    }
}

/// The resolver's refusal, wherever it sits in the error's causes.
fn refusal_in<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a RefusedAddress> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<RefusedAddress>() {
            return Some(refused);
        }
        current = error.source();
    }
    None
}

/// An error and its causes, for the log and the model.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table(Vec<IpAddr>);

    #[async_trait]
    impl Resolve for Table {
        async fn resolve(&self, _: &str) -> std::io::Result<Vec<IpAddr>> {
            Ok(self.0.clone())
        }
    }

    fn resolver(addresses: &[&str], policy: OutboundPolicy) -> GuardedResolver {
        GuardedResolver {
            inner: Arc::new(Table(
                addresses.iter().map(|a| a.parse().expect("ip")).collect(),
            )),
            policy,
        }
    }

    async fn resolve(resolver: &mut GuardedResolver) -> Result<Vec<SocketAddr>, String> {
        use tower_service::Service;
        let name: Name = "tools.example.com".parse().expect("a name");
        resolver
            .call(name)
            .await
            .map(Iterator::collect)
            .map_err(|error| error.to_string())
    }

    #[tokio::test]
    async fn every_address_of_a_name_is_checked() {
        let public = OutboundPolicy::PublicOnly;
        assert_eq!(
            resolve(&mut resolver(&["93.184.216.34"], public)).await,
            Ok(vec!["93.184.216.34:0".parse().expect("addr")])
        );
        // One internal address among public ones refuses the name (a rebinding attempt).
        let refused = resolve(&mut resolver(&["93.184.216.34", "169.254.169.254"], public))
            .await
            .expect_err("refused");
        assert!(refused.contains("169.254.169.254"), "{refused}");
        assert!(
            resolve(&mut resolver(&["127.0.0.1"], public))
                .await
                .is_err()
        );
        assert!(
            resolve(&mut resolver(&["127.0.0.1"], OutboundPolicy::LoopbackToo))
                .await
                .is_ok()
        );
        assert!(
            resolve(&mut resolver(&["10.0.0.1"], OutboundPolicy::LoopbackToo))
                .await
                .is_err()
        );
        assert!(resolve(&mut resolver(&[], public)).await.is_err());
    }
}
