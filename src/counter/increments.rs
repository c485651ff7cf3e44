//! The increments' batching sender: one `INCREMENT_BATCH_LUA` call per batch, or per slot in
//! a Redis Cluster, then `REDIS_WAIT_REPLICAS`'s `WAIT`, then each request's answer.

use std::{sync::Arc, time::Instant};

use fred::types::{scripts::Script, Key, Value};
use tokio::sync::oneshot;

use super::{scripts, Counted};
use crate::{
    batch,
    metrics::{Metrics, OperationLabel},
    store::{Store, StoreError},
};

/// One message to count.
pub(super) struct Request {
    pub(super) key: Key,
    pub(super) token: Value,
    pub(super) unsure: bool,
    pub(super) floor: u64,
    pub(super) reply: oneshot::Sender<Result<Counted, StoreError>>,
}

/// Sends increments as one `INCREMENT_BATCH_LUA` call per batch.
pub(super) struct IncrementBatches {
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    pub(super) script: Script,
    pub(super) ttl_ms: i64,
    /// `REDIS_WAIT_REPLICAS` and the `WAIT` timeout in ms; `None`: counts are sent as soon as
    /// the primary has them (a failover may then lose the last of them; the floor keeps the
    /// counts going up all the same).
    pub(super) wait: Option<(u32, i64)>,
}

const INCREMENT: OperationLabel = OperationLabel {
    operation: "increment",
};

impl batch::Sender for IncrementBatches {
    type Request = Request;

    /// A caller that stopped waiting has answered `unavailable` already; not sending its
    /// message keeps it from being counted late.
    fn still_wanted(&self, request: &Request) -> bool {
        !request.reply.is_closed()
    }

    /// One script call for the batch; in a Redis Cluster one per slot of its keys (a script
    /// may only take keys of one slot), sent concurrently, each answering its own requests.
    async fn send(&self, batch: Vec<Request>) {
        let started = Instant::now();
        if self.store.is_clustered() {
            let groups = group_by_slot(batch);
            let calls = groups
                .into_iter()
                .map(|(slot, group)| self.send_group(group, Some(slot)));
            futures_util::future::join_all(calls).await;
        } else {
            self.send_group(batch, None).await;
        }
        // One observation per batch; errors count once per message, so that
        // `redis_errors{operation="increment"}` still means messages answered `unavailable`.
        self.metrics
            .redis_duration
            .get_or_create(&INCREMENT)
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The requests of a batch by the cluster slot of their session key, in batch order within
/// each slot (a socket has at most one request in flight, so no socket's order changes).
fn group_by_slot(batch: Vec<Request>) -> Vec<(u16, Vec<Request>)> {
    let mut groups: Vec<(u16, Vec<Request>)> = Vec::new();
    for request in batch {
        let slot = fred::util::redis_keyslot(request.key.as_bytes());
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(request),
            None => groups.push((slot, vec![request])),
        }
    }
    groups
}

impl IncrementBatches {
    /// One `INCREMENT_BATCH_LUA` call for `batch`, whose keys are all in `slot` (`None`: not
    /// a cluster), then the `WAIT` on the node that ran it, then the answers. A failure fails
    /// only this call's requests: each is `unsure` on its socket and its resend is safe.
    async fn send_group(&self, batch: Vec<Request>, slot: Option<u16>) {
        let mut keys = Vec::with_capacity(batch.len());
        let mut args = Vec::with_capacity(1 + 3 * batch.len());
        args.push(Value::from(self.ttl_ms));
        let mut replies = Vec::with_capacity(batch.len());
        for request in batch {
            keys.push(request.key);
            args.push(request.token);
            args.push(Value::from(if request.unsure { "1" } else { "0" }));
            args.push(Value::from(request.floor.min(i64::MAX as u64) as i64));
            replies.push(request.reply);
        }
        let mut result: Result<Value, StoreError> =
            self.store.run_untimed(&self.script, keys, args).await;
        if let (Ok(_), Some((replicas, timeout_ms))) = (&result, self.wait) {
            if let Err(error) = self.wait(replicas, timeout_ms, slot).await {
                result = Err(error);
            }
        }
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
                Value::Integer(n) if n > 0 => Ok(Counted::Count(n as u64)),
                Value::Integer(scripts::FENCED) => Ok(Counted::Fenced),
                // Nobody waits for it: the socket moved on when it answered `unavailable`.
                Value::Integer(scripts::STALE) => {
                    Err(StoreError::Unexpected("a late attempt was refused".into()))
                }
                other => {
                    self.metrics.redis_errors.get_or_create(&INCREMENT).inc();
                    Err(StoreError::Unexpected(format!(
                        "increment answered {other:?}"
                    )))
                }
            };
            // A caller that gave up meanwhile has dropped its receiver; nothing to do.
            let _ = reply.send(result);
        }
    }

    /// `WAIT replicas timeout` on the connection the batch went over: Redis answers once that
    /// many replicas have everything this connection wrote, the batch included. Fewer within
    /// the timeout fail the whole batch as `unavailable`; each socket's resend then carries
    /// `unsure` and gets its count again, so nothing is counted twice. WAIT holds up the
    /// batches pipelined behind it (see [`WaitReplicas`]): its cost is in docs/BENCHMARKS.md.
    /// In a cluster it goes to the node of `slot`, the one that ran the group: fred holds one
    /// connection per node, the one the group's script went over.
    async fn wait(
        &self,
        replicas: u32,
        timeout_ms: i64,
        slot: Option<u16>,
    ) -> Result<(), StoreError> {
        use fred::interfaces::ClientLike;
        let acked: i64 = self
            .store
            .redis()
            .custom(
                fred::types::CustomCommand::new_static("WAIT", slot, false),
                vec![Value::from(replicas as i64), Value::from(timeout_ms)],
            )
            .await?;
        if acked < replicas as i64 {
            return Err(StoreError::Unexpected(format!(
                "WAIT: {acked} of {replicas} replicas acknowledged the batch"
            )));
        }
        Ok(())
    }

    /// Answers every request of a batch that failed as a whole.
    fn fail(&self, replies: Vec<oneshot::Sender<Result<Counted, StoreError>>>, error: StoreError) {
        self.metrics
            .redis_errors
            .get_or_create(&INCREMENT)
            .inc_by(replies.len() as u64);
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
        }
    }
}
