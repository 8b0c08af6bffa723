//! The origin: an axum service on ECS Fargate behind the Cloudflare edge.
//!
//! `app` builds the router (tests drive it with `oneshot`, no socket); `serve` runs it on a
//! listener until `shutdown` resolves, then drains live requests for a bounded grace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

pub mod config;
pub mod error;
pub mod healthcheck;
pub mod request_id;
mod routes;

pub use config::Config;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The parsed configuration.
    pub config: Arc<Config>,
}

impl AppState {
    /// State for a configuration.
    pub fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

/// The origin's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(routes::health))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves; then stops accepting and lets
/// live requests finish for at most the configured grace before returning.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.shutdown_grace;
    let (fired, on_fired) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: draining live requests"
        );
        // The receiver only goes away when `serve` returns; nothing to do then.
        let _ = fired.send(());
    });
    tokio::select! {
        outcome = server => outcome,
        () = deadline_after(on_fired, grace) => {
            tracing::warn!("grace elapsed with requests still live; exiting anyway");
            Ok(())
        }
    }
}

/// Resolves `grace` after the shutdown signal; never, if the signal never fires.
async fn deadline_after(on_fired: tokio::sync::oneshot::Receiver<()>, grace: Duration) {
    match on_fired.await {
        Ok(()) => tokio::time::sleep(grace).await,
        Err(_) => std::future::pending().await,
    }
}
