//! The page's Rooms panel in Chromium, with a tokio-tungstenite client ("bob", on another
//! instance) in the same room: members on both sides, a message from the page reaching bob
//! with its offset, and a reconnect of the page that recovers the room message and the
//! broadcast published while it was away, each shown once, without presence churn.

use serde_json::{json, Value};

use super::*;
use crate::common::Client as WsClient;

const ROOM: &str = "browser-room";

/// What the page shows about rooms and streams.
#[derive(Debug, Deserialize)]
struct RoomsPage {
    state: String,
    instance: String,
    /// The rows of the rooms table.
    rooms: Vec<RoomRow>,
    /// The room messages as shown, oldest first.
    messages: Vec<String>,
    error: String,
    broadcast: String,
    stream: String,
    duplicates: String,
    log: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct RoomRow {
    room: String,
    members: String,
    offset: String,
    epoch: String,
    recovered: String,
}

impl PageView for RoomsPage {
    const SCRIPT: &'static str = r#"
        const $ = (id) => document.getElementById(id);
        const text = (el) => el.textContent;
        return {
            state: text($("state")),
            instance: text($("instance")),
            rooms: [...$("rooms").tBodies[0].rows].map((row) => ({
                room: row.dataset.room,
                members: text(row.cells[1]),
                offset: text(row.cells[2]),
                epoch: text(row.cells[3]),
                recovered: text(row.cells[4]),
            })),
            messages: [...$("room-messages").children].map(text),
            error: text($("room-error")),
            broadcast: text($("broadcast")),
            stream: text($("stream")),
            duplicates: text($("duplicates")),
            log: text($("log")),
        };
    "#;

    fn describe(&self) -> String {
        format!(
            "state={:?} rooms={:?} error={:?} stream={:?} duplicates={:?}\n\
             --- room messages ---\n{}\n--- page log ---\n{}",
            self.state,
            self.rooms,
            self.error,
            self.stream,
            self.duplicates,
            self.messages.join("\n"),
            self.log
        )
    }
}

impl RoomsPage {
    fn row(&self) -> Option<&RoomRow> {
        self.rooms.iter().find(|r| r.room == ROOM)
    }

