//! Metric series stay bounded whatever clients send, and every series known in advance is
//! there at 0 from start-up. The process metrics are the node's own, and plausible.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

use crate::helpers::{eventually, spawn_app, ws_url, ChildNode, Client, RedisServer, PATIENCE};

async fn scrape(app: &crate::helpers::TestApp) -> String {
    reqwest::get(app.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The series lines (not `#` lines) of `family`.
fn series<'a>(exposition: &'a str, family: &str) -> Vec<&'a str> {
    let prefix = format!("{family}{{");
    exposition
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect()
}

#[tokio::test]
async fn a_fresh_node_exports_every_known_label_set_at_zero() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let text = scrape(&app).await;
    let mut expected = Vec::new();
    for code in [
        "1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009", "1011", "1013",
        "other",
    ] {
        expected.push(format!(
            "wsfleet_connections_closed_total{{code=\"{code}\"}} 0"
        ));
    }
    for reason in [
        "bad_session",
        "capacity",
        "draining",
        "forbidden",
        "not_websocket",
        "origin",
        "redis_unavailable",
        "unauthorized",
        "other",
    ] {
        expected.push(format!(
            "wsfleet_upgrades_rejected_total{{reason=\"{reason}\"}} 0"
        ));
    }
    for operation in [
        "increment",
        "claim",
        "touch",
        "register",
        "unregister",
        "renew",
        "snapshot",
        "resync",
        "heartbeat",
        "heartbeat_release",
        "publish",
        "ping",
        "deregister",
        "room_join",
        "room_take",
        "room_leave",
        "room_release",
        "room_renew",
        "room_publish",
        "room_info",
        "room_remember",
        "history_read",
        "other",
    ] {
        expected.push(format!(
            "wsfleet_redis_errors_total{{operation=\"{operation}\"}} 0"
        ));
    }
    expected.push("wsfleet_log_lines_dropped_total 0".to_string());
    for line in &expected {
        assert!(text.contains(line.as_str()), "missing {line:?} in\n{text}");
    }
    // Nothing else in those families: the lists are the whole label sets.
    for family in [
        "wsfleet_connections_closed_total",
        "wsfleet_upgrades_rejected_total",
        "wsfleet_redis_errors_total",
    ] {
        let found = series(&text, family).len();
        let listed = expected.iter().filter(|l| l.starts_with(family)).count();
        assert_eq!(found, listed, "{family} in\n{text}");
    }
}

#[tokio::test]
async fn two_hundred_client_chosen_close_codes_create_no_new_series() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let before = series(&scrape(&app).await, "wsfleet_connections_closed_total").len();
    const CODES: u16 = 200;
    for code in 3000..3000 + CODES {
        let mut client = Client::connect(&app.ws_url(None)).await;
        client
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "bye".into(),
            }))
            .await
            .unwrap();
        // The server's echo completes the handshake: the close has been counted by then or
        // is about to be (the poll below waits for all of them).
        // A heartbeat may come first.
        let echo = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match client.ws.next().await {
                    Some(Ok(Message::Text(_))) => continue,
                    other => return other,
                }
            }
        })
        .await;
        assert!(
            matches!(echo, Ok(Some(Ok(Message::Close(_))))),
            "code {code}: {echo:?}"
        );
    }
    let text = eventually("all 200 closes to be counted", || async {
        let text = scrape(&app).await;
        text.contains(&format!(
            "wsfleet_connections_closed_total{{code=\"other\"}} {CODES}"
        ))
        .then_some(text)
    })
    .await;
    let after = series(&text, "wsfleet_connections_closed_total");
    assert_eq!(after.len(), before, "{after:#?}");
}

/// The value of the unlabelled series `name` in `exposition`; panics when it is missing.
fn value(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{exposition}"))
}

#[tokio::test]
async fn a_node_reports_its_own_cpu_time_memory_and_file_descriptors() {
    let redis = RedisServer::start().await;
    let unix_now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let began = unix_now();
    // A child process, so that the numbers are the node's and not the test runner's; no rate
    // limit, so that one socket can make it work as fast as Redis answers.
    let node = ChildNode::start(&redis, "process-metrics", &["--rate-limit", "0"]).await;
    let url = format!("http://{}/metrics", node.addr);
    let scrape = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };

    let first = scrape().await;
    let open = value(&first, "wsfleet_process_open_fds");
    let max = value(&first, "wsfleet_process_max_fds");
    assert!(open >= 1.0 && open <= max, "open {open}, max {max}");
    // The limit the node raised its soft limit to, of which it keeps 64 (FD_RESERVE in
    // src/startup.rs) for everything but client sockets.
    assert_eq!(
        max,
        value(&first, "wsfleet_connections_max") + 64.0,
        "{first}"
    );
    // A node's binary, stacks and heap: a few MiB; a GiB would be a wrong unit or a leak.
    let rss = value(&first, "wsfleet_process_resident_memory_bytes");
    assert!(
        (1 << 20) as f64 <= rss && rss < (1 << 30) as f64,
        "rss {rss}"
    );
    let start = value(&first, "wsfleet_process_start_time_seconds");
    // /proc counts the start in clock ticks from a boot time in whole seconds: a second of slack.
    assert!(
        began - 1.0 <= start && start <= unix_now() + 1.0,
        "start {start}, test {began}"
    );

    // Sockets to make the node work, and whose descriptors are counted at the end.
    const SOCKETS: usize = 20;
    let mut clients = Vec::new();
    for i in 0..SOCKETS {
        let url = ws_url(node.addr, Some(&format!("process-metrics-{i}")));
        clients.push(Client::connect(&url).await);
    }
    // CPU seconds grow with work: counted messages until the node has spent 50 ms (5 clock
    // ticks) more than at the first scrape, within PATIENCE.
    let cpu = value(&first, "wsfleet_process_cpu_seconds_total");
    let deadline = Instant::now() + PATIENCE;
    let mut messages = 0;
    let grown = loop {
        for client in &mut clients {
            client.send("work").await;
            client.next_reply().await;
            messages += 1;
        }
        let now = value(&scrape().await, "wsfleet_process_cpu_seconds_total");
        if now >= cpu + 0.05 || Instant::now() > deadline {
            break now;
        }
    };
    assert!(
        grown >= cpu + 0.05,
        "CPU seconds went from {cpu} to {grown} over {messages} messages"
    );

    // Each socket holds one file descriptor of the node, given back when it closes. Measured as
    // the drop at close rather than a rise from the first scrape: descriptors the start-up left
    // open (readiness polls' connections, closed when the node next reads them) may close at
    // any time, which only makes the drop larger, never smaller.
    let with_sockets = value(&scrape().await, "wsfleet_process_open_fds");
    assert!(with_sockets <= max, "open {with_sockets}, max {max}");
    drop(clients);
    eventually("the node to close one descriptor per socket", || async {
        let now = value(&scrape().await, "wsfleet_process_open_fds");
        (with_sockets - now >= SOCKETS as f64).then_some(())
    })
    .await;
}
