//! Plain-HTTP limits (SPEC "Robustness"): oversized request heads, half-written requests and
//! idle keep-alive connections, driven with raw writes on real sockets.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{get_json, spawn_app, Client, RedisServer, PATIENCE};

/// Short limits so the tests run in seconds; the idle timeout is longer than the header
/// timeout so that a test can tell which of the two closed a connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const LIMIT_ARGS: [&str; 4] = ["--http-header-timeout", "1s", "--http-idle-timeout", "3s"];

/// Timers fire a little early or late against the test's own clock; no more than this.
const SLACK: Duration = Duration::from_millis(150);

const HALF_A_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: wri";

fn get_healthz(extra_headers: &str) -> Vec<u8> {
    format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{extra_headers}\r\n").into_bytes()
}

/// Reads one response (head, and a body of `content-length` bytes) off a kept-alive connection;
/// returns its status line.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if received.len() >= end + 4 + length {
                    return head.lines().next().unwrap_or("").to_string();
                }
            }
            let n = stream.read(&mut buf).await.expect("reading the response");
            assert!(
                n > 0,
                "connection closed before a full response: {received:?}"
            );
            received.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("no response within PATIENCE")
}

/// Waits for the server to close `stream` (EOF or reset); returns the time since `since`.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("connection still open {PATIENCE:?} later"))
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connecting")
}

#[tokio::test]
async fn request_heads_over_16_kib_get_431_and_8_kib_ones_are_served() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;

    let mut stream = connect(app.addr).await;
    let junk = format!("X-Junk: {}\r\n", "a".repeat(64 * 1024));
    stream.write_all(&get_healthz(&junk)).await.unwrap();
    let status = read_response(&mut stream).await;
    assert!(status.contains(" 431 "), "64 KiB of headers: {status:?}");
    closed_after(&mut stream, Instant::now()).await;

    // Eight headers of 1 KiB each: a big but ordinary request.
    let headers: String = (0..8)
        .map(|i| format!("X-Big-{i}: {}\r\n", "b".repeat(1024)))
        .collect();
    let mut stream = connect(app.addr).await;
    stream.write_all(&get_healthz(&headers)).await.unwrap();
    let status = read_response(&mut stream).await;
    assert!(status.contains(" 200 "), "8 KiB of headers: {status:?}");
}

#[tokio::test]
async fn a_request_whose_headers_stop_half_way_is_closed_after_the_header_timeout() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &LIMIT_ARGS).await;

    let started = Instant::now();
    let mut half = connect(app.addr).await;
    half.write_all(HALF_A_REQUEST).await.unwrap();
    // A connection that sends nothing at all is held to the same deadline.
    let mut silent = connect(app.addr).await;

    for (what, stream) in [("half a request", &mut half), ("nothing", &mut silent)] {
        let elapsed = closed_after(stream, started).await;
        assert!(
            elapsed + SLACK >= HEADER_TIMEOUT && elapsed < IDLE_TIMEOUT,
            "{what}: closed after {elapsed:?}, expected about {HEADER_TIMEOUT:?}"
        );
    }
}

#[tokio::test]
async fn many_half_written_requests_are_all_closed_and_the_node_keeps_serving() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &LIMIT_ARGS).await;

    // More than the 190 that used up a node's descriptors before the limit existed.
    let mut streams = Vec::new();
    for _ in 0..250 {
        let mut stream = connect(app.addr).await;
        stream.write_all(HALF_A_REQUEST).await.unwrap();
        streams.push(stream);
    }
    let started = Instant::now();
    assert_eq!(get_json(&app.http("/healthz")).await.0, 200);
    for stream in &mut streams {
        closed_after(stream, started).await;
    }

    assert_eq!(get_json(&app.http("/healthz")).await.0, 200);
    let mut client = Client::connect(&app.ws_url(None)).await;
    client.send("x").await;
    assert_eq!(client.next_reply().await["count"], 1);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_but_a_quiet_websocket_stays(
) {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &LIMIT_ARGS).await;
    let mut socket = Client::connect(&app.ws_url(None)).await;
    let socket_opened = Instant::now();

    // Idle between requests for longer than the header timeout: still served. A sleep, since
    // the elapsed time is the test: there is nothing to poll for.
    let mut kept = connect(app.addr).await;
    kept.write_all(&get_healthz("")).await.unwrap();
    assert!(read_response(&mut kept).await.contains(" 200 "));
    tokio::time::sleep(HEADER_TIMEOUT + Duration::from_millis(500)).await;
    kept.write_all(&get_healthz("")).await.unwrap();
    assert!(read_response(&mut kept).await.contains(" 200 "));
    // Then left idle: closed by the idle timeout, not the header timeout.
    let answered = Instant::now();
    let elapsed = closed_after(&mut kept, answered).await;
    assert!(
        elapsed + SLACK >= IDLE_TIMEOUT,
        "idle keep-alive closed after {elapsed:?}, expected about {IDLE_TIMEOUT:?}"
    );

    // The next request begun and left half-written: the header timeout runs from its first
    // byte, not the idle timeout.
    let mut stalled = connect(app.addr).await;
    stalled.write_all(&get_healthz("")).await.unwrap();
    assert!(read_response(&mut stalled).await.contains(" 200 "));
    stalled.write_all(HALF_A_REQUEST).await.unwrap();
    let begun = Instant::now();
    let elapsed = closed_after(&mut stalled, begun).await;
    assert!(
        elapsed + SLACK >= HEADER_TIMEOUT && elapsed < IDLE_TIMEOUT - Duration::from_millis(500),
        "half-written second request closed after {elapsed:?}, expected about {HEADER_TIMEOUT:?}"
    );

    // The WebSocket has been silent longer than the idle timeout and still counts.
    assert!(socket_opened.elapsed() > IDLE_TIMEOUT + HEADER_TIMEOUT);
    socket.send("x").await;
    assert_eq!(socket.next_reply().await["count"], 1);
}
