//! The socket loop on channels instead of a network, under paused tokio time: pings, silence,
//! slow consumers, the drain, the session-TTL renewal and the token's expiry, each in simulated
//! seconds and microseconds of real time (and bounded in real time, see [`paused`]). The
//! counter is an in-memory stand-in; counting against Redis is what tests/api covers. The
//! harness (channels, counter, `paused`) is in `harness.rs`.

mod harness;

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::extract::ws::Message;
use serde_json::json;
use tokio::time::Instant;

use super::{
    close::{DRAIN_REASON, PING_TIMEOUT_REASON, TOKEN_EXPIRED_REASON},
    session::SocketSettings,
    slow::{self, LAG_CHECK, SLOW_CLOSE_WAIT},
};
use crate::{fanout::Fanout, protocol::close_code};
use harness::*;

#[test]
fn a_ping_goes_out_every_interval_and_pongs_keep_the_socket() {
    paused(async {
        let mut h = start(settings());
        let opened = Instant::now();
        assert_eq!(h.next_json().await["session_uuid"], "s");
        for n in 1..=5u32 {
            assert!(matches!(h.next().await, Message::Ping(_)));
            let late = opened.elapsed().saturating_sub(PING * n);
            assert!(
                late <= Duration::from_millis(1),
                "ping {n} late by {late:?}"
            );
            h.send(Message::Pong(Default::default())).await;
        }
        assert!(!h.task.is_finished(), "a socket that answers stays open");
    });
}

#[test]
fn two_silent_ping_intervals_close_1008_ping_timeout_without_waiting() {
    paused(async {
        let mut h = start(settings());
        let opened = Instant::now();
        h.next_json().await;
        assert!(matches!(h.next().await, Message::Ping(_)));
        let (code, reason) = close_of(h.next().await);
        assert_eq!(
            (code, reason.as_str()),
            (close_code::POLICY_VIOLATION, PING_TIMEOUT_REASON)
        );
        let at = opened.elapsed();
        assert!(
            at >= PING * 2 && at <= PING * 2 + Duration::from_millis(1),
            "{at:?}"
        );
        // No reply to the close is awaited from a silent peer.
        let ended = h.ended(Duration::from_millis(1)).await;
        assert_eq!(ended, (close_code::POLICY_VIOLATION, PING_TIMEOUT_REASON));
    });
}

#[test]
fn falling_send_queue_frames_behind_the_fan_out_closes_1013() {
    paused(async {
        let mut h = start(settings());
        h.next_json().await;
        // All at once: the ring overwrites frames this socket has not taken yet.
        for n in 0..SEND_QUEUE * 2 {
            h.broadcast(n);
        }
        let (code, reason) = close_of(h.next().await);
        assert_eq!(
            (code, reason.as_str()),
            (close_code::TRY_AGAIN_LATER, slow::REASON)
        );
        let metrics = h.metrics.clone();
        let ended = h.ended(Duration::from_millis(1)).await;
        assert_eq!(ended, (close_code::TRY_AGAIN_LATER, slow::REASON));
        assert_eq!(metrics.slow_consumer_closes.get(), 1);
    });
}

#[test]
fn a_write_stuck_behind_a_client_that_does_not_read_is_released_at_once() {
    paused(async {
        let fanout = Arc::new(Fanout::new(Duration::ZERO, SEND_QUEUE));
        // Room for one unread frame: the welcome is read, the first broadcast fills it.
        let mut h = start_with(settings(), fanout, 1);
        h.next_json().await;
        h.broadcast(0);
        h.broadcast(1);
        // The first broadcast fills the client's buffer, the second one's write is stuck.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let behind = Instant::now();
        for n in 2..SEND_QUEUE + 3 {
            h.broadcast(n);
        }
        let metrics = h.metrics.clone();
        let ended = h.ended(Duration::from_secs(1)).await;
        assert_eq!(ended, (close_code::TRY_AGAIN_LATER, slow::REASON));
        // Not held for the write timeout (two ping intervals): one lag check, then the close
        // frame's short attempt behind the full buffer.
        let held = behind.elapsed();
        assert!(held <= LAG_CHECK + SLOW_CLOSE_WAIT, "{held:?}");
        assert_eq!(metrics.slow_consumer_closes.get(), 1);
    });
}

