//! The writes of connections into this instance's `:conns` hash, sent in batches.
//!
//! Every connect and every disconnect changes one field of the hash. Sent one by one, each was
//! an ~11 KB fred future per socket, allocated while the socket opened or closed: at 10,000
//! connecting sockets those transient blocks fragment the heap and stay in the process's
//! resident memory (docs/PROFILE.md, section 2). As for the message counter, sockets instead
//! hand their change to the batching loop of src/batch.rs, which sends whatever has queued up
//! as one script call that applies the changes in the order they were queued.
//!
//! What the registry relied on stays true:
//! - a socket's `HSET` happens before its `HDEL` (the socket waits for the first before it can
//!   queue the second, and batches go out in order on one connection);
//! - the hash is put under lease (`PEXPIRE`) whenever a connection is added, even if the hash
//!   was just created;
//! - a failure is returned to the socket, which logs it; the next lease renewal repairs Redis
//!   from the process's own record (src/registry.rs);
//! - every wait is bounded by `--redis-timeout`; the queue and the batches are bounded
//!   ([`LIMITS`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fred::types::{scripts::Script, Value};
use tokio::sync::{mpsc, oneshot};

use crate::{
    batch,
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

/// More sockets than `queue` opening or closing at once wait for room; `max_batch` bounds how
/// long one call holds Redis.
const LIMITS: batch::Limits = batch::Limits {
    queue: 8192,
    max_batch: 512,
    max_in_flight: 4,
};

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
        let sender = ChangeBatches {
            store,
            script: Script::from_lua(APPLY_BATCH_LUA),
            conns_key,
            ttl_ms: ttl_ms as i64,
        };
        ConnectionWrites {
            requests: batch::start(sender, LIMITS),
            timeout,
        }
    }

    /// Applies one change in Redis and waits until it is applied (or failed).
    pub async fn apply(&self, change: Change) -> Result<(), StoreError> {
        batch::call(&self.requests, self.timeout, "registry writer", |reply| {
            Request { change, reply }
        })
        .await
    }
}

struct ChangeBatches {
    store: Store,
    script: Script,
    conns_key: String,
    ttl_ms: i64,
}

impl batch::Sender for ChangeBatches {
    type Request = Request;

    /// Unlike a count, a change is sent even if its socket stopped waiting: the process's own
    /// record already holds it, and Redis should match.
    fn still_wanted(&self, _: &Request) -> bool {
        true
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
