//! The scenarios. Each runs in two phases:
//! 1. connect: open every socket (bounded concurrency), timed for connections/s;
//! 2. run: one task per open socket does the scenario's work, timed for messages/s, with CPU
//!    sampled over exactly this phase.
//!
//! Separating the phases keeps the connection storm out of the throughput and latency
//! numbers, and makes every socket start its work at about the same moment.

mod closed_loop;
mod hold;
mod open_loop;
/// `smoke`: not a load scenario but a one-socket check of a single instance (make promote).
pub mod smoke;

use std::{future::Future, time::Duration};

use tokio::{task::JoinSet, time::Instant};

use crate::{
    cli::Scenario,
    client::{self, Conn, Target},
    cpu::CpuWindow,
    report::{Phase, Report},
    stats::{Tally, Totals},
};

/// Runs the scenario the command line chose and reports on it.
pub async fn run(scenario: &Scenario) -> Report {
    let common = scenario.common();
    let deadline = Instant::now() + common.timeout;
    let payload: tokio_tungstenite::tungstenite::Utf8Bytes = common.payload.as_str().into();
    let target = Target {
        url: common.url.clone(),
        session_prefix: common.session_prefix.clone(),
        connect_timeout: common.connect_timeout,
    };

    let mut totals = Totals::default();
    let started = Instant::now();
    let conns = client::connect_all(
        &target,
        common.connections,
        common.concurrency as usize,
        deadline,
        &mut totals,
    )
    .await;
    let connect = Phase::since(started);

    let cpu = CpuWindow::start(&common.sample_pids);
    let started = Instant::now();
    totals.latency_series.begin_at(crate::series::now_ms());
    match *scenario {
        Scenario::ClosedLoop { messages, .. } => {
            for_each_socket(conns, &mut totals, |_, conn| {
                closed_loop::run(conn, messages, payload.clone(), deadline)
            })
            .await
        }
        Scenario::OpenLoop { rate, duration, .. } => {
            let n = common.connections.max(1);
            for_each_socket(conns, &mut totals, |i, conn| {
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
            for_each_socket(conns, &mut totals, |_, conn| {
                hold::run(conn, warmup_messages, payload.clone(), until, deadline)
            })
            .await
        }
    }
    let run = Phase::since(started);
    let cpu = cpu.finish();

    Report::new(
        scenario.name(),
        &common.url,
        common.connections,
        connect,
        run,
        totals,
        cpu,
    )
}

/// Runs `work` for every open socket as its own task and adds up what they count.
async fn for_each_socket<F, Fut>(conns: Vec<Conn>, totals: &mut Totals, work: F)
where
    F: Fn(usize, Conn) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
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
