//! Work done once per run rather than once per socket, by the one process that coordinates
//! the run: this process with `--workers 1`, the parent with more.
//!
//! The hook: [`Coordinator::start`] is called exactly once, right after every socket of
//! every worker is connected and the run phase has been released (with workers: right after
//! the parent sent them `go`); [`Coordinator::finish`] once the run phase is over (every
//! socket done, every worker's totals in), before the report is printed. Socket tasks never
//! see it, and workers never run it, so what it does happens once however many processes
//! hold the sockets.
//!
//! What belongs here: publishing the fan-out scenario's broadcasts (`POST /broadcast`, once
//! for the whole fleet of sockets); running a `--during` command. Add a variant holding the
//! task's handle, start it in `start` for its scenario or option, and in `finish` await it
//! and write its section into the report.

use tokio::time::Instant;

use crate::{cli::Scenario, report::Report};

/// The run-wide work under way, if any.
#[derive(Debug)]
pub enum Coordinator {
    /// This scenario needs nothing beyond its sockets.
    Nothing,
}

impl Coordinator {
    /// Called once when the run phase starts (see the module docs). `deadline` is the run's
    /// `--timeout`: whatever is started here must end by then.
    pub fn start(scenario: &Scenario, _deadline: Instant) -> Coordinator {
        match scenario {
            Scenario::ClosedLoop { .. } | Scenario::OpenLoop { .. } | Scenario::Hold { .. } => {
                Coordinator::Nothing
            }
        }
    }

    /// Called once after the run phase: waits for the work started and adds what it found
    /// to the report.
    pub async fn finish(self, _report: &mut Report) {
        match self {
            Coordinator::Nothing => {}
        }
    }
}
