//! Open loop: each socket sends at a fixed rate whether or not replies have come back, the
//! way real clients do. Latency is taken from when a frame was *due*, not when it was
//! written, so a server (or client) stall shows up as latency instead of silently lowering
//! the offered rate ("coordinated omission").
//!
//! With `--during`, a socket the server ends is resumed: of the frames without a reply, the
//! ones the welcome shows were counted are dropped and the rest are sent again, in order, on
//! the new socket. They keep their due times, so the outage shows up as latency too.

use std::{collections::VecDeque, pin::pin, time::Duration};

use futures_util::SinkExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsfleet::protocol::ServerFrame;

use super::finish::Seat;
use crate::{
    client::{self, Event},
    link::Link,
    stats::Tally,
};

pub async fn run(
    mut link: Link,
    seat: Seat,
    rate: f64,
    duration: Duration,
    offset: Duration,
    payload: Utf8Bytes,
    deadline: Instant,
) -> Tally {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let planned = (duration.as_secs_f64() * rate).round() as u64;
    let first = Instant::now() + offset;
    let mut tally = Tally::default();
    // Due times of the frames sent and not yet answered, oldest first: the server answers
    // in order, so each reply belongs to the front entry.
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    // How many of `in_flight` (from the front) still have to go out on the current socket:
    // non-zero only after a resume.
    let mut to_resend = 0;
    let mut next = 0; // the next frame of the schedule
    let mut answered = 0;
    // Both timers live across loop turns, reset rather than made anew for every frame: a
    // new one is a timer-wheel insert and removal per reply and per send.
    let mut send_timer = pin!(tokio::time::sleep_until(first));
    let mut expired = pin!(tokio::time::sleep_until(deadline));
    // One task, one loop: reading and sending take turns on the socket, so a resume can
    // replace it for both.
    let outcome = loop {
        if answered >= planned {
            break Ok(());
        }
        let lost = if to_resend > 0 {
            match link.socket.send(Message::Text(payload.clone())).await {
                Ok(()) => {
                    tally.sent += 1;
                    to_resend -= 1;
                    continue;
                }
                Err(e) => Event::Failed(format!("send: {}", client::error_kind(&e))),
            }
        } else {
            let due = first + period.mul_f64(next as f64);
            let sending = next < planned;
            if send_timer.deadline() != due {
                send_timer.as_mut().reset(due);
            }
            tokio::select! {
                // Replies first: they free the latency samples of frames already out.
                biased;
                event = client::next_event(&mut link.socket) => match event {
                    Event::Frame(ServerFrame::Count(reply)) => {
                        answered += 1;
                        if let Some(due) = in_flight.pop_front() {
                            tally.record_latency(due.elapsed());
                        }
                        tally.count_reply(&mut link.check, reply.count);
                        continue;
                    }
                    // Answered but not counted (Redis unavailable): it still answers the
                    // front frame, and the counter must not have moved.
                    Event::Frame(ServerFrame::Error(e)) => {
                        answered += 1;
                        in_flight.pop_front();
                        tally.error(format!("error reply: {}", e.error));
                        continue;
                    }
                    Event::Frame(ServerFrame::Heartbeat(_)) => {
                        tally.heartbeats += 1;
                        continue;
                    }
                    Event::Frame(ServerFrame::Broadcast(_)) => continue,
                    other => other,
                },
                () = send_timer.as_mut(), if sending && due <= deadline => {
                    next += 1;
                    in_flight.push_back(due);
                    match link.socket.send(Message::Text(payload.clone())).await {
                        Ok(()) => {
                            tally.sent += 1;
                            continue;
                        }
                        // Whether it left is unknown: the welcome after the resume tells.
                        Err(e) => Event::Failed(format!("send: {}", client::error_kind(&e))),
                    }
                }
                () = expired.as_mut() => break Err("deadline".to_string()),
            }
        };
        // The socket ended with `lost`: resume, or end here.
        match link
            .recover(lost, in_flight.len() as u64, &mut tally, deadline)
            .await
        {
            Ok(counted) => {
                // Counted before the socket went, replies lost with it: answered, unmeasured.
                for _ in 0..counted {
                    in_flight.pop_front();
                    answered += 1;
                }
                to_resend = in_flight.len();
            }
            Err(kind) => break Err(kind),
        }
    };
    match outcome {
        Ok(()) => {
            tally.open_at_end = true;
            seat.close_when_all_done(&mut link.socket, deadline).await;
        }
        Err(kind) => tally.error(kind),
    }
    tally
}
