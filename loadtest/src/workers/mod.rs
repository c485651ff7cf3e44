//! Spreading one run over several processes, for more sockets than one process may open
//! (the open-file limit, 20,000 here and not raisable).
//!
//! The parent re-executes its own binary once per worker, with the same arguments plus the
//! hidden `--worker-slice OFFSET:COUNT`: the sockets with global indices
//! `OFFSET..OFFSET+COUNT` (global, so sessions, URLs and source addresses are the same as in
//! one process). Workers talk to the parent in JSON lines ([`protocol`]):
//!
//! 1. each worker connects its slice, reporting progress now and then, then says
//!    `connected` and waits for a `go` line on stdin: the barrier;
//! 2. once every worker is there, the parent starts its CPU window and sends every worker
//!    `go` (with the run's wall-clock start, second 0 of every worker's `--plot` series), so
//!    the run phase starts everywhere at once; each worker says `running` once its sockets
//!    have left the barrier, and when all have, the parent starts the
//!    [`Coordinator`](crate::coordinator::Coordinator): run-wide work (fan-out's broadcasts,
//!    the `--during` command) happens once, here, and no broadcast reaches a socket still
//!    parked. When the coordinator is done publishing, the parent says `published` to every
//!    worker, whose fan-out receivers stop a grace period later;
//! 3. each worker runs its sockets, sends its [`Totals`](crate::stats::Totals), and stays
//!    until the parent closes its stdin (so the parent can read its CPU time for the run
//!    phase); the parent merges the totals into one report, with the coordinator's findings
//!    (the `--during` command's exit code and duration, publishing errors).
//!
//! What the parent settled at random (the session prefix of `resume` and `--during` runs,
//! fan-out's run id) reaches the workers through the environment fallbacks of those options,
//! so all share one run's sessions and broadcasts.
//!
//! Failure handling: a worker that dies is an error in the report, with the tail of its
//! stderr; on its own timeout or Ctrl-C the parent kills every worker by PID. A worker whose
//! stdin closes (the parent died) exits at once, so none is ever left behind.
//!
//! - [`plan`]: how many workers, which slice each owns.
//! - [`protocol`]: the lines they exchange.
//! - [`child`]: the worker side.
//! - [`parent`]: the coordinating side.
//! - [`fleet`]: the worker processes as the parent sees them.
//! - [`watcher`]: one task per worker process, between its pipes and the parent.

use std::time::Duration;

/// How long past `--timeout` the parent waits for results: a worker stops its sockets at
/// the timeout, then closes each (at most 2 s) and sends its totals.
pub const GRACE: Duration = Duration::from_secs(15);

pub mod child;
mod fleet;
pub mod parent;
pub mod plan;
pub mod protocol;
mod watcher;
