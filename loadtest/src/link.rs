//! One socket that keeps its session across reconnects: the client side of
//! docs/PROTOCOL.md, "Resuming without gaps or repeats".
//!
//! When the server ends a socket (`bye` then close 1001 in a drain, a bare close 1001, close
//! 1008 `session resumed elsewhere` when a newer socket of the session fenced it, or the
//! connection lost) and the run follows such closes (`--during`), the link reconnects with the
//! same `session_uuid` and `last_count=<the last count it was told>`, judges the new welcome
//! with [`wsfleet::protocol::judge_resume`] (the rule the fleet tests use too), and tells its
//! caller how many of the frames in flight were counted, so the caller resends exactly the
//! rest. `last_count` lets the server continue a counter Redis lost (a restart without its
//! data, an eviction) instead of starting it again at 0; such a welcome says
//! `"repaired": true` and is counted in the report, and is judged like any other. Other closes
//! (rate limit, protocol errors) are the client's fault or the server's refusal, and stay
//! errors. A 1013 (the socket fell too far behind the fan-out) is resumed too: the server
//! released it, and with `--resume` its history recovers what was missed.
//!
//! With `--resume` the caller keeps [`Link::since`] at its place in the broadcast stream; the
//! reconnect then asks for the broadcasts after it (`since`/`epoch` on the URL) and the
//! welcome must say `recovered: true` ([`crate::recovery`]).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use wsfleet::protocol::{judge_resume, Resumption, ServerFrame};

use crate::{
    client::{self, Conn, Dial, Event, Socket, Target},
    recovery::{self, Position},
    stats::Tally,
    verify::CountCheck,
};

/// Longest a link keeps trying to reconnect after losing its socket. A drain ends within the
/// server's SHUTDOWN_TIMEOUT (10 s by default) and a replacement instance is ready within
/// seconds; past this the fleet is not coming back for this socket.
const RESUME_PATIENCE: Duration = Duration::from_secs(30);

/// Upper bound on the `reconnect_after_ms` hint obeyed (the server's is at most 1.1 s).
const MAX_RECONNECT_HINT: Duration = Duration::from_secs(3);

/// The reason of the close (1008) the server ends an older socket of a session with once a
/// newer socket of the same session opened (docs/PROTOCOL.md). The client resumes from it
/// like from a drain: whichever socket it still holds is the one to continue on.
pub const RESUMED_ELSEWHERE: &str = "session resumed elsewhere";

/// A socket, the counts it has seen, and where to reopen its session.
pub struct Link {
    pub socket: Socket,
    /// The counter as this client knows it: `acked()` is the last count it was told.
    pub check: CountCheck,
    /// How to reach this socket's session again (from its welcome): the same URL, address
    /// and source address as its first connection.
    session: Dial,
    /// Whether a socket the server ends is reconnected (`--during`) or is an error.
    follows_server_closes: bool,
    connect_timeout: Duration,
    /// `--resume` on the broadcast stream: where this socket stands in it, kept current by
    /// the caller. A reconnect then recovers the broadcasts after it and judges the
    /// welcome's `recovered`. `None`: broadcasts missed while away stay missed.
    pub since: Option<Position>,
}

impl Link {
    /// The link of socket `i` (its global index, which decides its route).
    pub fn new(i: usize, conn: Conn, target: &Target, follows_server_closes: bool) -> Link {
        Link {
            session: target.dial_session(i, &conn.welcome.session_uuid),
            check: CountCheck::new(conn.welcome.count),
            socket: conn.socket,
            follows_server_closes,
            connect_timeout: target.connect_timeout,
            since: None,
        }
    }

    /// Whether `event` ends the socket in a way this link comes back from.
    pub fn resumes_after(&self, event: &Event) -> bool {
        self.follows_server_closes && is_server_close(event)
    }

    /// Reconnects after the socket ended with `lost`, `pending` frames having had no reply.
    /// Returns how many of those were counted (their replies were lost): the caller resends
    /// the others. Anything the welcome shows against the invariant is tallied as a violation.
    /// Err when the link does not follow this kind of close, or could not come back.
    pub async fn recover(
        &mut self,
        lost: Event,
        pending: u64,
        tally: &mut Tally,
        deadline: Instant,
    ) -> Result<u64, String> {
        if !self.resumes_after(&lost) {
            return Err(loss_kind(&lost));
        }
        let lost_at = Instant::now();
        if let Event::Frame(ServerFrame::Bye(bye)) = &lost {
            // Read up to the close that follows the bye, so the server's handshake completes,
            // then wait the jittered hint so resumes do not all land in one instant.
            let until = deadline.min(lost_at + Duration::from_secs(2));
            let _ = tokio::time::timeout_at(until, async {
                while let Some(Ok(message)) = self.socket.next().await {
                    if message.is_close() {
                        break;
                    }
                }
            })
            .await;
            let hint = Duration::from_millis(bye.reconnect_after_ms).min(MAX_RECONNECT_HINT);
            tokio::time::sleep_until(deadline.min(Instant::now() + hint)).await;
        }
        let conn = self
            .reconnect(deadline.min(lost_at + RESUME_PATIENCE))
            .await?;
        tally.resumes.reconnected(lost_at.elapsed());
        if self.since.is_some() {
            recovery::judge_recovered(conn.welcome.recovered, tally);
        }
        Ok(self.take_over(conn, pending, tally))
    }

