//! The coordinating side: start the workers, hold the barrier, start the run phase for all
//! at once, merge what they send into one report, and never leave a worker behind.

use std::{
    ffi::OsString,
    fmt,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    io::AsyncWriteExt,
    process::{ChildStdin, Command},
    sync::{mpsc, watch},
    task::JoinSet,
    time::{timeout, Instant},
};

use super::{
    plan::{slices, Slice},
    protocol::{ParentLine, WorkerLine},
    watcher::{shorten, watch_worker, Event},
};
use crate::{
    cli::Scenario,
    coordinator::{Coordinator, Finished},
    cpu::CpuWindow,
    live::Snapshot,
    progress::Progress,
    report::{Phase, Report},
    scenario::{self, run_goal},
    series,
    stats::Totals,
};

/// How long past `--timeout` the parent waits for results: a worker stops its sockets at
/// the timeout, then closes each (at most 2 s) and sends its totals.
const GRACE: Duration = Duration::from_secs(15);

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
    let give_up = started + common.timeout + GRACE;
    let progress = Progress::new(!common.no_progress, common.connections as u64);
    let latest = Arc::new(Mutex::new(vec![Snapshot::default(); workers]));
    let ticker = {
        let latest = Arc::clone(&latest);
        progress.follow(move || latest.lock().expect("not poisoned").iter().copied().sum())
    };

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
    let stopped = match connected {
        Ok(()) => {
            fleet
                .tell(ParentLine::Go {
                    run_start_us: series::unix_micros(),
                })
                .await;
            let started = Coordinator::start(scenario, started + common.timeout);
            // Passed on to the workers when it turns true (see `Fleet::wait`).
            let mut published = Some(started.published());
            coordinator = Some(started);
            fleet
                .wait(
                    give_up,
                    |s| matches!(s, State::Finished | State::Dead),
                    &mut published,
                )
                .await
        }
        // Only waited for when everyone got there; `stopped` says why not.
        Err(stop) => Err(stop),
    };
    // The run phase lasts until the coordinator's work (a --during command) is done too.
    let finished = match coordinator {
        Some(coordinator) if stopped != Err(Stop::Interrupted) => coordinator.finish().await,
        _ => Finished::default(),
    };
    let run = Phase::since(run_started);
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

    let mut report = scenario::report(scenario, connect, run, totals, cpu, finished);
    report.workers = workers;
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
    settings
}

/// Where a worker is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Connecting,
    /// At the barrier.
    Connected,
    Finished,
    /// Ended without sending its totals (or was killed).
    Dead,
}

/// Why the parent stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Interrupted,
    TimedOut,
}

struct Slot {
    slice: Slice,
    pid: Option<u32>,
    /// Closing it tells the worker the parent is gone (see child::watch_stdin).
    stdin: Option<ChildStdin>,
    state: State,
    /// Why it died, with its stderr tail.
    death: Option<(String, Vec<String>)>,
}

/// The worker processes, their state, and what they sent so far.
struct Fleet {
    slots: Vec<Slot>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Tells every watcher to kill its worker (by PID, via its `Child`).
    kill: watch::Sender<bool>,
    watchers: JoinSet<()>,
    /// Each worker's latest counters, read by the progress bar.
    latest: Arc<Mutex<Vec<Snapshot>>>,
    totals: Totals,
}

