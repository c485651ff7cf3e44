//! Fan-out: the one Redis pub/sub channel every instance subscribes to, and the in-process
//! broadcast that hands each message to every local socket.
//!
//! One pub/sub message is parsed and turned into its client frame once per instance; the
//! frame (a cheaply cloned `Utf8Bytes`) then goes through `tokio::sync::broadcast` rings,
//! [`FANOUT_SHARDS`] of them, each socket on one (by its connection id).
//!
//! Why shards: a broadcast ring is one lock that every waiting socket takes on each poll and
//! one list of waiters that a send wakes all at once. Shards split both, and they let a
//! heartbeat reach the sockets shard by shard over [`heartbeat_spread`] instead of all in one
//! instant: writing one frame to every socket costs ~20 µs of CPU per socket, so 5000 sockets
//! woken together held every message behind them for ~100 ms each interval (the open-loop
//! p99 in docs/BENCHMARKS.md). Operator broadcasts still go to every shard at once: their
//! latency is the point.
//!
//! Slow-consumer policy: each ring holds `SEND_QUEUE` frames (default 1024, a power of two)
//! shared by its sockets. A socket that falls more than that many frames behind is closed with
//! 1013 ("try again later") and released at once, also while its writes are stuck behind a
//! full TCP send buffer (src/ws/slow.rs): it cannot be caught up without unbounded memory, and
//! resuming the session loses no count. Other sockets are never slowed down by it.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
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
    history::{parse_publication, Received},
    inbox::Directory,
    metrics::Metrics,
    protocol::ChannelMessage,
    rooms::Rooms,
    shard_probes::ShardProbes,
    store::{Store, StoreError, KEY_PREFIX},
};

/// Rings the local sockets are spread over (see module docs).
pub const FANOUT_SHARDS: usize = 32;

/// Longest time a heartbeat takes to reach every local socket once it came through the
/// channel: its shards are sent to evenly over this window.
pub const MAX_HEARTBEAT_SPREAD: Duration = Duration::from_secs(1);

/// The window a heartbeat is spread over: [`MAX_HEARTBEAT_SPREAD`], or a quarter of the
/// interval when that is shorter, so one beat is out before the next arrives.
pub fn heartbeat_spread(interval: Duration) -> Duration {
    MAX_HEARTBEAT_SPREAD.min(interval / 4)
}

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

/// What the rings carry to the sockets.
#[derive(Debug, Clone)]
pub enum Fanned {
    /// A heartbeat, as the text frame every socket sends.
    Frame(Utf8Bytes),
    /// A broadcast, at its offset in the broadcast stream (each socket sends it once).
    Broadcast {
        offset: u64,
        epoch: Arc<str>,
        text: Utf8Bytes,
    },
    /// The process is draining: say `bye` and close (see [`Fanout::drain`]).
    Drain,
}

/// The local end of the fan-out, shared by the subscriber task and every socket.
pub struct Fanout {
    shards: Arc<[broadcast::Sender<Fanned>]>,
    heartbeat_spread: Duration,
    /// Set by [`Fanout::drain`].
    draining: AtomicBool,
    started: Instant,
    /// Milliseconds after `started` at which the last channel message arrived; 0: never.
    last_delivery_ms: AtomicU64,
    /// Same clock, for the last heartbeat; 0: never.
    last_heartbeat_ms: AtomicU64,
    /// The local sockets by session, for messages addressed to one session.
    pub directory: Directory,
    /// In a Redis Cluster, the proof that every shard's subscription delivers.
    pub shard_probes: ShardProbes,
    /// The newest broadcast seen through the channel: where a new socket's broadcast stream
    /// starts (see [`Fanout::broadcast_position`]).
    broadcast_position: Mutex<Option<(u64, Arc<str>)>>,
}

impl Fanout {
    /// `heartbeat_spread`: see [`heartbeat_spread`]. `send_queue`: frames each ring holds,
    /// the most a socket may fall behind (see the module docs).
    pub fn new(heartbeat_spread: Duration, send_queue: usize) -> Self {
        let shards = (0..FANOUT_SHARDS)
            // At least 1: a ring of 0 panics (the configuration allows 16 and up).
            .map(|_| broadcast::channel(send_queue.max(1)).0)
            .collect();
        Fanout {
            shards,
            heartbeat_spread,
            draining: AtomicBool::new(false),
            started: Instant::now(),
            last_delivery_ms: AtomicU64::new(0),
            last_heartbeat_ms: AtomicU64::new(0),
            directory: Directory::default(),
            shard_probes: ShardProbes::default(),
            broadcast_position: Mutex::new(None),
        }
    }

    /// A receiver for the socket `conn_id`, on its shard. Subscribe before announcing the
    /// socket anywhere, so no frame published after the welcome is missed.
    pub fn subscribe(&self, conn_id: u64) -> broadcast::Receiver<Fanned> {
        self.shards[(conn_id % FANOUT_SHARDS as u64) as usize].subscribe()
    }

