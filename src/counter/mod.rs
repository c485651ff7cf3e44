//! The per-session message counter: its key, the claim a new socket makes on its session,
//! and the per-socket handle that counts each text frame exactly once.
//!
//! Guarantees (docs/PROTOCOL.md, "Resuming without gaps or repeats"; SPEC "Robustness"):
//! - **One writer per session.** A socket's upgrade claims the session with a writer token
//!   unique in the fleet; an older socket's increments are refused from then on, even one
//!   already on its way to Redis, and that socket is closed. The welcome count is exact.
//! - **Counts never go back.** Every increment carries the highest count its socket has told
//!   the client, and Redis continues above it if it lost the session; a resuming client may
//!   pass `last_count` to the claim. An open socket keeps its session's TTL alive.
//! - **No count twice for one frame.** A frame answered `unavailable` may still have been run
//!   by Redis later (a timeout); the socket's next attempt says which attempts are in doubt,
//!   and a resend of a frame that was counted after all gets that count again.
//!
//! Increments go to Redis in batches (src/batch.rs): a socket's task holds no fred future of
//! its own, and a busy instance makes one script call per batch instead of one per message.
//! Each message is still counted atomically and in the order its socket sent it (a socket has
//! at most one message in flight). Every wait is bounded by `--redis-timeout`: a caller stops
//! waiting after it, and its request is then not sent if it has not been yet.

mod increments;
mod scripts;

/// The scripts, for tests that hold their rules against a real Redis and for the bench.
pub use scripts::{CLAIM_LUA, INCREMENT_BATCH_LUA, INCREMENT_NODE_BATCH_LUA};

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fred::types::{scripts::Script, Key, Value};
use tokio::sync::mpsc;

use increments::{IncrementBatches, Request};

use crate::{
    batch,
    metrics::Metrics,
    store::{Store, StoreError, KEY_PREFIX},
};

/// Bounds of the batching task; see src/batch.rs. The queue only fills up with more sockets
/// than this sending at once (each has at most one message in flight); 256 messages take Redis
/// about 1 ms.
const LIMITS: batch::Limits = batch::Limits {
    queue: 8192,
    max_batch: 256,
    max_in_flight: 4,
};

/// The session's key in Redis.
pub fn session_key(session: &str) -> String {
    format!("{KEY_PREFIX}session:{session}")
}

/// `REDIS_WAIT_REPLICAS` and a Redis connection of the increments' own. `WAIT` holds up every
/// command behind it on its connection for up to its timeout (while no replica is there, each
/// time), so the increments get their own connection: claims, the registry and the readiness
/// probe do not queue behind it. `WAIT` covers the writes of the connection it is sent on, so
/// it goes on the one the increments went over.
pub struct WaitReplicas {
    pub replicas: u32,
    pub connection: Store,
}

/// What a socket learns when it claims its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The count the socket starts from (the welcome's `count`).
    pub count: u64,
    /// Redis held a counter for the session.
    pub existed: bool,
    /// The client's `last_count` raised the counter.
    pub repaired: bool,
    /// The rooms the session is in (src/rooms).
    pub rooms: Vec<String>,
}

/// Why a socket could not claim its session.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClaimError {
    /// The session belongs to another user; nothing was changed (HTTP 403).
    #[error("the session belongs to another user")]
    NotOwner,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to one increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Counted (or recognised as the resend of an attempt counted late): the new count.
    Count(u64),
    /// A newer socket claimed the session; nothing was counted.
    Fenced,
}

/// The process's counter: claims sessions, and counts through one batching task. Cloning is
/// cheap (a channel sender and a store handle).
#[derive(Clone)]
pub struct Counter {
    store: Store,
    requests: mpsc::Sender<Request>,
    claim: Script,
    ttl_ms: i64,
    /// How long a caller waits for its count before answering `unavailable`.
    timeout: Duration,
}

impl Counter {
    /// Starts the batching task. It ends when the last `Counter` clone is dropped, after
    /// answering everything already queued.
    /// `wait`: `REDIS_WAIT_REPLICAS` and the connection it is waited on (see
    /// [`IncrementBatches::wait`]); `None`, increments share `store`'s connection.
    pub fn start(
        store: Store,
        metrics: Arc<Metrics>,
        session_ttl: Duration,
        timeout: Duration,
        wait: Option<WaitReplicas>,
    ) -> Self {
        let ttl_ms = session_ttl.as_millis().try_into().unwrap_or(i64::MAX);
        // Half the caller's patience, so the WAIT's own answer arrives before fred's timeout.
        let wait_ms = (timeout.as_millis() / 2).max(1) as i64;
        let sender = IncrementBatches {
            store: wait
                .as_ref()
                .map_or_else(|| store.clone(), |w| w.connection.clone()),
            metrics,
            script: Script::from_lua(scripts::INCREMENT_BATCH_LUA),
            node_script: Script::from_lua(scripts::INCREMENT_NODE_BATCH_LUA),
            ttl_ms,
            wait: wait.map(|w| (w.replicas, wait_ms)),
        };
        Counter {
            store,
            requests: batch::start(sender, LIMITS),
            claim: Script::from_lua(scripts::CLAIM_LUA),
            ttl_ms,
            timeout,
        }
    }

