//! History and recovery: a client that comes back with the last offset it saw gets every
//! publication after it exactly once, in order, then live ones — at the window's edges, across
//! a lost dataset (new epoch), with idempotent publishers, and while publications race it.

use serde_json::{json, Value};

use crate::{
    helpers::{spawn_app, Client, RedisServer, TestApp},
    rooms::{ask, join, member, next_frame, next_of},
};

const TOKEN: &str = "t";

async fn broadcast(app: &TestApp, message: Value, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(app.http("/broadcast"))
        .bearer_auth(TOKEN)
        .json(&json!({ "message": message }));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The next broadcast frame, skipping heartbeats.
async fn next_broadcast(client: &mut Client) -> Value {
    loop {
        let frame = client.next_json().await;
        if frame.get("broadcast").is_some() {
            return frame;
        }
    }
}

fn resume_url(app: &TestApp, session: &str, since: u64, epoch: &str) -> String {
    format!(
        "ws://{}/ws/chat/?session_uuid={session}&since={since}&epoch={epoch}",
        app.addr
    )
}

#[tokio::test]
async fn missed_broadcasts_follow_the_welcome_in_order_then_live_ones() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--broadcast-token", TOKEN]).await;
    let other = spawn_app(&redis, &[]).await;
    let mut client = Client::connect(&app.ws_url(Some("s"))).await;
    broadcast(&app, json!(1), None).await;
    let seen = next_broadcast(&mut client).await;
    let epoch = seen["epoch"].as_str().unwrap().to_string();
    assert_eq!(seen["offset"], 1);
    drop(client);
    for n in 2..=4 {
        broadcast(&app, json!(n), None).await;
    }

    // Back on the other instance, with the last offset seen.
    let mut client = Client::connect(&resume_url(&other, "s", 1, &epoch)).await;
    assert_eq!(client.welcome.recovered, Some(true));
    assert_eq!(client.welcome.offset, Some(4));
    for n in 2..=4u64 {
        let frame = client.next_json().await;
        assert_eq!(
            (&frame["broadcast"], &frame["offset"]),
            (&json!(n), &json!(n))
        );
    }
    broadcast(&app, json!(5), None).await;
    assert_eq!(next_broadcast(&mut client).await["offset"], 5);

    // At the latest offset: recovered, nothing to replay.
    let mut latest = Client::connect(&resume_url(&other, "s2", 5, &epoch)).await;
    assert_eq!(latest.welcome.recovered, Some(true));
    broadcast(&app, json!(6), None).await;
    assert_eq!(next_broadcast(&mut latest).await["offset"], 6);
    // A fresh socket says where the stream stands.
    let fresh = Client::connect(&app.ws_url(None)).await;
    assert_eq!(fresh.welcome.offset, Some(6));
    assert_eq!(fresh.welcome.epoch.as_deref(), Some(epoch.as_str()));
    assert_eq!(fresh.welcome.recovered, None);
}

#[tokio::test]
async fn the_history_window_has_exact_edges() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--broadcast-token", TOKEN, "--history-size", "3"]).await;
    let (_, first) = broadcast(&app, json!(1), None).await;
    let epoch = first["epoch"].as_str().unwrap().to_string();
    for n in 2..=5 {
        broadcast(&app, json!(n), None).await;
    }
    // Kept: 3, 4, 5. Since 2 needs exactly those; since 1 needs 2 as well.
    let mut inside = Client::connect(&resume_url(&app, "in", 2, &epoch)).await;
    assert_eq!(inside.welcome.recovered, Some(true));
    for n in 3..=5u64 {
        assert_eq!(inside.next_json().await["offset"], n);
    }
    let outside = Client::connect(&resume_url(&app, "out", 1, &epoch)).await;
    assert_eq!(outside.welcome.recovered, Some(false));
    // An offset from the future, or another epoch: not recovered either.
    let future = Client::connect(&resume_url(&app, "f", 9, &epoch)).await;
    assert_eq!(future.welcome.recovered, Some(false));
    let other = Client::connect(&resume_url(&app, "o", 5, "other")).await;
    assert_eq!(other.welcome.recovered, Some(false));
}

#[tokio::test]
async fn a_lost_dataset_starts_a_new_epoch_and_old_offsets_are_not_trusted() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--broadcast-token", TOKEN]).await;
    let (_, first) = broadcast(&app, json!("before"), None).await;
    let old_epoch = first["epoch"].as_str().unwrap().to_string();
    redis.kill();
    redis.forget_saved_data();
    redis.restart().await;
    app.wait_ready().await;
    let (status, after) = broadcast(&app, json!("after"), None).await;
    assert_eq!(status, 202, "{after}");
    assert_ne!(after["epoch"], old_epoch.as_str());
    assert_eq!(after["offset"], 1);
    let client = Client::connect(&resume_url(&app, "s", 1, &old_epoch)).await;
    assert_eq!(client.welcome.recovered, Some(false));
}

