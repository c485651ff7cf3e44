//! The per-session message counter, counted in batches.
//!
//! Every text frame of every socket needs one atomic increment in Redis. Sent one by one,
//! each costs a Redis command of its own: fred's per-command work, one `write` to Redis
//! (fred flushes every custom command), one Lua call inside Redis, and an ~11 KB fred future
//! per message, allocated and copied (docs/PROFILE.md). Instead, sockets hand their increment
//! to one batching task over a bounded channel and wait on a `oneshot`; the task sends
//! whatever has queued up as one script call that counts each message exactly as before.
//!
//! Batches form by themselves, without waiting: a request that finds a free slot goes out at
//! once (a batch of one on a quiet server), and requests that arrive while
//! [`MAX_IN_FLIGHT`] batches are on their way to Redis go out together as the next one.
//!
//! Guarantees kept from the one-command-per-message design:
//! - each message is counted atomically, and in the order its socket sent it (one socket has
//!   at most one message in flight; batches go out in order on one connection and Redis runs
//!   them in that order);
//! - the op-id de-duplication of messages answered `unavailable` (see `INCREMENT_BATCH_LUA`);
//! - every wait is bounded by `--redis-timeout`: a caller stops waiting after it (its request
//!   is then dropped from the queue if it has not been sent yet), and every batch sent carries
//!   that timeout too;
//! - bounded memory: the queue holds at most [`QUEUE`] requests, a batch at most [`MAX_BATCH`].

use std::{sync::Arc, time::Duration, time::Instant};

use fred::types::{scripts::Script, Key, Value};
use futures_util::{stream::FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::{
    metrics::{Metrics, OperationLabel},
    store::{session_key, Store, StoreError},
};

/// Counts one message per entry: KEYS[i] is a session; ARGV[1] the TTL in ms, then for each
/// session: the op id of this message, how many op ids follow, and the op ids of earlier
/// attempts on the same socket that were answered `unavailable` although Redis may still
/// have run them (a timeout). If the op last counted for the session is one of those, this
/// message is the client's resend of it: answer that count again instead of counting twice.
///
/// One entry failing (a key of the wrong type) answers that entry with nil; the others count.
const INCREMENT_BATCH_LUA: &str = r"
local ttl = ARGV[1]
local function count(key, op, first, last)
  if last >= first then
    local seen = redis.call('HGET', key, 'op')
    for j = first, last do
      if ARGV[j] == seen then
        redis.call('HSET', key, 'op', op)
        redis.call('PEXPIRE', key, ttl)
        return tonumber(redis.call('HGET', key, 'n'))
      end
    end
  end
  local n = redis.call('HINCRBY', key, 'n', 1)
  redis.call('HSET', key, 'op', op)
  redis.call('PEXPIRE', key, ttl)
  return n
end
local out = {}
local a = 2
for i = 1, #KEYS do
  local k = tonumber(ARGV[a + 1])
  local ok, n = pcall(count, KEYS[i], ARGV[a], a + 2, a + 1 + k)
  out[i] = ok and n or false
  a = a + 2 + k
end
return out";

/// Requests waiting for a batch. Each socket has at most one message in flight, so this only
/// fills up with more sockets than this sending at once; they then wait for room.
const QUEUE: usize = 8192;

/// Messages in one script call. Bounds how long one call holds Redis (about 1 ms here).
const MAX_BATCH: usize = 256;

/// Batches on their way to Redis at once. More than one, so that a message arriving while a
/// batch is out does not wait a whole round trip for it to come back.
const MAX_IN_FLIGHT: usize = 4;

/// The handle sockets count through. Cloning is cheap (a channel sender).
#[derive(Clone)]
pub struct Counter {
    requests: mpsc::Sender<Request>,
    /// How long a caller waits for its count before answering `unavailable`.
    timeout: Duration,
}

/// One message to count.
struct Request {
    key: Key,
    op: String,
    unsure: Vec<String>,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// The session's key, built once per socket and reused for each of its messages.
pub fn counter_key(session: &str) -> Key {
    Key::from(session_key(session))
}

impl Counter {
    /// Starts the batching task. It ends when the last `Counter` clone is dropped, after
    /// answering everything already queued.
    pub fn start(
        store: Store,
        metrics: Arc<Metrics>,
        session_ttl: Duration,
        timeout: Duration,
    ) -> Self {
        let (requests, queue) = mpsc::channel(QUEUE);
        let batcher = Batcher {
            store,
            metrics,
            script: Script::from_lua(INCREMENT_BATCH_LUA),
            ttl_ms: session_ttl.as_millis() as i64,
        };
        tokio::spawn(batcher.run(queue));
        Counter { requests, timeout }
    }

    /// Counts one message of the session whose key is `key` and returns its count. `op` names
    /// this attempt uniquely in the fleet; `unsure` lists earlier attempts of the same socket
    /// whose outcome is unknown (see `INCREMENT_BATCH_LUA`).
    pub async fn increment(
        &self,
        key: &Key,
        op: String,
        unsure: Vec<String>,
    ) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            key: key.clone(),
            op,
            unsure,
            reply,
        };
        let counted = async {
            self.requests
                .send(request)
                .await
                .map_err(|_| StoreError::Unexpected("the counter task is gone".into()))?;
            answer
                .await
                .map_err(|_| StoreError::Unexpected("the counter task dropped a request".into()))?
        };
        match tokio::time::timeout(self.timeout, counted).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unexpected(format!(
                "no count within {:?}",
                self.timeout
            ))),
        }
    }
}

