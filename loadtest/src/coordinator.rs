//! Work done once per run rather than once per socket, by the one process that coordinates
//! the run: this process with `--workers 1`, the parent with more.
//!
//! The hook: [`Coordinator::start`] is called exactly once, right after every socket of
//! every worker is connected and the run phase has been released (with workers: once every
//! worker said its sockets are running, after the parent sent them `go`); [`Coordinator::finish`] once the sockets are done (every
//! worker's totals in), before the report is made. Socket tasks never see it, and workers
//! never run it, so what it does happens once however many processes hold the sockets.
//!
//! What it does: publishes the fan-out scenario's broadcasts (`POST /broadcast`, once for
//! the whole fleet of sockets), telling the receivers when it is done
//! ([`Coordinator::published`]; the parent passes that on to its workers), and runs the
//! `--during` command.

use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{
    cli::Scenario,
    scenario::{
        during,
        fan_out::{Plan, Published, Publisher},
    },
};

/// The run-wide work under way.
#[derive(Debug)]
pub struct Coordinator {
    /// Fan-out's publishing, when the scenario is fan-out.
    publishing: Option<JoinHandle<Published>>,
    /// The `--during` command, when one was given.
    during: Option<JoinHandle<(during::Outcome, Instant)>>,
    /// Turns true once nothing more will be published (at once when nothing is).
    published: watch::Receiver<bool>,
}

/// What the run-wide work found, for the report.
#[derive(Debug, Default)]
pub struct Finished {
    /// Error kinds outside any socket (a broadcast the server refused, a failing command).
    pub errors: Vec<String>,
    /// How the `--during` command went, when one was given.
    pub command: Option<during::Outcome>,
    /// When the command ended, if one ran: the run phase lasts until then at least.
    pub ended_at: Option<Instant>,
}

impl Coordinator {
    /// Called once when the run phase starts (see the module docs). `deadline` is the run's
    /// `--timeout`: whatever is started here ends by then.
    pub fn start(scenario: &Scenario, deadline: Instant) -> Coordinator {
        let (done, published) = watch::channel(false);
        let publishing = match Plan::of(scenario) {
            Some(plan) => {
                let publisher = Publisher::new(&plan);
                Some(tokio::spawn(async move {
                    let published = match publisher {
                        Ok(publisher) => publisher.publish(deadline).await,
                        Err(e) => Published {
                            accepted: 0,
                            errors: vec![format!("publish: {e:#}")],
                        },
                    };
                    done.send_replace(true);
                    published
                }))
            }
            None => {
                done.send_replace(true);
                None
            }
        };
        let common = scenario.common();
        let during = common.during.clone().map(|command| {
            let after = common.during_after;
            tokio::spawn(async move {
                let outcome = during::run(command, after, deadline).await;
                (outcome, Instant::now())
            })
        });
        Coordinator {
            publishing,
            during,
            published,
        }
    }

    /// Turns true once the broadcasts are published (if there are any): receivers then wait
    /// a grace period more for what they miss, and stop.
    pub fn published(&self) -> watch::Receiver<bool> {
        self.published.clone()
    }

    /// Called once after the sockets are done: waits for the work started (bounded by the
    /// deadline given to `start`) and says what it found.
    pub async fn finish(self) -> Finished {
        let mut finished = Finished::default();
        if let Some(task) = self.publishing {
            match task.await {
                Ok(published) => finished.errors.extend(published.errors),
                Err(e) => finished.errors.push(format!("task failed: {e}")),
            }
        }
        if let Some(task) = self.during {
            match task.await {
                Ok((outcome, ended_at)) => {
                    finished.errors.extend(outcome.failure.clone());
                    finished.command = Some(outcome);
                    finished.ended_at = Some(ended_at);
                }
                Err(e) => finished.errors.push(format!("task failed: {e}")),
            }
        }
        finished
    }
}
