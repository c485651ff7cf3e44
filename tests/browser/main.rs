//! The `/test/` page in a real browser: Debian's headless Chromium driven through
//! chromedriver (WebDriver, via fantoccini).
//!
//! The page is loaded through a small TCP proxy inside the test, and its socket goes through
//! the same proxy (the page connects to `location.host`). The proxy sends new connections to
//! one instance at a time, as a load balancer would; taking an instance out of rotation and
//! then stopping it shows whether the page resumes its session elsewhere with the count going
//! on. A screenshot of the page is kept in `<target>/test-artifacts/test-page.png`.
//!
//! Needs `redis-server`, `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`); without them the test fails with one line saying what to install.
//!
//! drain.rs: the page counting and in a room through a drain, every count and publication once.
//!
//! rooms.rs: the page's Rooms panel next to a tokio-tungstenite member, and its recovery of
//! what was published while it was away.

#[path = "../common/mod.rs"]
mod common;
mod drain;
mod harness;
mod rooms;

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    path::PathBuf,
    time::{Duration, Instant},
};

use fantoccini::{Client, Locator};
use futures_util::FutureExt;
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::json;

use harness::{ChildNode, ChromeDriver, Proxy, RedisServer, SIGKILL, SIGTERM};

/// Longest wait for the page to reach any one expected state.
const PATIENCE: Duration = Duration::from_secs(15);

const TOKEN: &str = "browser-test-token";

/// Heartbeats often enough to see one; a token so the test can broadcast.
const NODE_FLAGS: &[&str] = &["--heartbeat-interval", "1s", "--broadcast-token", TOKEN];

/// One Chromium at a time: two would share the machine's two cores with four nodes.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A view of the page that a test reads in one WebDriver round trip.
trait PageView: DeserializeOwned {
    /// A script returning the view as a JSON object.
    const SCRIPT: &'static str;
    /// What to print when the page never reaches the state a test waits for.
    fn describe(&self) -> String;
}

/// What the page shows, read in one WebDriver round trip.
#[derive(Debug, Deserialize)]
struct Page {
    session: String,
    state: String,
    instance: String,
    count: String,
    heartbeat: String,
    broadcast: String,
    log: String,
}

impl Page {
    fn open_on(&self, instance: &str) -> bool {
        self.state == "open" && self.instance == instance
    }

    fn lines_with(&self, needle: &str) -> usize {
        self.log.lines().filter(|l| l.contains(needle)).count()
    }

    /// How many times the socket opened (the log's `connected` lines).
    fn connects(&self) -> usize {
        self.log
            .lines()
            .filter(|l| l.ends_with("  connected"))
            .count()
    }
}

impl PageView for Page {
    const SCRIPT: &'static str = r#"
        const $ = (id) => document.getElementById(id);
        return {
            session: $("session").value,
            state: $("state").textContent,
            instance: $("instance").textContent,
            count: $("count").textContent,
            heartbeat: $("heartbeat").textContent,
            broadcast: $("broadcast").textContent,
            log: $("log").textContent,
        };
    "#;

    fn describe(&self) -> String {
        format!(
            "state={:?} instance={:?} count={:?}\n--- page log ---\n{}",
            self.state, self.instance, self.count, self.log
        )
    }
}

async fn read<P: PageView>(browser: &Client) -> P {
    let value = browser
        .execute(P::SCRIPT, vec![])
        .await
        .expect("the page answers a script");
    serde_json::from_value(value).expect("the page has every element the test reads")
}

async fn read_page(browser: &Client) -> Page {
    read(browser).await
}

