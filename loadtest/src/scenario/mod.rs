//! The scenarios. Each runs in two phases:
//! 1. connect: open every socket (bounded concurrency), timed for connections/s;
//! 2. run: one task per open socket does the scenario's work, timed for messages/s, with CPU
//!    sampled over exactly this phase.
//!
//! Separating the phases keeps the connection storm out of the throughput and latency
//! numbers, and makes every socket start its work at about the same moment.
//!
//! With `--during`, the command runs alongside the run phase ([`during`]), and the run phase
//! lasts until both the sockets and the command are done.

mod closed_loop;
pub mod during;
pub mod fan_out;
mod hold;
mod open_loop;
mod resume;
/// `smoke`: not a load scenario but a one-socket check of a single instance (make promote).
pub mod smoke;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{task::JoinSet, time::Instant};

use crate::{
    cli::Scenario,
    client::{self, Conn, Target},
    cpu::CpuWindow,
    link::Link,
    report::{Disruption, Phase, Report, ResumeSummary},
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
    let disruption = common
        .during
        .clone()
        .map(|command| tokio::spawn(during::run(command, common.during_after, deadline)));
    // Sockets the server closes come back on their session only when a disruption is run.
    let follows = common.during.is_some();
    let target = Arc::new(target);
    let link = move |conn: Conn| Link::new(conn, &target, follows);
    let mut fan_out = None;
    match *scenario {
        Scenario::ClosedLoop { messages, .. } => {
            for_each_socket(conns, &mut totals, |_, conn| {
                closed_loop::run(link(conn), messages, payload.clone(), deadline)
            })
            .await
        }
        Scenario::OpenLoop { rate, duration, .. } => {
            let n = common.connections.max(1);
            for_each_socket(conns, &mut totals, |i, conn| {
                // Start offsets spread over one period so the sockets do not send in step.
                let offset = Duration::from_secs_f64(i as f64 / n as f64 / rate.max(1e-3));
                open_loop::run(
                    link(conn),
                    rate,
                    duration,
                    offset,
                    payload.clone(),
                    deadline,
                )
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
                hold::run(
                    link(conn),
                    warmup_messages,
                    payload.clone(),
                    until,
                    deadline,
                )
            })
            .await
        }
        Scenario::FanOut {
            ref broadcast_url,
            ref token,
            broadcasts,
            broadcast_interval,
            ref run_id,
            ..
        } => {
            let plan = fan_out::Plan {
                broadcast_url,
                token: token.expose(),
                run_id: run_id.as_deref().unwrap_or_default(),
                broadcasts,
                interval: broadcast_interval,
            };
            fan_out = Some(fan_out::run_here(conns, link, &plan, deadline, &mut totals).await);
        }
        Scenario::Resume {
            messages, resumes, ..
        } => {
            for_each_socket(conns, &mut totals, |_, conn| {
                resume::run(link(conn), messages, resumes, payload.clone(), deadline)
            })
            .await
        }
    }
    let command = match disruption {
        Some(task) => match task.await {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                totals.error(format!("task failed: {e}"));
                None
            }
        },
        None => None,
    };
    let run = Phase::since(started);
    let cpu = cpu.finish();

    if let Some(failure) = command.as_ref().and_then(|c| c.failure.clone()) {
        totals.error(failure);
    }
    let resumes = totals.resumes.clone();
    let mut report = Report::new(
        scenario.name(),
        &common.url,
        common.connections,
        connect,
        run,
        totals,
        cpu,
    );
    report.fan_out = fan_out;
    if matches!(scenario, Scenario::Resume { .. }) {
        report.resume = Some(ResumeSummary::from_totals(&resumes));
    }
    report.disruption = command.map(|c| Disruption::new(&c, &resumes));
    report
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
