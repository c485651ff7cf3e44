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
//! of the workers' moments (`Totals::sockets_done_us`). A waiting socket goes on reading, so
//! the server's pings are answered. A fan-out receiver counts as done once it has every
//! broadcast ([`Seat::done`]) but stays open until the grace is over.

use std::sync::{Arc, OnceLock};

use futures_util::StreamExt;
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
    /// Counts this socket as done now, for a socket that stays open and reading after its
    /// work (fan-out receivers wait for the grace). Its later `close_when_all_done` then
    /// closes without waiting again.
    pub fn done(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish.leave();
        }
    }

    /// Counts this socket as done, waits until every socket is (or `deadline`), then closes
    /// it cleanly. It goes on reading while it waits, so that the server's pings are answered
    /// (tungstenite replies on a read) and a long wait is not closed as a silent peer; what
    /// arrives meanwhile is not counted. A socket the server ends meanwhile is just left.
    pub async fn close_when_all_done(mut self, socket: &mut Socket, deadline: Instant) {
        if let Some(finish) = self.finish.take() {
            finish.leave();
            let mut working = finish.working.subscribe();
            let all_done = tokio::time::timeout_at(deadline, working.wait_for(|n| *n == 0));
            let read_on = async { while let Some(Ok(_)) = socket.next().await {} };
            tokio::select! {
                _ = all_done => {}
                () = read_on => return,
            }
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

    /// A waiting socket answers the server's pings, and closes once the others are done.
    #[tokio::test]
    async fn a_socket_waiting_for_the_others_still_answers_pings() {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            ws.send(Message::Ping("are you there".into()))
                .await
                .unwrap();
            let pong = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Pong(data))) => return Some(data),
                        Some(Ok(_)) => continue,
                        _ => return None,
                    }
                }
            })
            .await;
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(Ok(message)) = ws.next().await {
                    if matches!(message, Message::Close(_)) {
                        return true;
                    }
                }
                false
            })
            .await;
            (pong, closed)
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
            .await
            .unwrap();

        let finish = Finish::new(2);
        let (waiting, other) = (finish.seat(), finish.seat());
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = tokio::spawn(async move {
            waiting.close_when_all_done(&mut socket, deadline).await;
        });
        // The other socket is done only later: meanwhile the ping must be answered.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!client.is_finished(), "it waits for the other socket");
        drop(other);
        client.await.unwrap();
        let (pong, closed) = server.await.unwrap();
        assert_eq!(
            pong.ok().flatten().as_deref(),
            Some(&b"are you there"[..]),
            "the ping was answered while waiting"
        );
        assert_eq!(closed.ok(), Some(true), "closed with a close frame after");
    }

    #[test]
    fn no_sockets_means_done_at_once() {
        assert!(Finish::new(0).all_done_at().is_some());
    }
}
