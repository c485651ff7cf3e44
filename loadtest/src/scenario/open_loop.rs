//! Open loop: each socket sends at a fixed rate whether or not replies have come back, the
//! way real clients do. Latency is taken from when a frame was *due*, not when it was
//! written, so a server (or client) stall shows up as latency instead of silently lowering
//! the offered rate ("coordinated omission").

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsfleet::protocol::ServerFrame;

use crate::{
    client::{self, Conn, Event},
    stats::Tally,
    verify::CountCheck,
};

pub async fn run(
    conn: Conn,
    rate: f64,
    duration: Duration,
    offset: Duration,
    payload: Utf8Bytes,
    deadline: Instant,
) -> Tally {
    let Conn { socket, welcome } = conn;
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let planned = (duration.as_secs_f64() * rate).round() as u64;
    let first = Instant::now() + offset;
    // Due times of the frames sent and not yet answered, oldest first: the server answers
    // in order, so each reply belongs to the front entry.
    let due_times: Mutex<VecDeque<Instant>> = Mutex::new(VecDeque::new());
    let (mut sink, mut stream) = socket.split();

    let writer = async {
        for k in 0..planned {
            let due = first + period.mul_f64(k as f64);
            if due > deadline {
                return (k, Err("deadline".to_string()));
            }
            tokio::time::sleep_until(due).await;
            due_times.lock().expect("not poisoned").push_back(due);
            match tokio::time::timeout_at(deadline, sink.send(Message::Text(payload.clone()))).await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return (k, Err(format!("send: {}", client::error_kind(&e)))),
                Err(_) => return (k, Err("deadline".to_string())),
            }
        }
        (planned, Ok(()))
    };

    let reader = async {
        let mut tally = Tally::default();
        let mut check = CountCheck::new(welcome.count);
        let mut answered = 0;
        while answered < planned {
            let Ok(event) =
                tokio::time::timeout_at(deadline, client::next_event(&mut stream)).await
            else {
                return (tally, Err("deadline".to_string()));
            };
            match event {
                Event::Frame(ServerFrame::Count(reply)) => {
                    answered += 1;
                    if let Some(due) = due_times.lock().expect("not poisoned").pop_front() {
                        tally.record_latency(due.elapsed());
                    }
                    tally.count_reply(&mut check, reply.count);
                }
                // Answered but not counted (Redis unavailable): it still answers the front
                // frame, and the counter must not have moved.
                Event::Frame(ServerFrame::Error(e)) => {
                    answered += 1;
                    due_times.lock().expect("not poisoned").pop_front();
                    tally.error(format!("error reply: {}", e.error));
                }
                Event::Frame(ServerFrame::Heartbeat(_)) => tally.heartbeats += 1,
                Event::Frame(ServerFrame::Broadcast(_)) => {}
                Event::Frame(ServerFrame::Bye(_)) => {
                    return (tally, Err("server drained (bye)".to_string()))
                }
                other => return (tally, Err(other.describe())),
            }
        }
        (tally, Ok(()))
    };

    // Both halves in this one task: a socket costs one task here as on the server. Each
    // half stops at the deadline by itself, so their counts survive a cut-short run.
    let ((sent, sent_ok), (reader, read_ok)) = tokio::join!(writer, reader);
    let mut tally = reader;
    tally.sent = sent;
    let ok = sent_ok.is_ok() && read_ok.is_ok();
    let mut errors: Vec<String> = [sent_ok.err(), read_ok.err()]
        .into_iter()
        .flatten()
        .collect();
    // Both halves hitting the deadline is one socket cut short, not two errors.
    errors.dedup();
    for kind in errors {
        tally.error(kind);
    }
    if ok {
        tally.open_at_end = true;
        if let Ok(mut socket) = sink.reunite(stream) {
            client::close(&mut socket, deadline).await;
        }
    }
    tally
}
