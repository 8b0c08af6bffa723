//! `origin healthcheck`: one `GET /health` to the origin on this host, for container health
//! checks in an image without curl. Exit 0 when it answers 200 within the deadline.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// ECS runs the check every 30 s by default; a live origin answers in well under this.
const DEADLINE: Duration = Duration::from_secs(3);

/// Checks the origin listening on `listen_addr` (an unspecified address means this host).
pub async fn run(listen_addr: SocketAddr) -> ExitCode {
    let target = if listen_addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, listen_addr.port()))
    } else {
        listen_addr
    };
    match tokio::time::timeout(DEADLINE, status_of_health(target)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("origin healthcheck: {target} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("origin healthcheck: {target}: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("origin healthcheck: {target} did not answer within {DEADLINE:?}");
            ExitCode::FAILURE
        }
    }
}

/// The HTTP status of `GET /health` at `target`.
pub async fn status_of_health(target: SocketAddr) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(target).await?;
    stream
        .write_all(
            format!(
                "GET {} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
                shared::health::HEALTH_PATH
            )
            .as_bytes(),
        )
        .await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0_u8; 64];
    // The status line is all we need: "HTTP/1.1 200 OK".
    while !head.contains(&b'\n') {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::other(format!("not an HTTP answer: {:?}", line.lines().next()))
        })
}
