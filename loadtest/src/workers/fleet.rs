//! The worker processes as the parent sees them: starting them, their state, the lines
//! they send and the parent tells them, and never leaving one behind.

use std::{
    ffi::OsString,
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
    plan::Slice,
    protocol::{ParentLine, WorkerLine},
    watcher::{shorten, watch_worker, Event},
    GRACE,
};
use crate::{live::Snapshot, progress::Progress, stats::Totals};

/// Where a worker is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    Connecting,
    /// At the barrier.
    Connected,
    /// Past the barrier: its sockets are in the run phase.
    Running,
    Finished,
    /// Ended without sending its totals (or was killed).
    Dead,
}

/// Why the parent stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
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
pub struct Fleet {
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
    pub fn start(
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
    pub async fn wait(
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
            Event::Line(k, WorkerLine::Running) => self.slots[k].state = State::Running,
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

    pub fn snapshot(&self) -> Snapshot {
        self.latest
            .lock()
            .expect("not poisoned")
            .iter()
            .copied()
            .sum()
    }

    /// The processes whose CPU the run phase samples: the `--sample-pid`s and each worker.
    pub fn cpu_names(&self, sample_pids: &[(String, u32)]) -> Vec<(String, u32)> {
        let mut names = sample_pids.to_vec();
        for (k, slot) in self.slots.iter().enumerate() {
            if let (Some(pid), State::Connected) = (slot.pid, slot.state) {
                names.push((format!("loadtest worker {k}"), pid));
            }
        }
        names
    }

    /// Says `line` to every worker at the barrier or past it (until it sends its totals).
    /// `go` thus opens the barrier for all as close together as writes to pipes get
    /// (microseconds apart).
    pub async fn tell(&mut self, line: ParentLine) {
        let text = line.to_line();
        for slot in &mut self.slots {
            if !matches!(slot.state, State::Connected | State::Running) {
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
    pub async fn kill_all(&mut self, why: Stop) {
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
    pub async fn reap(&mut self) {
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

    /// When the last socket of any worker that reported was done with its work (unix µs).
    pub fn sockets_done_us(&self) -> Option<u64> {
        self.totals.sockets_done_us
    }

    /// The merged totals, with each dead worker as an error (its stderr tail printed).
    pub fn into_totals(mut self, progress: &Progress) -> Totals {
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
