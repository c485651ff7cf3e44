//! The worker side: connect this worker's slice, wait at the barrier, run, send the totals.
//!
//! Options that concern the whole run (`--json`, `--sample-pid`, the progress bar, the
//! coordinator's work) are the parent's; a worker ignores them.

use std::{
    io::BufRead,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Result;
use tokio::{sync::oneshot, time::Instant};

use super::{
    plan::Slice,
    protocol::{WorkerLine, GO, PROGRESS_INTERVAL},
};
use crate::{cli::Scenario, limits, live::LIVE, scenario};

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
    limits::ensure_open_files(slice.count)?;
    let (go, closed) = watch_stdin();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let deadline = Instant::now() + common.timeout;
        let target = scenario::target(common).await?;
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
        if go.await.is_ok() {
            let conns = parked.release(&mut totals).await;
            scenario::run_sockets(scenario, conns, &mut totals, deadline).await;
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

/// Reads stdin on a thread of its own (it blocks): the first `go` line resolves the first
/// receiver. End of input resolves the second once the totals are sent; before that it
/// means the parent is gone, and then nobody will read this worker's results, so it exits
/// at once rather than hold sockets open for nothing.
fn watch_stdin() -> (oneshot::Receiver<()>, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    let (closed_tx, closed_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) if line.trim() == GO => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if !FINISHED.load(Ordering::SeqCst) {
            std::process::exit(ORPHANED);
        }
        let _ = closed_tx.send(());
    });
    (rx, closed_rx)
}
