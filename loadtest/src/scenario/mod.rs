//! The scenarios. Each runs in two phases:
//! 1. connect: open every socket (bounded concurrency), timed for connections/s;
//! 2. run: one task per open socket does the scenario's work, timed for messages/s, with CPU
//!    sampled over exactly this phase.
//!
//! Separating the phases keeps the connection storm out of the throughput and latency
//! numbers, and makes every socket start its work at about the same moment. With worker
//! processes each worker runs both phases for its slice of the sockets, and the parent
//! starts every worker's run phase at the same moment (see `workers`).
//!
//! What concerns the run as a whole (fan-out's publishing, the `--during` command) is not
//! here but in the [`Coordinator`], started once by whichever process coordinates the run.
//! With `--during`, the run phase lasts until both the sockets and the command are done.

mod closed_loop;
pub mod during;
pub mod fan_out;
mod finish;
mod hold;
mod open_loop;
mod resume;
pub mod rooms;
/// `smoke`: not a load scenario but a one-socket check of a single instance (make promote).
pub mod smoke;

use std::{future::Future, ops::Range, time::Duration};

use anyhow::Result;
use finish::{Finish, Seat};
use tokio::{sync::watch, task::JoinSet, time::Instant};

use crate::{
    cli::{Common, Scenario},
    client::{self, token::Minter, Conn, Parked, Target},
    coordinator::{Coordinator, Finished},
    cpu::{CpuUse, CpuWindow},
    link::Link,
    live::LIVE,
    progress::{Progress, RunGoal},
    recovery::Position,
    redis_info::{Probe, RedisCost},
    report::{Disruption, FanOut, Phase, Recovery, Report, ResumeSummary, Rooms},
    series,
    stats::{Tally, Totals},
};

/// Runs the scenario the command line chose with every socket in this process
/// (`--workers 1`), and reports on it. `workers::parent` is the same sequence spread over
/// worker processes.
pub async fn run(scenario: &Scenario) -> Result<Report> {
    let common = scenario.common();
    let deadline = Instant::now() + common.timeout;
    let target = target(scenario).await?;
    let mut probe = Probe::start(common.redis_info.as_deref()).await?;
    let progress = Progress::new(!common.no_progress, common.connections as u64);
    let ticker = progress.follow(|| LIVE.snapshot());

    let (parked, mut totals, connect) =
        connect(&target, common, 0..common.connections, deadline).await;
    if let Some(probe) = &mut probe {
        probe.connected(rooms::publishing(scenario)).await;
    }
    let conns = parked.release(&mut totals).await;

    progress.start_run(run_goal(scenario), LIVE.snapshot());
    let coordinator = Coordinator::start(scenario, deadline);
    let cpu = CpuWindow::start(&common.sample_pids);
    let started = Instant::now();
    totals.latency_series.begin_at(series::now_ms());
    let published = coordinator.published();
    let sockets_done =
        run_sockets(scenario, &target, conns, &mut totals, published, deadline).await;
    let mut finished = coordinator.finish().await;
    let redis = probe_finish(probe, &totals, &mut finished).await;
    // The sockets' closes come after the run phase (see `finish`); a --during command that
    // is still running after the sockets are done extends it.
    let run = Phase::between(
        started,
        sockets_done.max(finished.ended_at.unwrap_or(started)),
    );
    let cpu = cpu.finish();
    progress.finish();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let mut report = report(scenario, connect, run, totals, cpu, finished);
    report.redis = redis;
    Ok(report)
}

/// The `--redis-info` section, once the run is over; a sample that failed is an error of
/// the run.
pub async fn probe_finish(
    probe: Option<Probe>,
    totals: &Totals,
    finished: &mut Finished,
) -> Option<RedisCost> {
    let (cost, errors) = probe?.finish(totals.connections_ok, totals.sent).await;
    finished.errors.extend(errors);
    cost
}

/// Where the sockets go (and, in `rooms`, which room each joins), resolved once from the
/// options.
pub async fn target(scenario: &Scenario) -> Result<Target> {
    let common = scenario.common();
    let mut target = Target::resolve(
        &common.urls,
        &common.source_ips,
        common.session_prefix.clone(),
        common.connect_timeout,
    )
    .await?;
    target.auth = common.auth_secret.as_ref().map(Minter::new);
    target.rooms = rooms::Plan::of(scenario).map(|plan| plan.layout);
    Ok(target)
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
        Scenario::ClosedLoop { messages, .. } | Scenario::Resume { messages, .. } => {
            RunGoal::Replies(sockets * messages)
        }
        Scenario::OpenLoop { duration, .. } | Scenario::Hold { duration, .. } => {
            RunGoal::Lasts(duration)
        }
        Scenario::FanOut { broadcasts, .. } => RunGoal::Replies(sockets * broadcasts),
        Scenario::Rooms { .. } => {
            let publications = rooms::Plan::of(scenario).map_or(0, |plan| plan.publications);
            RunGoal::Replies(sockets * publications)
        }
    }
}

/// The run phase: the scenario's work for every open socket, added up into `totals`.
/// `conns` carry their global index (see `workers::plan::Slice`). `published` turns true
/// when the coordinator is done publishing (fan-out's receivers stop a grace period later).
/// Returns when the last socket was done with its work, before the sockets closed (see
/// [`finish`]); also kept in `totals.sockets_done_us` for a parent process.
pub async fn run_sockets(
    scenario: &Scenario,
    target: &Target,
    conns: Vec<(usize, Conn)>,
    totals: &mut Totals,
    published: watch::Receiver<bool>,
    deadline: Instant,
) -> Instant {
    let finish = Finish::new(conns.len());
    work_sockets(
        scenario, target, conns, totals, published, &finish, deadline,
    )
    .await;
    let done = finish.all_done_at().unwrap_or_else(Instant::now);
    totals.sockets_done_us = Some(series::unix_micros() - done.elapsed().as_micros() as u64);
    done
}

