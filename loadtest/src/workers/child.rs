//! The worker side: connect this worker's slice, wait at the barrier, run, send the totals.
//!
//! Options that concern the whole run (`--json`, `--plot`, `--sample-pid`, the progress bar,
//! the coordinator's work: fan-out's publishing, running the `--during` command) are the
//! parent's; a worker ignores them. With `--during`, a worker's sockets still follow the
//! server's closes (they resume their sessions), since the parent's command causes them.

use std::{
    io::BufRead,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Result;
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

use super::{
    plan::Slice,
    protocol::{ParentLine, WorkerLine, PROGRESS_INTERVAL},
};
use crate::{cli::Scenario, limits, live::LIVE, scenario, series};

/// Exit code of a worker whose parent went away (its stdin closed): not a result.
const ORPHANED: i32 = 4;

/// Set once the totals are sent: from then on the end of stdin is the parent's signal to
/// exit, not a sign that it died.
static FINISHED: AtomicBool = AtomicBool::new(false);

/// Longest wait, after sending the totals, for the parent to close stdin.
const LINGER: Duration = Duration::from_secs(30);

/// Runs one worker to the end. An error here (e.g. a limit) goes to stderr, which the
/// parent shows.
pub fn run(scenario: &Scenario, slice: Slice) -> Result<u8> {
    let common = scenario.common();
    // Starts this process's latency clock now, before the parent's run start that
    // `series::local_ms_of` will place on it.
    series::now_ms();
    limits::ensure_open_files(slice.count)?;
    let Stdin {
        go,
        published,
        closed,
    } = watch_stdin();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let deadline = Instant::now() + common.timeout;
        let target = scenario::target(scenario).await?;
        let reporter = tokio::spawn(async {
            let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
            loop {
                tick.tick().await;
                WorkerLine::Progress(LIVE.snapshot()).emit();
            }
        });
        let (parked, mut totals, _) =
            scenario::connect(&target, common, slice.indices(), deadline).await;
        WorkerLine::Connected(LIVE.snapshot()).emit();
        // The barrier; the parked sockets go on answering pings meanwhile. An Err means
        // stdin closed first, and watch_stdin exits the process then.
        if let Ok(run_start_us) = go.await {
            totals
                .latency_series
                .begin_at(series::local_ms_of(run_start_us));
            let conns = parked.release(&mut totals).await;
            WorkerLine::Running.emit();
            scenario::run_sockets(scenario, &target, conns, &mut totals, published, deadline).await;
        }
        reporter.abort();
        FINISHED.store(true, Ordering::SeqCst);
        WorkerLine::Finished(Box::new(totals)).emit();
        // Stay until the parent closes stdin: it reads this process's CPU time over the
        // run phase from /proc after every worker has finished, and that needs us alive.
        let _ = tokio::time::timeout(LINGER, closed).await;
        Ok::<_, anyhow::Error>(())
    })?;
    // Stray tasks (there should be none) must not hold the exit up; the totals are sent.
    runtime.shutdown_background();
    Ok(0)
}

/// What the parent says on stdin, as it arrives.
struct Stdin {
    /// The `go` line, with the run's wall-clock start.
    go: oneshot::Receiver<u64>,
    /// Turns true at the `published` line.
    published: watch::Receiver<bool>,
    /// End of input, once the totals are sent.
    closed: oneshot::Receiver<()>,
}

/// Reads stdin on a thread of its own (it blocks), passing each [`ParentLine`] on. End of
/// input resolves `closed` once the totals are sent; before that it means the parent is
/// gone, and then nobody will read this worker's results, so it exits at once rather than
/// hold sockets open for nothing.
fn watch_stdin() -> Stdin {
    let (go_tx, go) = oneshot::channel();
    let (published_tx, published) = watch::channel(false);
    let (closed_tx, closed) = oneshot::channel();
    std::thread::spawn(move || {
        let mut go_tx = Some(go_tx);
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(ParentLine::Go { run_start_us }) => {
                    if let Some(tx) = go_tx.take() {
                        let _ = tx.send(run_start_us);
                    }
                }
                Ok(ParentLine::Published) => {
                    published_tx.send_replace(true);
                }
                // Only the parent writes here; a line it did not mean is ignored.
                Err(_) => {}
            }
        }
        if !FINISHED.load(Ordering::SeqCst) {
            std::process::exit(ORPHANED);
        }
        let _ = closed_tx.send(());
    });
    Stdin {
        go,
        published,
        closed,
    }
}
