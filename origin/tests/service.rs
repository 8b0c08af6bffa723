//! The origin as a client sees it: through the router without a socket, and through `serve`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use origin::{AppState, Config, app, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

fn state() -> AppState {
    let env: HashMap<&str, &str> = HashMap::from([("SHUTDOWN_GRACE_SECS", "1")]);
    AppState::new(
        Config::from_lookup(|key| env.get(key).map(|v| (*v).to_owned())).expect("valid config"),
    )
}

async fn call(request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = app(state())
        .oneshot(request)
        .await
        .expect("router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).expect("every answer is JSON");
    (status, headers, json)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn health_names_the_service_and_version() {
    let (status, headers, body) = call(get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["service"], "origin");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["status"], "ok");
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn unknown_route_is_a_json_404_with_the_edge_request_id() {
    let request = Request::get("/nope")
        .header("x-request-id", "edge-abc-123")
        .body(Body::empty())
        .expect("request");
    let (status, headers, body) = call(request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["request_id"], "edge-abc-123");
    assert_eq!(headers["x-request-id"], "edge-abc-123");
}

#[tokio::test]
async fn a_malformed_request_id_is_replaced_not_echoed() {
    let request = Request::get("/nope")
        .header("x-request-id", "<script>alert(1)</script>")
        .body(Body::empty())
        .expect("request");
    let (_, headers, body) = call(request).await;
    let id = body["error"]["request_id"].as_str().expect("id");
    assert_ne!(id, "<script>alert(1)</script>");
    assert_eq!(
        uuid::Uuid::parse_str(id).map(|u| u.get_version_num()),
        Ok(4)
    );
    assert_eq!(headers["x-request-id"], id);
}

#[tokio::test]
async fn health_rejects_other_methods() {
    let request = Request::post("/health")
        .body(Body::empty())
        .expect("request");
    let (status, _, body) = call(request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

/// One HTTP/1.1 exchange over a fresh connection.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: origin\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn serve_answers_on_a_socket_and_stops_on_the_shutdown_signal() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("addr");
    let (stop, on_stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state(), async {
        let _ = on_stop.await;
    }));

    let answer = raw_get(addr, "/health").await.expect("served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""service":"origin""#), "{answer}");

    stop.send(()).expect("server still running");
    let outcome = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns promptly after the signal")
        .expect("task did not panic");
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        raw_get(addr, "/health").await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_even_with_a_client_holding_a_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("addr");
    let (stop, on_stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state(), async {
        let _ = on_stop.await;
    }));

    // A client that sends half a request and then goes quiet keeps its connection live.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nhost: origin\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = std::time::Instant::now();
    stop.send(()).expect("server still running");
    let outcome = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns within the 1 s grace")
        .expect("task did not panic");
    assert!(outcome.is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn healthcheck_reads_the_status_of_a_live_origin_and_fails_on_a_dead_one() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("addr");
    let (stop, on_stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state(), async {
        let _ = on_stop.await;
    }));
    assert_eq!(
        origin::healthcheck::status_of_health(addr)
            .await
            .expect("answers"),
        200
    );
    stop.send(()).expect("running");
    server.await.expect("no panic").expect("clean stop");
    assert!(origin::healthcheck::status_of_health(addr).await.is_err());
}