    /// How many shown messages are the publication at `offset` of the test's room.
    fn shown(&self, offset: u64) -> usize {
        let prefix = format!("{ROOM} #{offset} ");
        self.messages
            .iter()
            .filter(|m| m.starts_with(&prefix))
            .count()
    }
}

async fn page_log(browser: &Client) -> String {
    read::<RoomsPage>(browser).await.log
}

async fn wait_rooms(browser: &Client, what: &str, ready: impl Fn(&RoomsPage) -> bool) -> RoomsPage {
    wait_for_view(browser, what, ready).await
}

/// Bob's next room frame (heartbeats and broadcasts skipped).
async fn next_room_frame(bob: &mut WsClient<Value>) -> Value {
    loop {
        let frame = bob.next_json().await;
        if frame.get("type").is_some() {
            return frame;
        }
    }
}

/// Bob publishes `content` to the room; returns the offset it came back with.
async fn bob_says(bob: &mut WsClient<Value>, content: &str) -> u64 {
    bob.send(&json!({"type": "message", "room": ROOM, "content": content}).to_string())
        .await;
    let frame = next_room_frame(bob).await;
    assert_eq!(
        (&frame["type"], &frame["sender"], &frame["content"]),
        (&json!("message"), &json!("bob"), &json!(content)),
        "bob's next room frame is his own message: {frame}"
    );
    frame["offset"].as_u64().expect("a message has an offset")
}

async fn broadcast(node: &ChildNode, message: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{}/broadcast", node.addr))
        .bearer_auth(TOKEN)
        .json(&json!({ "message": message }))
        .send()
        .await
        .expect("POST /broadcast answers");
    assert_eq!(response.status(), 202, "the broadcast is accepted");
    response.json().await.expect("a JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_page_joins_a_room_and_recovers_what_was_published_while_it_was_away() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let driver = ChromeDriver::start().await;
    let redis = RedisServer::start().await;
    let a = ChildNode::start(&redis, "node-a", NODE_FLAGS).await;
    let b = ChildNode::start(&redis, "node-b", NODE_FLAGS).await;
    let proxy = Proxy::start(a.addr).await;
    let browser = driver.session().await;
    let run = scenario(&browser, &a, &b, &proxy);
    in_browser(browser.clone(), "test-page-rooms-failure.png", run).await;
    drop(driver);
}

async fn scenario(browser: &Client, a: &ChildNode, b: &ChildNode, proxy: &Proxy) {
    // Bob is in the room first, on node-b.
    let url = format!("ws://{}/ws/chat/?session_uuid=bob-session&user=bob", b.addr);
    let mut bob = WsClient::<Value>::connect(&url).await;
    bob.send(&json!({"type": "join", "room": ROOM}).to_string())
        .await;
    let users = next_room_frame(&mut bob).await;
    assert_eq!(
        (&users["type"], &users["users"], &users["offset"]),
        (&json!("room_users"), &json!(["bob"]), &json!(0))
    );

    // The page, as alice on node-a, joins and sees both members.
    browser
        .goto(&format!("http://{}/test/", proxy.addr))
        .await
        .expect("the browser loads /test/ through the proxy");
    type_into(browser, "user", "alice").await;
    type_into(browser, "room", ROOM).await;
    click(browser, "connect").await;
    wait_rooms(browser, "open on node-a", |p| {
        p.state == "open" && p.instance == "node-a"
    })
    .await;
    click(browser, "join").await;
    let page = wait_rooms(browser, "alice and bob in the room", |p| {
        p.row().is_some_and(|r| r.members == "alice, bob")
    })
    .await;
    let row = page.row().unwrap();
    assert_eq!((row.offset.as_str(), row.recovered.as_str()), ("0", "–"));
    let epoch = row.epoch.clone();
    let joined = next_room_frame(&mut bob).await;
    assert_eq!(
        joined,
        json!({"type": "user_joined", "room": ROOM, "user": "alice"})
    );

    // A message typed on the page reaches bob, on the other instance, with its offset.
    type_into(browser, "room-text", "hello from chromium").await;
    click(browser, "room-send").await;
    let message = next_room_frame(&mut bob).await;
    assert_eq!(
        (
            &message["type"],
            &message["sender"],
            &message["content"],
            &message["offset"],
            &message["epoch"]
        ),
        (
            &json!("message"),
            &json!("alice"),
            &json!("hello from chromium"),
            &json!(1),
            &json!(epoch)
        ),
        "{message}"
    );
    wait_rooms(browser, "its own message, #1", |p| p.shown(1) == 1).await;

    // Bob answers live; an operator broadcast arrives with its offset.
    assert_eq!(bob_says(&mut bob, "hi alice").await, 2);
    wait_rooms(browser, "bob's message #2", |p| p.shown(2) == 1).await;
    let first = broadcast(a, "live broadcast").await;
    let broadcast_epoch = first["epoch"].as_str().unwrap().to_string();
    wait_rooms(browser, "the live broadcast", |p| {
        p.broadcast.contains("live broadcast")
            && p.stream == format!("offset 1, epoch {broadcast_epoch}")
    })
    .await;

    // An error frame is shown, and the socket stays usable.
    type_into(browser, "room", "bad room!").await;
    click(browser, "join").await;
    wait_rooms(browser, "the bad_request error", |p| {
        p.error == "bad_request in bad room!"
    })
    .await;
    assert!(
        page_log(browser)
            .await
            .contains(r#"← {"type":"error","error":"bad_request","room":"bad room!""#),
        "the error came from the server"
    );
    type_into(browser, "room", ROOM).await;

    // The page goes away; a room message and a broadcast are published meanwhile.
    click(browser, "disconnect").await;
    wait_rooms(browser, "idle after Disconnect", |p| p.state == "idle").await;
    assert_eq!(bob_says(&mut bob, "while you were away").await, 3);
    broadcast(a, "missed broadcast").await;

    // It comes back on the other instance and recovers both, from the offsets it shows.
    proxy.point_to(b.addr);
    click(browser, "connect").await;
    let page = wait_rooms(browser, "the room message and broadcast it missed", |p| {
        p.instance == "node-b"
            && p.shown(3) == 1
            && p.row().is_some_and(|r| r.recovered == "true")
            && p.broadcast.contains("missed broadcast")
    })
    .await;
    let rejoin = format!(r#"{{"type":"join","room":"{ROOM}","since":2,"epoch":"{epoch}"}}"#);
    assert!(
        page.log.contains(&rejoin),
        "the page rejoined from the offset it showed: {}",
        page.describe()
    );
    assert_eq!(
        page.stream,
        format!("offset 2, epoch {broadcast_epoch}, recovered true")
    );
    let row = page.row().unwrap();
    assert_eq!(
        (
            row.members.as_str(),
            row.offset.as_str(),
            row.epoch.as_str()
        ),
        ("alice, bob", "3", epoch.as_str())
    );

    // No presence churn: bob's next room frame is his next message, not alice leaving or
    // joining; and the page shows it live, once.
    assert_eq!(bob_says(&mut bob, "welcome back").await, 4);
    let page = wait_rooms(browser, "bob's message #4", |p| p.shown(4) == 1).await;
    let offsets: Vec<usize> = (1..=4).map(|k| page.shown(k)).collect();
    assert_eq!(offsets, [1, 1, 1, 1], "{}", page.describe());
    assert_eq!(page.messages.len(), 4, "{}", page.describe());
    assert_eq!(page.duplicates, "0", "{}", page.describe());
    save_screenshot(browser, "test-page-rooms.png").await;
}
