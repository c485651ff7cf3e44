//! Crashes, Redis outages, drains under load, and bad configuration.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{
    eventually, get_json, refused_upgrade, spawn_app, ws_url, ChildNode, Client, RedisServer,
    SIGKILL, SIGTERM,
};

async fn fleet_connections(addr: std::net::SocketAddr) -> (u64, usize) {
    let (_, status) = get_json(&format!("http://{addr}/status")).await;
    let instances = status["instances"].as_array().map_or(0, Vec::len);
    (
        status["connections"]["fleet"].as_u64().unwrap_or(u64::MAX),
        instances,
    )
}

#[tokio::test]
async fn a_sigkilled_instance_leaves_the_fleet_count_within_three_lease_periods() {
    let redis = RedisServer::start().await;
    let lease = ["--lease-period", "300ms"];
    let survivor = ChildNode::start(&redis, "survivor", &lease).await;
    let victim = ChildNode::start(&redis, "victim", &lease).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(&ws_url(victim.addr, None)).await);
    }
    eventually(
        "the survivor to see 3 connections on 2 instances",
        || async { (fleet_connections(survivor.addr).await == (3, 2)).then_some(()) },
    )
    .await;

    victim.signal(SIGKILL);
    let killed = std::time::Instant::now();
    eventually("the victim to be reaped", || async {
        (fleet_connections(survivor.addr).await == (0, 1)).then_some(())
    })
    .await;
    // 3 lease periods is the promise; the survivor's own lease tick adds up to one more
    // before its cached count refreshes.
    assert!(
        killed.elapsed() <= Duration::from_millis(4 * 300 + 500),
        "took {:?}",
        killed.elapsed()
    );
}

#[tokio::test]
async fn while_redis_is_down_sockets_stay_open_messages_are_not_counted_and_upgrades_get_503() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut client = Client::connect(&app.ws_url(Some("outage"))).await;
    client.send("x").await;
    assert_eq!(client.next_reply().await, json!({ "count": 1 }));

    redis.save_and_kill().await;
    client.send("lost?").await;
    assert_eq!(
        client.next_reply().await,
        json!({"error": "unavailable", "retry": true})
    );
    let (status, body) = refused_upgrade(&app.ws_url(None)).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = eventually("readyz to turn 503", || async {
        let (status, body) = get_json(&app.http("/readyz")).await;
        (status == 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["reason"], "redis unavailable");
    assert_eq!(get_json(&app.http("/healthz")).await.0, 200);

    redis.restart().await;
    app.wait_ready().await;
    // The uncounted message is resent and counted: no gap, no repeat.
    client.send("resent").await;
    assert_eq!(client.next_reply().await, json!({ "count": 2 }));
    // The subscription came back: a broadcast published now is delivered.
    let second = spawn_app(&redis, &["--broadcast-token", "t"]).await;
    let response = reqwest::Client::new()
        .post(second.http("/broadcast"))
        .bearer_auth("t")
        .body(r#"{"message":"after the outage"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let frame = loop {
        let frame = client.next_json().await;
        if frame.get("broadcast").is_some() {
            break frame;
        }
    };
    assert_eq!(frame["broadcast"], "after the outage");
}

#[tokio::test]
async fn after_redis_loses_its_data_the_registry_is_rebuilt() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let _clients = [
        Client::connect(&app.ws_url(None)).await,
        Client::connect(&app.ws_url(None)).await,
    ];
    eventually("2 fleet connections", || async {
        (fleet_connections(app.addr).await == (2, 1)).then_some(())
    })
    .await;
    redis.kill();
    redis.forget_saved_data();
    redis.restart().await;
    eventually("the registry to be rebuilt", || async {
        (fleet_connections(app.addr).await == (2, 1)).then_some(())
    })
    .await;
    let inspect = redis.client().await;
    let conns: u64 = fred::interfaces::HashesInterface::hlen(
        &inspect,
        format!("wsfleet:instance:{}:conns", app.instance),
    )
    .await
    .unwrap();
    assert_eq!(conns, 2);
}

/// A client that sends one message at a time and, when its node drains, resumes on the
/// other node and resends what was not acknowledged. It signals `warmed_up` after 10 replies
/// and stops once it has resumed and has at least `messages` replies. Returns every count it
/// was given.
async fn resuming_client(
    session: String,
    nodes: [std::net::SocketAddr; 2],
    messages: u64,
    warmed_up: tokio::sync::mpsc::Sender<()>,
) -> Vec<u64> {
    let mut counts = Vec::new();
    let mut node = 0;
    let mut resumed = false;
    let mut client = Client::connect(&ws_url(nodes[node], Some(&session))).await;
    let mut acknowledged = client.welcome.count;
    while !(resumed && acknowledged >= messages) {
        client.send("tick").await;
        let reply: Value = loop {
            let frame = client.next_json().await;
            if frame.get("ts").is_none() {
                break frame;
            }
        };
        if let Some(count) = reply["count"].as_u64() {
            counts.push(count);
            acknowledged = count;
            if counts.len() == 10 {
                warmed_up.send(()).await.unwrap();
            }
        } else if reply["bye"] == true {
            assert_eq!(reply["total"], acknowledged, "{session}: bye total");
            let _ = client.expect_close().await;
            node = 1 - node;
            resumed = true;
            client = Client::connect(&ws_url(nodes[node], Some(&session))).await;
            assert_eq!(
                client.welcome.count, acknowledged,
                "{session}: resumed count"
            );
        } else {
            panic!("{session}: unexpected frame {reply}");
        }
    }
    counts
}

