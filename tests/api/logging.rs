//! Logging never blocks the server: a real child process whose stdout nobody reads.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{ws_url, ChildNode, Client, RedisServer, PATIENCE, SIGTERM};

/// Frames sent at most while waiting for the first dropped line: at `RUST_LOG=trace` every
/// frame writes dozens of lines, so the 64 KiB pipe and the writer's 16 384-line queue fill
/// within a few hundred.
const MAX_FRAMES: u64 = 10_000;

/// `GET /metrics`, bounded: a node whose runtime is blocked on stdout never answers.
async fn metrics(addr: std::net::SocketAddr) -> String {
    let client = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("/metrics answers while stdout is stalled");
    response.text().await.unwrap()
}

fn dropped_lines(exposition: &str) -> Option<u64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix("wsfleet_log_lines_dropped_total "))
        .map(|v| v.trim().parse().expect("a counter value"))
}

/// Bound on the whole test: where logging blocks the runtime, the node hangs (it never answers
/// `/readyz`, whose poll has no timeout of its own) and the test must fail, not hang.
const TEST_PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn with_stdout_stalled_the_node_serves_counts_dropped_lines_and_exits_in_time() {
    tokio::time::timeout(TEST_PATIENCE, stalled_stdout_scenario())
        .await
        .expect("the node hung with its stdout stalled");
}

async fn stalled_stdout_scenario() {
    let redis = RedisServer::start().await;
    let shutdown_timeout = Duration::from_secs(3);
    let mut node = ChildNode::start_with_stalled_stdout(
        &redis,
        "stalled",
        // No rate limit: the frames below go out back to back.
        &["--shutdown-timeout", "3s", "--rate-limit", "0"],
        "trace",
    )
    .await;

    // Traffic until the pipe and the writer's queue are full and lines are being dropped.
    let mut client = Client::connect(&ws_url(node.addr, Some("stalled-1"))).await;
    let mut sent = 0;
    let dropped = loop {
        for _ in 0..50 {
            sent += 1;
            client.send("x").await;
            assert_eq!(client.next_reply().await, json!({ "count": sent }));
        }
        match dropped_lines(&metrics(node.addr).await) {
            Some(n) if n > 0 => break n,
            _ => assert!(
                sent < MAX_FRAMES,
                "no log line counted as dropped after {sent} frames"
            ),
        }
    };
    assert!(dropped > 0);

    // The node goes on: probes, a new upgrade, counted frames on old and new sockets.
    let health = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap()
        .get(format!("http://{}/healthz", node.addr))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(health.status(), 200);
    let mut fresh = Client::connect(&ws_url(node.addr, Some("stalled-2"))).await;
    assert_eq!(fresh.welcome.count, 0);
    fresh.send("x").await;
    assert_eq!(fresh.next_reply().await, json!({ "count": 1 }));
    client.send("x").await;
    assert_eq!(client.next_reply().await, json!({ "count": sent + 1 }));

    // And it stops within SHUTDOWN_TIMEOUT, with stdout still stalled.
    let signalled = Instant::now();
    node.signal(SIGTERM);
    let status = tokio::time::timeout(shutdown_timeout + PATIENCE, node.child.wait())
        .await
        .expect("the node exits after SIGTERM")
        .unwrap();
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    assert!(
        took < shutdown_timeout,
        "exit took {took:?}, SHUTDOWN_TIMEOUT is {shutdown_timeout:?}"
    );
}