/// Polls the page every 50 ms until `ready` holds; fails with what the page shows after
/// `PATIENCE`.
async fn wait_for_view<P: PageView>(browser: &Client, what: &str, ready: impl Fn(&P) -> bool) -> P {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let page: P = read(browser).await;
        if ready(&page) {
            return page;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {PATIENCE:?} waiting for the page to show {what}; it shows {}",
                page.describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(browser: &Client, what: &str, ready: impl Fn(&Page) -> bool) -> Page {
    wait_for_view(browser, what, ready).await
}

async fn click(browser: &Client, id: &str) {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id} on the page: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking #{id}: {e}"));
}

/// Replaces the text of the input `id` with `text`.
async fn type_into(browser: &Client, id: &str, text: &str) {
    let input = browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id} on the page: {e}"));
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

/// Clicks a send button and waits for the counter to show `expected`.
async fn send_and_expect(browser: &Client, button: &str, expected: u64) {
    click(browser, button).await;
    let want = expected.to_string();
    wait_for(browser, &format!("count {expected} after #{button}"), |p| {
        p.count == want
    })
    .await;
}

/// `<target>/test-artifacts`, next to the test binary's `<target>/<profile>/deps`.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let target = exe
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "deps"))
        .and_then(|deps| deps.parent()?.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("the artifacts directory can be made");
    dir
}

async fn save_screenshot(browser: &Client, name: &str) -> PathBuf {
    let png = browser
        .screenshot()
        .await
        .expect("the browser takes a screenshot");
    let path = artifacts_dir().join(name);
    std::fs::write(&path, png).expect("the screenshot is written");
    eprintln!("screenshot: {}", path.display());
    path
}