async fn work_sockets(
    scenario: &Scenario,
    target: &Target,
    conns: Vec<(usize, Conn)>,
    totals: &mut Totals,
    published: watch::Receiver<bool>,
    finish: &Finish,
    deadline: Instant,
) {
    let common = scenario.common();
    let payload: tokio_tungstenite::tungstenite::Utf8Bytes = common.payload.as_str().into();
    // Sockets the server closes come back on their session only when a disruption is run,
    // or when rooms and fan-out recover with offsets (--resume).
    let follows = common.during.is_some() || scenario.resumes_with_offsets();
    let link = |i: usize, conn: Conn| Link::new(i, conn, target, follows);
    match *scenario {
        Scenario::ClosedLoop { messages, .. } => {
            for_each_socket(conns, totals, finish, |i, conn, seat| {
                closed_loop::run(link(i, conn), seat, messages, payload.clone(), deadline)
            })
            .await
        }
        Scenario::OpenLoop { rate, duration, .. } => {
            let n = common.connections.max(1);
            for_each_socket(conns, totals, finish, |i, conn, seat| {
                // Start offsets spread over one period so the sockets do not send in step.
                let offset = Duration::from_secs_f64(i as f64 / n as f64 / rate.max(1e-3));
                let link = link(i, conn);
                open_loop::run(
                    link,
                    seat,
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
            for_each_socket(conns, totals, finish, |i, conn, seat| {
                let link = link(i, conn);
                hold::run(
                    link,
                    seat,
                    warmup_messages,
                    payload.clone(),
                    until,
                    deadline,
                )
            })
            .await
        }
        Scenario::FanOut {
            broadcasts,
            ref run_id,
            ..
        } => {
            let (stop, stopper) = fan_out::stop_after_grace(published, deadline);
            let run_id = run_id.clone().unwrap_or_default();
            let resume = scenario.resumes_with_offsets();
            for_each_socket(conns, totals, finish, |i, conn, seat| {
                // Where the welcome put it in the broadcast stream (--resume).
                let from = resume.then(|| match (conn.welcome.offset, &conn.welcome.epoch) {
                    (Some(offset), Some(epoch)) => Some(Position {
                        offset,
                        epoch: epoch.clone(),
                    }),
                    _ => None,
                });
                let link = link(i, conn);
                let stop = stop.clone();
                fan_out::receive(link, seat, run_id.clone(), broadcasts, from, stop, deadline)
            })
            .await;
            stopper.abort();
        }
        Scenario::Rooms { .. } => {
            let plan = std::sync::Arc::new(rooms::Plan::of(scenario).expect("a rooms run"));
            // The schedule's origin; each worker process starts its own at the parent's go.
            let start = Instant::now();
            for_each_socket(conns, totals, finish, |i, mut conn, seat| {
                let joined = conn.room.take();
                rooms::run(
                    i,
                    link(i, conn),
                    joined,
                    seat,
                    plan.clone(),
                    start,
                    deadline,
                )
            })
            .await
        }
        Scenario::Resume {
            messages, resumes, ..
        } => {
            for_each_socket(conns, totals, finish, |i, conn, seat| {
                resume::run(
                    link(i, conn),
                    seat,
                    messages,
                    resumes,
                    payload.clone(),
                    deadline,
                )
            })
            .await
        }
    }
}

/// Runs `work` for every open socket (with its global index and its seat in `finish`) as
/// its own task and adds up what they count.
async fn for_each_socket<F, Fut>(
    conns: Vec<(usize, Conn)>,
    totals: &mut Totals,
    finish: &Finish,
    work: F,
) where
    F: Fn(usize, Conn, Seat) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (i, conn) in conns {
        tasks.spawn(work(i, conn, finish.seat()));
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(tally) => totals.absorb(tally),
            // A panic in a socket task is a bug in this tool; count it rather than hide it.
            Err(e) => totals.error(format!("task failed: {e}")),
        }
    }
}

/// The report of a run, from the totals of this process or merged from every worker's,
/// with the scenario's sections and what the coordinator found.
pub fn report(
    scenario: &Scenario,
    connect: Phase,
    run: Phase,
    mut totals: Totals,
    cpu: Vec<CpuUse>,
    finished: Finished,
) -> Report {
    let common = scenario.common();
    for kind in finished.errors {
        totals.error(kind);
    }
    // Every socket that connected, in whichever process, should have had every broadcast.
    let fan_out = fan_out::Plan::of(scenario).map(|plan| FanOut {
        broadcasts: plan.broadcasts,
        expected_deliveries: totals.connections_ok * plan.broadcasts,
        deliveries: totals.received,
    });
    let rooms = rooms::Plan::of(scenario).map(|plan| Rooms::new(&plan, &totals, run.seconds));
    let resume = matches!(scenario, Scenario::Resume { .. })
        .then(|| ResumeSummary::from_totals(&totals.resumes));
    let recovery = scenario
        .resumes_with_offsets()
        .then(|| Recovery::new(&totals.resumes, &totals.rooms));
    let disruption = finished
        .command
        .map(|command| Disruption::new(&command, &totals.resumes));
    let mut report = Report::new(
        scenario.name(),
        &common.urls_label(),
        common.connections,
        connect,
        run,
        totals,
        cpu,
    );
    report.fan_out = fan_out;
    report.rooms = rooms;
    report.resume = resume;
    report.disruption = disruption;
    report.recovery = recovery;
    report
}

#[cfg(test)]
mod tests;