impl Fleet {
    /// Starts one worker per slice: this very binary, same arguments, plus its slice, with
    /// `settings` in its environment.
    fn start(
        slices: Vec<Slice>,
        settings: Vec<(&'static str, String)>,
        latest: Arc<Mutex<Vec<Snapshot>>>,
    ) -> Result<Fleet> {
        let exe = std::env::current_exe().context("finding this program to start workers")?;
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let (tx, events) = mpsc::unbounded_channel();
        let (kill, _) = watch::channel(false);
        let mut fleet = Fleet {
            slots: Vec::with_capacity(slices.len()),
            events,
            kill,
            watchers: JoinSet::new(),
            latest,
            totals: Totals::default(),
        };
        for (k, slice) in slices.into_iter().enumerate() {
            let mut child = Command::new(&exe)
                .args(&args)
                .arg("--worker-slice")
                .arg(slice.to_string())
                .envs(settings.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own process group: Ctrl-C in the terminal reaches only the parent,
                // which then kills each worker itself, by PID.
                .process_group(0)
                // If the parent unwinds or errors out, dropping the handle kills the worker.
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting worker {k} ({})", exe.display()))?;
            fleet.slots.push(Slot {
                slice,
                pid: child.id(),
                stdin: child.stdin.take(),
                state: State::Connecting,
                death: None,
            });
            let watcher = watch_worker(k, child, fleet.kill.subscribe(), tx.clone());
            fleet.watchers.spawn(watcher);
        }
        Ok(fleet)
    }

    /// Handles the workers' lines until every worker satisfies `done`, the deadline passes
    /// or Ctrl-C is pressed. When `published` turns true (or its sender goes), the workers
    /// are told, once.
    async fn wait(
        &mut self,
        give_up: Instant,
        done: fn(State) -> bool,
        published: &mut Option<watch::Receiver<bool>>,
    ) -> Result<(), Stop> {
        loop {
            if self.slots.iter().all(|s| done(s.state)) {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = tokio::signal::ctrl_c() => return Err(Stop::Interrupted),
                _ = tokio::time::sleep_until(give_up) => return Err(Stop::TimedOut),
                // Err from `wait_for`: the publisher is gone, so it is over all the same.
                Some(()) = async {
                    let _ = published.as_mut()?.wait_for(|p| *p).await;
                    Some(())
                } => {
                    *published = None;
                    self.tell(ParentLine::Published).await;
                }
                event = self.events.recv() => match event {
                    Some(event) => self.apply(event),
                    // Every watcher is gone, so every worker is finished or dead.
                    None => return Ok(()),
                },
            }
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Line(k, WorkerLine::Progress(now)) => self.set_latest(k, now),
            Event::Line(k, WorkerLine::Connected(now)) => {
                self.set_latest(k, now);
                self.slots[k].state = State::Connected;
            }
            Event::Line(k, WorkerLine::Finished(totals)) => {
                self.totals.merge(*totals);
                self.slots[k].state = State::Finished;
            }
            Event::Died(k, why, tail) => {
                let slot = &mut self.slots[k];
                if slot.state == State::Finished {
                    return;
                }
                slot.state = State::Dead;
                match &mut slot.death {
                    // Killed by the parent: keep that reason, add what the worker said.
                    Some((_, known)) if known.is_empty() => *known = tail,
                    Some(_) => {}
                    None => slot.death = Some((why, tail)),
                }
            }
        }
    }

    fn set_latest(&self, k: usize, now: Snapshot) {
        self.latest.lock().expect("not poisoned")[k] = now;
    }

    fn snapshot(&self) -> Snapshot {
        self.latest
            .lock()
            .expect("not poisoned")
            .iter()
            .copied()
            .sum()
    }

    /// The processes whose CPU the run phase samples: the `--sample-pid`s and each worker.
    fn cpu_names(&self, sample_pids: &[(String, u32)]) -> Vec<(String, u32)> {
        let mut names = sample_pids.to_vec();
        for (k, slot) in self.slots.iter().enumerate() {
            if let (Some(pid), State::Connected) = (slot.pid, slot.state) {
                names.push((format!("loadtest worker {k}"), pid));
            }
        }
        names
    }

    /// Says `line` to every worker at the barrier or past it (state `Connected` until it
    /// sends its totals). `go` thus opens the barrier for all as close together as writes to
    /// pipes get (microseconds apart).
    async fn tell(&mut self, line: ParentLine) {
        let text = line.to_line();
        for slot in &mut self.slots {
            if slot.state != State::Connected {
                continue;
            }
            if let Some(stdin) = slot.stdin.as_mut() {
                // A worker that died just now shows up as an event; nothing to do here.
                let _ = stdin.write_all(text.as_bytes()).await;
                let _ = stdin.flush().await;
            }
        }
    }

    /// Kills every worker not finished (by PID) and marks it dead with the reason.
    async fn kill_all(&mut self, why: Stop) {
        let _ = self.kill.send(true);
        for slot in &mut self.slots {
            if !matches!(slot.state, State::Finished | State::Dead) {
                slot.state = State::Dead;
                let reason = match why {
                    Stop::Interrupted => "killed: Ctrl-C".to_string(),
                    Stop::TimedOut => {
                        format!("killed: no result {} s past --timeout", GRACE.as_secs())
                    }
                };
                slot.death = Some((reason, Vec::new()));
            }
        }
        self.reap().await;
    }

    /// Waits (bounded) for every watcher, so no worker outlives the report. A watcher that
    /// still waits is aborted, which drops its `Child` and so kills that worker.
    async fn reap(&mut self) {
        // Closing stdin is what tells a finished worker to exit (see child::run).
        for slot in &mut self.slots {
            slot.stdin = None;
        }
        let all_done = async { while self.watchers.join_next().await.is_some() {} };
        if timeout(Duration::from_secs(10), all_done).await.is_err() {
            self.watchers.abort_all();
            while self.watchers.join_next().await.is_some() {}
        }
        while let Ok(event) = self.events.try_recv() {
            self.apply(event);
        }
    }

    /// The merged totals, with each dead worker as an error (its stderr tail printed).
    fn into_totals(mut self, progress: &Progress) -> Totals {
        let latest = self.latest.lock().expect("not poisoned").clone();
        for (k, slot) in self.slots.iter().enumerate() {
            let Some((why, tail)) = &slot.death else {
                continue;
            };
            let range = slot.slice.indices();
            // Its sockets never reported: count the connections it last said it had.
            self.totals.connections_ok += latest[k].connected;
            self.totals.connections_failed += latest[k].connect_failed;
            let last = tail.last().map(String::as_str).unwrap_or("(no stderr)");
            self.totals.error(format!(
                "worker {k} (sockets {}..{}) died: {why}: {}",
                range.start,
                range.end,
                shorten(last, 200)
            ));
            progress.println(&format!(
                "wsfleet-loadtest: worker {k} (pid {}) died: {why}; its stderr ended with:",
                slot.pid.map_or("?".into(), |p| p.to_string())
            ));
            for line in tail {
                progress.println(&format!("  | {line}"));
            }
            if tail.is_empty() {
                progress.println("  (nothing)");
            }
        }
        self.totals
    }
}