    /// Tells every socket to drain: a flag that a socket checks before each frame it reads
    /// (a busy socket stops between frames), and a [`Fanned::Drain`] on every ring to wake
    /// the idle ones. Not a cancellation token: a socket waits on its ring anyway, and a
    /// token is one more shared lock taken at every poll of every socket (~5% of a socket's
    /// CPU in a profile of the fan-out). The flag is set first, so a socket that subscribes
    /// after the rings were told still sees it ([`Fanout::is_draining`]).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.send_to_all(Fanned::Drain);
    }

    /// `item` on every ring at once. An error only means no socket of that ring is connected.
    fn send_to_all(&self, item: Fanned) {
        for shard in self.shards.iter() {
            let _ = shard.send(item.clone());
        }
    }

    /// Whether [`Fanout::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether a message came back through the Redis channel within the freshness window
    /// and, in a Redis Cluster, a probe through every shard's subscription (src/shard_probes.rs).
    pub fn subscription_is_live(&self) -> bool {
        let last = self.last_delivery_ms.load(Ordering::Relaxed);
        last != 0
            && self.now_ms() - last <= SUBSCRIPTION_FRESHNESS.as_millis() as u64
            && self.shard_probes.is_live()
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

    /// Sends `frame` to the shards one after the other, evenly over the heartbeat spread,
    /// the first at once. A task of its own, so the channel goes on being read meanwhile.
    fn pace(&self, frame: Fanned) {
        let shards = self.shards.clone();
        let step = self.heartbeat_spread / FANOUT_SHARDS as u32;
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for (i, shard) in shards.iter().enumerate() {
                tokio::time::sleep_until(start + step * i as u32).await;
                let _ = shard.send(frame.clone());
            }
        });
    }

    /// The offset and epoch of the newest broadcast this instance has handed to its sockets,
    /// or what [`Fanout::set_broadcast_position`] was told; `None` until either happened. A
    /// socket subscribed to its ring *before* reading this gets every broadcast above it: the
    /// position moves before a broadcast goes on the rings.
    pub fn broadcast_position(&self) -> Option<(u64, Arc<str>)> {
        self.broadcast_position
            .lock()
            .expect("position lock")
            .clone()
    }

    /// Records a position read from Redis, unless a newer one of the same epoch is known.
    pub fn set_broadcast_position(&self, offset: u64, epoch: &str) {
        let mut position = self.broadcast_position.lock().expect("position lock");
        let newer_known = position
            .as_ref()
            .is_some_and(|(k, e)| **e == *epoch && *k >= offset);
        if !newer_known {
            *position = Some((offset, Arc::from(epoch)));
        }
    }

    /// A broadcast of the stream: the position moves, then every ring gets it at once (its
    /// latency is the point).
    fn deliver_broadcast(&self, received: Received<'_>) {
        let epoch: Arc<str> = Arc::from(received.epoch);
        *self.broadcast_position.lock().expect("position lock") =
            Some((received.offset, epoch.clone()));
        self.send_to_all(Fanned::Broadcast {
            offset: received.offset,
            epoch,
            text: Utf8Bytes::from(received.frame.to_string()),
        });
    }

    /// Handles one message from the channel: probes only prove liveness; heartbeats (paced,
    /// see the module docs) and broadcasts go to every local socket, messages to one session
    /// to its socket.
    pub fn deliver(&self, payload: &str, metrics: &Metrics) {
        let now = self.now_ms();
        self.last_delivery_ms.store(now, Ordering::Relaxed);
        metrics.pubsub_received.inc();
        if let Some(received) = parse_publication(payload) {
            self.deliver_broadcast(received);
            return;
        }
        match serde_json::from_str::<ChannelMessage>(payload) {
            Ok(message) => {
                if let ChannelMessage::Direct { session, .. } = &message {
                    if let Some(frame) = message.client_frame() {
                        self.directory.post(session, frame.into());
                    }
                    return;
                }
                let heartbeat = matches!(message, ChannelMessage::Heartbeat { .. });
                if heartbeat {
                    self.last_heartbeat_ms.store(now, Ordering::Relaxed);
                    metrics.heartbeats_received.inc();
                }
                if let Some(frame) = message.client_frame().map(|f| Fanned::Frame(f.into())) {
                    if heartbeat && !self.heartbeat_spread.is_zero() {
                        self.pace(frame);
                    } else {
                        self.send_to_all(frame);
                    }
                }
            }
            Err(error) => crate::warn_throttled!(%error, "ignoring malformed fan-out message"),
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
    rooms: Arc<Rooms>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let fleet_channel = channel_name();
    let mut messages = client.message_rx();
    let mut connection_errors = client.error_rx();
    let mut reconnects = client.reconnect_rx();
    let probe = ChannelMessage::Probe { instance };
    let probe_text = serde_json::to_string(&probe).expect("channel messages serialize");
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
                    Some(text) if message.channel == fleet_channel => fanout.deliver(&text, &metrics),
                    Some(_) if fanout.shard_probes.deliver(&message.channel) => {}
                    // The channels of the rooms this instance's sockets are in.
                    Some(text) => rooms.deliver(&message.channel, &text),
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
                fanout.shard_probes.forget_deliveries();
                if fanout.forget_deliveries() {
                    tracing::warn!(%error, "fan-out subscriber connection lost; not ready");
                }
            }
            Ok(_) = reconnects.recv() => {
                fanout.forget_deliveries();
                fanout.shard_probes.forget_deliveries();
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
                if store.is_clustered() {
                    fanout.shard_probes.tick(&client, &store, &probe_text).await;
                }
            }
        }
    }
    let _ = client.quit().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_spread_over_a_second_or_a_quarter_of_a_short_interval() {
        assert_eq!(
            heartbeat_spread(Duration::from_secs(30)),
            MAX_HEARTBEAT_SPREAD
        );
        assert_eq!(
            heartbeat_spread(Duration::from_secs(4)),
            MAX_HEARTBEAT_SPREAD
        );
        assert_eq!(
            heartbeat_spread(Duration::from_millis(300)),
            Duration::from_millis(75)
        );
    }

    #[test]
    fn sockets_are_spread_over_the_shards_by_connection_id() {
        let fanout = Fanout::new(Duration::ZERO, 16);
        let receivers: Vec<_> = (0..2 * FANOUT_SHARDS as u64)
            .map(|id| fanout.subscribe(id))
            .collect();
        for shard in fanout.shards.iter() {
            assert_eq!(shard.receiver_count(), 2);
        }
        drop(receivers);
    }
}
