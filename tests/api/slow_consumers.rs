//! Slow consumers: a socket more than `SEND_QUEUE` fan-out frames behind is closed 1013 and
//! released at once, even while its writes are stuck behind a full TCP send buffer.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use fred::interfaces::HashesInterface;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;

use crate::helpers::{get_json, spawn_app, Client, RedisServer};

/// Broadcasts sent; each is a frame of ~16 KB. The stalled sockets' kernel buffers take a few
/// hundred of them (the server's send buffer grows to megabytes) before a write blocks; past
/// that, SEND_QUEUE (16 here) more frames release them, well before the last broadcast.
const BROADCASTS: usize = 800;

/// A socket that reads its welcome and never reads again, with a small receive buffer so
/// that the server's writes to it block soon.
async fn non_reader(addr: std::net::SocketAddr, url: &str) -> WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    // The kernel doubles it and applies its minimum; either way a few KB.
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let welcome = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    .expect("a welcome");
    assert!(matches!(welcome, Some(Ok(_))), "{welcome:?}");
    ws
}

#[tokio::test]
async fn sockets_that_stop_reading_are_released_past_send_queue_while_the_broadcasts_go_on() {
    let redis = RedisServer::start().await;
    // Pings every 60 s: a ping timeout (two intervals) cannot be what closes anyone here.
    // The smallest SEND_QUEUE, so that a loaded machine needs few broadcasts to show it.
    let app = spawn_app(
        &redis,
        &[
            "--ping-interval",
            "60s",
            "--send-queue",
            "16",
            "--broadcast-token",
            "t",
        ],
    )
    .await;
    let url = app.ws_url(None);
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(non_reader(app.addr, &url).await);
    }
    let mut reader = Client::connect(&url).await;
    let (_, status) = get_json(&app.http("/status")).await;
    assert_eq!(status["connections"]["local"], 4, "{status}");

    let reading = tokio::spawn(async move {
        let mut seen = 0;
        while seen < BROADCASTS {
            let frame = reader.next_json().await;
            if frame.get("broadcast").is_some() {
                assert_eq!(frame["broadcast"]["i"], seen, "in order, none skipped");
                seen += 1;
            }
        }
        reader
    });

    // Watches the node while the broadcasts go out: when do the local count and the
    // registry's connection hash come down to the one reading socket?
    let sent = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let sent = sent.clone();
        let status_url = app.http("/status");
        let conns_key = format!("wsfleet:instance:{}:conns", app.instance);
        let inspect = redis.client().await;
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let (_, status) = get_json(&status_url).await;
                let registered: u64 = inspect.hlen(&conns_key).await.unwrap();
                if status["connections"]["local"] == 1 && registered == 1 {
                    return Some((sent.load(Ordering::SeqCst), Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        })
    };

    let started = Instant::now();
    let http = reqwest::Client::new();
    let pad = "x".repeat(16_000);
    for i in 0..BROADCASTS {
        let response = http
            .post(app.http("/broadcast"))
            .bearer_auth("t")
            .json(&serde_json::json!({"message": {"i": i, "pad": pad}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        sent.store(i + 1, Ordering::SeqCst);
    }
    let posting = started.elapsed();
    let (released_at, when) = watcher
        .await
        .unwrap()
        .expect("the stalled sockets were released within 60 s");
    let after = when.saturating_duration_since(started);
    eprintln!(
        "{BROADCASTS} broadcasts in {posting:?}; the stalled sockets were released after \
         {released_at} of them, {after:?} in"
    );
    assert!(
        released_at < BROADCASTS,
        "the stalled sockets were still held after all {BROADCASTS} broadcasts ({posting:?})"
    );

    let _reader = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the reading client got every broadcast in time")
        .unwrap();
    let metrics = reqwest::get(app.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wsfleet_connections_active 1\n"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("wsfleet_connections_active")
                || l.starts_with("wsfleet_slow_consumer"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metrics.contains("wsfleet_slow_consumer_closes_total 3\n"),
        "three slow-consumer closes"
    );
    drop(stalled);
}
