//! The end of the run phase: a socket that has done its work stays open until every socket
//! of this process has, and only then closes.
//!
//! Closing at once would make the servers' close handshakes, registry removals and task
//! teardowns compete with the sockets still working, and the last messages or broadcasts of
//! the run would measure that teardown: it did, a 3 s tail on the last of three broadcasts to
//! 50,000 sockets (the first two took 1 s), and a 200 ms last second in an open loop whose
//! other seconds had a p99 under 10 ms. The moment the last socket is done is also when the
//! run phase ends for messages/s: the closes come after the measurement.
//!
//! With worker processes each worker waits for its own sockets; the parent takes the latest
//! of the workers' moments (`Totals::sockets_done_us`).

use std::sync::{Arc, OnceLock};

use tokio::{sync::watch, time::Instant};

use crate::client::{self, Socket};

/// How many sockets of this process are still working, and when the last one finished.
#[derive(Clone)]
pub struct Finish {
    working: Arc<watch::Sender<usize>>,
    all_done_at: Arc<OnceLock<Instant>>,
}

/// One socket's place in a [`Finish`]: leaving it (by [`Seat::close_when_all_done`], or by
/// dropping it when the socket ended with an error, or its task panicked) counts that
/// socket as done, so nobody waits for a socket that will never arrive.
pub struct Seat {
    finish: Option<Finish>,
}

impl Finish {
    pub fn new(sockets: usize) -> Finish {
        let finish = Finish {
            working: Arc::new(watch::Sender::new(sockets)),
            all_done_at: Arc::new(OnceLock::new()),
        };
        if sockets == 0 {
            let _ = finish.all_done_at.set(Instant::now());
        }
        finish
    }

    /// A seat for one more socket's task (one per socket counted in [`Finish::new`]).
    pub fn seat(&self) -> Seat {
        Seat {
            finish: Some(self.clone()),
        }
    }

    /// When the last socket was done, if it was.
    pub fn all_done_at(&self) -> Option<Instant> {
        self.all_done_at.get().copied()
    }

    fn leave(&self) {
        let mut left = usize::MAX;
        self.working.send_modify(|n| {
            *n = n.saturating_sub(1);
            left = *n;
        });
        if left == 0 {
            let _ = self.all_done_at.set(Instant::now());
        }
    }
}

impl Seat {
    /// Counts this socket as done, waits until every socket is (or `deadline`), then closes
    /// it cleanly.
    pub async fn close_when_all_done(mut self, socket: &mut Socket, deadline: Instant) {
        if let Some(finish) = self.finish.take() {
            finish.leave();
            let mut working = finish.working.subscribe();
            let _ = tokio::time::timeout_at(deadline, working.wait_for(|n| *n == 0)).await;
        }
        client::close(socket, deadline).await;
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_last_seat_to_leave_marks_the_end_and_dropped_seats_count() {
        let finish = Finish::new(3);
        let (a, b, c) = (finish.seat(), finish.seat(), finish.seat());
        drop(a); // a socket that ended with an error
        assert_eq!(finish.all_done_at(), None);
        let mut working = finish.working.subscribe();
        let waiter =
            tokio::spawn(async move { working.wait_for(|n| *n == 0).await.map(|_| ()).is_ok() });
        drop(b);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one socket is still working");
        assert_eq!(finish.all_done_at(), None);
        drop(c);
        assert!(waiter.await.unwrap());
        assert!(finish.all_done_at().is_some());
    }

    #[test]
    fn no_sockets_means_done_at_once() {
        assert!(Finish::new(0).all_done_at().is_some());
    }
}
