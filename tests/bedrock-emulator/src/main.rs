//! `bedrock-emulator [--listen ADDR] [--ttft-ms N] [--inter-token-ms N]`: serves the emulator
//! until SIGTERM or Ctrl-C. Prints one JSON line `{"message":"bedrock-emulator listening",
//! "addr":"127.0.0.1:PORT"}` on stdout once it accepts connections.

use std::process::ExitCode;

use bedrock_emulator::{Emulator, ModelScript};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut script = ModelScript::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        let parsed = match (flag.as_str(), value) {
            ("--listen", Some(v)) => {
                listen = v;
                Ok(())
            }
            ("--ttft-ms", Some(v)) => v.parse().map(|n| script.ttft_ms = n).map_err(|_| v),
            ("--inter-token-ms", Some(v)) => {
                v.parse().map(|n| script.inter_token_ms = n).map_err(|_| v)
            }
            (other, _) => Err(other.to_owned()),
        };
        if let Err(bad) = parsed {
            eprintln!(
                "bedrock-emulator: bad argument {bad:?}\nusage: bedrock-emulator [--listen ADDR] [--ttft-ms N] [--inter-token-ms N]"
            );
            return ExitCode::from(2);
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let listener = match TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("bedrock-emulator: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| listen.clone(), |a| a.to_string());
    // The harness and the run command read this line to find the port.
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{}",
            serde_json::json!({"message": "bedrock-emulator listening", "addr": addr})
        );
    }
    match bedrock_emulator::serve(listener, Emulator::new(script), shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bedrock-emulator: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