#[tokio::test]
async fn an_idempotency_key_publishes_once_fleet_wide() {
    let redis = RedisServer::start().await;
    let first = spawn_app(&redis, &["--broadcast-token", TOKEN]).await;
    let second = spawn_app(&redis, &["--broadcast-token", TOKEN]).await;
    let mut client = Client::connect(&first.ws_url(None)).await;
    let (status, answer) = broadcast(&first, json!("once"), Some("op-42")).await;
    assert_eq!(status, 202, "{answer}");
    let (status, repeat) = broadcast(&second, json!("once"), Some("op-42")).await;
    assert_eq!(status, 200);
    assert_eq!(repeat, answer, "the first answer's body");
    let (_, next) = broadcast(&second, json!("next"), None).await;
    assert_eq!(next["offset"], 2, "the repeat took no offset");
    assert_eq!(next_broadcast(&mut client).await["broadcast"], "once");
    assert_eq!(next_broadcast(&mut client).await["broadcast"], "next");

    for bad in ["", &"k".repeat(65)] {
        let response = reqwest::Client::new()
            .post(first.http("/broadcast"))
            .bearer_auth(TOKEN)
            .header("idempotency-key", bad)
            .json(&json!({"message": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "key {bad:?}");
    }
}

#[tokio::test]
async fn a_replay_racing_live_publications_gives_each_exactly_once_in_order() {
    const TOTAL: u64 = 150;
    let redis = RedisServer::start().await;
    // The publisher sends in one burst, above the default rate limit.
    let app = spawn_app(&redis, &["--broadcast-token", TOKEN, "--rate-limit", "0"]).await;
    let other = spawn_app(&redis, &[]).await;
    let (_, first) = broadcast(&app, json!(1), None).await;
    let epoch = first["epoch"].as_str().unwrap().to_string();
    let mut publisher = member(&app, "pub", None).await;
    let room_epoch = join(&mut publisher, "race").await["epoch"].clone();

    let publishing = {
        let url = app.http("/broadcast");
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 2..=TOTAL {
                client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&json!({ "message": n }))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    // Room messages race a recovering join the same way.
    for n in 1..=TOTAL {
        publisher
            .send(&json!({"type": "message", "room": "race", "content": n}).to_string())
            .await;
    }
    let mut client = Client::connect(&resume_url(&other, "racer", 1, &epoch)).await;
    assert_eq!(client.welcome.recovered, Some(true));
    let mut room_member = member(&other, "late", None).await;
    let users = ask(
        &mut room_member,
        json!({"type": "join", "room": "race", "since": 0, "epoch": room_epoch}),
    )
    .await;
    assert_eq!(users["recovered"], true, "{users}");

    let mut expected = 2;
    while expected <= TOTAL {
        let frame = next_broadcast(&mut client).await;
        assert_eq!(
            frame["offset"], expected,
            "broadcasts in order, none twice: {frame}"
        );
        expected += 1;
    }
    publishing.await.unwrap();
    // The room: the replay up to the join's offset, then live ones, each once, in order.
    let mut expected = 1;
    while expected <= TOTAL {
        let frame = next_of(&mut room_member, "message").await;
        assert_eq!(frame["offset"], expected, "{frame}");
        expected += 1;
    }
    drain_nothing_more(&mut room_member).await;
}

/// Sends a marker message and checks it is the next frame: nothing else was queued.
async fn drain_nothing_more(client: &mut Client) {
    client
        .send(&json!({"type": "message", "room": "race", "content": "end"}).to_string())
        .await;
    let frame = next_frame(client).await;
    assert_eq!(frame["content"], "end", "{frame}");
}

#[tokio::test]
async fn publications_lost_on_the_way_to_an_instance_are_filled_in_from_history() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--broadcast-token", TOKEN]).await;
    let other = spawn_app(&redis, &[]).await;
    let mut publisher = member(&app, "pub", None).await;
    join(&mut publisher, "r").await;
    let mut receiver = member(&other, "rec", None).await;
    join(&mut receiver, "r").await;
    let send = |n: u64| json!({"type": "message", "room": "r", "content": n}).to_string();

    // Every subscriber connection of the fleet drops; what is published before they are back
    // never reaches the instances live.
    redis
        .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("CLIENT KILL");
    for n in 1..=5 {
        publisher.send(&send(n)).await;
        broadcast(&app, json!(n), None).await;
    }
    for node in [&app, &other] {
        node.wait_ready().await;
    }
    // The next ones show the gap, which the sockets fill from the history before them.
    publisher.send(&send(6)).await;
    broadcast(&app, json!(6), None).await;
    let (mut room, mut broadcasts) = (Vec::new(), Vec::new());
    while room.len() < 6 || broadcasts.len() < 6 {
        let frame = receiver.next_json().await;
        if frame["type"] == "message" {
            room.push(frame["offset"].as_u64().unwrap());
        } else if frame.get("broadcast").is_some() {
            broadcasts.push(frame["offset"].as_u64().unwrap());
        }
    }
    assert_eq!(
        room,
        (1..=6).collect::<Vec<_>>(),
        "room: each once, in order"
    );
    assert_eq!(broadcasts, (1..=6).collect::<Vec<_>>(), "broadcasts");
}
