//! A real node on its own redis-server (the shared harness: tests/common, testkit/), scraped
//! once its labelled families have series.

use super::*;
use crate::common::{eventually_within, node_args, wait_ready};

// ------------------------------------------------------------------------------ the harness

/// Starts a node on `redis` (port 0), makes it use every labelled metric family, returns its
/// `/metrics` text, and drains it. Kills `redis` on the way (to record a Redis error).
///
/// prometheus-client prints a labelled family (`# TYPE` line included) only once it has a
/// series, so the node is made to close a socket, refuse an upgrade and see a Redis command
/// fail before the scrape that is compared. Unlabelled metrics are always printed.
pub(crate) async fn scrape_a_real_node(redis: &mut RedisServer) -> String {
    let args = node_args(redis, &[]);
    let config = <Config as clap::Parser>::try_parse_from(args).unwrap();
    let app = Application::build(config.into_settings().unwrap())
        .await
        .expect("the node builds");
    let addr: SocketAddr = app.address();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let status = |path: &'static str| async move {
        reqwest::get(format!("http://{addr}{path}"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    wait_ready(addr).await;

    // wsfleet_upgrades_rejected_total{reason="bad_session"}
    assert_eq!(status("/ws/chat/?session_uuid=not%20valid!").await, 400);
    // wsfleet_connections_closed_total{code="1000"}, and a message through the histogram.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/ws/chat/?session_uuid=observability-drift"
    ))
    .await
    .expect("the socket opens");
    let welcome = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a welcome in time");
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))), "{welcome:?}");
    ws.send(Message::text("hello")).await.unwrap();
    let count = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a count in time");
    assert!(matches!(count, Some(Ok(Message::Text(_)))), "{count:?}");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    // Until the server's close frame and the end of the stream.
    let _ = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    // wsfleet_redis_errors_total{operation="ping"}: /readyz pings a Redis that is gone.
    redis.kill();
    eventually_within(PATIENCE, "/readyz to notice Redis is gone", || async {
        (status("/readyz").await == 503).then_some(())
    })
    .await;

    // Wait for the series of those events (by label, so that a renamed family still gets
    // here and is reported by name below), but compare whatever is there after PATIENCE.
    let deadline = Instant::now() + PATIENCE;
    let text = loop {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("GET /metrics answers")
            .text()
            .await
            .expect("a text body");
        let has = |needle: &str| {
            text.lines()
                .any(|l| !l.starts_with('#') && l.contains(needle))
        };
        let complete = has("{code=\"1000\"}")
            && has("{reason=\"bad_session\"}")
            && text
                .lines()
                .any(|l| l.contains("_total{operation=\"ping\"}"));
        if complete || Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let _ = stop.send(());
    node.await
        .expect("the node task")
        .expect("the node drains cleanly");
    text
}
