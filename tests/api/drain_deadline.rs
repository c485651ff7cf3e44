//! `SHUTDOWN_TIMEOUT` holds whatever Redis does: a Redis that hangs (SIGSTOP: its sockets stay
//! open, nothing answers) before or during the drain does not keep the process past it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{send_signal, SIGCONT, SIGSTOP};
use crate::helpers::{ws_url, ChildNode, Client, RedisServer, SIGTERM};

/// The node's `--shutdown-timeout`. With the default `--redis-timeout` (2 s) a drain that
/// waits for each Redis step in turn (mark draining, the sockets' removals, the connection
/// hash, the fleet poll, the record) needs ~5.6 s.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(4);

/// From kill(2) to waitpid: signal delivery, the runtime's teardown, the process's exit and
/// tokio reaping the child, each a few ms; the rest is room for a machine busy with other
/// tests (two cores, several test binaries at once).
const EXIT_MARGIN: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq)]
enum Hang {
    BeforeSigterm,
    JustAfterSigterm,
}

/// Three sockets that keep reading (answering the close), a SIGTERM, a Redis stopped before or
/// just after it; the node must exit 0 within `SHUTDOWN_TIMEOUT` + the exit margin.
async fn drain_with_redis_hanging(hang: Hang) {
    let redis = RedisServer::start().await;
    let mut node = ChildNode::start(
        &redis,
        "hung-drain",
        &[
            "--shutdown-timeout",
            "4s",
            "--redis-timeout",
            "2s",
            "--drain-spread",
            "1s",
        ],
    )
    .await;
    let mut readers = Vec::new();
    for i in 0..3 {
        let mut client = Client::connect(&ws_url(node.addr, Some(&format!("hang-{i}")))).await;
        client.send("x").await;
        assert_eq!(client.next_reply().await["count"], 1);
        // Reads until the socket ends; says whether a bye and a 1001 came.
        readers.push(tokio::spawn(async move {
            let (mut bye, mut code) = (false, None);
            while let Some(Ok(message)) = client.ws.next().await {
                match message {
                    Message::Text(t) if t.contains("\"bye\"") => bye = true,
                    Message::Close(frame) => code = frame.map(|f| u16::from(f.code)),
                    _ => {}
                }
            }
            (bye, code)
        }));
    }

    if hang == Hang::BeforeSigterm {
        assert!(send_signal(redis.pid(), SIGSTOP), "SIGSTOP redis");
    }
    let signalled = Instant::now();
    node.signal(SIGTERM);
    if hang == Hang::JustAfterSigterm {
        assert!(send_signal(redis.pid(), SIGSTOP), "SIGSTOP redis");
    }
    // Longer than the bound, so that a late exit is measured rather than cut short.
    let status = tokio::time::timeout(2 * SHUTDOWN_TIMEOUT, node.child.wait()).await;
    let took = signalled.elapsed();
    assert!(send_signal(redis.pid(), SIGCONT), "SIGCONT redis");
    let status = status
        .unwrap_or_else(|_| panic!("no exit within {:?}", 2 * SHUTDOWN_TIMEOUT))
        .unwrap();
    assert!(status.success(), "exit status {status}");
    eprintln!("exited {took:?} after SIGTERM");
    assert!(
        took <= SHUTDOWN_TIMEOUT + EXIT_MARGIN,
        "exited {took:?} after SIGTERM (SHUTDOWN_TIMEOUT {SHUTDOWN_TIMEOUT:?}):\n{}",
        node.log_text()
    );
    for reader in readers {
        let (bye, code) = reader.await.unwrap();
        assert!(bye, "every socket got its bye");
        assert_eq!(code, Some(1001), "every socket closed 1001");
    }
}

#[tokio::test]
async fn a_redis_that_hangs_just_after_sigterm_does_not_hold_the_exit_past_shutdown_timeout() {
    drain_with_redis_hanging(Hang::JustAfterSigterm).await;
}

#[tokio::test]
async fn a_redis_hung_before_sigterm_does_not_hold_the_exit_past_shutdown_timeout() {
    drain_with_redis_hanging(Hang::BeforeSigterm).await;
}
