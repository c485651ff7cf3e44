//! Rooms: R rooms × M members; the first `publishers` members of each room publish to it on
//! a fixed schedule while every member checks what it receives.
//!
//! Every socket joined its room while connecting ([`crate::client::connect_all`]), so the
//! connect phase ends with every membership in place and the run phase is publishing only.
//! Publishers are members, and publish with the `message` command: that is the path a chat
//! client takes (one frame, one script in Redis, the room's channel, every member's
//! socket), and it needs no coordinator: each process publishes through its own sockets.
//! `POST /broadcast` to a room would add an HTTP request per publication to what is
//! measured, on the same two cores.
//!
//! Schedule: room `r` gets its publications `s = 0, 1, …` at `start + phase(r) + s / rate`,
//! `phase` spreading the rooms over one period so they do not all publish at the same
//! instant; publisher `j` of a room sends those with `s % publishers == j`. Each carries its
//! send time (`{"t": unix µs}`, the wall clock every process on the machine shares), which
//! a member subtracts from its own clock at arrival.
//!
//! Verification is per member ([`OffsetCheck`]): offsets after the join's, each once, in
//! order, up to the join's offset + the room's publications (the rooms are fresh, see
//! `--room-prefix`). A member stays reading until [`DELIVERY_GRACE`] after the last
//! publication was due, so a late duplicate is still seen; it counts as done (the run
//! phase's end) once it has everything.

use std::{pin::pin, sync::Arc, time::Duration};

use futures_util::SinkExt;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wsfleet::protocol::{rooms::RoomMessage, ServerFrame};

use super::{fan_out::DELIVERY_GRACE, finish::Seat};
use crate::{
    cli::Scenario,
    client::{self, Conn, Event, RoomFrame, RoomLayout},
    series,
    stats::Tally,
    verify::offsets::{Arrival, OffsetCheck},
};

/// What a rooms run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub layout: RoomLayout,
    pub rooms: u64,
    pub publishers: u64,
    /// Publications per second per room.
    pub rate: f64,
    /// Publications each room gets.
    pub publications: u64,
}

impl Plan {
    /// The plan of a rooms run; `None` for the other scenarios.
    pub fn of(scenario: &Scenario) -> Option<Plan> {
        let Scenario::Rooms {
            rooms,
            members,
            rate,
            duration,
            publishers,
            room_prefix,
            ..
        } = scenario
        else {
            return None;
        };
        Some(Plan {
            layout: RoomLayout {
                prefix: room_prefix.clone().unwrap_or_default(),
                members: usize::try_from(*members).unwrap_or(usize::MAX),
            },
            rooms: *rooms,
            publishers: (*publishers).min(*members),
            rate: *rate,
            publications: ((rate * duration.as_secs_f64()).round() as u64).max(1),
        })
    }

    /// When, after the start of the run phase, publication `s` of room `room` is due.
    pub fn due(&self, room: usize, s: u64) -> Duration {
        let phase = room as f64 / self.rooms.max(1) as f64;
        Duration::from_secs_f64((phase + s as f64) / self.rate)
    }

    /// How long after the start the last publication of any room is due.
    pub fn span(&self) -> Duration {
        self.due(self.rooms.saturating_sub(1) as usize, self.publications - 1)
    }
}

/// How long a run publishes (until its last publication is due), for `--redis-info`; `None`
/// when it does not publish.
pub fn publishing(scenario: &Scenario) -> Option<Duration> {
    Plan::of(scenario).map(|plan| plan.span())
}

