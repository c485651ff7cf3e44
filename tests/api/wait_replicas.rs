//! `REDIS_WAIT_REPLICAS`: a count is sent only once that many replicas have it; until then the
//! message is answered `unavailable`, and its resend gets the count it was given, not a new one.

use serde_json::json;

use crate::helpers::{eventually, spawn_app, Client, RedisServer};

#[tokio::test]
async fn a_count_no_replica_acknowledged_is_unavailable_and_its_resend_is_not_counted_again() {
    let primary = RedisServer::start().await;
    let app = spawn_app(&primary, &["--redis-wait-replicas", "1"]).await;
    let mut client = Client::connect(&app.ws_url(Some("waits"))).await;

    // No replica: Redis ran the increment, but WAIT 1 cannot be met.
    client.send("x").await;
    assert_eq!(
        client.next_reply().await,
        json!({"error": "unavailable", "retry": true})
    );

    let primary_port = primary.port.to_string();
    let replica =
        RedisServer::start_with(|_| vec!["--replicaof".into(), "127.0.0.1".into(), primary_port])
            .await;
    eventually("the replica to sync", || {
        let synced = replica
            .cli(&["INFO", "replication"])
            .is_some_and(|info| info.contains("master_link_status:up"));
        async move { synced.then_some(()) }
    })
    .await;
    // The resend of the message Redis already counted gets that count: 1, not 2. The primary
    // may not count the replica as acknowledging for up to a second after the sync (its first
    // REPLCONF ACK), so resend while `unavailable`, as a client does.
    let mut attempts = 0;
    let reply = loop {
        attempts += 1;
        assert!(attempts <= 40, "still unavailable after {attempts} resends");
        client.send("x").await;
        match client.next_reply().await {
            reply if reply == json!({"error": "unavailable", "retry": true}) => continue,
            reply => break reply,
        }
    };
    assert_eq!(reply, json!({ "count": 1 }));
    client.send("x").await;
    assert_eq!(client.next_reply().await, json!({ "count": 2 }));
}