#[tokio::test]
async fn clients_resuming_during_a_drain_see_every_count_once_in_order() {
    let redis = RedisServer::start().await;
    let flags = ["--drain-spread", "500ms", "--rate-limit", "0"];
    let draining = ChildNode::start(&redis, "old", &flags).await;
    let staying = ChildNode::start(&redis, "new", &flags).await;
    let nodes = [draining.addr, staying.addr];
    let clients = 20;
    let (warmed_up, mut warm) = tokio::sync::mpsc::channel(clients);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(resuming_client(
                format!("inv-{i}"),
                nodes,
                100,
                warmed_up.clone(),
            ))
        })
        .collect();
    for _ in 0..clients {
        warm.recv().await.unwrap();
    }
    // Every client is mid-stream on the draining node now.
    draining.signal(SIGTERM);
    for task in tasks {
        let counts = task.await.unwrap();
        let expected: Vec<u64> = (1..=*counts.last().unwrap()).collect();
        assert_eq!(counts, expected, "a gap or a repeat");
    }
}

#[test]
fn bad_configuration_fails_before_binding_with_one_clear_line() {
    let port = crate::helpers::free_port();
    let cases: &[(&str, &str, &str)] = &[
        ("PING_INTERVAL", "soon", "not a duration"),
        ("COLOR", "purple", "purple"),
        ("REDIS_URL", "http://localhost", "REDIS_URL"),
        ("MAX_MESSAGE_BYTES", "-5", "MAX_MESSAGE_BYTES"),
        ("DRAIN_SPREAD", "20s", "DRAIN_SPREAD"),
        ("LOG_FORMAT", "xml", "xml"),
    ];
    for (name, value, needle) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsfleet"))
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{name}={value}: {stderr}");
        assert!(stderr.contains(needle), "{name}={value}: {stderr}");
    }
}

#[tokio::test]
async fn a_registry_partly_rebuilt_by_new_connections_is_repaired_to_the_full_count() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--lease-period", "300ms"]).await;
    let mut clients = vec![
        Client::connect(&app.ws_url(None)).await,
        Client::connect(&app.ws_url(None)).await,
    ];
    eventually("2 fleet connections", || async {
        (fleet_connections(app.addr).await == (2, 1)).then_some(())
    })
    .await;
    // Redis loses everything, and a new socket re-creates the connection hash before the
    // next renewal: the hash exists again, but with one entry instead of three.
    assert_eq!(redis.command("FLUSHALL").await, "OK");
    clients.push(Client::connect(&app.ws_url(None)).await);
    eventually("the registry to hold all 3 connections", || async {
        (fleet_connections(app.addr).await == (3, 1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_message_answered_unavailable_that_redis_ran_late_is_not_counted_twice() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--redis-timeout", "300ms"]).await;
    let mut client = Client::connect(&app.ws_url(Some("stalled"))).await;
    client.send("a").await;
    assert_eq!(client.next_reply().await, json!({ "count": 1 }));

    // Redis holds write commands for 1.5 s: the increment times out on our side but stays
    // queued in Redis, which runs it when the pause ends.
    let inspect = redis.client().await;
    let _: String = fred::interfaces::ClientLike::custom(
        &inspect,
        fred::types::CustomCommand::new_static("CLIENT", None, false),
        vec!["PAUSE", "1500", "WRITE"],
    )
    .await
    .unwrap();
    let asked = std::time::Instant::now();
    client.send("b").await;
    assert_eq!(
        client.next_reply().await,
        json!({"error": "unavailable", "retry": true})
    );
    assert!(
        asked.elapsed() < Duration::from_millis(1200),
        "bounded by --redis-timeout"
    );

    // The pause ends and the queued increment runs (a read is not held by a WRITE pause);
    // then resend as the protocol asks.
    eventually("the stalled attempt to run in Redis", || async {
        let stored: Option<String> =
            fred::interfaces::HashesInterface::hget(&inspect, "wsfleet:session:stalled", "n")
                .await
                .ok()?;
        (stored.as_deref() == Some("2")).then_some(())
    })
    .await;
    client.send("b again").await;
    assert_eq!(client.next_reply().await, json!({ "count": 2 }), "no gap");
    client.send("c").await;
    assert_eq!(client.next_reply().await, json!({ "count": 3 }));
}
