//! The state every request handler and socket shares.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use tokio_util::task::TaskTracker;

use crate::{
    config::Settings,
    counter::Counter,
    fanout::{heartbeat_spread, Fanout},
    history::{History, Stream},
    metrics::Metrics,
    registry::Registry,
    rooms::Rooms,
    store::Store,
};

pub type SharedState = Arc<AppState>;

pub struct AppState {
    pub settings: Settings,
    pub store: Store,
    /// Counts the sockets' messages in Redis (its batching task lives as long as this).
    pub counter: Counter,
    pub registry: Registry,
    pub fanout: Arc<Fanout>,
    pub rooms: Arc<Rooms>,
    /// Publication streams; `broadcasts` is the fleet-wide one.
    pub history: Arc<History>,
    pub broadcasts: Stream,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    /// Most sockets this process accepts (from `MAX_CONNECTIONS` or the open-file limit).
    pub max_connections: usize,
    /// Set once, at the shutdown signal: readiness fails and upgrades are refused from then on.
    pub draining: AtomicBool,
    /// Every socket task is tracked here so shutdown can wait for the drain to finish
    /// (axum's graceful shutdown does not wait for upgraded connections).
    pub sessions: TaskTracker,
    /// Sockets accepted or being upgraded; bounded by `max_connections`.
    slots: AtomicUsize,
    next_conn_id: AtomicU64,
    /// Random per process: with a connection id, makes writer tokens unique in the fleet even
    /// when `INSTANCE_ID` is reused by a restarted process.
    token_nonce: String,
}

/// The publication side of a process: its rooms and its streams' history.
pub struct Publishing {
    pub rooms: Arc<Rooms>,
    pub history: Arc<History>,
}

impl AppState {
    /// `wait`: see [`crate::counter::WaitReplicas`]; `Some` exactly when
    /// `settings.redis_wait_replicas` is.
    pub fn new(
        settings: Settings,
        store: Store,
        wait: Option<crate::counter::WaitReplicas>,
        registry: Registry,
        publishing: Publishing,
        metrics: Arc<Metrics>,
        max_connections: usize,
    ) -> Self {
        let Publishing { rooms, history } = publishing;
        let counter = Counter::start(
            store.clone(),
            metrics.clone(),
            settings.session_ttl,
            settings.redis_timeout,
            wait,
        );
        let fanout = Arc::new(Fanout::new(
            heartbeat_spread(settings.heartbeat_interval),
            settings.send_queue,
        ));
        AppState {
            settings,
            counter,
            store,
            registry,
            fanout,
            rooms,
            history,
            broadcasts: Stream::broadcast(crate::fanout::channel_name()),
            metrics,
            started: Instant::now(),
            max_connections,
            draining: AtomicBool::new(false),
            sessions: TaskTracker::new(),
            slots: AtomicUsize::new(0),
            next_conn_id: AtomicU64::new(1),
            token_nonce: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn local_connections(&self) -> usize {
        self.slots.load(Ordering::Relaxed)
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The writer token of connection `conn_id` (see [`crate::counter`]).
    pub fn writer_token(&self, conn_id: u64) -> String {
        format!("{}:{conn_id}", self.token_nonce)
    }

    /// Reserves room for one socket, or `None` at `max_connections`.
    pub fn try_reserve_slot(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionSlot(self.clone()))
    }
}

/// One reserved socket. Held by the socket's task from before the upgrade to its end;
/// dropping it (including when an upgrade fails) frees the slot.
pub struct ConnectionSlot(SharedState);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.slots.fetch_sub(1, Ordering::AcqRel);
    }
}
