//! Rooms: every frame and error of docs/PROTOCOL.md "Rooms", across two instances sharing one
//! real Redis.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Client, RedisServer, TestApp};

/// A socket of `user` on `app`, optionally resuming `session`.
pub async fn member(app: &TestApp, user: &str, session: Option<&str>) -> Client {
    let mut url = format!("ws://{}/ws/chat/?user={user}", app.addr);
    if let Some(session) = session {
        url.push_str(&format!("&session_uuid={session}"));
    }
    Client::connect(&url).await
}

/// The next frame that is not a heartbeat or a fleet broadcast.
pub async fn next_frame(client: &mut Client) -> Value {
    loop {
        let frame = client.next_json().await;
        let fleet_wide = frame.get("broadcast").is_some()
            || frame
                .as_object()
                .is_some_and(|f| f.len() == 1 && f.contains_key("ts"));
        if !fleet_wide {
            return frame;
        }
    }
}

/// Sends `command` and returns the next frame that is not a heartbeat or fleet broadcast.
pub async fn ask(client: &mut Client, command: Value) -> Value {
    client.send(&command.to_string()).await;
    next_frame(client).await
}

pub async fn join(client: &mut Client, room: &str) -> Value {
    let users = ask(client, json!({"type": "join", "room": room})).await;
    assert_eq!(users["type"], "room_users", "{users}");
    users
}

/// The next frame of `kind` ("message", "user_joined"…), skipping heartbeats.
pub async fn next_of(client: &mut Client, kind: &str) -> Value {
    loop {
        let frame = next_frame(client).await;
        if frame["type"] == kind {
            return frame;
        }
        assert!(
            frame.get("type").is_some(),
            "expected {kind}, got a non-room frame {frame}"
        );
    }
}

