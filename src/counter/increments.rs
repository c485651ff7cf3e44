//! The increments' batching sender: one `INCREMENT_BATCH_LUA` call per batch, or one
//! `INCREMENT_NODE_BATCH_LUA` call per node in a Redis Cluster, then `REDIS_WAIT_REPLICAS`'s
//! `WAIT`, then each request's answer.

use std::{sync::Arc, time::Instant};

use fred::{
    interfaces::ClusterInterface,
    types::{config::Server, scripts::Script, Key, Value},
};
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

/// Sends increments as one `INCREMENT_BATCH_LUA` call per batch (per node in a cluster).
pub(super) struct IncrementBatches {
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    pub(super) script: Script,
    /// `INCREMENT_NODE_BATCH_LUA`, for a cluster.
    pub(super) node_script: Script,
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

    /// One script call for the batch; in a Redis Cluster one per node of its keys, sent
    /// concurrently, each answering its own requests.
    async fn send(&self, batch: Vec<Request>) {
        let started = Instant::now();
        if self.store.is_clustered() {
            let groups = group_by_node(batch, |slot| {
                self.store
                    .redis()
                    .cached_cluster_state()
                    .and_then(|routing| routing.get_server(slot).cloned())
            });
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

/// The requests of a batch by the cluster node that serves their session key's slot
/// (`node_of`, from fred's cached slot map), each group with the slot of its first key (where
/// its call is routed), in batch order within each group (a socket has at most one request in
/// flight, so no socket's order changes). A slot the map does not know makes a group of its
/// own slot, which one node serves whatever the map says.
fn group_by_node(
    batch: Vec<Request>,
    node_of: impl Fn(u16) -> Option<Server>,
) -> Vec<(u16, Vec<Request>)> {
    let mut groups: Vec<(Option<Server>, u16, Vec<Request>)> = Vec::new();
    let mut nodes: Vec<(u16, Option<Server>)> = Vec::new();
    for request in batch {
        let slot = fred::util::redis_keyslot(request.key.as_bytes());
        let node = match nodes.iter().find(|(s, _)| *s == slot) {
            Some((_, node)) => node.clone(),
            None => {
                let node = node_of(slot);
                nodes.push((slot, node.clone()));
                node
            }
        };
        let same = |(n, s, _): &&mut (Option<Server>, u16, Vec<Request>)| match &node {
            Some(node) => n.as_ref() == Some(node),
            None => n.is_none() && *s == slot,
        };
        match groups.iter_mut().find(same) {
            Some((_, _, group)) => group.push(request),
            None => groups.push((node, slot, vec![request])),
        }
    }
    groups
        .into_iter()
        .map(|(_, slot, group)| (slot, group))
        .collect()
}

impl IncrementBatches {
    /// One script call for `batch`, then the `WAIT` on the node that ran it, then the answers:
    /// `INCREMENT_BATCH_LUA` outside a cluster (`slot` `None`), else `INCREMENT_NODE_BATCH_LUA`
    /// routed by `slot`, the first key's, whose node serves every key of the group. A failure
    /// fails only this call's requests: each is `unsure` on its socket and its resend is safe.
    async fn send_group(&self, batch: Vec<Request>, slot: Option<u16>) {
        let per_entry = if slot.is_some() { 4 } else { 3 };
        let mut keys = Vec::with_capacity(batch.len());
        let mut args = Vec::with_capacity(1 + per_entry * batch.len());
        args.push(Value::from(self.ttl_ms));
        let mut replies = Vec::with_capacity(batch.len());
        for request in batch {
            if slot.is_some() {
                // Declared: the first key only (it routes the call); every key is an argument.
                if keys.is_empty() {
                    keys.push(request.key.clone());
                }
                args.push(Value::from(request.key));
            } else {
                keys.push(request.key);
            }
            args.push(request.token);
            args.push(Value::from(if request.unsure { "1" } else { "0" }));
            args.push(Value::from(request.floor.min(i64::MAX as u64) as i64));
            replies.push(request.reply);
        }
        let script = if slot.is_some() {
            &self.node_script
        } else {
            &self.script
        };
        let mut result: Result<Value, StoreError> =
            self.store.run_untimed(script, keys, args).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(session: &str) -> Request {
        Request {
            key: Key::from(super::super::session_key(session)),
            token: Value::from("t"),
            unsure: false,
            floor: 0,
            reply: oneshot::channel().0,
        }
    }

    fn sessions(groups: &[(u16, Vec<Request>)]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|(_, group)| {
                let keys = group.iter().map(|r| r.key.as_str().unwrap().to_string());
                keys.map(|k| k.trim_start_matches("wsfleet:session:").to_string())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_batch_is_grouped_by_node_in_batch_order_and_routed_by_each_groups_first_slot() {
        let (low, high) = (
            Server::new("127.0.0.1", 7000),
            Server::new("127.0.0.1", 7001),
        );
        let node_of = |slot: u16| {
            Some(if slot < 8192 {
                low.clone()
            } else {
                high.clone()
            })
        };
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let batch: Vec<Request> = names.iter().map(|n| request(n)).collect();
        let groups = group_by_node(batch, node_of);

        assert_eq!(groups.len(), 2, "two nodes, two calls");
        let slot = |n: &str| fred::util::redis_keyslot(super::super::session_key(n).as_bytes());
        let expected: Vec<Vec<String>> = [true, false]
            .map(|first_low| {
                let first_is_low = slot(&names[0]) < 8192;
                names
                    .iter()
                    .filter(|n| (slot(n) < 8192) == (first_is_low == first_low))
                    .cloned()
                    .collect()
            })
            .into();
        assert_eq!(sessions(&groups), expected);
        for (routed_by, group) in &groups {
            let first = group[0].key.as_str().unwrap();
            assert_eq!(*routed_by, fred::util::redis_keyslot(first.as_bytes()));
        }
    }

    #[test]
    fn without_a_slot_map_each_slot_is_a_group_of_its_own() {
        let batch = vec![request("a"), request("b"), request("a")];
        let groups = group_by_node(batch, |_| None);
        assert_eq!(sessions(&groups), [vec!["a", "a"], vec!["b"]]);
    }
}
