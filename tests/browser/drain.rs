//! The page through a drain while it counts and is in a room: "keep sending" puts a counted
//! frame on the socket every 20 ms, node-a is SIGTERMed, and the page resumes on node-b (the
//! proxy refuses connections meanwhile, so the page is surely away for a while). Every send is
//! answered once, with the next count; an operator publication to the room made during the
//! drain and one made while the page was away are each shown once, in offset order.

use serde_json::{json, Value};

use super::*;

const ROOM: &str = "drain-room";

/// What the page shows about counting and its room, and the counts it was given.
#[derive(Debug, Deserialize)]
struct DrainPage {
    state: String,
    instance: String,
    count: String,
    pending: String,
    /// The page's own check of `answers` ("N (1–N), no gap, no repeat").
    answers_shown: String,
    /// The count each send() resolved with, in the order of the calls.
    answers: Vec<u64>,
    messages: Vec<String>,
    duplicates: String,
    anomalies: String,
    lost: String,
    log: String,
}

impl PageView for DrainPage {
    const SCRIPT: &'static str = r#"
        const $ = (id) => document.getElementById(id);
        const text = (el) => el.textContent;
        return {
            state: text($("state")),
            instance: text($("instance")),
            count: text($("count")),
            pending: text($("pending")),
            answers_shown: text($("answers")),
            answers: window.wsfleetPage.answers,
            messages: [...$("room-messages").children].map(text),
            duplicates: text($("duplicates")),
            anomalies: text($("anomalies")),
            lost: text($("lost")),
            log: text($("log")),
        };
    "#;

    fn describe(&self) -> String {
        format!(
            "state={:?} instance={:?} count={:?} pending={:?} answers={:?}\n\
             --- room messages ---\n{}\n--- page log (last 40 lines) ---\n{}",
            self.state,
            self.instance,
            self.count,
            self.pending,
            self.answers_shown,
            self.messages.join("\n"),
            self.log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

impl DrainPage {
    fn count(&self) -> u64 {
        self.count.parse().expect("the count is a number")
    }

    /// How many shown messages are the room's publication at `offset`.
    fn shown(&self, offset: u64) -> usize {
        let prefix = format!("{ROOM} #{offset} ");
        self.messages
            .iter()
            .filter(|m| m.starts_with(&prefix))
            .count()
    }

    fn lines_with(&self, needle: &str) -> usize {
        self.log.lines().filter(|l| l.contains(needle)).count()
    }
}

async fn wait_drain(browser: &Client, what: &str, ready: impl Fn(&DrainPage) -> bool) -> DrainPage {
    wait_for_view(browser, what, ready).await
}

/// An operator publication to the room, through `node`; its offset.
async fn publish(node: &ChildNode, content: &str) -> u64 {
    let response = reqwest::Client::new()
        .post(format!("http://{}/broadcast", node.addr))
        .bearer_auth(TOKEN)
        .json(&json!({ "message": content, "room": ROOM }))
        .send()
        .await
        .expect("POST /broadcast answers");
    assert_eq!(response.status(), 202, "the room publication is accepted");
    let body: Value = response.json().await.expect("a JSON answer");
    body["offset"].as_u64().expect("the answer has the offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_page_counts_on_and_shows_each_room_publication_once_through_a_drain() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let driver = ChromeDriver::start().await;
    let redis = RedisServer::start().await;
    let a = ChildNode::start(&redis, "node-a", NODE_FLAGS).await;
    let b = ChildNode::start(&redis, "node-b", NODE_FLAGS).await;
    let proxy = Proxy::start(a.addr).await;
    let browser = driver.session().await;
    let run = scenario(&browser, a, &b, &proxy);
    in_browser(browser.clone(), "test-page-drain-failure.png", run).await;
    drop(driver);
}

async fn scenario(browser: &Client, mut a: ChildNode, b: &ChildNode, proxy: &Proxy) {
    browser
        .goto(&format!("http://{}/test/", proxy.addr))
        .await
        .expect("the browser loads /test/ through the proxy");
    type_into(browser, "user", "carol").await;
    type_into(browser, "room", ROOM).await;
    click(browser, "connect").await;
    wait_drain(browser, "open on node-a", |p| {
        p.state == "open" && p.instance == "node-a"
    })
    .await;
    click(browser, "join").await;
    assert_eq!(publish(b, "before the drain").await, 1);
    wait_drain(browser, "the publication before the drain", |p| {
        p.shown(1) == 1
    })
    .await;

    click(browser, "keep-sending").await;
    let counting = wait_drain(browser, "20 counts", |p| p.count() >= 20).await;

    // Nothing reaches node-b until the test says so: the page is surely away when #3 is made.
    let nowhere = std::net::SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()));
    proxy.point_to(nowhere);
    a.signal(SIGTERM);
    assert_eq!(publish(b, "during the drain").await, 2);
    wait_drain(browser, "the page away from node-a", |p| {
        p.state == "reconnecting"
    })
    .await;
    assert_eq!(publish(b, "while away").await, 3);
    proxy.point_to(b.addr);
    let resumed_from = counting.count();
    let page = wait_drain(browser, "counting on node-b", |p| {
        p.state == "open" && p.instance == "node-b" && p.count() >= resumed_from + 40
    })
    .await;
    assert!(
        page.lines_with("\"bye\":true") == 1 && page.lines_with("closed 1001") == 1,
        "the page was drained: {}",
        page.describe()
    );

    click(browser, "keep-sending").await;
    wait_drain(browser, "every send answered", |p| {
        p.pending == "0" && p.answers.len() as u64 == p.count()
    })
    .await;
    assert_eq!(publish(b, "after").await, 4);
    let page = wait_drain(browser, "the publication after the drain", |p| {
        p.shown(4) == 1
    })
    .await;

    let n = page.count();
    assert_eq!(
        page.answers,
        (1..=n).collect::<Vec<_>>(),
        "every send() answered once, with the next count"
    );
    assert_eq!(
        page.answers_shown,
        format!("{n} (1–{n}), no gap, no repeat")
    );
    let shown: Vec<usize> = (1..=4).map(|k| page.shown(k)).collect();
    assert_eq!(shown, [1, 1, 1, 1], "{}", page.describe());
    let contents: Vec<&str> = page
        .messages
        .iter()
        .map(|m| m.split(": ").nth(1).unwrap().split("  (").next().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "\"before the drain\"",
            "\"during the drain\"",
            "\"while away\"",
            "\"after\""
        ],
        "in offset order, from the operator"
    );
    assert_eq!(
        (
            page.duplicates.as_str(),
            page.anomalies.as_str(),
            page.lost.as_str()
        ),
        ("0", "0", "0"),
        "{}",
        page.describe()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), a.child.wait())
        .await
        .expect("node-a exits within 10 s of SIGTERM")
        .expect("node-a's exit status");
    assert!(status.success(), "node-a exits 0 after its drain: {status}");
    save_screenshot(browser, "test-page-drain.png").await;
}