/// `GET /rooms/{room}` with the operator token `t`.
pub async fn room_info(app: &TestApp, room: &str) -> Value {
    let response = reqwest::Client::new()
        .get(app.http(&format!("/rooms/{room}")))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn post_broadcast(app: &TestApp, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(app.http("/broadcast"))
        .bearer_auth("t")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn operators_publish_to_a_room_or_a_session_and_read_a_room() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--broadcast-token", "t"]).await;
    let other = spawn_app(&redis, &[]).await;
    let mut alice = member(&app, "alice", Some("alice-s")).await;
    let mut bob = member(&other, "bob", Some("bob-s")).await;
    let epoch = join(&mut alice, "r").await["epoch"].clone();
    join(&mut bob, "r").await;

    let (status, body) = post_broadcast(&app, json!({"message": {"hi": 1}, "room": "r"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"room": "r", "offset": 1, "epoch": epoch}));
    for client in [&mut alice, &mut bob] {
        let message = next_of(client, "message").await;
        assert_eq!(message["sender"], "operator");
        assert_eq!(message["content"], json!({"hi": 1}));
        assert_eq!(message["offset"], 1);
    }

    let (status, body) = post_broadcast(&app, json!({"message": "psst", "session": "bob-s"})).await;
    assert_eq!(status, 202, "{body}");
    let direct = bob.next_json().await;
    assert_eq!(direct["broadcast"], "psst", "{direct}");
    assert!(
        direct.get("offset").is_none(),
        "session messages are not recorded"
    );
    // alice got nothing of it: her next frame is the next room message.
    post_broadcast(&app, json!({"message": "2", "room": "r"})).await;
    assert_eq!(next_frame(&mut alice).await["content"], "2");

    let info = room_info(&app, "r").await;
    assert_eq!(
        info,
        json!({"room": "r", "members": 2, "users": ["alice", "bob"], "offset": 2, "epoch": epoch})
    );
    let refusals = [
        json!({"message": 1, "room": "r", "session": "s"}),
        json!({"message": 1, "room": "bad room"}),
        json!({"message": 1, "room": 5}),
        json!({"message": 1, "session": "bad session"}),
    ];
    for body in refusals {
        assert_eq!(post_broadcast(&app, body.clone()).await.0, 422, "{body}");
    }
    let unauthorized = reqwest::get(app.http("/rooms/r")).await.unwrap();
    assert_eq!(unauthorized.status(), 401);
}

#[tokio::test]
async fn members_on_two_instances_see_each_other_and_every_message_in_offset_order() {
    let redis = RedisServer::start().await;
    let first = spawn_app(&redis, &[]).await;
    let second = spawn_app(&redis, &[]).await;
    let mut alice = member(&first, "alice", None).await;
    let mut bob = member(&second, "bob", None).await;

    let users = join(&mut alice, "lobby").await;
    assert_eq!(users["users"], json!(["alice"]));
    assert_eq!(users["offset"], 0);
    let epoch = users["epoch"].as_str().unwrap().to_string();
    assert!(!epoch.is_empty());
    assert!(users.get("recovered").is_none(), "{users}");

    let users = join(&mut bob, "lobby").await;
    assert_eq!(users["users"], json!(["alice", "bob"]));
    assert_eq!(users["epoch"], epoch.as_str());
    let joined = next_of(&mut alice, "user_joined").await;
    assert_eq!(
        joined,
        json!({"type": "user_joined", "room": "lobby", "user": "bob"})
    );

    for i in 1..=5u64 {
        alice
            .send(&json!({"type": "message", "room": "lobby", "content": {"n": i}}).to_string())
            .await;
    }
    for client in [&mut alice, &mut bob] {
        for i in 1..=5u64 {
            let message = next_of(client, "message").await;
            assert_eq!(message["room"], "lobby");
            assert_eq!(message["sender"], "alice");
            assert_eq!(message["content"], json!({"n": i}));
            assert_eq!(message["offset"], i);
            assert_eq!(message["epoch"], epoch.as_str());
            assert!(message["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
        }
    }

    // Room commands are not counted; plain frames still are.
    alice.send("plain").await;
    assert_eq!(alice.next_reply().await, json!({"count": 1}));

    let left = ask(&mut bob, json!({"type": "leave", "room": "lobby"})).await;
    assert_eq!(left, json!({"type": "left", "room": "lobby"}));
    let gone = next_of(&mut alice, "user_left").await;
    assert_eq!(
        gone,
        json!({"type": "user_left", "room": "lobby", "user": "bob"})
    );
    // Leave is idempotent.
    let again = ask(&mut bob, json!({"type": "leave", "room": "lobby"})).await;
    assert_eq!(again, json!({"type": "left", "room": "lobby"}));
}

#[tokio::test]
async fn a_users_second_session_causes_no_presence_event_and_its_last_one_does() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut watcher = member(&app, "w", None).await;
    join(&mut watcher, "r").await;
    let mut phone = member(&app, "carol", None).await;
    let mut laptop = member(&app, "carol", None).await;
    join(&mut phone, "r").await;
    assert_eq!(next_of(&mut watcher, "user_joined").await["user"], "carol");
    let users = join(&mut laptop, "r").await;
    assert_eq!(
        users["users"],
        json!(["carol", "w"]),
        "deduplicated, sorted"
    );

    ask(&mut phone, json!({"type": "leave", "room": "r"})).await;
    ask(&mut laptop, json!({"type": "leave", "room": "r"})).await;
    // Only one user_joined for carol came, and now exactly one user_left; a message sent
    // after it proves nothing else was queued in between.
    watcher
        .send(&json!({"type": "message", "room": "r", "content": "x"}).to_string())
        .await;
    let frame = next_frame(&mut watcher).await;
    assert_eq!(frame["type"], "user_left", "{frame}");
    assert_eq!(frame["user"], "carol");
    assert_eq!(next_of(&mut watcher, "message").await["content"], "x");
}

#[tokio::test]
async fn a_client_message_id_is_published_once() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut alice = member(&app, "alice", None).await;
    join(&mut alice, "r").await;
    for _ in 0..3 {
        alice
            .send(
                &json!({"type": "message", "room": "r", "content": "once", "id": "m-1"})
                    .to_string(),
            )
            .await;
    }
    alice
        .send(&json!({"type": "message", "room": "r", "content": "next"}).to_string())
        .await;
    let first = next_of(&mut alice, "message").await;
    assert_eq!(
        (first["content"].clone(), first["id"].clone()),
        (json!("once"), json!("m-1"))
    );
    assert_eq!(first["offset"], 1);
    let second = next_of(&mut alice, "message").await;
    assert_eq!(second["content"], "next");
    assert_eq!(second["offset"], 2, "the repeats published nothing");
}

#[tokio::test]
async fn bad_commands_get_their_error_and_the_socket_stays_usable() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--max-rooms", "2"]).await;
    let mut c = member(&app, "u", None).await;
    let cases = [
        (
            json!({"type": "join"}),
            json!({"type": "error", "error": "bad_request"}),
        ),
        (
            json!({"type": "join", "room": "bad room"}),
            json!({"type": "error", "error": "bad_request", "room": "bad room"}),
        ),
        (
            json!({"type": "join", "room": "r".repeat(65)}),
            json!({"type": "error", "error": "bad_request", "room": "r".repeat(65)}),
        ),
        (
            json!({"type": "message", "room": "a"}),
            json!({"type": "error", "error": "bad_request", "room": "a"}),
        ),
        (
            json!({"type": "message", "room": "nowhere", "content": "x"}),
            json!({"type": "error", "error": "not_in_room", "room": "nowhere"}),
        ),
        (
            json!({"type": "join", "room": "a", "since": "x", "epoch": "e"}),
            json!({"type": "error", "error": "bad_request", "room": "a"}),
        ),
    ];
    for (command, expected) in cases {
        let mut answer = ask(&mut c, command.clone()).await;
        answer.as_object_mut().unwrap().remove("reason");
        assert_eq!(answer, expected, "for {command}");
    }
    join(&mut c, "a").await;
    join(&mut c, "b").await;
    let third = ask(&mut c, json!({"type": "join", "room": "c"})).await;
    assert_eq!(
        third,
        json!({"type": "error", "error": "too_many_rooms", "room": "c"})
    );
    // Joining a room it is in is allowed at the limit.
    join(&mut c, "a").await;
    // Not commands: counted.
    for text in [r#"{"type":"chat"}"#, "{oops", r#"{"room":"a"}"#] {
        c.send(text).await;
        assert!(c.next_reply().await["count"].is_u64(), "{text}");
    }
    // Nothing of the bad commands reached Redis.
    let keys = redis.cli(&["KEYS", "*bad room*"]).unwrap_or_default();
    assert!(keys.trim().is_empty(), "{keys}");
}

