//! The origin binary: parse config, start logging, bind, serve until SIGTERM or Ctrl-C.
//! `origin healthcheck` asks a running origin for `/health` instead: the container image has no
//! shell or curl, so this is what a container health check runs.

use std::process::ExitCode;

use origin::config::{Config, LogFormat};
use origin::{AppState, serve};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_lookup(|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprint!("origin: {error}");
            return ExitCode::from(2);
        }
    };
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return origin::healthcheck::run(config.listen_addr).await;
    }
    let exporter = match config
        .traces
        .as_ref()
        .map(origin::telemetry::Exporter::start)
    {
        None => None,
        Some(Ok(exporter)) => Some(exporter),
        Some(Err(error)) => {
            eprintln!("origin: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config, exporter.as_ref());
    if let Some(traces) = &config.traces {
        tracing::info!(endpoint = %traces.endpoint, service = %traces.service_name, "exporting traces over OTLP");
    }
    let code = run(config).await;
    if let Some(exporter) = exporter {
        // The batch processor's flush blocks; keep it off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
    }
    code
}

async fn run(config: Config) -> ExitCode {
    let listen_addr = config.listen_addr;
    let shutdown = shutdown_signal();

    let state = match AppState::from_config(config).await {
        Ok(state) => state,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(listen_addr).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(addr = %listen_addr, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let local_addr = listener
        .local_addr()
        .map_or_else(|_| listen_addr.to_string(), |addr| addr.to_string());
    tracing::info!(addr = %local_addr, version = env!("CARGO_PKG_VERSION"), "origin listening");

    match serve(listener, state, shutdown).await {
        Ok(()) => {
            tracing::info!("origin stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Log lines to stdout as `RUST_LOG` filters them; the origin's spans to the OTLP exporter
/// (when configured) whatever `RUST_LOG` says.
fn init_logging(config: &Config, exporter: Option<&origin::telemetry::Exporter>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(lines)
        .with(exporter.map(|exporter| exporter.layer()))
        .init();
}

/// Resolves on SIGTERM (what ECS sends to stop a task) or Ctrl-C. The handlers are installed
/// when this is called, not when the future is first polled, so a signal that arrives while
/// the origin is still starting is not the default "die at once" but a graceful stop.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate) => {},
                () = wait(interrupt) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