/// One member's side. `start` is the run phase's start (the schedule's origin).
pub async fn run(
    i: usize,
    conn: Conn,
    mut seat: Seat,
    plan: Arc<Plan>,
    start: Instant,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let Conn {
        mut socket, room, ..
    } = conn;
    let Some(joined) = room else {
        tally.error("rooms: a socket without a room");
        return tally;
    };
    let (room, place) = plan.layout.seat(i);
    // This member's publications: s = place, place + publishers, … (none past them).
    let mut next = first_publication(place, &plan).filter(|s| *s < plan.publications);
    let name = joined.users.room;
    let mut check = OffsetCheck::joined_at(joined.users.offset);
    let last = joined.users.offset + plan.publications;
    let mut member = Member {
        check: &mut check,
        tally: &mut tally,
        seat: &mut seat,
        room: &name,
        last,
    };
    for message in joined.early {
        member.receive(&message);
    }
    let stop_at = deadline.min(start + plan.span() + DELIVERY_GRACE);
    let mut stopped = pin!(tokio::time::sleep_until(stop_at));
    let outcome = loop {
        let due = next.map(|s| start + plan.due(room, s));
        let event = tokio::select! {
            event = client::next_event(&mut socket) => event,
            () = sleep_until_some(due) => {
                let s = next.expect("due only with a publication");
                let content = json!({"t": series::unix_micros()});
                let frame = json!({"type": "message", "room": &name, "content": content});
                if let Err(e) = socket.send(Message::text(frame.to_string())).await {
                    break Err(format!("publish: {}", client::error_kind(&e)));
                }
                member.tally.sent += 1;
                next = Some(s + plan.publishers).filter(|s| *s < plan.publications);
                continue;
            }
            () = stopped.as_mut() => break Ok(()),
        };
        match event {
            Event::Room(RoomFrame::Message(message)) => member.receive(&message),
            Event::Room(RoomFrame::Presence) | Event::Frame(ServerFrame::Broadcast(_)) => {}
            Event::Frame(ServerFrame::Heartbeat(_)) => member.tally.heartbeats += 1,
            // A publication refused (`unavailable`): said, and its offset never comes.
            Event::Room(RoomFrame::Error(e)) => {
                member.tally.error(format!("room error {:?}", e.error));
            }
            other => break Err(other.describe()),
        }
    };
    if next.is_some() {
        tally.error("publish: not all published");
    }
    if outcome.is_ok() && !check.has_all_up_to(last) && Instant::now() >= deadline {
        tally.error("deadline");
    }
    let breaks = check.finish(last);
    tally.count_violations += breaks.total();
    tally.rooms.add(&breaks);
    match outcome {
        Ok(()) => {
            tally.open_at_end = true;
            seat.close_when_all_done(&mut socket, deadline).await;
        }
        Err(kind) => tally.error(kind),
    }
    tally
}

/// The first publication number of the member at `place` in its room, if it publishes.
fn first_publication(place: usize, plan: &Plan) -> Option<u64> {
    let place = place as u64;
    (place < plan.publishers).then_some(place)
}

/// Never, without a time.
async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// What a member checks and counts for each publication it receives.
struct Member<'a> {
    check: &'a mut OffsetCheck,
    tally: &'a mut Tally,
    seat: &'a mut Seat,
    room: &'a str,
    /// The offset the room reaches with every publication of the run.
    last: u64,
}

impl Member<'_> {
    fn receive(&mut self, message: &RoomMessage) {
        if message.room != self.room {
            self.tally.error("rooms: a message of another room");
            return;
        }
        match self.check.receive(message.offset) {
            Arrival::Duplicate => return,
            Arrival::InOrder | Arrival::Ahead | Arrival::Late => {}
        }
        self.tally.received += 1;
        match message.content.get("t").and_then(serde_json::Value::as_u64) {
            Some(sent_us) => {
                let latency_us = series::unix_micros().saturating_sub(sent_us);
                self.tally.record_latency(Duration::from_micros(latency_us));
            }
            None => self.tally.error("rooms: a publication without a send time"),
        }
        if self.check.has_all_up_to(self.last) {
            self.seat.done();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rooms: u64, publishers: u64, rate: f64, publications: u64) -> Plan {
        Plan {
            layout: RoomLayout {
                prefix: "p".into(),
                members: 4,
            },
            rooms,
            publishers,
            rate,
            publications,
        }
    }

    #[test]
    fn rooms_publish_a_period_apart_with_the_rooms_spread_over_one_period() {
        let p = plan(4, 2, 10.0, 3);
        assert_eq!(p.due(0, 0), Duration::ZERO);
        assert_eq!(p.due(0, 1), Duration::from_millis(100));
        assert_eq!(p.due(2, 0), Duration::from_millis(50));
        assert_eq!(p.span(), Duration::from_millis(275));
        assert_eq!(first_publication(1, &p), Some(1));
        assert_eq!(first_publication(2, &p), None, "only the first two publish");
    }
}
