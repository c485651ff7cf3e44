//! The counter's promise under faults (SPEC "Robustness"): one writer per session, counts
//! that never go back, an open socket's session never expires. Each test breaks the promise's
//! precondition on purpose: a held Redis link, Redis restarted from an older dump or empty,
//! a socket idle past the session TTL.

use std::time::Duration;

use fred::interfaces::KeysInterface;
use serde_json::{json, Value};

use crate::{
    helpers::{eventually, get_json, spawn_app, Client, RedisServer},
    relay::Relay,
};

/// Sends `text` until it is counted (Redis may still be coming back): the count.
async fn count_when_redis_answers(client: &mut Client, text: &str) -> u64 {
    for _ in 0..100 {
        client.send(text).await;
        let reply = client.next_reply().await;
        if let Some(count) = reply["count"].as_u64() {
            return count;
        }
        assert_eq!(reply, json!({"error": "unavailable", "retry": true}));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never counted: Redis did not come back");
}

async fn count_n(client: &mut Client, n: usize) -> Vec<u64> {
    let mut counts = Vec::new();
    for _ in 0..n {
        client.send("x").await;
        counts.push(client.next_reply().await["count"].as_u64().unwrap());
    }
    counts
}

#[tokio::test]
async fn a_late_increment_of_an_older_socket_is_refused_and_that_socket_is_closed() {
    let redis = RedisServer::start().await;
    let relay = Relay::start(redis.port).await;
    let a = spawn_app(&redis, &["--redis-url", &relay.url()]).await;
    let b = spawn_app(&redis, &[]).await;

    let mut on_a = Client::connect(&a.ws_url(Some("fenced"))).await;
    assert_eq!(count_n(&mut on_a, 3).await, [1, 2, 3]);

    // A's link to Redis holds its traffic: the increment is written but arrives late.
    relay.hold();
    on_a.send("f").await;
    assert_eq!(
        on_a.next_reply().await,
        json!({"error": "unavailable", "retry": true})
    );
    // The client resumes on B and resends, as docs/PROTOCOL.md tells it to.
    let mut on_b = Client::connect(&b.ws_url(Some("fenced"))).await;
    assert_eq!(on_b.welcome.count, 3);
    assert_eq!(count_n(&mut on_b, 1).await, [4]);

    // A's increment now reaches Redis, in order, before A's readiness ping comes back.
    relay.release();
    a.wait_ready().await;
    on_b.send("g").await;
    assert_eq!(
        on_b.next_reply().await,
        json!({"count": 5}),
        "the late increment of the older socket was refused: no gap"
    );

    // The older socket is fenced: its next frame is not counted and it is closed.
    on_a.send("h").await;
    assert_eq!(
        on_a.expect_close().await,
        (1008, "session resumed elsewhere".to_string())
    );
    assert_eq!(count_n(&mut on_b, 1).await, [6]);
}

#[tokio::test]
async fn a_newer_socket_of_a_session_fences_the_older_one_on_the_same_instance() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut first = Client::connect(&app.ws_url(Some("twice"))).await;
    assert_eq!(count_n(&mut first, 2).await, [1, 2]);
    let mut second = Client::connect(&app.ws_url(Some("twice"))).await;
    assert_eq!(second.welcome.count, 2);
    first.send("late").await;
    assert_eq!(
        first.expect_close().await,
        (1008, "session resumed elsewhere".to_string())
    );
    assert_eq!(count_n(&mut second, 2).await, [3, 4]);
}

#[tokio::test]
async fn after_redis_restarts_from_an_older_dump_an_open_socket_counts_on_above_what_it_saw() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut client = Client::connect(&app.ws_url(Some("rolled-back"))).await;
    assert_eq!(count_n(&mut client, 3).await, [1, 2, 3]);
    assert_eq!(redis.command("SAVE").await, "OK");
    assert_eq!(count_n(&mut client, 3).await, [4, 5, 6]);

    // The dump holds the counter at 3.
    redis.kill();
    redis.restart().await;
    assert_eq!(count_when_redis_answers(&mut client, "x").await, 7);
    assert_eq!(count_n(&mut client, 2).await, [8, 9]);
}

