//! `REDIS_URL=redis-cluster://…` against a real 3-primary, 3-replica Redis Cluster, and the
//! contract that holds on every topology (one Redis, a Sentinel set, a cluster): counting,
//! resume with an exact welcome count, fencing, rooms on different shards across two
//! instances, broadcast recovery and the fleet count. Then a cluster primary SIGKILLed under
//! an open socket.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    common::{tags_on_each_primary, RedisCluster},
    helpers::{eventually, get_json, spawn_app, Client, RedisServer, TestApp},
    rooms::{join, next_of},
    sentinel::SentinelSet,
};

const TOKEN: &str = "t";

/// Detection (1 s node timeout), the replica's election and the node's reconnect, with room.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(30);

/// Two instances on `url` (`redis` only names a server for the harness's defaults), then every
/// promise of the contract; `rooms` are joined and published to (names on different shards in
/// a cluster).
async fn contract(redis: &RedisServer, url: &str, rooms: &[String]) {
    let a = spawn_app(redis, &["--redis-url", url, "--broadcast-token", TOKEN]).await;
    let b = spawn_app(redis, &["--redis-url", url]).await;
    a.wait_ready().await;
    b.wait_ready().await;

    // Counting, then a resume on the other instance: the welcome count is exact, and the
    // older socket is fenced (1008) the next time it counts.
    let mut first = Client::connect(&a.ws_url(Some("contract"))).await;
    for n in 1..=10 {
        first.send("x").await;
        assert_eq!(first.next_reply().await, json!({ "count": n }));
    }
    let mut second = Client::connect(&b.ws_url(Some("contract"))).await;
    assert_eq!((second.welcome.count, second.welcome.resumed), (10, true));
    first.send("x").await;
    assert_eq!(first.expect_close().await.0, 1008);
    second.send("x").await;
    assert_eq!(second.next_reply().await, json!({ "count": 11 }));

    // Rooms: a member on each instance, presence and a publication both ways, per room.
    for room in rooms {
        let mut alice = member(&a, "alice", room).await;
        let mut bob = member(&b, "bob", room).await;
        join(&mut alice, room).await;
        let users = join(&mut bob, room).await;
        assert_eq!(users["users"], json!(["alice", "bob"]), "{room}");
        assert_eq!(next_of(&mut alice, "user_joined").await["user"], "bob");
        let said = json!({"type": "message", "room": room, "content": "hi"}).to_string();
        bob.send(&said).await;
        for client in [&mut alice, &mut bob] {
            let message = next_of(client, "message").await;
            assert_eq!(
                (&message["sender"], &message["content"]),
                (&json!("bob"), &json!("hi"))
            );
        }
    }

    // A broadcast reaches both instances; one missed while away is recovered with since/epoch.
    let live = broadcast(&a, json!("one")).await;
    let seen = next_broadcast(&mut second).await;
    assert_eq!(seen["broadcast"], "one");
    let epoch = live["epoch"].as_str().unwrap().to_string();
    let offset = live["offset"].as_u64().unwrap();
    drop(second);
    broadcast(&a, json!("two")).await;
    let url = format!(
        "ws://{}/ws/chat/?session_uuid=contract&since={offset}&epoch={epoch}",
        b.addr
    );
    let mut back = Client::connect(&url).await;
    assert_eq!(back.welcome.recovered, Some(true));
    assert_eq!(back.welcome.count, 11);
    assert_eq!(next_broadcast(&mut back).await["broadcast"], "two");

    // `/status` counts the fleet's sockets: this one, on either instance.
    eventually("the fleet count to be 1", || async {
        let (_, status) = get_json(&a.http("/status")).await;
        let total: u64 = status["instances"]
            .as_array()?
            .iter()
            .filter_map(|i| i["connections"].as_u64())
            .sum();
        (status["instances"].as_array()?.len() == 2 && total == 1).then_some(())
    })
    .await;
}

async fn member(app: &TestApp, user: &str, room: &str) -> Client {
    let url = format!(
        "ws://{}/ws/chat/?user={user}&session_uuid={user}-{room}",
        app.addr
    );
    Client::connect(&url).await
}