#[test]
fn the_drain_says_bye_with_the_total_then_closes_1001() {
    paused(async {
        let spread = Duration::from_secs(2);
        let mut h = start(SocketSettings {
            drain_spread: spread,
            ..settings()
        });
        h.next_json().await;
        for count in 1..=2 {
            h.send(Message::Text("x".into())).await;
            assert_eq!(h.next_json().await, json!({ "count": count }));
        }
        let drained = Instant::now();
        h.fanout.drain();
        let bye = h.next_json().await;
        assert!(drained.elapsed() <= spread, "within the drain spread");
        assert_eq!(
            (bye["bye"].clone(), bye["total"].clone()),
            (json!(true), json!(2))
        );
        let after = bye["reconnect_after_ms"].as_u64().unwrap();
        assert!((100..1100).contains(&after), "{after}");
        let (code, reason) = close_of(h.next().await);
        assert_eq!(
            (code, reason.as_str()),
            (close_code::GOING_AWAY, DRAIN_REASON)
        );
        h.send(Message::Close(None)).await;
        // The client's close reply ends it at once.
        let ended = h.ended(Duration::from_millis(1)).await;
        assert_eq!(ended, (close_code::GOING_AWAY, DRAIN_REASON));
    });
}

#[test]
fn a_socket_opened_after_the_drain_began_leaves_after_its_welcome() {
    paused(async {
        let fanout = Arc::new(Fanout::new(Duration::ZERO, SEND_QUEUE));
        fanout.drain();
        let mut h = start_with(settings(), fanout, 16);
        h.next_json().await;
        assert_eq!(h.next_json().await["bye"], true);
        assert_eq!(close_of(h.next().await).0, close_code::GOING_AWAY);
    });
}

#[test]
fn an_idle_socket_renews_its_session_ttl_every_half_ttl() {
    paused(async {
        let mut h = start(settings());
        let opened = Instant::now();
        h.next_json().await;
        // Answers pings until just past three half TTLs (and before a fourth).
        while opened.elapsed() < TTL / 2 * 3 + PING / 2 {
            if let Message::Ping(_) = h.next().await {
                h.send(Message::Pong(Default::default())).await;
            }
        }
        assert_eq!(h.touches.load(Ordering::Relaxed), 3);
        // A counted frame renews the TTL too: the next renewal is half a TTL after it.
        h.send(Message::Text("x".into())).await;
        assert_eq!(h.next_json().await, json!({ "count": 1 }));
        let counted = Instant::now();
        while counted.elapsed() < TTL / 2 - PING {
            if let Message::Ping(_) = h.next().await {
                h.send(Message::Pong(Default::default())).await;
            }
        }
        assert_eq!(h.touches.load(Ordering::Relaxed), 3);
    });
}

#[tokio::test(start_paused = true)]
async fn an_expiring_token_closes_1008_token_expired_at_its_expiry_however_busy_the_socket() {
    // Between two pings, so that neither the ping nor the silence timer is what fires.
    let lifetime = PING * 2 + PING / 2;
    let opened = Instant::now();
    let fanout = Arc::new(Fanout::new(Duration::ZERO, SEND_QUEUE));
    let mut h = start_expiring(settings(), fanout, 16, Some(opened + lifetime));
    h.next_json().await;
    let mut counted = 0;
    let close = loop {
        // A busy client: a frame after every 3 s without news, pongs to every ping. Neither
        // moves the expiry.
        match tokio::time::timeout(Duration::from_secs(3), h.next()).await {
            Err(_) => h.send(Message::Text("x".into())).await,
            Ok(Message::Ping(_)) => h.send(Message::Pong(Default::default())).await,
            Ok(Message::Text(_)) => counted += 1,
            Ok(other) => break close_of(other),
        }
    };
    assert_eq!(
        (close.0, close.1.as_str()),
        (close_code::POLICY_VIOLATION, TOKEN_EXPIRED_REASON)
    );
    let at = opened.elapsed();
    assert!(
        at >= lifetime && at <= lifetime + Duration::from_millis(1),
        "closed at {at:?}, expiry at {lifetime:?}"
    );
    assert!(counted >= 7, "the socket counted until then: {counted}");
    h.send(Message::Close(None)).await;
    let ended = h.ended(Duration::from_millis(1)).await;
    assert_eq!(ended, (close_code::POLICY_VIOLATION, TOKEN_EXPIRED_REASON));
}

#[tokio::test(start_paused = true)]
async fn a_socket_without_a_token_expiry_is_not_closed_by_one() {
    let mut h = start(settings());
    let opened = Instant::now();
    h.next_json().await;
    while opened.elapsed() < TTL * 3 {
        if let Message::Ping(_) = h.next().await {
            h.send(Message::Pong(Default::default())).await;
        }
    }
    assert!(!h.task.is_finished());
}
