//! The scenarios end to end against a small in-process fake of the server (loopback only):
//! it speaks the documented frames and can be told to skip a number, which the counter check
//! must catch.

use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Cli;

/// How the fake misbehaves.
#[derive(Clone, Copy, Default)]
struct Fake {
    /// Count to start every session from (the welcome count).
    start: u64,
    /// After this many replies, jump the counter by one (a lost increment).
    skip_after: Option<u64>,
    /// Send a heartbeat this often.
    heartbeat: Option<Duration>,
}

/// Starts the fake on an ephemeral loopback port; returns its URL. It lives as long as the
/// test's runtime.
async fn serve(fake: Fake) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/chat/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(session(tcp, fake));
        }
    });
    url
}

async fn session(tcp: tokio::net::TcpStream, fake: Fake) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let welcome = format!(
        r#"{{"session_uuid":"s","count":{},"resumed":false,"instance":"fake"}}"#,
        fake.start
    );
    if ws.send(Message::text(welcome)).await.is_err() {
        return;
    }
    let mut count = fake.start;
    let mut replies = 0;
    let mut beat = tokio::time::interval(fake.heartbeat.unwrap_or(Duration::from_secs(3600)));
    beat.tick().await;
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(_))) => {
                    count += 1;
                    if fake.skip_after == Some(replies) {
                        count += 1;
                    }
                    replies += 1;
                    let reply = format!(r#"{{"count":{count}}}"#);
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = beat.tick(), if fake.heartbeat.is_some() => {
                let hb = r#"{"ts":"2026-01-01T00:00:00.000Z"}"#;
                if ws.send(Message::text(hb)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn run(url: &str, args: &[&str]) -> crate::report::Report {
    let mut argv = vec!["wsfleet-loadtest"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--url", url, "--timeout", "20s", "--no-progress"]);
    let cli = Cli::try_parse_from(argv).unwrap();
    super::run(&cli.scenario).await.unwrap()
}

#[tokio::test]
async fn closed_loop_counts_every_reply_and_finds_none_wrong() {
    let url = serve(Fake {
        start: 41,
        ..Fake::default()
    })
    .await;
    let r = run(&url, &["closed-loop", "-n", "5", "-m", "20"]).await;
    assert_eq!((r.connections.ok, r.connections.failed), (5, 0));
    assert_eq!((r.messages.sent, r.messages.received), (100, 100));
    assert_eq!((r.count_violations, r.errors), (0, 0), "{r:?}");
    assert_eq!(r.connections.open_at_end, 5);
    assert_eq!(r.latency_ms.as_ref().unwrap().samples, 100);
    assert_eq!(r.exit_code(), 0);
}

#[tokio::test]
async fn a_skipped_number_is_a_violation_and_fails_the_run() {
    let url = serve(Fake {
        skip_after: Some(3),
        ..Fake::default()
    })
    .await;
    let r = run(&url, &["closed-loop", "-n", "4", "-m", "10"]).await;
    assert_eq!(r.count_violations, 4, "one per socket: {r:?}");
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test]
async fn open_loop_sends_at_the_rate_and_checks_counts() {
    let url = serve(Fake::default()).await;
    let r = run(
        &url,
        &[
            "open-loop",
            "-n",
            "3",
            "--rate",
            "50",
            "--duration",
            "400ms",
        ],
    )
    .await;
    assert_eq!((r.messages.sent, r.messages.received), (60, 60), "{r:?}");
    assert_eq!((r.count_violations, r.errors), (0, 0), "{r:?}");
    // 20 frames at 50/s take about 0.4 s; far less would mean the rate was not kept.
    assert!(r.messages.run_seconds >= 0.35, "{r:?}");
}

#[tokio::test]
async fn hold_keeps_sockets_open_and_counts_heartbeats() {
    let url = serve(Fake {
        heartbeat: Some(Duration::from_millis(50)),
        ..Fake::default()
    })
    .await;
    let r = run(&url, &["hold", "-n", "3", "--duration", "500ms"]).await;
    assert_eq!(
        (r.connections.ok, r.connections.open_at_end),
        (3, 3),
        "{r:?}"
    );
    let hb = r.heartbeats_per_socket.as_ref().unwrap();
    assert!(hb.min >= 5, "{hb:?}");
    assert_eq!(r.exit_code(), 0);
}

#[tokio::test]
async fn a_refused_connection_is_counted_not_fatal() {
    // Bind and drop: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}/ws/chat/");
    let r = run(&url, &["closed-loop", "-n", "2", "-m", "1"]).await;
    assert_eq!((r.connections.ok, r.connections.failed), (0, 2));
    assert_eq!(
        r.error_kinds.get("connect: io ConnectionRefused"),
        Some(&2),
        "{r:?}"
    );
    assert_eq!(r.exit_code(), 2);
}

#[tokio::test]
async fn hold_can_warm_each_socket_up_with_counted_messages_first() {
    let url = serve(Fake::default()).await;
    let r = run(
        &url,
        &[
            "hold",
            "-n",
            "2",
            "--duration",
            "300ms",
            "--warmup-messages",
            "3",
        ],
    )
    .await;
    assert_eq!((r.messages.sent, r.messages.received), (6, 6), "{r:?}");
    assert_eq!(
        (r.count_violations, r.errors, r.connections.open_at_end),
        (0, 0, 2)
    );
}
