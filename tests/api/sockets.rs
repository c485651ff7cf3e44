//! Refused upgrades and every close code, with its reason.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::{
    protocol::frame::{coding::Data, coding::OpCode, Frame},
    Message,
};

use crate::helpers::{eventually, get_json, refused_upgrade, spawn_app, Client, RedisServer};

#[tokio::test]
async fn malformed_session_ids_are_refused_with_400_and_a_json_error() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let long = "x".repeat(65);
    let cases = [
        ("a%20b", "space"),
        (long.as_str(), "65 characters"),
        ("a%2Fb", "slash"),
        ("%C3%BC", "non-ASCII"),
        ("abc;def", "semicolon"),
    ];
    for (id, what) in cases {
        let (status, body) = refused_upgrade(&app.ws_url(Some(id))).await;
        assert_eq!(status, 400, "{what}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("session_uuid"), "{what}: {body}");
    }
}

#[tokio::test]
async fn a_plain_http_request_to_the_socket_route_is_a_json_400() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let response = reqwest::get(app.http("/ws/chat/")).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("WebSocket"),
        "{body}"
    );
}

#[tokio::test]
async fn each_violation_closes_the_socket_with_its_code_and_a_reason() {
    let redis = RedisServer::start().await;
    let app = spawn_app(
        &redis,
        &["--max-message-bytes", "1024", "--rate-limit", "20"],
    )
    .await;

    // (what, frames to send, expected close code)
    let invalid_utf8 = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    let cases: Vec<(&str, Vec<Message>, u16)> = vec![
        ("binary frame", vec![Message::binary(vec![1, 2, 3])], 1003),
        (
            "frame over MAX_MESSAGE_BYTES",
            vec![Message::text("x".repeat(1025))],
            1009,
        ),
        ("invalid UTF-8", vec![Message::Frame(invalid_utf8)], 1007),
        (
            "rate limit",
            (0..60).map(|_| Message::text("spam")).collect(),
            1008,
        ),
    ];
    for (what, frames, code) in cases {
        let mut client = Client::connect(&app.ws_url(None)).await;
        for frame in frames {
            if client.ws.send(frame).await.is_err() {
                break; // the server already closed
            }
        }
        let (got, reason) = client.expect_close().await;
        assert_eq!(got, code, "{what}: reason {reason:?}");
        assert!(!reason.is_empty(), "{what}: the close carries no reason");
    }

    // A frame of exactly the limit is fine.
    let mut client = Client::connect(&app.ws_url(None)).await;
    client.send(&"x".repeat(1024)).await;
    assert_eq!(client.next_reply().await["count"], 1);
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_after_two_intervals() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--ping-interval", "200ms"]).await;
    let mut silent = Client::connect(&app.ws_url(None)).await;
    let mut lively = Client::connect(&app.ws_url(None)).await;
    // Not reading means not answering pings (tungstenite answers while reading).
    // Meanwhile the lively client keeps reading and answering, until the silent one is gone.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let lively_task = tokio::spawn(async move {
        while stopped.try_recv().is_err() {
            lively.send("x").await;
            let _ = lively.next_reply().await;
            // Pacing, not waiting for anything: a frame every 50 ms is a client in use.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lively
    });
    // The server drops the silent socket without waiting for its close reply: watch for that
    // on /status rather than reading the socket, which would answer the pings.
    eventually("the silent socket to be dropped", || async {
        let (_, status) = get_json(&app.http("/status")).await;
        (status["connections"]["local"] == 1).then_some(())
    })
    .await;
    let (code, reason) = silent.expect_close().await;
    assert_eq!(code, 1008);
    assert_eq!(reason, "ping timeout");

    let _ = stop.send(());
    let mut lively = lively_task.await.unwrap();
    lively.send("still here").await;
    assert!(lively.next_reply().await["count"].is_u64());
}

#[tokio::test]
async fn upgrades_past_max_connections_get_503_and_the_node_stays_healthy() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--max-connections", "2"]).await;
    let _a = Client::connect(&app.ws_url(None)).await;
    let _b = Client::connect(&app.ws_url(None)).await;
    let (status, body) = refused_upgrade(&app.ws_url(None)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "at capacity");
    drop(_a);
    // The slot frees once the server sees the socket gone.
    eventually("a freed slot", || async {
        tokio_tungstenite::connect_async(app.ws_url(None))
            .await
            .ok()
            .map(drop)
    })
    .await;
    let (status, _) = crate::helpers::get_json(&app.http("/healthz")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn origins_outside_the_allowlist_are_refused_with_403() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--allowed-origins", "https://good.example"]).await;
    let request = |origin: &str| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                app.ws_url(None),
            )
            .unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    assert!(
        tokio_tungstenite::connect_async(request("https://good.example"))
            .await
            .is_ok()
    );
    match tokio_tungstenite::connect_async(request("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    // Non-browser clients send no Origin and are allowed.
    let _ = Client::connect(&app.ws_url(None)).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_without_slowing_the_others() {
    let redis = RedisServer::start().await;
    // The silent client is cut off as a slow consumer: 16 frames behind (the smallest
    // SEND_QUEUE) once its socket's buffers are full. Pings every 5 s: the reading client's
    // pong waits behind the megabytes of broadcasts queued before the ping on its socket, and
    // on a busy machine (CI's two cores, every test at once) 1 s pings cut off a client that
    // reads as fast as it can.
    let app = spawn_app(
        &redis,
        &[
            "--ping-interval",
            "5s",
            "--send-queue",
            "16",
            "--broadcast-token",
            "t",
        ],
    )
    .await;
    let _slow = Client::connect(&app.ws_url(None)).await; // never reads again
    let mut fast = Client::connect(&app.ws_url(None)).await;
    let total = 600;
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < total {
            let frame = fast.next_json().await;
            if frame.get("broadcast").is_some() {
                assert_eq!(frame["broadcast"]["i"], seen, "in order, none skipped");
                seen += 1;
            }
        }
        (seen, fast)
    });
    let http = reqwest::Client::new();
    let pad = "x".repeat(30_000);
    for i in 0..total {
        let response = http
            .post(app.http("/broadcast"))
            .bearer_auth("t")
            .json(&serde_json::json!({"message": {"i": i, "pad": pad}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let (seen, fast) = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the reading client got every broadcast in time")
        .unwrap();
    assert_eq!(seen, total);
    // The reading client goes on reading (answering pings) while the test waits: a client
    // that stopped here would be cut off for silence too, and the count checked below would
    // pass through 1 to 0 between two looks (the test failed about half the time so).
    let mut fast = fast;
    let keep_reading = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = fast.ws.next().await {}
    });
    eventually("the slow client to be cut off", || async {
        let text = reqwest::get(app.http("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("wsfleet_connections_active 1\n")
            .then_some(())
    })
    .await;
    assert!(
        !keep_reading.is_finished(),
        "the reading client is still connected"
    );
    keep_reading.abort();
}

#[tokio::test]
async fn a_client_close_is_answered_with_the_same_code_completing_the_handshake() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};

    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut client = Client::connect(&app.ws_url(None)).await;
    client
        .ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .await
        .unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), client.ws.next())
        .await
        .expect("the server answers the close");
    match echo {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the close echo, got {other:?}"),
    }
}