async fn broadcast(app: &TestApp, message: Value) -> Value {
    let response = reqwest::Client::new()
        .post(app.http("/broadcast"))
        .bearer_auth(TOKEN)
        .json(&json!({ "message": message }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

async fn next_broadcast(client: &mut Client) -> Value {
    loop {
        let frame = client.next_json().await;
        if frame.get("broadcast").is_some() {
            return frame;
        }
    }
}

#[tokio::test]
async fn the_contract_holds_on_a_single_redis() {
    let redis = RedisServer::start().await;
    contract(&redis, &redis.url(), &["lobby".into(), "kitchen".into()]).await;
}

#[tokio::test]
async fn the_contract_holds_on_a_sentinel_set() {
    let set = SentinelSet::start().await;
    contract(&set.replica, &set.url(), &["lobby".into()]).await;
}

#[tokio::test]
async fn the_contract_holds_on_a_cluster_with_rooms_on_every_shard() {
    let cluster = RedisCluster::start().await;
    // `{room:<name>}` is the tag of a room's keys and channel: one room per primary.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let rooms: Vec<String> = tags_on_each_primary(&primaries, "room:r")
        .into_iter()
        .map(|tag| tag.trim_start_matches("room:").to_string())
        .collect();
    contract(&cluster.servers[0], &cluster.url(), &rooms).await;
}

async fn ready(app: &TestApp) -> bool {
    get_json(&app.http("/readyz")).await.0 == 200
}

#[tokio::test]
async fn a_cluster_primary_killed_under_an_open_socket_repeats_no_count() {
    let mut cluster = RedisCluster::start().await;
    let url = cluster.url();
    let app = spawn_app(
        &cluster.servers[0],
        &["--redis-url", &url, "--redis-wait-replicas", "1"],
    )
    .await;
    app.wait_ready().await;
    let session = "failover";
    let slot = fred::util::redis_keyslot(format!("wsfleet:session:{session}").as_bytes());
    // A room on the same shard: its subscription must follow the slot to the new primary.
    let primaries = cluster.primaries();
    let doomed = primaries
        .iter()
        .position(|p| Some(p.port) == cluster.primary_of(slot))
        .unwrap();
    let tag = tags_on_each_primary(&primaries, "room:r").remove(doomed);
    let room = tag.trim_start_matches("room:").to_string();
    let mut listener = member(&app, "carol", &room).await;
    join(&mut listener, &room).await;
    let mut client = Client::connect(&app.ws_url(Some(session))).await;
    for n in 1..=20 {
        client.send("x").await;
        assert_eq!(client.next_reply().await, json!({ "count": n }));
    }

    let killed = cluster.kill_primary_of(slot);
    eventually("readiness to go false", || async {
        (!ready(&app).await).then_some(())
    })
    .await;
    // Resend until counted: `unavailable` while the slot has no primary, the socket open.
    let mut unavailable = 0;
    let mut restarted = false;
    let deadline = tokio::time::Instant::now() + FAILOVER_PATIENCE;
    let count = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no count within {FAILOVER_PATIENCE:?}"
        );
        // Once the replica is the primary, the killed server comes back (its nodes.conf
        // kept) as its replica, so that WAIT 1 can be met again.
        if !restarted && cluster.primary_of(slot).is_some_and(|port| port != killed) {
            cluster.server(killed).restart().await;
            restarted = true;
        }
        client.send("x").await;
        match client.next_reply().await {
            reply if reply == json!({"error": "unavailable", "retry": true}) => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            reply => break reply,
        }
    };
    assert!(unavailable > 0, "the failover was not noticed");
    assert_ne!(
        cluster.primary_of(slot),
        Some(killed),
        "the replica took over"
    );
    // WAIT 1 held every acknowledged count on the replica: exactly 21, no repeat, no jump.
    assert_eq!(count, json!({ "count": 21 }));
    // The new replica may still lag a WAIT now and then on a loaded machine: resend as a
    // client does; each frame gets the next count.
    for n in 22..=30 {
        let reply = client
            .count_through_unavailable("x", FAILOVER_PATIENCE)
            .await;
        assert_eq!(reply, json!({ "count": n }));
    }
    crate::common::eventually_within(FAILOVER_PATIENCE, "readiness back", || async {
        ready(&app).await.then_some(())
    })
    .await;
    // Ready again means the room's shard is subscribed again, on the new primary.
    let said = json!({"type": "message", "room": room, "content": "after"}).to_string();
    listener.send(&said).await;
    assert_eq!(next_of(&mut listener, "message").await["content"], "after");
}
