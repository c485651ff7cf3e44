//! Counters that move while the run goes on, for the progress bar: sockets connected and
//! failed, replies and errors so far.
//!
//! The per-socket [`Tally`](crate::stats::Tally) is only added up when a socket is done, so
//! it cannot show progress. These are process-wide atomics instead, bumped where the tallies
//! are (one relaxed add per event, next to a syscall per message: no measurable cost). A
//! worker process sends its [`Snapshot`] to the parent now and then; the parent adds the
//! workers' latest snapshots up and draws one bar.

use std::{
    iter::Sum,
    ops::Add,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use serde::{Deserialize, Serialize};

/// This process's counters. Lives for the whole process; nothing resets it, so a bar shows
/// differences from the snapshot taken when its phase began.
pub static LIVE: Counters = Counters::new();

pub struct Counters {
    connected: AtomicU64,
    connect_failed: AtomicU64,
    replies: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    const fn new() -> Self {
        Self {
            connected: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub fn connected(&self) {
        self.connected.fetch_add(1, Relaxed);
    }

    pub fn connect_failed(&self) {
        self.connect_failed.fetch_add(1, Relaxed);
    }

    pub fn reply(&self) {
        self.replies.fetch_add(1, Relaxed);
    }

    pub fn errors(&self, n: u64) {
        self.errors.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connected: self.connected.load(Relaxed),
            connect_failed: self.connect_failed.load(Relaxed),
            replies: self.replies.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

/// The counters at one moment; what a worker reports to the parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub connected: u64,
    pub connect_failed: u64,
    pub replies: u64,
    pub errors: u64,
}

impl Add for Snapshot {
    type Output = Snapshot;

    fn add(self, o: Snapshot) -> Snapshot {
        Snapshot {
            connected: self.connected + o.connected,
            connect_failed: self.connect_failed + o.connect_failed,
            replies: self.replies + o.replies,
            errors: self.errors + o.errors,
        }
    }
}

impl Sum for Snapshot {
    fn sum<I: Iterator<Item = Snapshot>>(iter: I) -> Snapshot {
        iter.fold(Snapshot::default(), Add::add)
    }
}

impl Snapshot {
    /// What happened since `earlier` (counters only grow).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            connected: self.connected.saturating_sub(earlier.connected),
            connect_failed: self.connect_failed.saturating_sub(earlier.connect_failed),
            replies: self.replies.saturating_sub(earlier.replies),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_add_up_and_subtract() {
        let a = Snapshot {
            connected: 3,
            connect_failed: 1,
            replies: 10,
            errors: 2,
        };
        let b = Snapshot {
            connected: 4,
            ..Snapshot::default()
        };
        let sum: Snapshot = [a, b].into_iter().sum();
        assert_eq!(sum.connected, 7);
        assert_eq!(sum.since(&a), b);
    }
}
