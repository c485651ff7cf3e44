//! The fleet end to end: the real `make` targets (`up`, `scale`, `promote`, `status`, `down`)
//! with our own nginx, Redis and instances, while resuming WebSocket clients keep sending
//! through nginx; (reload.rs) nginx reloaded under load; (redis.rs) `make up`'s Redis
//! surviving a SIGKILL with its counts, and `make status` as a health check; and (topology.rs)
//! `make up REDIS=sentinel` (and `REDIS=cluster`, once the server supports it).
//!
//! Each test gets a private run directory (`RUN_DIR`) and free loopback ports (`PORT`,
//! `REDIS_PORT`, `BASE_PORT`), so it never meets a developer's fleet or another test. The make
//! targets run with `SKIP_BUILD=1` and the debug binaries of this test's own build
//! (`<target>/debug/wsfleet`, `…/wsfleet-loadtest`; `WSFLEET_BIN` and `LOADTEST_BIN`
//! override): a `cargo build` inside `cargo test` would wait forever for the build lock that
//! `cargo test` holds. `make test` builds them first, in the dev profile, which shares every
//! compiled dependency with the tests (a release build would double CI's compile time).
//!
//! Every make call has a time limit, every loop a bound in count and time, and everything a
//! test started is stopped by `make down`, then by pid if anything survived, however the test
//! ends. Only 127.0.0.1 is contacted.