#[tokio::test]
async fn after_redis_loses_its_data_an_open_socket_counts_on_above_what_it_saw() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut client = Client::connect(&app.ws_url(Some("lost"))).await;
    assert_eq!(count_n(&mut client, 3).await, [1, 2, 3]);
    redis.kill();
    redis.forget_saved_data();
    redis.restart().await;
    assert_eq!(count_when_redis_answers(&mut client, "x").await, 4);
    assert_eq!(count_n(&mut client, 1).await, [5]);
}

#[tokio::test]
async fn an_open_socket_keeps_its_session_alive_however_long_it_is_idle() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--session-ttl", "1s"]).await;
    let mut client = Client::connect(&app.ws_url(Some("idle"))).await;
    assert_eq!(count_n(&mut client, 3).await, [1, 2, 3]);
    // Idle for over two TTLs: the time is the test, there is nothing to poll for.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let inspect = redis.client().await;
    let exists: i64 = inspect.exists("wsfleet:session:idle").await.unwrap();
    assert_eq!(
        exists, 1,
        "the session outlived its TTL while its socket was open"
    );
    assert_eq!(count_n(&mut client, 1).await, [4]);

    // Closed, it expires as before.
    drop(client);
    eventually("the session of a closed socket to expire", || {
        let inspect = inspect.clone();
        async move {
            let exists: i64 = inspect.exists("wsfleet:session:idle").await.ok()?;
            (exists == 0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_resuming_client_passing_last_count_continues_from_it_and_is_told_so() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let url = |last: u64| format!("{}&last_count={last}", app.ws_url(Some("repair")));

    // Redis knows nothing of the session (lost): the counter is raised to what the client saw.
    let mut client = Client::connect(&url(7)).await;
    assert_eq!(
        (
            client.welcome.count,
            client.welcome.resumed,
            client.welcome.repaired
        ),
        (7, false, true)
    );
    assert_eq!(count_n(&mut client, 1).await, [8]);
    drop(client);

    // Redis is ahead of last_count (the last reply was lost): nothing to repair.
    let mut client = Client::connect(&url(5)).await;
    assert_eq!(
        (
            client.welcome.count,
            client.welcome.resumed,
            client.welcome.repaired
        ),
        (8, true, false)
    );
    assert_eq!(count_n(&mut client, 1).await, [9]);
}

#[tokio::test]
async fn the_welcome_says_repaired_only_when_it_is_true() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let url = app.ws_url(Some("plain"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let first = futures_util::StreamExt::next(&mut ws)
        .await
        .unwrap()
        .unwrap();
    let welcome: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(
        welcome.as_object().unwrap().keys().collect::<Vec<_>>(),
        // `offset` and `epoch`: where the broadcast stream stands (docs/PROTOCOL.md).
        [
            "session_uuid",
            "count",
            "resumed",
            "instance",
            "offset",
            "epoch"
        ]
    );
}

#[tokio::test]
async fn a_plain_get_on_the_socket_path_does_not_touch_the_session() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut client = Client::connect(&app.ws_url(Some("kept"))).await;
    assert_eq!(count_n(&mut client, 1).await, [1]);
    let (status, body) = get_json(&app.ws_url(Some("kept")).replace("ws://", "http://")).await;
    assert_eq!(status, 400, "{body}");
    // Had the GET claimed the session, this socket would now be fenced.
    assert_eq!(count_n(&mut client, 1).await, [2]);
}

#[tokio::test]
async fn a_malformed_last_count_is_refused_before_the_upgrade() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    for bad in ["abc", "-1", "1e3", "99999999999999999999"] {
        let url = format!("{}&last_count={bad}", app.ws_url(Some("s")));
        let (status, body) = crate::helpers::refused_upgrade(&url).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid last_count"),
            "{bad}: {body}"
        );
    }
}
