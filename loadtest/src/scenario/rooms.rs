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
    client::{self, Event, Joined, RoomFrame, RoomLayout, Socket},
    link::{self, Link},
    recovery::{self, Outbox, Position},
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
    /// `--resume`: members recover their room with offsets across reconnects.
    pub resume: bool,
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
            resume,
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
            resume: *resume,
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
    mut link: Link,
    joined: Option<Joined>,
    seat: Seat,
    plan: Arc<Plan>,
    start: Instant,
    deadline: Instant,
) -> Tally {
    let Some(joined) = joined else {
        let mut tally = Tally::default();
        tally.error("rooms: a socket without a room");
        return tally;
    };
    let (room, place) = plan.layout.seat(i);
    // This member's publications: s = place, place + publishers, … (none past them).
    let mut next = first_publication(place, &plan).filter(|s| *s < plan.publications);
    let users = joined.users;
    let mut member = Member {
        check: OffsetCheck::joined_at(users.offset),
        position: Position {
            offset: users.offset,
            epoch: users.epoch,
        },
        outbox: Outbox::default(),
        tally: Tally::default(),
        seat,
        last: users.offset + plan.publications,
        room: users.room,
        resume: plan.resume,
    };
    for message in joined.early {
        member.receive(&message);
    }
    let stop_at = deadline.min(start + plan.span() + DELIVERY_GRACE);
    let mut stopped = pin!(tokio::time::sleep_until(stop_at));
    // With --resume a member still missing something at `stop_at` (a disruption delayed it)
    // reads on until it has everything or the deadline.
    let mut overtime = false;
    let outcome = loop {
        let due = next.map(|s| start + plan.due(room, s));
        let event = tokio::select! {
            event = client::next_event(&mut link.socket) => event,
            () = sleep_until_some(due) => {
                let s = next.expect("due only with a publication");
                next = Some(s + plan.publishers).filter(|s| *s < plan.publications);
                match member.publish(&mut link.socket, s).await {
                    // With --resume it stays in the outbox; reading shows the close next.
                    Err(_) if member.resume => continue,
                    Err(kind) => break Err(kind),
                    Ok(()) => continue,
                }
            }
            () = stopped.as_mut() => {
                if !member.resume || member.finished(next) || overtime {
                    break Ok(());
                }
                overtime = true;
                stopped.as_mut().reset(deadline);
                continue;
            }
        };
        match event {
            Event::Room(RoomFrame::Message(message)) => {
                member.receive(&message);
                if overtime && member.finished(next) {
                    break Ok(());
                }
            }
            Event::Room(RoomFrame::Presence) | Event::Frame(ServerFrame::Broadcast(_)) => {}
            Event::Frame(ServerFrame::Heartbeat(_)) => member.tally.heartbeats += 1,
            // A publication refused (`unavailable`): said, and its offset never comes.
            Event::Room(RoomFrame::Error(e)) => {
                member.tally.error(format!("room error {:?}", e.error));
            }
            other if link.resumes_after(&other) => {
                if let Err(kind) = member.recover(&mut link, other, deadline).await {
                    break Err(kind);
                }
            }
            other => break Err(link::loss_kind(&other)),
        }
    };
    let Member {
        check,
        outbox,
        mut tally,
        seat,
        last,
        ..
    } = member;
    if next.is_some() {
        tally.error("publish: not all published");
    }
    tally.errors_of_kind("publish: never seen back", outbox.len() as u64);
    if outcome.is_ok() && !check.has_all_up_to(last) && Instant::now() >= deadline {
        tally.error("deadline");
    }
    let breaks = check.finish(last);
    tally.count_violations += breaks.total();
    tally.rooms.add(&breaks);
    match outcome {
        Ok(()) => {
            tally.open_at_end = true;
            seat.close_when_all_done(&mut link.socket, deadline).await;
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

/// What a member checks, counts and keeps for one room.
struct Member {
    check: OffsetCheck,
    /// Where it stands in the room's stream: the `since` of a rejoin.
    position: Position,
    /// `--resume`: its own publications not seen back yet.
    outbox: Outbox,
    tally: Tally,
    seat: Seat,
    room: String,
    /// The offset the room reaches with every publication of the run.
    last: u64,
    resume: bool,
}

impl Member {
    /// Sends publication `s` (with `--resume`, as client id `s`, kept until it comes back).
    /// Err is the kind of send failure.
    async fn publish(&mut self, socket: &mut Socket, s: u64) -> Result<(), String> {
        let content = json!({"t": series::unix_micros()});
        let mut frame = json!({"type": "message", "room": &self.room, "content": content});
        if self.resume {
            // Unique in the room: each publication number has one publisher.
            frame["id"] = s.to_string().into();
        }
        let frame = frame.to_string();
        if self.resume {
            self.outbox.sent(s, frame.clone());
        }
        self.tally.sent += 1;
        socket
            .send(Message::text(frame))
            .await
            .map_err(|e| format!("publish: {}", client::error_kind(&e)))
    }

    /// Whether nothing is left to do: everything published and seen back, every offset in.
    fn finished(&self, next: Option<u64>) -> bool {
        next.is_none() && self.outbox.is_empty() && self.check.has_all_up_to(self.last)
    }

    fn receive(&mut self, message: &RoomMessage) {
        if message.room != self.room {
            self.tally.error("rooms: a message of another room");
            return;
        }
        self.position.advance(message.offset, &message.epoch);
        if let Some(id) = message.id.as_deref().and_then(|id| id.parse().ok()) {
            self.outbox.confirmed(id);
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

    /// After the server ended the socket with `lost`: resumes the session, joins the room
    /// again from where this member stands (the server answers `recovered` and sends what
    /// was missed), and resends what it published and has not seen back. A server close
    /// during all that is resumed the same way. Err: it could not come back.
    async fn recover(
        &mut self,
        link: &mut Link,
        mut lost: Event,
        deadline: Instant,
    ) -> Result<(), String> {
        'reconnect: loop {
            link.recover(lost, 0, &mut self.tally, deadline).await?;
            let since = Some(&self.position).filter(|_| self.resume);
            match client::rooms::rejoin(&mut link.socket, &self.room, since).await {
                Ok(users) => {
                    if since.is_some() {
                        recovery::judge_recovered(users.recovered, &mut self.tally);
                    }
                }
                Err(event) if link.resumes_after(&event) => {
                    lost = event;
                    continue 'reconnect;
                }
                Err(event) => return Err(format!("rejoin: {}", event.describe())),
            }
            for frame in self.outbox.to_resend() {
                self.tally.resumes.resent += 1;
                if let Err(e) = link.socket.send(Message::text(frame)).await {
                    lost = Event::Failed(format!("send: {}", client::error_kind(&e)));
                    continue 'reconnect;
                }
            }
            return Ok(());
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
            resume: false,
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