    /// Claims `session` for a new socket whose writer token is `token` (unique in the fleet),
    /// fencing every older socket of it, and reads where it starts (see [`Claim`]). `owner`
    /// is the socket's verified user: a session another user owns is refused untouched, and
    /// one without an owner becomes this user's (`None`: not checked, not recorded).
    pub async fn claim(
        &self,
        session: &str,
        token: &str,
        last_count: u64,
        owner: Option<&str>,
    ) -> Result<Claim, ClaimError> {
        let answer: Vec<Value> = self
            .store
            .run(
                "claim",
                &self.claim,
                session_key(session),
                vec![
                    Value::from(token),
                    Value::from(self.ttl_ms),
                    Value::from(last_count.min(i64::MAX as u64) as i64),
                    Value::from(owner.unwrap_or("")),
                ],
            )
            .await?;
        let unexpected = || StoreError::Unexpected(format!("claim answered {answer:?}"));
        let [existed, count, repaired, rooms] = &answer[..] else {
            return Err(unexpected().into());
        };
        if existed.as_i64() == Some(scripts::NOT_OWNER) {
            return Err(ClaimError::NotOwner);
        }
        let rooms = match rooms {
            Value::Array(rooms) => rooms.iter().filter_map(Value::as_string).collect(),
            _ => Vec::new(),
        };
        Ok(Claim {
            count: count.as_u64().ok_or_else(unexpected)?,
            existed: existed.as_i64() == Some(1),
            repaired: repaired.as_i64() == Some(1),
            rooms,
        })
    }

    /// The handle a socket counts its frames with, after it claimed `session` with `token`
    /// and was told `claim`.
    pub fn for_socket(&self, session: &str, token: &str, claim: &Claim) -> SessionCounter {
        SessionCounter {
            counter: self.clone(),
            key: Key::from(session_key(session)),
            token: Value::from(token),
            unsure: false,
            count: claim.count,
            touched: Instant::now(),
        }
    }
}

/// One socket's side of its session's counter. Owned by the socket's task.
pub struct SessionCounter {
    counter: Counter,
    key: Key,
    /// This socket's writer token (see `scripts::CLAIM_LUA`); a cheap clone per message.
    token: Value,
    /// Whether an attempt was answered `unavailable` since the last count. Redis may still
    /// have run it, so the next attempt says so (see `scripts::INCREMENT_BATCH_LUA`).
    unsure: bool,
    /// The highest count this socket has told its client: the floor below which the counter
    /// never goes, and the `bye` total.
    count: u64,
    /// When Redis last renewed the session's TTL on this socket's behalf.
    touched: Instant,
}

impl SessionCounter {
    /// Counts one frame. An error means `unavailable`: not counted as far as the client can
    /// know, and safe to resend (on this socket, or on a new one after a reconnect).
    pub async fn increment(&mut self) -> Result<Counted, StoreError> {
        let (key, token) = (self.key.clone(), self.token.clone());
        let (unsure, floor) = (self.unsure, self.count);
        let result = batch::call(
            &self.counter.requests,
            self.counter.timeout,
            "counter",
            |reply| Request {
                key,
                token,
                unsure,
                floor,
                reply,
            },
        )
        .await;
        match result {
            Ok(Counted::Count(n)) => {
                self.count = self.count.max(n);
                self.unsure = false;
                self.touched = Instant::now();
            }
            Ok(Counted::Fenced) => {}
            Err(_) => self.unsure = true,
        }
        result
    }

    /// The highest count this socket has told its client.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// When the session's TTL next needs renewing for this open socket: half a TTL after the
    /// last renewal, so an idle socket's session never expires under it.
    pub fn touch_due(&self) -> Instant {
        self.touched + Duration::from_millis(self.counter.ttl_ms as u64 / 2)
    }

    /// Renews the session's TTL. Rare (every half TTL of idleness), so it is a plain command
    /// rather than a batch; boxed to keep fred's large future out of the socket's task.
    pub async fn touch(&mut self) -> Result<(), StoreError> {
        use fred::interfaces::KeysInterface;
        self.touched = Instant::now();
        let store = &self.counter.store;
        let call = store
            .redis()
            .pexpire::<i64, _>(self.key.clone(), self.counter.ttl_ms, None);
        Box::pin(store.timed("touch", call)).await.map(drop)
    }
}
