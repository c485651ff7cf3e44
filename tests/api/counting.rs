//! Counting, ordering and resuming sessions.

use serde_json::json;

use fred::interfaces::KeysInterface;

use crate::helpers::{eventually, spawn_app, Client, RedisServer};

#[tokio::test]
async fn every_text_frame_is_counted_once_and_answered_in_order() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut client = Client::connect(&app.ws_url(None)).await;
    assert_eq!(client.welcome.count, 0);
    assert!(!client.welcome.resumed);
    assert_eq!(client.welcome.instance, app.instance);
    assert!(uuid::Uuid::parse_str(&client.welcome.session_uuid).is_ok());

    // Sent back to back without waiting: the replies must still come 1..=50 in order.
    for i in 0..50 {
        client.send(&format!("message {i}")).await;
    }
    for expected in 1..=50 {
        assert_eq!(client.next_reply().await, json!({ "count": expected }));
    }
    // Whatever the content, including empty and JSON-looking text.
    for text in ["", "{\"count\": 999}", "ünïcödé"] {
        client.send(text).await;
    }
    for expected in 51..=53 {
        assert_eq!(client.next_reply().await, json!({ "count": expected }));
    }
}

#[tokio::test]
async fn a_session_resumes_on_another_instance_where_its_counter_left_off() {
    let redis = RedisServer::start().await;
    let first = spawn_app(&redis, &[]).await;
    let second = spawn_app(&redis, &[]).await;

    let mut client = Client::connect(&first.ws_url(Some("resume-me"))).await;
    assert_eq!(client.welcome.session_uuid, "resume-me");
    assert!(!client.welcome.resumed);
    for expected in 1..=3 {
        client.send("x").await;
        assert_eq!(client.next_reply().await, json!({ "count": expected }));
    }
    drop(client);

    let mut again = Client::connect(&second.ws_url(Some("resume-me"))).await;
    assert_eq!(again.welcome.count, 3);
    assert!(again.welcome.resumed);
    assert_eq!(again.welcome.instance, second.instance);
    again.send("x").await;
    assert_eq!(again.next_reply().await, json!({ "count": 4 }));
}

#[tokio::test]
async fn session_id_is_accepted_as_an_alias_and_sessions_are_independent() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let url = format!("ws://{}/ws/chat?session_id=alias-1", app.addr);
    let mut a = Client::connect(&url).await;
    assert_eq!(a.welcome.session_uuid, "alias-1");
    let mut b = Client::connect(&app.ws_url(Some("other"))).await;
    a.send("x").await;
    a.send("x").await;
    b.send("x").await;
    assert_eq!(a.next_reply().await, json!({ "count": 1 }));
    assert_eq!(a.next_reply().await, json!({ "count": 2 }));
    assert_eq!(b.next_reply().await, json!({ "count": 1 }));
}

#[tokio::test]
async fn the_session_counter_expires_after_the_session_ttl() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--session-ttl", "300ms"]).await;
    let mut client = Client::connect(&app.ws_url(Some("short-lived"))).await;
    client.send("x").await;
    assert_eq!(client.next_reply().await, json!({ "count": 1 }));
    drop(client);
    // Polled in Redis, not by connecting: a connect claims the session and renews its TTL.
    let inspect = redis.client().await;
    eventually("the closed session's counter to expire", || {
        let inspect = inspect.clone();
        async move {
            let exists: i64 = inspect.exists("wsfleet:session:short-lived").await.ok()?;
            (exists == 0).then_some(())
        }
    })
    .await;
    let fresh = Client::connect(&app.ws_url(Some("short-lived"))).await;
    assert_eq!(fresh.welcome.count, 0);
    assert!(!fresh.welcome.resumed);
}
