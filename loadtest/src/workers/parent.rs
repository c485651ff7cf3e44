//! The coordinating side: start the workers, hold the barrier, start the run phase for all
//! at once, merge what they send into one report, and never leave a worker behind.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use tokio::time::Instant;

use super::{
    fleet::{Fleet, State, Stop},
    plan::slices,
    protocol::ParentLine,
};
use crate::{
    cli::Scenario,
    coordinator::{Coordinator, Finished},
    cpu::CpuWindow,
    live::Snapshot,
    progress::Progress,
    redis_info::Probe,
    report::{Phase, Report},
    scenario::{self, run_goal},
    series,
};

/// The run was stopped by Ctrl-C; every worker was killed. Not a result: no report.
#[derive(Debug)]
pub struct Interrupted {
    pub workers: usize,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted (Ctrl-C); killed {} workers", self.workers)
    }
}

impl std::error::Error for Interrupted {}

/// Runs the scenario over `workers` worker processes and reports on all of it.
pub async fn run(scenario: &Scenario, workers: usize) -> Result<Report> {
    let common = scenario.common();
    let started = Instant::now();
    let give_up = started + common.timeout + super::GRACE;
    let progress = Progress::new(!common.no_progress, common.connections as u64);
    let latest = Arc::new(Mutex::new(vec![Snapshot::default(); workers]));
    let ticker = {
        let latest = Arc::clone(&latest);
        progress.follow(move || latest.lock().expect("not poisoned").iter().copied().sum())
    };

    let mut probe = Probe::start(common.redis_info.as_deref()).await?;
    let mut fleet = Fleet::start(
        slices(common.connections, workers),
        shared_settings(scenario),
        latest,
    )?;
    let connected = fleet
        .wait(give_up, |s| !matches!(s, State::Connecting), &mut None)
        .await;
    let connect = Phase::since(started);

    let cpu = CpuWindow::start(&fleet.cpu_names(&common.sample_pids));
    progress.start_run(run_goal(scenario), fleet.snapshot());
    let mut coordinator = None;
    let run_started = Instant::now();
    let run_start_us = series::unix_micros();
    let mut stopped = async {
        connected?;
        if let Some(probe) = &mut probe {
            probe.connected(scenario::rooms::publishing(scenario)).await;
        }
        fleet.tell(ParentLine::Go { run_start_us }).await;
        // Nothing is published before every worker's sockets have left the barrier: a
        // parked socket does not count a broadcast (in one process the order is the same).
        fleet
            .wait(give_up, |s| s != State::Connected, &mut None)
            .await?;
        let coordinating = Coordinator::start(scenario, started + common.timeout);
        // Passed on to the workers when it turns true (see `Fleet::wait`).
        let mut published = Some(coordinating.published());
        coordinator = Some(coordinating);
        fleet
            .wait(
                give_up,
                |s| matches!(s, State::Finished | State::Dead),
                &mut published,
            )
            .await
    }
    .await;
    // The run phase lasts until the coordinator's work (a --during command) is done too;
    // Ctrl-C still stops the run meanwhile (the command is killed as the runtime ends).
    let mut finished = match coordinator {
        Some(coordinator) if stopped != Err(Stop::Interrupted) => tokio::select! {
            finished = coordinator.finish() => finished,
            _ = tokio::signal::ctrl_c() => {
                stopped = Err(Stop::Interrupted);
                Finished::default()
            }
        },
        _ => Finished::default(),
    };
    // The run phase ends when the last worker's last socket was done (their closes come
    // after it, see `scenario::finish`), or when the --during command ended, if later.
    let sockets_done = fleet
        .sockets_done_us()
        .map_or_else(Instant::now, |done_us| {
            run_started + Duration::from_micros(done_us.saturating_sub(run_start_us))
        });
    let run = Phase::between(
        run_started,
        sockets_done.max(finished.ended_at.unwrap_or(run_started)),
    );
    // Finished workers wait for `reap` to close their stdin, so their CPU time is readable.
    let cpu = cpu.finish();

    if let Err(stop) = stopped {
        fleet.kill_all(stop).await;
        if stop == Stop::Interrupted {
            progress.finish();
            return Err(Interrupted { workers }.into());
        }
    }
    fleet.reap().await;
    progress.finish();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let totals = fleet.into_totals(&progress);

    let redis = scenario::probe_finish(probe, &totals, &mut finished).await;
    let mut report = scenario::report(scenario, connect, run, totals, cpu, finished);
    report.workers = workers;
    report.redis = redis;
    Ok(report)
}

/// What the workers must share with this process beyond the command line: the random
/// defaults settled here (see `Scenario::settle_random_defaults`), passed as the
/// environment fallbacks of their options (a value given on the command line is the same
/// anyway, and wins).
fn shared_settings(scenario: &Scenario) -> Vec<(&'static str, String)> {
    let mut settings = Vec::new();
    if let Some(prefix) = &scenario.common().session_prefix {
        settings.push(("LOADTEST_SESSION_PREFIX", prefix.clone()));
    }
    if let Scenario::FanOut {
        run_id: Some(run_id),
        ..
    } = scenario
    {
        settings.push(("LOADTEST_RUN_ID", run_id.clone()));
    }
    if let Scenario::Rooms {
        room_prefix: Some(prefix),
        ..
    } = scenario
    {
        settings.push(("LOADTEST_ROOM_PREFIX", prefix.clone()));
    }
    settings
}
