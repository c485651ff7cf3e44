//! The scenarios. Each runs in two phases:
//! 1. connect: open every socket (bounded concurrency), timed for connections/s;
//! 2. run: one task per open socket does the scenario's work, timed for messages/s, with CPU
//!    sampled over exactly this phase.
//!
//! Separating the phases keeps the connection storm out of the throughput and latency
//! numbers, and makes every socket start its work at about the same moment. With worker
//! processes each worker runs both phases for its slice of the sockets, and the parent
//! starts every worker's run phase at the same moment (see `workers`).

mod closed_loop;
mod hold;
mod open_loop;
/// `smoke`: not a load scenario but a one-socket check of a single instance (make promote).
pub mod smoke;

use std::{future::Future, ops::Range, time::Duration};

use anyhow::Result;
use tokio::{task::JoinSet, time::Instant};

use crate::{
    cli::{Common, Scenario},
    client::{self, Conn, Parked, Target},
    coordinator::Coordinator,
    cpu::CpuWindow,
    live::LIVE,
    progress::{Progress, RunGoal},
    report::{Phase, Report},
    stats::{Tally, Totals},
};

/// Runs the scenario the command line chose with every socket in this process
/// (`--workers 1`), and reports on it. `workers::parent` is the same sequence spread over
/// worker processes.
pub async fn run(scenario: &Scenario) -> Result<Report> {
    let common = scenario.common();
    let deadline = Instant::now() + common.timeout;
    let target = target(common).await?;
    let progress = Progress::new(!common.no_progress, common.connections as u64);
    let ticker = progress.follow(|| LIVE.snapshot());

    let (parked, mut totals, connect) =
        connect(&target, common, 0..common.connections, deadline).await;
    let conns = parked.release(&mut totals).await;

    progress.start_run(run_goal(scenario), LIVE.snapshot());
    let coordinator = Coordinator::start(scenario, deadline);
    let cpu = CpuWindow::start(&common.sample_pids);
    let started = Instant::now();
    run_sockets(scenario, conns, &mut totals, deadline).await;
    let run = Phase::since(started);
    let cpu = cpu.finish();
    progress.finish();
    if let Some(ticker) = ticker {
        ticker.abort();
    }

    let mut report = Report::new(
        scenario.name(),
        &common.urls_label(),
        common.connections,
        connect,
        run,
        totals,
        cpu,
    );
    coordinator.finish(&mut report).await;
    Ok(report)
}

/// Where the sockets go, resolved once from the options.
pub async fn target(common: &Common) -> Result<Target> {
    Target::resolve(
        &common.urls,
        &common.source_ips,
        common.session_prefix.clone(),
        common.connect_timeout,
    )
    .await
}

/// The connect phase for the sockets with global indices `indices`: the open sockets
/// (parked until [`Parked::release`] hands them to the run phase), the connection counts,
/// and how long it took.
pub async fn connect(
    target: &Target,
    common: &Common,
    indices: Range<usize>,
    deadline: Instant,
) -> (Parked, Totals, Phase) {
    let mut totals = Totals::default();
    let started = Instant::now();
    let conns = client::connect_all(
        target,
        indices,
        common.concurrency as usize,
        deadline,
        &mut totals,
    )
    .await;
    (conns, totals, Phase::since(started))
}

/// What the run phase is heading for, for the progress bar.
pub fn run_goal(scenario: &Scenario) -> RunGoal {
    let sockets = scenario.common().connections as u64;
    match *scenario {
        Scenario::ClosedLoop { messages, .. } => RunGoal::Replies(sockets * messages),
        Scenario::OpenLoop { duration, .. } => RunGoal::Lasts(duration),
        Scenario::Hold { duration, .. } => RunGoal::Lasts(duration),
    }
}

/// The run phase: the scenario's work for every open socket, added up into `totals`.
/// `conns` carry their global index (see `workers::plan::Slice`).
pub async fn run_sockets(
    scenario: &Scenario,
    conns: Vec<(usize, Conn)>,
    totals: &mut Totals,
    deadline: Instant,
) {
    let common = scenario.common();
    let payload: tokio_tungstenite::tungstenite::Utf8Bytes = common.payload.as_str().into();
    match *scenario {
        Scenario::ClosedLoop { messages, .. } => {
            for_each_socket(conns, totals, |_, conn| {
                closed_loop::run(conn, messages, payload.clone(), deadline)
            })
            .await
        }
        Scenario::OpenLoop { rate, duration, .. } => {
            let n = common.connections.max(1);
            for_each_socket(conns, totals, |i, conn| {
                // Start offsets spread over one period so the sockets do not send in step.
                let offset = Duration::from_secs_f64(i as f64 / n as f64 / rate.max(1e-3));
                open_loop::run(conn, rate, duration, offset, payload.clone(), deadline)
            })
            .await
        }
        Scenario::Hold {
            duration,
            warmup_messages,
            ..
        } => {
            // The warm-up counts against the hold: `until` is fixed before it.
            let until = deadline.min(Instant::now() + duration);
            for_each_socket(conns, totals, |_, conn| {
                hold::run(conn, warmup_messages, payload.clone(), until, deadline)
            })
            .await
        }
    }
}

/// Runs `work` for every open socket (with its global index) as its own task and adds up
/// what they count.
async fn for_each_socket<F, Fut>(conns: Vec<(usize, Conn)>, totals: &mut Totals, work: F)
where
    F: Fn(usize, Conn) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (i, conn) in conns {
        tasks.spawn(work(i, conn));
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(tally) => totals.absorb(tally),
            // A panic in a socket task is a bug in this tool; count it rather than hide it.
            Err(e) => totals.error(format!("task failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests;
