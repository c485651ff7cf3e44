//! Metric series stay bounded whatever clients send, and every series known in advance is
//! there at 0 from start-up.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

use crate::helpers::{eventually, spawn_app, Client, RedisServer};

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
        "not_websocket",
        "origin",
        "redis_unavailable",
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
        let echo = tokio::time::timeout(Duration::from_secs(5), client.ws.next()).await;
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
