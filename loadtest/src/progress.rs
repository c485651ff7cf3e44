//! The progress bar on stderr: connect phase (connected / failed of N, connections/s), then
//! run phase (replies, replies/s, errors, elapsed and ETA).
//!
//! It only reads [`Snapshot`]s: of this process's [`LIVE`](crate::live::LIVE) counters when
//! the sockets are here, or the sum of the workers' latest reports when they are not, so one
//! bar covers any number of processes. It is off with `--no-progress`, and whenever stderr is
//! not a terminal, so CI logs and redirected output stay clean.

use std::{
    io::IsTerminal,
    sync::{Arc, Mutex},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::{task::JoinHandle, time::Instant};

use crate::live::Snapshot;

/// How often the bar is redrawn: often enough to look alive, rarely enough to cost nothing.
const REDRAW: Duration = Duration::from_millis(200);

/// The bar's lines. The counters go last, in `wide_msg`, which is cut at the terminal's
/// width instead of wrapping (a wrapped bar redraws as a stream of lines).
const CONNECT_TEMPLATE: &str = "{prefix:>7} [{bar:20}] {elapsed:>3} {wide_msg}";
const RUN_TEMPLATE: &str = "{prefix:>7} [{bar:20}] {elapsed:>3} ETA {eta:>3} {wide_msg}";
const OPEN_RUN_TEMPLATE: &str = "{prefix:>7} {spinner} {elapsed:>3} {wide_msg}";

/// What the run phase is heading for, so the bar can show how far along it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunGoal {
    /// This many replies in all (closed loop: sockets x messages).
    Replies(u64),
    /// This long (open loop, hold).
    Lasts(Duration),
    /// Unknown in advance: elapsed time only.
    Open,
}

/// The bar, shared by the drawing ticker and whoever moves it to the next phase.
pub struct Progress {
    /// None when progress is off: every method is then a no-op.
    bar: Option<ProgressBar>,
    sockets: u64,
    state: Mutex<State>,
}

struct State {
    phase: Phase,
    started: Instant,
    /// The counters when the phase began; the bar shows what happened since.
    base: Snapshot,
}

#[derive(Clone, Copy)]
enum Phase {
    Connect,
    Run(RunGoal),
}

impl Progress {
    /// A bar for `sockets` sockets, starting in the connect phase. `enabled` is what the
    /// options say; the terminal check is made here.
    pub fn new(enabled: bool, sockets: u64) -> Arc<Self> {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(sockets), ProgressDrawTarget::stderr());
            bar.set_style(style(CONNECT_TEMPLATE));
            bar.set_prefix("connect");
            bar
        });
        Arc::new(Self {
            bar,
            sockets,
            state: Mutex::new(State {
                phase: Phase::Connect,
                started: Instant::now(),
                base: Snapshot::default(),
            }),
        })
    }

    /// Redraws from `source` every [`REDRAW`] until the returned task is aborted (or
    /// [`Progress::finish`] is called, which the task notices).
    pub fn follow<F>(self: &Arc<Self>, source: F) -> Option<JoinHandle<()>>
    where
        F: Fn() -> Snapshot + Send + 'static,
    {
        self.bar.as_ref()?;
        let this = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REDRAW);
            loop {
                tick.tick().await;
                if this.bar.as_ref().is_none_or(ProgressBar::is_finished) {
                    return;
                }
                this.update(source());
            }
        }))
    }

    /// The run phase starts now; `now` is the counters at this moment.
    pub fn start_run(&self, goal: RunGoal, now: Snapshot) {
        let Some(bar) = &self.bar else { return };
        {
            let mut state = self.state.lock().expect("not poisoned");
            *state = State {
                phase: Phase::Run(goal),
                started: Instant::now(),
                base: now,
            };
        }
        bar.set_prefix("run");
        match goal {
            RunGoal::Replies(n) => bar.set_length(n),
            RunGoal::Lasts(d) => bar.set_length(d.as_millis() as u64),
            RunGoal::Open => {
                bar.unset_length();
                bar.set_style(style(OPEN_RUN_TEMPLATE));
            }
        }
        if goal != RunGoal::Open {
            bar.set_style(style(RUN_TEMPLATE));
        }
        bar.set_position(0);
        bar.reset_eta();
        bar.reset_elapsed();
        // The run phase's counters at once, not the connect phase's until the next redraw.
        self.update(now);
    }

    /// Draws the counters as of now.
    pub fn update(&self, now: Snapshot) {
        let Some(bar) = &self.bar else { return };
        let state = self.state.lock().expect("not poisoned");
        let seconds = state.started.elapsed().as_secs_f64().max(1e-3);
        let d = now.since(&state.base);
        match state.phase {
            Phase::Connect => {
                bar.set_position(now.connected + now.connect_failed);
                bar.set_message(format!(
                    "{} connected, {} failed of {}; {:.0} conn/s",
                    now.connected,
                    now.connect_failed,
                    self.sockets,
                    now.connected as f64 / seconds
                ));
            }
            Phase::Run(goal) => {
                match goal {
                    RunGoal::Replies(_) => bar.set_position(d.replies),
                    RunGoal::Lasts(_) => {
                        bar.set_position(state.started.elapsed().as_millis() as u64)
                    }
                    RunGoal::Open => bar.tick(),
                }
                bar.set_message(format!(
                    "{} messages; {:.0} msg/s; {} errors",
                    d.replies,
                    d.replies as f64 / seconds,
                    d.errors
                ));
            }
        }
    }

    /// Prints a line above the bar (or plainly when there is none).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar; the report follows on stdout.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("constant template is valid")
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_disabled_bar_does_nothing_and_draws_no_task() {
        let progress = Progress::new(false, 10);
        assert!(progress.follow(Snapshot::default).is_none());
        progress.update(Snapshot::default());
        progress.start_run(RunGoal::Replies(5), Snapshot::default());
        progress.finish();
    }

    #[test]
    fn templates_are_valid() {
        for t in [CONNECT_TEMPLATE, OPEN_RUN_TEMPLATE, RUN_TEMPLATE] {
            style(t);
        }
    }
}
