//! One batching loop for the writes many sockets make to Redis: the session counter
//! ([`crate::counter`]) and the registry's connection changes (`registry_writes`).
//!
//! Sockets hand their request to one task over a bounded channel and wait on a `oneshot`; the
//! task sends whatever has queued up as one script call. Batches form by themselves, without
//! waiting: a request that finds a free slot goes out at once (a batch of one on a quiet
//! server), and requests that arrive while `max_in_flight` batches are on their way to Redis go
//! out together as the next one. Batches go out in the order their requests were queued, on one
//! multiplexed connection, so Redis runs them in that order.
//!
//! Why batch at all: sent one by one, each request costs a Redis command of its own (fred's
//! per-command work, one `write`, one Lua call) and an ~11 KB fred future per socket, allocated
//! and copied (docs/PROFILE.md).

use std::{future::Future, time::Duration};

use futures_util::{stream::FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// What one kind of batch does with its requests.
pub trait Sender: Send + Sync + 'static {
    type Request: Send + 'static;
    /// Whether a request is still worth sending; `false` drops it unsent (e.g. its caller
    /// stopped waiting).
    fn still_wanted(&self, request: &Self::Request) -> bool;
    /// Sends one batch (never empty) and answers each of its requests.
    fn send(&self, batch: Vec<Self::Request>) -> impl Future<Output = ()> + Send;
}

/// Limits of one batching task.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Requests waiting for a batch; more callers than this wait for room.
    pub queue: usize,
    /// Requests in one script call: bounds how long one call holds Redis.
    pub max_batch: usize,
    /// Batches on their way to Redis at once. More than one, so that a request arriving while
    /// a batch is out does not wait a whole round trip for it to come back.
    pub max_in_flight: usize,
}

/// Starts the batching task; it ends when every clone of the returned sender is dropped, after
/// answering everything already queued.
pub fn start<S: Sender>(sender: S, limits: Limits) -> mpsc::Sender<S::Request> {
    let (requests, queue) = mpsc::channel(limits.queue);
    tokio::spawn(run(sender, queue, limits));
    requests
}

async fn run<S: Sender>(sender: S, mut queue: mpsc::Receiver<S::Request>, limits: Limits) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = queue.recv(), if in_flight.len() < limits.max_in_flight => {
                let Some(first) = first else { break };
                let mut batch = Vec::with_capacity(limits.max_batch.min(1 + queue.len()));
                batch.push(first);
                while batch.len() < limits.max_batch {
                    match queue.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                batch.retain(|request| sender.still_wanted(request));
                if !batch.is_empty() {
                    in_flight.push(sender.send(batch));
                }
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Queues `request` (built around the reply sender) and waits for its answer, all within
/// `timeout`. `what` names the work in the errors.
pub async fn call<R, T>(
    requests: &mpsc::Sender<R>,
    timeout: Duration,
    what: &str,
    request: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> R,
) -> Result<T, StoreError> {
    let (reply, answer) = oneshot::channel();
    let request = request(reply);
    let answered = async {
        requests
            .send(request)
            .await
            .map_err(|_| StoreError::Unexpected(format!("the {what} task is gone")))?;
        answer
            .await
            .map_err(|_| StoreError::Unexpected(format!("the {what} task dropped a request")))?
    };
    match tokio::time::timeout(timeout, answered).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unexpected(format!(
            "{what}: no answer within {timeout:?}"
        ))),
    }
}