/// Runs `scenario` in `browser`; when it fails, keeps a screenshot of the page as
/// `failure_png` first. Closes the browser session either way.
async fn in_browser(browser: Client, failure_png: &str, scenario: impl Future<Output = ()>) {
    let _ = std::fs::remove_file(artifacts_dir().join(failure_png));
    let outcome = AssertUnwindSafe(scenario).catch_unwind().await;
    if outcome.is_err() {
        // Best effort: what the page looked like when the test gave up.
        if let Ok(Ok(png)) =
            tokio::time::timeout(Duration::from_secs(5), browser.screenshot()).await
        {
            let path = artifacts_dir().join(failure_png);
            if std::fs::write(&path, png).is_ok() {
                eprintln!("screenshot of the failure: {}", path.display());
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), browser.close()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_page_resumes_on_another_instance_with_the_count_going_on() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let started = Instant::now();
    // First, so that a machine without the browser fails at once with the line to run.
    let driver = ChromeDriver::start().await;
    let redis = RedisServer::start().await;
    let a = ChildNode::start(&redis, "node-a", NODE_FLAGS).await;
    let b = ChildNode::start(&redis, "node-b", NODE_FLAGS).await;
    let proxy = Proxy::start(a.addr).await;
    let browser = driver.session().await;
    let run = scenario(&browser, &redis, a, b, &proxy);
    in_browser(browser.clone(), "test-page-failure.png", run).await;
    drop(driver);
    eprintln!("browser test took {:.1?}", started.elapsed());
}

async fn scenario(
    browser: &Client,
    redis: &RedisServer,
    mut a: ChildNode,
    b: ChildNode,
    proxy: &Proxy,
) {
    browser
        .goto(&format!("http://{}/test/", proxy.addr))
        .await
        .expect("the browser loads /test/ through the proxy");
    let page = wait_for(browser, "the page loaded, not connected", |p| {
        p.state == "idle"
    })
    .await;
    assert_eq!(page.count, "0");

    // Connect with an empty session: the server makes one and the page fills the field in.
    click(browser, "connect").await;
    let page = wait_for(browser, "open on node-a", |p| p.open_on("node-a")).await;
    assert_eq!(page.count, "0", "a new session starts at 0");
    let session = page.session.clone();
    assert!(
        !session.is_empty()
            && session
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "the page shows the session the server made, got {session:?}"
    );

    // Type a message, send it, then send ten more.
    let text = browser.find(Locator::Id("text")).await.unwrap();
    text.clear().await.unwrap();
    text.send_keys("typed in chromium").await.unwrap();
    send_and_expect(browser, "send", 1).await;
    send_and_expect(browser, "send", 2).await;
    send_and_expect(browser, "send10", 12).await;
    let page = read_page(browser).await;
    assert!(
        page.log.contains("→ typed in chromium"),
        "the log shows what was sent:\n{}",
        page.log
    );

    // Heartbeats and an operator broadcast show up as they arrive.
    wait_for(browser, "a heartbeat", |p| p.heartbeat.ends_with('Z')).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/broadcast", a.addr))
        .bearer_auth(TOKEN)
        .json(&json!({"message": "hello from the browser test"}))
        .send()
        .await
        .expect("POST /broadcast answers");
    assert_eq!(response.status(), 202, "the broadcast is accepted");
    wait_for(browser, "the broadcast", |p| {
        p.broadcast.contains("hello from the browser test")
    })
    .await;

    // Disconnect, then connect again: same session, count kept. The server answers the
    // page's close frame, so the browser sees a clean 1000, not 1006.
    click(browser, "disconnect").await;
    wait_for(browser, "closed 1000 after Disconnect", |p| {
        p.state == "idle" && p.lines_with("closed 1000") == 1
    })
    .await;
    click(browser, "connect").await;
    let page = wait_for(browser, "open again", |p| {
        p.open_on("node-a") && p.connects() == 2
    })
    .await;
    assert_eq!(
        page.session, session,
        "Connect reuses the session in the field"
    );
    assert_eq!(
        page.count, "12",
        "the count resumes after Disconnect/Connect"
    );

    // "Reconnect with this session" while open.
    click(browser, "reconnect").await;
    let page = wait_for(browser, "open after Reconnect", |p| {
        p.open_on("node-a") && p.connects() == 3
    })
    .await;
    assert_eq!(page.count, "12", "the count resumes after Reconnect");
    send_and_expect(browser, "send", 13).await;

    // Drain: take node-a out of rotation, then SIGTERM it. The page gets a bye and 1001 and
    // reconnects by itself, through the proxy, to node-b.
    proxy.point_to(b.addr);
    a.signal(SIGTERM);
    let page = wait_for(
        browser,
        "the session resumed on node-b after the drain",
        |p| p.open_on("node-b"),
    )
    .await;
    assert_eq!(page.session, session, "same session after the drain");
    assert_eq!(page.count, "13", "the count carries over to node-b");
    assert_eq!(page.lines_with("\"bye\":true"), 1, "{}", page.log);
    assert_eq!(page.lines_with("closed 1001"), 1, "{}", page.log);
    send_and_expect(browser, "send", 14).await;
    let status = tokio::time::timeout(Duration::from_secs(10), a.child.wait())
        .await
        .expect("node-a exits within 10 s of SIGTERM")
        .expect("node-a's exit status");
    assert!(status.success(), "node-a exits 0 after its drain: {status}");

    // Crash: a new node-c comes into rotation, node-b is SIGKILLed. The page sees a dropped
    // connection (1006) and reconnects with backoff, to node-c.
    let c = ChildNode::start(redis, "node-c", NODE_FLAGS).await;
    proxy.point_to(c.addr);
    let drops_before = read_page(browser).await.lines_with("closed 1006");
    b.signal(SIGKILL);
    let page = wait_for(
        browser,
        "the session resumed on node-c after the crash",
        |p| p.open_on("node-c"),
    )
    .await;
    assert_eq!(page.session, session, "same session after the crash");
    assert_eq!(page.count, "14", "the count carries over to node-c");
    assert_eq!(
        page.lines_with("closed 1006"),
        drops_before + 1,
        "{}",
        page.log
    );
    send_and_expect(browser, "send", 15).await;

    // Redis loses every session: the page's resume passes `last_count`, so the count goes on
    // from what the page was told instead of starting again at 0.
    assert_eq!(redis.command("FLUSHALL").await, "OK");
    click(browser, "reconnect").await;
    let page = wait_for(
        browser,
        "the page resumed after Redis lost the session",
        |p| p.state == "open" && p.lines_with("(repaired)") == 1,
    )
    .await;
    assert_eq!(
        page.count, "15",
        "the count carries over a Redis that lost it"
    );
    send_and_expect(browser, "send", 16).await;

    let page = read_page(browser).await;
    assert_eq!(page.connects(), 6, "{}", page.log);
    save_screenshot(browser, "test-page.png").await;
}
