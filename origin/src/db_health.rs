//! Whether the database is up, known at once by every request: a background probe
//! ([`probe`]) asks it `SELECT 1` every `DATABASE_PROBE_INTERVAL_MS`, on a connection of its own
//! (a pool busy with slow queries is not a database that is down), and flips the state. Down
//! means the probe got an error (refused, reset, not migrated) or no answer within
//! `DATABASE_PROBE_TIMEOUT_MS`; a database that answers slowly within it is up, and requests
//! wait for it as usual. While it is down, requests that need it are answered `503
//! database_unavailable` with `Retry-After` at once (`routes::require_database`) instead of each
//! waiting out the pool's acquire timeout, `/ready` says so, and the live calls' journals
//! (`crate::journal`) wait to write until it is back.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The database's state, shared by every request.
#[derive(Debug)]
pub struct DbHealth {
    up: watch::Sender<bool>,
    last_error: Mutex<Option<String>>,
}

impl Default for DbHealth {
    /// Up until a probe says otherwise: requests find out the slow way until then.
    fn default() -> Self {
        Self {
            up: watch::Sender::new(true),
            last_error: Mutex::new(None),
        }
    }
}

impl DbHealth {
    /// Whether the last probe found the database up.
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Why the last probe found it down.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a probe's result; logs a change.
    pub fn record(&self, result: Result<(), String>) {
        let up = result.is_ok();
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = result.err();
        let changed = self.up.send_if_modified(|current| {
            let changed = *current != up;
            *current = up;
            changed
        });
        if changed {
            if up {
                tracing::info!("the database is back");
            } else {
                tracing::warn!(error = ?self.last_error(), "the database is down");
            }
        }
    }

    /// Follows the database's state (`true`: up) as the probe finds it.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Resolves once the database is up (at once when it is).
    pub async fn until_up(&self) {
        let mut receiver = self.up.subscribe();
        // The sender lives as long as `self`, so this cannot fail while it is borrowed.
        let _ = receiver.wait_for(|up| *up).await;
    }
}

/// Probes the database every `interval` until `stop` fires, recording each result in `health`.
pub async fn probe(
    store: std::sync::Arc<dyn Store>,
    health: std::sync::Arc<DbHealth>,
    interval: Duration,
    timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        let result = match tokio::time::timeout(timeout, store.probe()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        health.record(result);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_database_returns() {
        let health = std::sync::Arc::new(DbHealth::default());
        health.record(Err("refused".into()));
        assert!(!health.is_up());
        assert_eq!(health.last_error().as_deref(), Some("refused"));
        let waiting = tokio::spawn({
            let health = std::sync::Arc::clone(&health);
            async move { health.until_up().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        health.record(Ok(()));
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .expect("no panic");
        assert!(health.is_up());
        assert_eq!(health.last_error(), None);
    }
}