#[tokio::test]
async fn a_resumed_session_is_told_its_rooms_and_recovers_what_it_missed() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut alice = member(&app, "alice", Some("alice-1")).await;
    let users = join(&mut alice, "r").await;
    let epoch = users["epoch"].as_str().unwrap().to_string();
    let mut bob = member(&app, "bob", None).await;
    join(&mut bob, "r").await;
    bob.send(&json!({"type": "message", "room": "r", "content": 1}).to_string())
        .await;
    assert_eq!(next_of(&mut alice, "message").await["offset"], 1);
    assert_eq!(next_of(&mut bob, "message").await["offset"], 1);
    drop(alice);
    for n in 2..=4 {
        bob.send(&json!({"type": "message", "room": "r", "content": n}).to_string())
            .await;
        assert_eq!(next_of(&mut bob, "message").await["offset"], n);
    }

    let mut alice = member(&app, "alice", Some("alice-1")).await;
    assert!(alice.welcome.resumed);
    assert_eq!(alice.welcome.rooms, vec!["r".to_string()]);
    let users = ask(
        &mut alice,
        json!({"type": "join", "room": "r", "since": 1, "epoch": epoch}),
    )
    .await;
    assert_eq!(users["recovered"], true, "{users}");
    assert_eq!(users["offset"], 4);
    for n in 2..=4u64 {
        let missed = next_frame(&mut alice).await;
        assert_eq!(
            (missed["type"].clone(), missed["offset"].clone()),
            (json!("message"), json!(n))
        );
    }
    bob.send(&json!({"type": "message", "room": "r", "content": 5}).to_string())
        .await;
    assert_eq!(
        next_of(&mut alice, "message").await["offset"],
        5,
        "then live ones"
    );

    // A wrong epoch, or an offset older than the history: not recovered.
    let mut carol = member(&app, "carol", None).await;
    let users = ask(
        &mut carol,
        json!({"type": "join", "room": "r", "since": 1, "epoch": "other"}),
    )
    .await;
    assert_eq!(users["recovered"], false, "{users}");
}

#[tokio::test]
async fn no_frame_another_client_gets_shows_a_session_id() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--broadcast-token", "t"]).await;
    let secret = "alice-secret-session-7f3a";
    // Without a `user`, alice is known by her anonymous id, derived from her session id.
    let mut alice =
        Client::connect(&format!("ws://{}/ws/chat/?session_uuid={secret}", app.addr)).await;
    let mut bob = member(&app, "bob", None).await;
    join(&mut bob, "r").await;
    let users = join(&mut alice, "r").await;
    let anon = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u.as_str().is_some_and(|u| u.starts_with("anon-")))
        .expect("alice's anonymous id")
        .clone();
    alice
        .send(&json!({"type": "message", "room": "r", "content": "hi", "id": "m1"}).to_string())
        .await;
    ask(&mut alice, json!({"type": "leave", "room": "r"})).await;
    post_broadcast(&app, json!({"message": "to the room", "room": "r"})).await;
    // Everything bob was sent because of alice: her join, her message, her leave.
    let mut seen = Vec::new();
    loop {
        let frame = next_frame(&mut bob).await;
        seen.push(frame.to_string());
        if frame["content"] == "to the room" {
            break;
        }
    }
    assert!(
        seen.iter().any(|f| f.contains(anon.as_str().unwrap())),
        "{seen:?}"
    );
    for frame in &seen {
        assert!(
            !frame.contains(secret),
            "bob saw alice's session id: {frame}"
        );
    }
}
