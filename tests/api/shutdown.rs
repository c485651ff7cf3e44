//! SIGTERM drains a real child process exactly as documented.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::json;

use crate::helpers::{
    eventually, get_json, refused_upgrade, ws_url, ChildNode, Client, RedisServer, SIGTERM,
};

#[tokio::test]
async fn sigterm_turns_readiness_off_says_bye_with_the_total_closes_1001_and_exits_0_in_time() {
    let redis = RedisServer::start().await;
    let mut node = ChildNode::start(
        &redis,
        "drainer",
        &["--shutdown-timeout", "4s", "--drain-spread", "1s"],
    )
    .await;
    let mut clients = Vec::new();
    for (i, sends) in [1u64, 3, 5].into_iter().enumerate() {
        let mut client = Client::connect(&ws_url(node.addr, Some(&format!("drain-{i}")))).await;
        for expected in 1..=sends {
            client.send("x").await;
            assert_eq!(client.next_reply().await, json!({ "count": expected }));
        }
        clients.push((client, sends));
    }

    let signalled = Instant::now();
    node.signal(SIGTERM);
    // Readiness fails at once, while the process still answers HTTP; upgrades are refused.
    let (status, body) = crate::helpers::eventually("readyz to turn 503", || async {
        let (status, body) = get_json(&format!("http://{}/readyz", node.addr)).await;
        (status == 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["reason"], "draining");
    assert!(
        signalled.elapsed() < Duration::from_millis(900),
        "readiness took {:?}",
        signalled.elapsed()
    );
    let (status, _) = refused_upgrade(&ws_url(node.addr, None)).await;
    assert_eq!(status, 503);

    for (client, sends) in &mut clients {
        let bye = client.next_reply().await;
        assert_eq!(bye["bye"], true, "{bye}");
        assert_eq!(bye["total"], *sends, "{bye}");
        let hint = bye["reconnect_after_ms"]
            .as_u64()
            .expect("a reconnect hint");
        assert!(hint <= 10_000, "{bye}");
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 1001);
        assert!(!reason.is_empty());
    }

    let status = tokio::time::timeout(Duration::from_secs(6), node.child.wait())
        .await
        .expect("the process exits within SHUTDOWN_TIMEOUT")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "took {:?}",
        signalled.elapsed()
    );

    let log = node.log_text();
    assert!(
        log.contains("global=0 draining=0"),
        "drain progress logged:\n{log}"
    );
    // The registry forgot the instance and its connections.
    let inspect = redis.client().await;
    let left: Vec<String> = fred::interfaces::SortedSetsInterface::zrange(
        &inspect,
        "wsfleet:instances",
        0,
        -1,
        None,
        false,
        None,
        false,
    )
    .await
    .unwrap();
    assert!(left.is_empty(), "registry still lists {left:?}");
}

#[tokio::test]
async fn sigint_drains_too_and_an_idle_node_exits_at_once() {
    let redis = RedisServer::start().await;
    let mut node = ChildNode::start(&redis, "idle", &[]).await;
    let started = Instant::now();
    node.signal(2);
    let status = tokio::time::timeout(Duration::from_secs(6), node.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_in_process_node_stopped_by_its_shutdown_future_drains_and_returns_ok() {
    let redis = RedisServer::start().await;
    let app = crate::helpers::spawn_app(&redis, &[]).await;
    let mut client = Client::connect(&app.ws_url(Some("in-process"))).await;
    client.send("x").await;
    assert_eq!(client.next_reply().await, json!({ "count": 1 }));
    let stopping = tokio::spawn(app.stop());
    let bye = client.next_reply().await;
    assert_eq!(bye["total"], 1, "{bye}");
    assert_eq!(client.expect_close().await.0, 1001);
    stopping
        .await
        .unwrap()
        .expect("run_until_stopped returns Ok");
}

#[tokio::test]
async fn sigterm_during_a_burst_of_connects_drains_every_socket_it_accepted() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let redis = RedisServer::start().await;
    let mut node = ChildNode::start(&redis, "burst", &["--drain-spread", "300ms"]).await;
    let url = ws_url(node.addr, None);
    // 40 connectors churn through short-lived sockets (open, wait 50 ms, close) for up to 3 s
    // while SIGTERM lands. A socket the node accepted must either be closed by its client or
    // end with bye + 1001; none may be cut off silently.
    let churned = Arc::new(AtomicU32::new(0));
    let connectors: Vec<_> = (0..40)
        .map(|_| {
            let url = url.clone();
            let churned = churned.clone();
            tokio::spawn(async move {
                let (mut accepted, mut drained, mut cut) = (0u32, 0u32, 0u32);
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
                        break; // refused (503) or the port is closed: the node is going away
                    };
                    accepted += 1;
                    churned.fetch_add(1, Ordering::Relaxed);
                    let mut saw_bye = false;
                    let mut ended = None;
                    let _ = tokio::time::timeout(Duration::from_millis(50), async {
                        while let Some(message) = ws.next().await {
                            match message {
                                Ok(Message::Text(t)) if t.contains("\"bye\"") => saw_bye = true,
                                Ok(Message::Close(frame)) => {
                                    ended = Some(frame.map_or(1005, |f| u16::from(f.code)));
                                    return;
                                }
                                Ok(_) => {}
                                Err(_) => {
                                    ended = Some(1006);
                                    return;
                                }
                            }
                        }
                        ended = Some(1006);
                    })
                    .await;
                    if saw_bye && ended.is_none() {
                        // The bye came; the close follows within the drain.
                        ended = tokio::time::timeout(Duration::from_secs(5), async {
                            while let Some(Ok(m)) = ws.next().await {
                                if let Message::Close(f) = m {
                                    return Some(f.map_or(1005, |f| u16::from(f.code)));
                                }
                            }
                            Some(1006)
                        })
                        .await
                        .unwrap_or(None);
                    }
                    match ended {
                        None => {
                            let _ = ws.close(None).await;
                        }
                        Some(1001) if saw_bye => drained += 1,
                        Some(_) => cut += 1,
                    }
                }
                (accepted, drained, cut)
            })
        })
        .collect();
    // A few sockets that are surely open when the drain comes: the churning ones each live
    // only 50 ms, and on a loaded machine the drain's bye may miss all of their windows.
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut client = Client::connect(&url).await;
        client.send("x").await;
        assert_eq!(client.next_reply().await, json!({ "count": 1 }));
        held.push(client);
    }
    // SIGTERM lands in the middle of the churn, once it is well under way: every connector
    // has had about two sockets accepted.
    eventually(
        "the churning connectors to get 80 sockets accepted",
        || async { (churned.load(Ordering::Relaxed) >= 80).then_some(()) },
    )
    .await;
    node.signal(SIGTERM);
    for client in &mut held {
        let bye = client.next_reply().await;
        assert_eq!(bye["bye"], true, "{bye}");
        assert_eq!(bye["total"], 1, "{bye}");
        assert_eq!(client.expect_close().await.0, 1001);
    }
    let (mut accepted, mut drained, mut cut) = (0, 0, 0);
    for connector in connectors {
        let (a, d, c) = connector.await.unwrap();
        accepted += a;
        drained += d;
        cut += c;
    }
    eprintln!("{accepted} churning sockets accepted, {drained} of them drained with bye + 1001");
    assert_eq!(
        cut, 0,
        "{cut} of {accepted} sockets ended without bye + 1001"
    );
    let status = tokio::time::timeout(Duration::from_secs(6), node.child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success());
}
