//! The socket loop's test harness: a socket made of two channels, an in-memory counter, one
//! loop in a task of its own, and [`paused`], which runs a test under paused tokio time with a
//! bound in real time.

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

use crate::{
    counter::Counted,
    fanout::Fanout,
    metrics::Metrics,
    protocol::Welcome,
    store::StoreError,
    ws::session::{Counting, Session, SocketSettings},
};

pub(super) const PING: Duration = Duration::from_secs(10);
pub(super) const SEND_QUEUE: usize = 4;
pub(super) const TTL: Duration = Duration::from_secs(60);

/// The server's end: what the client sends comes in on one channel, what the server writes
/// goes out on the other (bounded: a client that stops reading fills it).
pub(super) struct ChannelSocket {
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
pub(super) struct MemoryCounter {
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
pub(super) struct Harness {
    pub(super) fanout: Arc<Fanout>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) touches: Arc<AtomicU64>,
    pub(super) to_server: mpsc::Sender<Result<Message, axum::Error>>,
    pub(super) from_server: mpsc::Receiver<Message>,
    pub(super) task: JoinHandle<(u16, &'static str)>,
}

pub(super) fn settings() -> SocketSettings {
    SocketSettings {
        ping_interval: PING,
        send_queue: SEND_QUEUE,
        drain_spread: Duration::ZERO,
        rate_limit: None,
    }
}

/// Starts a socket whose client can have `unread` frames waiting before writes block.
pub(super) fn start_with(settings: SocketSettings, fanout: Arc<Fanout>, unread: usize) -> Harness {
    start_expiring(settings, fanout, unread, None)
}

/// [`start_with`] for a socket whose token expires at `expires`.
pub(super) fn start_expiring(
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

pub(super) fn start(settings: SocketSettings) -> Harness {
    let fanout = Arc::new(Fanout::new(Duration::ZERO, settings.send_queue));
    start_with(settings, fanout, 16)
}

impl Harness {
    pub(super) async fn next(&mut self) -> Message {
        self.from_server
            .next()
            .await
            .expect("the socket wrote more")
    }

    pub(super) async fn next_json(&mut self) -> Value {
        match self.next().await {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub(super) async fn send(&mut self, message: Message) {
        self.to_server.send(Ok(message)).await.unwrap();
    }

    pub(super) fn broadcast(&self, n: usize) {
        let payload = json!({"type": "broadcast", "message": n, "ts": "t"}).to_string();
        self.fanout.deliver(&payload, &self.metrics);
    }

    /// How the loop ended; it must end within `within` (simulated time).
    pub(super) async fn ended(self, within: Duration) -> (u16, &'static str) {
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
pub(super) const REAL_PATIENCE: Duration = Duration::from_secs(10);

/// Runs `test` under paused tokio time on a runtime and a thread of its own, and fails if it
/// has not finished within [`REAL_PATIENCE`] of real time. A panic in `test` fails the test
/// with its own message.
pub(super) fn paused(test: impl Future<Output = ()> + Send + 'static) {
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

pub(super) fn close_of(message: Message) -> (u16, String) {
    match message {
        Message::Close(Some(CloseFrame { code, reason })) => (code, reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}