struct Batcher {
    store: Store,
    metrics: Arc<Metrics>,
    script: Script,
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
                    // A caller that stopped waiting has answered `unavailable` already; not
                    // sending its message keeps it from being counted late.
                    batch.retain(|request| !request.reply.is_closed());
                    if !batch.is_empty() {
                        in_flight.push(self.send(batch));
                    }
                }
            }
        }
        while in_flight.next().await.is_some() {}
    }

    /// Sends one batch and answers each of its requests.
    async fn send(&self, batch: Vec<Request>) {
        let mut keys = Vec::with_capacity(batch.len());
        let mut args = Vec::with_capacity(1 + 2 * batch.len());
        args.push(Value::from(self.ttl_ms));
        let mut replies = Vec::with_capacity(batch.len());
        for request in batch {
            keys.push(request.key);
            args.push(Value::from(request.op));
            args.push(Value::from(request.unsure.len() as i64));
            args.extend(request.unsure.into_iter().map(Value::from));
            replies.push(request.reply);
        }
        let started = Instant::now();
        let result: Result<Value, StoreError> =
            self.store.run_untimed(&self.script, keys, args).await;
        // One observation per batch; errors count once per message, so that
        // `redis_errors{operation="increment"}` still means messages answered `unavailable`.
        let label = OperationLabel {
            operation: "increment",
        };
        self.metrics
            .redis_duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        let counts = match result {
            Ok(Value::Array(counts)) if counts.len() == replies.len() => counts,
            Ok(other) => {
                let error = StoreError::Unexpected(format!("increment batch answered {other:?}"));
                return self.fail(replies, error);
            }
            Err(error) => return self.fail(replies, error),
        };
        for (reply, count) in replies.into_iter().zip(counts) {
            let result = match count {
                Value::Integer(n) if n >= 0 => Ok(n as u64),
                other => {
                    self.metrics.redis_errors.get_or_create(&label).inc();
                    Err(StoreError::Unexpected(format!(
                        "increment answered {other:?}"
                    )))
                }
            };
            // A caller that gave up meanwhile has dropped its receiver; nothing to do.
            let _ = reply.send(result);
        }
    }

    /// Answers every request of a batch that failed as a whole.
    fn fail(&self, replies: Vec<oneshot::Sender<Result<u64, StoreError>>>, error: StoreError) {
        self.metrics
            .redis_errors
            .get_or_create(&OperationLabel {
                operation: "increment",
            })
            .inc_by(replies.len() as u64);
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
        }
    }
}
