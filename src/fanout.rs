//! Fan-out: the one Redis pub/sub channel every instance subscribes to, and the in-process
//! broadcast that hands each message to every local socket.
//!
//! One pub/sub message is parsed and turned into its client frame once per instance; the
//! frame (a cheaply cloned `Utf8Bytes`) then goes through a `tokio::sync::broadcast` ring.
//!
//! Slow-consumer policy: the ring holds [`FANOUT_BUFFER`] frames shared by all sockets. A
//! socket whose reader falls more than that many frames behind is closed with 1013 ("try
//! again later"): it cannot be caught up without unbounded memory, and resuming the session
//! loses no count. Other sockets are never slowed down by it.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, PubsubInterface},
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    protocol::ChannelMessage,
    store::{Store, StoreError, KEY_PREFIX},
};

/// Frames buffered for the slowest local socket before it is cut off (see module docs).
pub const FANOUT_BUFFER: usize = 256;

/// How often each instance publishes a probe to prove its subscription delivers.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How often while the subscription is not (yet, or no longer) proven live: at start-up the
/// subscriber connection may come up just after the first probe, and readiness should not
/// wait a whole [`PROBE_INTERVAL`] for the next one.
pub const PROBE_RETRY: Duration = Duration::from_millis(50);

/// A subscription counts as live while something came through it this recently.
pub const SUBSCRIPTION_FRESHNESS: Duration = Duration::from_secs(3);

pub fn channel_name() -> String {
    format!("{KEY_PREFIX}fanout")
}

/// The local end of the fan-out, shared by the subscriber task and every socket.
pub struct Fanout {
    tx: broadcast::Sender<Utf8Bytes>,
    started: Instant,
    /// Milliseconds after `started` at which the last channel message arrived; 0: never.
    last_delivery_ms: AtomicU64,
    /// Same clock, for the last heartbeat; 0: never.
    last_heartbeat_ms: AtomicU64,
}

impl Default for Fanout {
    fn default() -> Self {
        Self::new()
    }
}

impl Fanout {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(FANOUT_BUFFER);
        Fanout {
            tx,
            started: Instant::now(),
            last_delivery_ms: AtomicU64::new(0),
            last_heartbeat_ms: AtomicU64::new(0),
        }
    }

    /// A receiver for one socket. Subscribe before announcing the socket anywhere, so no
    /// frame published after the welcome is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Utf8Bytes> {
        self.tx.subscribe()
    }

    /// Whether a message came back through the Redis channel within the freshness window.
    pub fn subscription_is_live(&self) -> bool {
        let last = self.last_delivery_ms.load(Ordering::Relaxed);
        last != 0 && self.now_ms() - last <= SUBSCRIPTION_FRESHNESS.as_millis() as u64
    }

    /// Seconds since the last heartbeat came through, `None` before the first.
    pub fn heartbeat_age(&self) -> Option<f64> {
        let last = self.last_heartbeat_ms.load(Ordering::Relaxed);
        (last != 0).then(|| (self.now_ms() - last) as f64 / 1000.0)
    }

    /// Forgets every delivery so far: the subscriber connection dropped or was replaced,
    /// and Redis (possibly restarted) holds no subscription for it until fred's resubscribe
    /// lands. Until a message comes through the new connection, readiness must say no, or a
    /// broadcast published in that gap is lost while `/readyz` says ready. Returns whether
    /// there was anything to forget.
    fn forget_deliveries(&self) -> bool {
        self.last_delivery_ms.swap(0, Ordering::Relaxed) != 0
    }

    fn now_ms(&self) -> u64 {
        (self.started.elapsed().as_millis() as u64).max(1)
    }

    /// Handles one message from the channel: probes only prove liveness; heartbeats and
    /// broadcasts go to every local socket.
    pub fn deliver(&self, payload: &str, metrics: &Metrics) {
        let now = self.now_ms();
        self.last_delivery_ms.store(now, Ordering::Relaxed);
        metrics.pubsub_received.inc();
        match serde_json::from_str::<ChannelMessage>(payload) {
            Ok(message) => {
                if matches!(message, ChannelMessage::Heartbeat { .. }) {
                    self.last_heartbeat_ms.store(now, Ordering::Relaxed);
                    metrics.heartbeats_received.inc();
                }
                if let Some(frame) = message.client_frame() {
                    // An error only means no socket is connected right now.
                    let _ = self.tx.send(Utf8Bytes::from(frame));
                }
            }
            Err(error) => tracing::warn!(%error, "ignoring malformed fan-out message"),
        }
    }
}

/// Publishes a message on the fleet channel; returns how many instances received it.
pub async fn publish(store: &Store, message: &ChannelMessage) -> Result<u64, StoreError> {
    let text = serde_json::to_string(message).expect("channel messages serialize");
    store
        .timed("publish", store.redis().publish(channel_name(), text))
        .await
}

/// Runs the subscriber until `cancel`. Every [`PROBE_INTERVAL`] ([`PROBE_RETRY`] while the
/// subscription is not proven live) it (re)subscribes when
/// needed (at start, retrying until Redis answers, and whenever the channel went quiet while
/// the connection is up; fred also re-subscribes after reconnects) and then publishes a probe,
/// so readiness reflects a subscription that really delivers, not just an open socket.
/// A lost or renewed connection voids earlier deliveries: only a probe through the new
/// connection, which Redis sends only once the resubscription has landed, makes it live again.
pub async fn run_subscriber(
    client: SubscriberClient,
    store: Store,
    instance: String,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut messages = client.message_rx();
    let mut connection_errors = client.error_rx();
    let mut reconnects = client.reconnect_rx();
    let probe = ChannelMessage::Probe { instance };
    let next_probe = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(next_probe);
    let mut subscribed = false;
    loop {
        tokio::select! {
            // Messages before connection events: fred queues a message of the old connection
            // before it reports that connection lost, so it must not count as a delivery
            // after the reset below.
            biased;
            _ = cancel.cancelled() => break,
            received = messages.recv() => match received {
                Ok(message) => match message.value.as_str() {
                    Some(text) => fanout.deliver(&text, &metrics),
                    None => tracing::warn!("ignoring non-text fan-out message"),
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "fan-out subscriber fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            // Both senders live in `client`, so these never close.
            Ok((error, _)) = connection_errors.recv() => {
                // While Redis stays down every failed reconnect reports again: warn once.
                if fanout.forget_deliveries() {
                    tracing::warn!(%error, "fan-out subscriber connection lost; not ready");
                }
            }
            Ok(_) = reconnects.recv() => {
                fanout.forget_deliveries();
                tracing::info!("fan-out subscriber reconnected; ready once a probe comes through");
            }
            () = &mut next_probe => {
                let wait = if fanout.subscription_is_live() { PROBE_INTERVAL } else { PROBE_RETRY };
                next_probe.as_mut().reset(tokio::time::Instant::now() + wait);
                if client.is_connected() && (!subscribed || !fanout.subscription_is_live()) {
                    match client.subscribe(channel_name()).await {
                        Ok(()) => subscribed = true,
                        Err(error) => tracing::warn!(%error, "subscribing to the fan-out channel failed"),
                    }
                }
                if let Err(error) = publish(&store, &probe).await {
                    tracing::debug!(%error, "probe publish failed");
                }
            }
        }
    }
    let _ = client.quit().await;
}
