//! The writes of connections into this instance's `:conns` hash, sent in batches.
//!
//! Every connect and every disconnect changes one field of the hash. Sent one by one, each was
//! an ~11 KB fred future per socket, allocated while the socket opened or closed: at 10,000
//! connecting sockets those transient blocks fragment the heap and stay in the process's
//! resident memory (docs/PROFILE.md, section 2). As for the message counter (src/counter.rs),
//! sockets instead hand their change to one task over a bounded channel and wait on a
//! `oneshot`; the task sends whatever has queued up as one script call that applies the
//! changes in the order they were queued.
//!
//! What the registry relied on stays true:
//! - a socket's `HSET` happens before its `HDEL` (the socket waits for the first before it can
//!   queue the second, and batches go out in order on one connection);
//! - the hash is put under lease (`PEXPIRE`) whenever a connection is added, even if the hash
//!   was just created;
//! - a failure is returned to the socket, which logs it; the next lease renewal repairs Redis
//!   from the process's own record (src/registry.rs);
//! - every wait is bounded by `--redis-timeout`; the queue holds at most [`QUEUE`] changes,
//!   a batch at most [`MAX_BATCH`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fred::types::{scripts::Script, Value};
use futures_util::{stream::FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::{
    metrics::OperationLabel,
    store::{Store, StoreError},
};

/// Applies changes to the hash KEYS[1], in order. ARGV[1] is the lease in ms, then per change
/// either `+`, connection id, session id (`HSET`) or `-`, connection id (`HDEL`).
const APPLY_BATCH_LUA: &str = r"
local added = false
local i = 2
while i <= #ARGV do
  if ARGV[i] == '+' then
    redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i + 2])
    added = true
    i = i + 3
  else
    redis.call('HDEL', KEYS[1], ARGV[i + 1])
    i = i + 2
  end
end
if added then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1";

/// Changes waiting for a batch: more sockets than this opening or closing at once wait for room.
const QUEUE: usize = 8192;

/// Changes in one script call. Bounds how long one call holds Redis.
const MAX_BATCH: usize = 512;

/// Batches on their way to Redis at once.
const MAX_IN_FLIGHT: usize = 4;

/// One change to the connection hash.
pub enum Change {
    Add { conn_id: u64, session: Arc<str> },
    Remove { conn_id: u64 },
}

impl Change {
    fn operation(&self) -> &'static str {
        match self {
            Change::Add { .. } => "register",
            Change::Remove { .. } => "unregister",
        }
    }
}

struct Request {
    change: Change,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle the registry sends changes through.
pub struct ConnectionWrites {
    requests: mpsc::Sender<Request>,
    timeout: Duration,
}

impl ConnectionWrites {
    /// Starts the batching task for the hash `conns_key`. It ends when this handle is dropped,
    /// after answering everything already queued.
    pub fn start(store: Store, conns_key: String, ttl_ms: u64, timeout: Duration) -> Self {
        let (requests, queue) = mpsc::channel(QUEUE);
        let batcher = Batcher {
            store,
            script: Script::from_lua(APPLY_BATCH_LUA),
            conns_key,
            ttl_ms: ttl_ms as i64,
        };
        tokio::spawn(batcher.run(queue));
        ConnectionWrites { requests, timeout }
    }

    /// Applies one change in Redis and waits until it is applied (or failed).
    pub async fn apply(&self, change: Change) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let applied = async {
            self.requests
                .send(Request { change, reply })
                .await
                .map_err(|_| StoreError::Unexpected("the registry writer is gone".into()))?;
            answer.await.map_err(|_| {
                StoreError::Unexpected("the registry writer dropped a change".into())
            })?
        };
        match tokio::time::timeout(self.timeout, applied).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unexpected(format!(
                "connection change not applied within {:?}",
                self.timeout
            ))),
        }
    }
}

struct Batcher {
    store: Store,
    script: Script,
    conns_key: String,
    ttl_ms: i64,
}

impl Batcher {
    async fn run(self, mut queue: mpsc::Receiver<Request>) {
        let mut in_flight = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                first = queue.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                    let Some(first) = first else { break };
                    let mut batch = Vec::with_capacity(MAX_BATCH.min(1 + queue.len()));
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    // Unlike a count, a change is sent even if its socket stopped waiting:
                    // the process's own record already holds it, and Redis should match.
                    in_flight.push(self.send(batch));
                }
            }
        }
        while in_flight.next().await.is_some() {}
    }

    /// Sends one batch and answers each of its requests.
    async fn send(&self, batch: Vec<Request>) {
        let mut args = Vec::with_capacity(1 + 3 * batch.len());
        args.push(Value::from(self.ttl_ms));
        let mut replies = Vec::with_capacity(batch.len());
        for Request { change, reply } in batch {
            replies.push((change.operation(), reply));
            match change {
                Change::Add { conn_id, session } => {
                    args.push(Value::from("+"));
                    args.push(Value::from(conn_id.to_string()));
                    args.push(Value::from(session.to_string()));
                }
                Change::Remove { conn_id } => {
                    args.push(Value::from("-"));
                    args.push(Value::from(conn_id.to_string()));
                }
            }
        }
        let started = Instant::now();
        let result: Result<i64, StoreError> = self
            .store
            .run_untimed(&self.script, self.conns_key.as_str(), args)
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        // One duration per operation kind in the batch; errors once per change, so that
        // `redis_errors{operation="register"}` still counts connections.
        let metrics = self.store.metrics();
        for operation in ["register", "unregister"] {
            if replies.iter().any(|(op, _)| *op == operation) {
                metrics
                    .redis_duration
                    .get_or_create(&OperationLabel { operation })
                    .observe(elapsed);
            }
        }
        for (operation, reply) in replies {
            let answer = match &result {
                Ok(_) => Ok(()),
                Err(error) => {
                    metrics
                        .redis_errors
                        .get_or_create(&OperationLabel { operation })
                        .inc();
                    Err(error.clone())
                }
            };
            // A socket that gave up meanwhile has dropped its receiver; nothing to do.
            let _ = reply.send(answer);
        }
    }
}
