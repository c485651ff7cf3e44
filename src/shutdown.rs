//! Shutdown: notice the signal, tell every socket, wait for the fleet, exit in time.
//!
//! 1. readiness fails and upgrades are refused (the `draining` flag);
//! 2. the instance is marked draining in the registry;
//! 3. every socket finishes its in-flight frame, gets `bye` and close 1001, spread over
//!    `DRAIN_SPREAD`;
//! 4. its connections are removed from the registry;
//! 5. it polls the fleet until no draining instance holds a connection (siblings stopped
//!    with it) or the deadline comes;
//! 6. it leaves the registry;
//! 7. the HTTP server stops, and [`stop`] returns, within `SHUTDOWN_TIMEOUT` of the signal.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::SharedState;

/// Kept back from `SHUTDOWN_TIMEOUT` for the last steps (registry removal, HTTP stop, exit).
const EXIT_MARGIN: Duration = Duration::from_millis(700);

/// How often the fleet is polled while waiting for draining siblings.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received; draining"),
        _ = terminate.recv() => tracing::info!("SIGTERM received; draining"),
    }
}

/// The background tasks (lease, subscriber, heartbeat) and their stop signal. They run until
/// the end of the drain: the lease keeps the instance visible as draining meanwhile.
pub struct Background {
    pub cancel: CancellationToken,
    pub tasks: Vec<JoinHandle<()>>,
}

/// The exit deadline: `SHUTDOWN_TIMEOUT` after the signal.
fn exit_deadline(state: &SharedState, signalled: Instant) -> Instant {
    // A timeout too large for the clock (start-up bounds it, but no panic here either way)
    // means no deadline in practice: a year.
    signalled
        .checked_add(state.settings.shutdown_timeout)
        .unwrap_or_else(|| signalled + Duration::from_secs(365 * 24 * 3600))
}

/// The HTTP server and its stop signal: stopped last, once the sockets are drained, so that
/// `/readyz` keeps answering 503 (not connection refused) to load balancers meanwhile.
pub struct Http {
    pub stop: CancellationToken,
    pub server: JoinHandle<()>,
}

/// Everything from the signal to the exit: the drain, then the HTTP server, within
/// `SHUTDOWN_TIMEOUT` of `signalled`.
pub async fn stop(state: &SharedState, signalled: Instant, background: Background, http: Http) {
    drain(state, signalled, background).await;
    http.stop.cancel();
    let left = remaining(state, signalled);
    if tokio::time::timeout(left, http.server).await.is_err() {
        tracing::warn!("HTTP connections still open at the deadline; exiting anyway");
    }
    state
        .metrics
        .shutdown_duration
        .set(signalled.elapsed().as_secs_f64());
    tracing::info!(
        elapsed_ms = signalled.elapsed().as_millis() as u64,
        "shutdown complete"
    );
}

/// Time left before the exit deadline.
fn remaining(state: &SharedState, signalled: Instant) -> Duration {
    exit_deadline(state, signalled).saturating_duration_since(Instant::now())
}

/// Every step that waits (on Redis, on sockets, on tasks) is bounded by the drain deadline,
/// `EXIT_MARGIN` before the exit deadline, whatever Redis does: each Redis call has its own
/// `--redis-timeout` too, but a drain that waits for several of them in turn once took 11.4 s
/// of a 10 s `SHUTDOWN_TIMEOUT` with Redis SIGSTOPped.
async fn drain(state: &SharedState, signalled: Instant, background: Background) {
    let exit = exit_deadline(state, signalled);
    let deadline = exit
        .checked_sub(EXIT_MARGIN)
        .unwrap_or(signalled)
        .max(signalled);
    let deadline_tokio = tokio::time::Instant::from_std(deadline);
    state.draining.store(true, Ordering::SeqCst);
    state.metrics.draining.set(1);

    // Marking the instance draining in Redis and telling the sockets go together, so that a
    // Redis that hangs does not hold every socket's bye back by a `--redis-timeout`. The mark
    // is polled first, so its command is on the connection before any socket leaves.
    let mark = async {
        if let Err(error) = bounded(deadline_tokio, state.registry.set_draining()).await {
            tracing::warn!(%error, "could not mark this instance draining in the registry");
        }
    };
    let close = async {
        let open = state.local_connections();
        tracing::info!(connections = open, "closing sockets");
        state.fanout.drain();
        state.sessions.close();
        if tokio::time::timeout_at(deadline_tokio, state.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = state.local_connections(),
                "sockets still open at the drain deadline"
            );
        }
    };
    tokio::join!(mark, close);

    if let Err(error) = bounded(deadline_tokio, state.registry.remove_all_connections()).await {
        tracing::warn!(%error, "could not remove this instance's connections from the registry");
    }

    wait_for_fleet(state, deadline).await;

    background.cancel.cancel();
    for task in background.tasks {
        let _ = tokio::time::timeout_at(deadline_tokio, task).await;
    }
    // Half the margin at most, and never past the point that leaves the HTTP stop the other
    // half.
    let leave_by =
        (Instant::now() + EXIT_MARGIN / 2).min(exit.checked_sub(EXIT_MARGIN / 2).unwrap_or(exit));
    if let Err(error) = bounded(
        tokio::time::Instant::from_std(leave_by),
        state.registry.deregister(),
    )
    .await
    {
        tracing::warn!(%error, "could not remove this instance from the registry; its lease expires it");
    }
}

/// Polls Redis until no draining instance of the fleet holds a connection, logging progress.
/// Each poll is bounded by `deadline`: a snapshot that Redis does not answer in time ends the
/// wait like one that fails.
async fn wait_for_fleet(state: &SharedState, deadline: Instant) {
    let deadline_tokio = tokio::time::Instant::from_std(deadline);
    loop {
        let records = match bounded(deadline_tokio, state.registry.snapshot()).await {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "cannot see the fleet; not waiting for siblings");
                return;
            }
        };
        let global: u64 = records.iter().map(|r| r.connections).sum();
        let draining: u64 = records
            .iter()
            .filter(|r| r.draining)
            .map(|r| r.connections)
            .sum();
        let remaining = deadline.saturating_duration_since(Instant::now());
        tracing::info!(
            global,
            draining,
            remaining_s = remaining.as_secs_f64(),
            "global={global} draining={draining} remaining={:.1}s",
            remaining.as_secs_f64()
        );
        if draining == 0 || remaining < POLL_INTERVAL {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn bounded<T, E: std::fmt::Display>(
    deadline: tokio::time::Instant,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}
