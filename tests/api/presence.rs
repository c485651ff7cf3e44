//! Presence belongs to the session and lives in Redis with leases: drains cause no churn, a
//! socket gone for good leaves after the grace, a killed instance's members leave after 3
//! lease periods + grace, and each `user_left` is published once fleet-wide.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    helpers::{spawn_app, ChildNode, Client, RedisServer, SIGKILL, SIGTERM},
    rooms::{join, member, next_frame, next_of},
};

/// Test timings: the lease period stays the harness's 500 ms.
const GRACE: &str = "2s";

fn child_url(node: &ChildNode, user: &str, session: &str) -> String {
    format!(
        "ws://{}/ws/chat/?user={user}&session_uuid={session}",
        node.addr
    )
}

/// Sends a message to `room` from `client` and returns the frames `client` gets up to and
/// including it: anything before it was queued for the client in between.
async fn frames_until_own_message(client: &mut Client, room: &str, marker: &str) -> Vec<Value> {
    client
        .send(&json!({"type": "message", "room": room, "content": marker}).to_string())
        .await;
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(client).await;
        let done = frame["type"] == "message" && frame["content"] == marker;
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

#[tokio::test]
async fn a_socket_that_does_not_come_back_leaves_after_the_grace() {
    let redis = RedisServer::start().await;
    let app = spawn_app(
        &redis,
        &["--presence-grace", GRACE, "--broadcast-token", "t"],
    )
    .await;
    let mut alice = member(&app, "alice", None).await;
    join(&mut alice, "r").await;
    let mut bob = member(&app, "bob", None).await;
    join(&mut bob, "r").await;
    next_of(&mut alice, "user_joined").await;
    drop(bob);
    // Within the grace nothing happens (a message's round trip is far shorter than 2 s).
    let frames = frames_until_own_message(&mut alice, "r", "still here?").await;
    assert_eq!(
        frames.len(),
        1,
        "no presence event inside the grace: {frames:?}"
    );
    let left = next_of(&mut alice, "user_left").await;
    assert_eq!(
        left,
        json!({"type": "user_left", "room": "r", "user": "bob"})
    );
    let room = crate::rooms::room_info(&app, "r").await;
    assert_eq!(room["users"], json!(["alice"]));
    assert_eq!(room["members"], 1);
}

#[tokio::test]
async fn a_drain_with_resume_inside_the_grace_causes_no_churn() {
    let redis = RedisServer::start().await;
    let grace = ["--presence-grace", GRACE];
    let stays = ChildNode::start(&redis, "stays", &grace).await;
    let drains = ChildNode::start(&redis, "drains", &grace).await;
    let mut alice = Client::connect(&child_url(&stays, "alice", "alice-s")).await;
    join(&mut alice, "r").await;
    let mut bob = Client::connect(&child_url(&drains, "bob", "bob-s")).await;
    join(&mut bob, "r").await;
    next_of(&mut alice, "user_joined").await;

    drains.signal(SIGTERM);
    let bye = next_of_bye(&mut bob).await;
    assert_eq!(bye["bye"], true);
    assert_eq!(bob.expect_close().await.0, 1001);
    let mut bob = Client::connect(&child_url(&stays, "bob", "bob-s")).await;
    assert!(bob.welcome.resumed);
    assert_eq!(bob.welcome.rooms, vec!["r".to_string()]);
    let users = join(&mut bob, "r").await;
    assert_eq!(users["users"], json!(["alice", "bob"]));

    // Past the grace and two more lease renewals: had the drained socket's release expired
    // the membership, alice would have seen user_left by now. Elapsed time is the point
    // here, so this is a sleep, not a poll.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let frames = frames_until_own_message(&mut alice, "r", "after the drain").await;
    assert_eq!(
        frames.len(),
        1,
        "no user_left/user_joined churn: {frames:?}"
    );
    assert_eq!(
        next_of(&mut bob, "message").await["content"],
        "after the drain"
    );
}

/// The `bye` frame, skipping room and fleet frames.
async fn next_of_bye(client: &mut Client) -> Value {
    loop {
        let frame = client.next_json().await;
        if frame.get("bye").is_some() {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_killed_instances_members_leave_once_after_the_leases_and_the_grace() {
    let redis = RedisServer::start().await;
    let grace = ["--presence-grace", GRACE];
    let first = ChildNode::start(&redis, "first", &grace).await;
    let second = ChildNode::start(&redis, "second", &grace).await;
    let victim = ChildNode::start(&redis, "victim", &grace).await;
    let mut alice = Client::connect(&child_url(&first, "alice", "a-s")).await;
    let mut carol = Client::connect(&child_url(&second, "carol", "c-s")).await;
    join(&mut alice, "r").await;
    join(&mut carol, "r").await;
    next_of(&mut alice, "user_joined").await;
    let mut bob = Client::connect(&child_url(&victim, "bob", "b-s")).await;
    join(&mut bob, "r").await;
    for watcher in [&mut alice, &mut carol] {
        assert_eq!(next_of(watcher, "user_joined").await["user"], "bob");
    }

    victim.signal(SIGKILL);
    for watcher in [&mut alice, &mut carol] {
        let left = next_of(watcher, "user_left").await;
        assert_eq!(left["user"], "bob");
    }
    // Both surviving instances sweep the room; the one that removed bob published the only
    // user_left. Wait two more renewals, then anything queued shows before a new message.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frames = frames_until_own_message(&mut alice, "r", "once").await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    let frames = frames_until_own_message(&mut carol, "r", "twice").await;
    // carol also gets alice's "once" message first.
    assert!(
        frames.iter().all(|f| f["type"] == "message"),
        "no second user_left: {frames:?}"
    );
}
