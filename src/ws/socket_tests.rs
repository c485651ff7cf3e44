//! The socket loop on channels instead of a network, under paused tokio time: pings, silence,
//! slow consumers, the drain, the session-TTL renewal and the token's expiry, each in simulated
//! seconds and microseconds of real time (and bounded in real time, see [`paused`]). The
//! counter is an in-memory stand-in; counting against Redis is what tests/api covers.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc, Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message};
use futures_channel::mpsc;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::{task::JoinHandle, time::Instant};

use super::{
    close::{DRAIN_REASON, PING_TIMEOUT_REASON, TOKEN_EXPIRED_REASON},
    session::{Counting, Session, SocketSettings},
    slow::{self, LAG_CHECK, SLOW_CLOSE_WAIT},
};
use crate::{
    counter::Counted,
    fanout::Fanout,
    metrics::Metrics,
    protocol::{close_code, Welcome},
    store::StoreError,
};

const PING: Duration = Duration::from_secs(10);
const SEND_QUEUE: usize = 4;
const TTL: Duration = Duration::from_secs(60);

/// The server's end: what the client sends comes in on one channel, what the server writes
/// goes out on the other (bounded: a client that stops reading fills it).
struct ChannelSocket {
    from_client: mpsc::Receiver<Result<Message, axum::Error>>,
    to_client: mpsc::Sender<Message>,
}

impl Stream for ChannelSocket {
    type Item = Result<Message, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.from_client.poll_next_unpin(cx)
    }
}

impl Sink<Message> for ChannelSocket {
    type Error = axum::Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.to_client.poll_ready(cx).map_err(axum::Error::new)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.to_client.start_send(item).map_err(axum::Error::new)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.to_client)
            .poll_flush(cx)
            .map_err(axum::Error::new)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.to_client)
            .poll_close(cx)
            .map_err(axum::Error::new)
    }
}

/// Counts in memory; renewals of the TTL are counted in `touches`.
struct MemoryCounter {
    count: u64,
    touched: Instant,
    touches: Arc<AtomicU64>,
}

impl Counting for MemoryCounter {
    async fn increment(&mut self) -> Result<Counted, StoreError> {
        self.count += 1;
        self.touched = Instant::now();
        Ok(Counted::Count(self.count))
    }
    fn count(&self) -> u64 {
        self.count
    }
    fn touch_due(&self) -> Instant {
        self.touched + TTL / 2
    }
    async fn touch(&mut self) -> Result<(), StoreError> {
        self.touched = Instant::now();
        self.touches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One socket's loop running in its own task, and the client's end of its channels.
struct Harness {
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    touches: Arc<AtomicU64>,
    to_server: mpsc::Sender<Result<Message, axum::Error>>,
    from_server: mpsc::Receiver<Message>,
    task: JoinHandle<(u16, &'static str)>,
}

fn settings() -> SocketSettings {
    SocketSettings {
        ping_interval: PING,
        send_queue: SEND_QUEUE,
        drain_spread: Duration::ZERO,
        rate_limit: None,
    }
}

/// Starts a socket whose client can have `unread` frames waiting before writes block.
fn start_with(settings: SocketSettings, fanout: Arc<Fanout>, unread: usize) -> Harness {
    start_expiring(settings, fanout, unread, None)
}

/// [`start_with`] for a socket whose token expires at `expires`.
fn start_expiring(
    settings: SocketSettings,
    fanout: Arc<Fanout>,
    unread: usize,
    expires: Option<Instant>,
) -> Harness {
    let metrics = Arc::new(Metrics::new("blue"));
    let touches = Arc::new(AtomicU64::new(0));
    let counter = MemoryCounter {
        count: 0,
        touched: Instant::now(),
        touches: touches.clone(),
    };
    let ring = fanout.subscribe(1);
    let (to_server, from_client) = mpsc::channel(16);
    // A channel holds its buffer plus one frame per sender.
    let (to_client, from_server) = mpsc::channel(unread.saturating_sub(1));
    let mut socket = ChannelSocket {
        from_client,
        to_client,
    };
    let mut session = Session::new(settings, fanout.clone(), metrics.clone(), counter);
    session.expires = expires;
    let task = tokio::spawn(async move {
        let welcome = Welcome {
            session_uuid: "s".into(),
            count: 0,
            resumed: false,
            instance: "i".into(),
            ..Default::default()
        };
        session.live(&mut socket, &welcome, ring, None).await
    });
    Harness {
        fanout,
        metrics,
        touches,
        to_server,
        from_server,
        task,
    }
}

fn start(settings: SocketSettings) -> Harness {
    let fanout = Arc::new(Fanout::new(Duration::ZERO, settings.send_queue));
    start_with(settings, fanout, 16)
}

impl Harness {
    async fn next(&mut self) -> Message {
        self.from_server
            .next()
            .await
            .expect("the socket wrote more")
    }

    async fn next_json(&mut self) -> Value {
        match self.next().await {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    async fn send(&mut self, message: Message) {
        self.to_server.send(Ok(message)).await.unwrap();
    }

    fn broadcast(&self, n: usize) {
        let payload = json!({"type": "broadcast", "message": n, "ts": "t"}).to_string();
        self.fanout.deliver(&payload, &self.metrics);
    }

    /// How the loop ended; it must end within `within` (simulated time).
    async fn ended(self, within: Duration) -> (u16, &'static str) {
        tokio::time::timeout(within, self.task)
            .await
            .expect("the socket's task ended")
            .unwrap()
    }
}

/// Longest a test here may take in real time (each takes milliseconds). Simulated time cannot
/// bound them: a loop that re-arms its timer at the current instant (a TTL renewal that never
/// moves `touch_due` on, for one) keeps the runtime busy, tokio's paused clock advances only
/// while the runtime is idle, and a `tokio::time::timeout` around the test never fires: the
/// test would spin for ever instead of failing.
const REAL_PATIENCE: Duration = Duration::from_secs(10);

/// Runs `test` under paused tokio time on a runtime and a thread of its own, and fails if it
/// has not finished within [`REAL_PATIENCE`] of real time. A panic in `test` fails the test
/// with its own message.
fn paused(test: impl Future<Output = ()> + Send + 'static) {
    let name = std::thread::current()
        .name()
        .unwrap_or("a paused-time test")
        .to_string();
    let (done, finished) = std_mpsc::channel();
    // Named like the test, so a panic inside reads like one of the test's own.
    let runner = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .expect("a runtime")
                .block_on(test);
            let _ = done.send(());
        })
        .expect("a thread for the test");
    match finished.recv_timeout(REAL_PATIENCE) {
        Ok(()) => {}
        // The test panicked: fail with its message.
        Err(std_mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = runner.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std_mpsc::RecvTimeoutError::Timeout) => panic!(
            "{name} did not finish within {REAL_PATIENCE:?} of real time: the socket's loop \
             is stuck (spinning on a timer that does not move on, or waiting for something \
             that never comes)"
        ),
    }
}

fn close_of(message: Message) -> (u16, String) {
    match message {
        Message::Close(Some(CloseFrame { code, reason })) => (code, reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

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