use std::{
    collections::BTreeSet,
    fs::File,
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use wsfleet_testkit::{client_config, free_ports, send_signal, workspace_binary, Socket, SIGKILL};

/// Each test runs a whole fleet; on two cores, one at a time.
static ONE_FLEET_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Longest wait for one expected event (a reply, a state of /status).
const PATIENCE: Duration = Duration::from_secs(20);

mod clients;
mod harness;
mod redis;
mod reload;
mod topology;
use clients::*;
use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resuming_through_nginx_lose_no_count_across_scale_promote_and_scale_down() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let began = Instant::now();
    let mut fleet = Fleet::new("lifecycle");
    let limit = Duration::from_secs(90);

    let up = tokio::task::block_in_place(|| fleet.make("up", &[("N", "2")], limit));
    up.assert_ok("make up");
    assert!(up.text.contains("the fleet is up"), "{}", up.text);
    assert!(
        up.text
            .contains(&format!("http://127.0.0.1:{}/test/", fleet.port)),
        "{}",
        up.text
    );
    fleet.expect_instances(2, "blue").await;
    assert_eq!(
        fleet.public_status_code().await,
        404,
        "/status is not on nginx's public listener"
    );

    // /broadcast, /metrics and nginx's stub_status are not on the public listener.
    for (method, path) in [
        ("POST", "/broadcast"),
        ("GET", "/metrics"),
        ("GET", "/nginx_status"),
    ] {
        let url = format!("http://127.0.0.1:{}{path}", fleet.port);
        let request = reqwest::Client::new().request(method.parse().unwrap(), &url);
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, 404, "{method} {path} through nginx");
    }

    // stub_status answers on its own socket in the run directory (docs/OBSERVABILITY.md#nginx).
    let status_page = nginx_status(&fleet.run_dir.join("nginx/status.sock")).await;
    assert!(
        status_page.starts_with("HTTP/1.1 200") && status_page.contains("Active connections:"),
        "{status_page}"
    );

    let clients = 200;
    let traffic = Arc::new(Traffic::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let tag = std::process::id();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(resuming_client(
                fleet.ws_url(&format!("e2e-{tag}-{i}")),
                format!("e2e-{tag}-{i}"),
                Duration::from_millis(20),
                traffic.clone(),
                deadline,
            ))
        })
        .collect();
    expect_progress(&traffic, 5 * clients, "the clients connected").await;

    let out = tokio::task::block_in_place(|| fleet.make("scale", &[("N", "4")], limit));
    out.assert_ok("make scale N=4");
    fleet.expect_instances(4, "blue").await;
    expect_progress(&traffic, 3 * clients, "make scale N=4").await;

    let out = tokio::task::block_in_place(|| fleet.make("promote", &[], limit));
    out.assert_ok("make promote");
    assert!(
        out.text.contains("promoted   blue -> green"),
        "{}",
        out.text
    );
    fleet.expect_instances(4, "green").await;
    expect_progress(&traffic, 3 * clients, "make promote").await;
    // The smoke test published to a private room of its own, not to the fleet: the fleet's
    // broadcast stream is still empty (and no client got a broadcast, checked below).
    let (fresh, welcome) = connect_welcome(&fleet.ws_url(&format!("e2e-{tag}-after-promote")))
        .await
        .unwrap();
    assert_eq!(welcome["offset"], 0, "a broadcast was published: {welcome}");
    drop(fresh);
    assert!(
        out.text.contains("offsets 1 and 2 received"),
        "the smoke test went through its room: {}",
        out.text
    );

    let status = tokio::task::block_in_place(|| fleet.make("status", &[], limit));
    status.assert_ok("make status");
    assert_eq!(
        status.text.matches("green  live").count(),
        4,
        "{}",
        status.text
    );

    let out = tokio::task::block_in_place(|| fleet.make("scale", &[("N", "2")], limit));
    out.assert_ok("make scale N=2");
    fleet.expect_instances(2, "green").await;
    expect_progress(&traffic, 3 * clients, "make scale N=2").await;

    traffic.stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("a client stops in time")
                .expect("a client task does not panic"),
        );
    }
    let broken: Vec<&ClientReport> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    assert!(
        broken.is_empty(),
        "{} of {clients} clients saw a gap, a repeat or an error, e.g. {:?}",
        broken.len(),
        &broken[..broken.len().min(5)]
    );
    // The promotion drained every blue socket: every client resumed at least once, and still
    // ended where its replies said.
    let leaked: u64 = reports.iter().map(|r| r.broadcasts).sum();
    assert_eq!(
        leaked, 0,
        "clients received broadcasts nobody meant for them"
    );
    let not_moved: Vec<&str> = reports
        .iter()
        .filter(|r| r.reconnects == 0)
        .map(|r| r.session.as_str())
        .collect();
    assert!(not_moved.is_empty(), "never resumed: {not_moved:?}");
    let total: u64 = reports.iter().map(|r| r.last).sum();
    let byes: u64 = reports.iter().map(|r| r.byes).sum();
    let recovered: u64 = reports.iter().map(|r| r.recovered_from_welcome).sum();
    assert!(total >= 14 * clients, "only {total} messages counted");
    eprintln!(
        "{clients} clients: {total} messages counted, no gap, no repeat; {byes} byes, \
         {} reconnects, {recovered} replies recovered from a welcome; {:.1}s so far",
        reports.iter().map(|r| r.reconnects).sum::<u64>(),
        began.elapsed().as_secs_f64()
    );

    tokio::task::block_in_place(|| fleet.down_and_check_nothing_is_left());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_whose_new_colour_fails_rolls_back_and_the_old_colour_keeps_serving() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new("rollback");
    let limit = Duration::from_secs(90);

    let up = tokio::task::block_in_place(|| fleet.make("up", &[("N", "1")], limit));
    up.assert_ok("make up");
    let again = tokio::task::block_in_place(|| fleet.make("up", &[], limit));
    again.assert_ok("make up, twice");
    assert!(again.text.contains("already up"), "{}", again.text);

    let session = format!("rollback-{}", std::process::id());
    let (mut socket, welcome) = connect(&fleet.ws_url(&session)).await.unwrap();
    assert_eq!(welcome, 0);
    assert_eq!(send_and_count(&mut socket).await, 1);

    // A configuration the new colour refuses at start-up.
    let out = tokio::task::block_in_place(|| {
        fleet.make("promote", &[("PROMOTE_ENV", "MAX_MESSAGE_BYTES=0")], limit)
    });
    assert_ne!(out.code, Some(0), "{}", out.text);
    assert!(out.text.contains("promote FAILED"), "{}", out.text);
    assert!(out.text.contains("traffic stays on blue"), "{}", out.text);
    assert!(
        out.text.contains("MAX_MESSAGE_BYTES"),
        "the cause is shown: {}",
        out.text
    );
    assert_eq!(
        send_and_count(&mut socket).await,
        2,
        "the old socket still counts"
    );
    fleet.expect_instances(1, "blue").await;

    // A new colour that starts and is ready, but fails the smoke test (its broadcast token is
    // not the fleet's, so the smoke test's operator message to its room is refused).
    let out = tokio::task::block_in_place(|| {
        fleet.make(
            "promote",
            &[("PROMOTE_ENV", "BROADCAST_TOKEN=not-the-fleets")],
            limit,
        )
    });
    assert_ne!(out.code, Some(0), "{}", out.text);
    assert!(out.text.contains("smoke: FAILED"), "{}", out.text);
    assert!(out.text.contains("401"), "{}", out.text);
    assert!(out.text.contains("traffic stays on blue"), "{}", out.text);
    assert_eq!(
        send_and_count(&mut socket).await,
        3,
        "the old socket still counts"
    );
    fleet.expect_instances(1, "blue").await;
    let (mut fresh, _) = connect(&fleet.ws_url(&format!("{session}-new")))
        .await
        .unwrap();
    assert_eq!(
        send_and_count(&mut fresh).await,
        1,
        "a new socket through nginx counts"
    );
    let status = tokio::task::block_in_place(|| fleet.make("status", &[], limit));
    status.assert_ok("make status");
    assert!(status.text.contains("blue   live"), "{}", status.text);
    assert!(
        !status.text.lines().any(|l| l.starts_with("green")),
        "no green instance is left: {}",
        status.text
    );
    drop((socket, fresh));

    tokio::task::block_in_place(|| fleet.down_and_check_nothing_is_left());
}

/// The whole response to `GET /nginx_status` on nginx's status socket `path`.
async fn nginx_status(path: &std::path::Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut socket = tokio::net::UnixStream::connect(path).await?;
        socket
            .write_all(b"GET /nginx_status HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut response = String::new();
        // HTTP/1.0: nginx closes the connection after the response.
        socket.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(PATIENCE, exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => panic!("GET /nginx_status on {}: {error}", path.display()),
        Err(_) => panic!("GET /nginx_status on {}: no answer in time", path.display()),
    }
}