    /// Closes the socket politely and opens its session again: the `resume` scenario's planned
    /// resume, with nothing in flight. The welcome must continue the count exactly.
    pub async fn reopen(&mut self, tally: &mut Tally, deadline: Instant) -> Result<(), String> {
        client::close(&mut self.socket, deadline).await;
        let dial = self.session.resuming_from(self.check.acked());
        let conn = match tokio::time::timeout_at(
            deadline.min(Instant::now() + self.connect_timeout),
            client::connect_one(&dial),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(kind)) => {
                tally.resumes.resumes_failed += 1;
                return Err(format!("resume: {kind}"));
            }
            Err(_) => {
                tally.resumes.resumes_failed += 1;
                return Err("resume: connect: timeout".into());
            }
        };
        let violations = tally.count_violations;
        self.take_over(conn, 0, tally);
        if tally.count_violations == violations {
            tally.resumes.resumes_ok += 1;
        } else {
            tally.resumes.resumes_failed += 1;
        }
        Ok(())
    }

    /// Connects to the session again (passing the last count it was told), with a short
    /// back-off, until `give_up`.
    async fn reconnect(&self, give_up: Instant) -> Result<Conn, String> {
        let mut dial = self.session.resuming_from(self.check.acked());
        if let Some(since) = &self.since {
            dial = dial.recovering(since);
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt_until = give_up.min(Instant::now() + self.connect_timeout);
            let error =
                match tokio::time::timeout_at(attempt_until, client::connect_one(&dial)).await {
                    Ok(Ok(conn)) => return Ok(conn),
                    Ok(Err(kind)) => kind,
                    Err(_) => "connect: timeout".to_string(),
                };
            if Instant::now() + backoff >= give_up {
                return Err(format!("resume gave up ({error})"));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Makes `conn` this link's socket and judges its welcome; returns how many of the
    /// `pending` frames it says were counted. A repaired welcome (the server raised a lost
    /// counter to our `last_count`) is judged by the same rule: it is noted, not excused.
    fn take_over(&mut self, conn: Conn, pending: u64, tally: &mut Tally) -> u64 {
        let welcome = conn.welcome.count;
        if conn.welcome.repaired {
            tally.resumes.repaired += 1;
        }
        let counted = match judge_resume(self.check.acked(), pending, welcome) {
            Resumption::Continues { counted } => counted,
            Resumption::Ahead { skipped } => {
                tally.count_violations += 1;
                tally.resumes.counts_lost += skipped;
                pending
            }
            Resumption::Behind { behind } => {
                tally.count_violations += 1;
                tally.resumes.counts_repeated += behind;
                0
            }
        };
        self.socket = conn.socket;
        self.check = CountCheck::new(welcome);
        counted
    }
}

/// The server ending a socket in a way a client resumes from: a drain's `bye` or close 1001,
/// close 1013 (a slow consumer, released), close 1008 `session resumed elsewhere` (fenced by a
/// newer socket of its session), or the connection breaking (reset, ended without a close
/// frame, as after a SIGKILL). Other 1008s (rate limit, no pong) are not: they are this
/// client's fault.
pub fn is_server_close(event: &Event) -> bool {
    use wsfleet::protocol::close_code::{GOING_AWAY, POLICY_VIOLATION, TRY_AGAIN_LATER};
    match event {
        Event::Frame(ServerFrame::Bye(_)) | Event::Failed(_) => true,
        Event::Closed(code, _) if *code == GOING_AWAY || *code == TRY_AGAIN_LATER => true,
        Event::Closed(code, reason) => *code == POLICY_VIOLATION && reason == RESUMED_ELSEWHERE,
        _ => false,
    }
}

/// The error label for a socket that ended with `event` and did not come back.
pub fn loss_kind(event: &Event) -> String {
    match event {
        Event::Frame(ServerFrame::Bye(_)) => "server drained (bye)".into(),
        other => other.describe(),
    }
}

#[cfg(test)]
mod tests {
    use wsfleet::protocol::Bye;

    use super::*;

    #[test]
    fn drains_and_broken_connections_are_resumed_other_closes_are_not() {
        let bye = Event::Frame(ServerFrame::Bye(Bye {
            bye: true,
            total: 3,
            reconnect_after_ms: 100,
        }));
        assert!(is_server_close(&bye));
        assert!(is_server_close(&Event::Closed(
            1001,
            "server shutting down".into()
        )));
        assert!(is_server_close(&Event::Failed(
            "read: io ConnectionReset".into()
        )));
        assert!(is_server_close(&Event::Closed(
            1008,
            RESUMED_ELSEWHERE.into()
        )));
        assert!(is_server_close(&Event::Closed(
            1013,
            "slow consumer: more than SEND_QUEUE frames behind".into()
        )));
        assert!(!is_server_close(&Event::Closed(
            1008,
            "rate limit exceeded".into()
        )));
        assert!(!is_server_close(&Event::Closed(
            1011,
            RESUMED_ELSEWHERE.into()
        )));
        assert!(!is_server_close(&Event::Unknown("binary frame")));
        assert_eq!(loss_kind(&bye), "server drained (bye)");
    }
}
