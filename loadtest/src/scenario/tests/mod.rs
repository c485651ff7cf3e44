//! The scenarios end to end against a small in-process fake of the server (loopback only):
//! it speaks the documented frames, keeps a counter per session across connections, honours
//! a resuming client's `last_count`, and can be told to skip a number, to drain or fence each
//! session once (bye + close 1001, close 1008), to lose counters (as Redis restarted without
//! its data), or to move a counter on behind a resuming client's back; the checks must
//! notice what is wrong and carry on through what is not.

mod fake;
mod resuming;

use std::time::Duration;

use clap::Parser;

use self::fake::{serve, Fake};
use crate::cli::{Cli, Command};

/// Runs the tool with `args` against `url`, in this process, and returns its report.
async fn run(url: &str, args: &[&str]) -> crate::report::Report {
    let mut argv = vec!["wsfleet-loadtest"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--url", url, "--timeout", "20s", "--no-progress"]);
    let Command::Load(mut scenario) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not a load scenario");
    };
    scenario.settle_random_defaults();
    super::run(&scenario).await.unwrap()
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

#[tokio::test]
async fn the_plot_of_a_small_run_is_well_formed_svg_with_every_panel() {
    let url = serve(Fake::default()).await;
    let r = run(
        &url,
        &[
            "open-loop",
            "-n",
            "3",
            "--rate",
            "40",
            "--duration",
            "1500ms",
        ],
    )
    .await;
    assert_eq!(r.messages.received, 180, "{r:?}");
    assert_eq!(
        r.plot.over_time.len(),
        2,
        "two seconds: {:?}",
        r.plot.over_time
    );
    let file = std::env::temp_dir().join(format!("wsfleet-plot-test-{}.svg", std::process::id()));
    crate::plot::write(&r, &file).unwrap();
    let svg = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();

    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for label in [
        "Latency of the replies, per second",
        "Replies per second",
        "Distribution of all latencies (10 bins per decade)",
        "seconds since the run phase started",
        "latency (ms, log scale)",
        "replies/s",
        "% of replies",
        "p50",
        "p99",
        "max",
    ] {
        assert!(texts.contains(&label), "no text {label:?} in {texts:?}");
    }
    for mark in ["p50 ", "p99 ", "max "] {
        let found = texts
            .iter()
            .any(|t| t.starts_with(mark) && t.ends_with(" ms"));
        assert!(found, "no \"{mark}… ms\" in {texts:?}");
    }
    assert!(texts
        .iter()
        .any(|t| t.starts_with("wsfleet-loadtest open-loop")));
    // Three latency lines of two seconds, and the p50/p99/max markers plus legend keys.
    let lines = doc.descendants().filter(|n| n.has_tag_name("polyline"));
    let two_point_lines = lines
        .filter(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .count()
                == 2
        })
        .count();
    assert!(
        two_point_lines >= 6,
        "{two_point_lines} polylines of 2 points"
    );
}
