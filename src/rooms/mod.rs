//! Rooms: fleet-wide channels with presence (docs/PROTOCOL.md, "Rooms"; SPEC "Rooms").
//!
//! Everything shared is in Redis, under keys that share the hash tag `{room:R}` (one Cluster
//! slot per room, see [`scripts`]); membership belongs to the *session* and is kept by leases:
//! - a socket that joins (or resumes a session that is in the room) holds the membership and
//!   its instance renews the lease every `LEASE_PERIOD` to `2 × LEASE_PERIOD + PRESENCE_GRACE`
//!   ahead; a killed instance's members therefore expire within 3 lease periods + grace;
//! - a socket that closes leaves its memberships `PRESENCE_GRACE` to live, unless a newer
//!   socket of the session holds them already; a drain's reconnect within the grace takes them
//!   over, so drains, promotions and scale-downs cause no `user_left`/`user_joined` churn;
//! - expired memberships are removed inside a script, with their `user_left`, by whichever
//!   instance sweeps first (each sweeps the rooms it has members in, at every renewal; joins
//!   and `GET /rooms/{R}` sweep too), so each `user_left` is published exactly once.
//!
//! Publications get their offset and epoch, go into the room's history and out on its channel
//! in one script: live order is offset order. An instance subscribes only to the channels of
//! rooms its sockets are in ([`local`]), so a publication costs one script call whatever the
//! number of members and instances.

mod keys;
mod leases;
mod local;
pub mod scripts;

pub use keys::{channel_name, session_field};
use keys::{room_keys, room_of_channel, stream};

use std::{sync::Arc, time::Duration};

use axum::extract::ws::Utf8Bytes;
use fred::{
    clients::SubscriberClient,
    interfaces::HashesInterface,
    types::{scripts::Script, Value},
};
use tokio_util::sync::CancellationToken;

pub use local::LocalMember;
use local::LocalRooms;

use crate::{
    config::Settings,
    counter::session_key,
    history::{
        as_string, as_u64, epoch_candidate, frames_oldest_first, parse_publication, unexpected,
        History, Position, Publication,
    },
    metrics::Metrics,
    store::{Store, StoreError},
};

/// Who a socket is, for its room operations.
#[derive(Debug, Clone)]
pub struct Member {
    pub conn_id: u64,
    pub session: Arc<str>,
    pub token: Arc<str>,
    pub user: Arc<str>,
}

/// The answer to a join.
#[derive(Debug, Clone)]
pub struct Joined {
    pub offset: u64,
    pub epoch: String,
    /// `None`: no recovery was asked.
    pub recovered: Option<bool>,
    /// Sorted, deduplicated public user ids.
    pub users: Vec<String>,
    /// The publications after `since`, oldest first (when recovered).
    pub missed: Vec<String>,
}

/// What `GET /rooms/{R}` shows.
#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub members: u64,
    pub users: Vec<String>,
    pub offset: u64,
    pub epoch: String,
}

struct Scripts {
    join: Script,
    take: Script,
    leave: Script,
    release: Script,
    renew: Script,
    info: Script,
}

/// Timings and sizes, in the units the scripts take.
#[derive(Debug, Clone, Copy)]
struct Limits {
    lease_ms: i64,
    grace_ms: i64,
    keep_ms: i64,
    history_ttl_ms: i64,
    renew_every: Duration,
    wait: Duration,
}

/// The process's room service, shared by every socket and the HTTP handlers.
pub struct Rooms {
    store: Store,
    history: Arc<History>,
    local: Arc<LocalRooms>,
    scripts: Scripts,
    limits: Limits,
    metrics: Arc<Metrics>,
    pub max_rooms: usize,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().try_into().unwrap_or(i64::MAX)
}

impl Rooms {
    /// The service, and the task that keeps the channel subscriptions in step with the local
    /// members (run it until the end of the drain).
    pub fn start(
        store: Store,
        history: Arc<History>,
        subscriber: SubscriberClient,
        settings: &Settings,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> (Arc<Rooms>, tokio::task::JoinHandle<()>) {
        let (table, checks) = LocalRooms::new();
        let interest = tokio::spawn(local::run_interest(
            table.clone(),
            checks,
            subscriber,
            cancel,
        ));
        let script = |body: &str| Script::from_lua(scripts::with_prelude(body));
        let lease = settings.lease_period * 2 + settings.presence_grace;
        let rooms = Rooms {
            store,
            history,
            local: table,
            scripts: Scripts {
                join: script(scripts::JOIN),
                take: script(scripts::TAKE),
                leave: script(scripts::LEAVE),
                release: script(scripts::RELEASE),
                renew: script(scripts::RENEW),
                info: script(scripts::INFO),
            },
            limits: Limits {
                lease_ms: ms(lease),
                grace_ms: ms(settings.presence_grace),
                // Presence keys outlive every lease in them, and vanish when nobody renews.
                keep_ms: ms(lease * 2 + settings.lease_period),
                history_ttl_ms: ms(settings.history_ttl),
                renew_every: settings.lease_period,
                wait: settings.redis_timeout,
            },
            metrics,
            max_rooms: settings.max_rooms,
        };
        (Arc::new(rooms), interest)
    }

    /// Rooms with a member on this instance.
    pub fn active(&self) -> usize {
        self.local.active()
    }

    /// Joins `room` for `member`'s socket, receiving from now on into `postbox`; with `since`,
    /// recovers what was published after it. On an error nothing happened.
    pub async fn join(
        &self,
        member: &Member,
        room: &str,
        postbox: crate::inbox::Postbox,
        since: Option<(u64, &str)>,
    ) -> Result<Joined, StoreError> {
        let entry = LocalMember {
            session: member.session.clone(),
            token: member.token.clone(),
            postbox: Some(postbox),
        };
        if !self
            .local
            .add(room, member.conn_id, entry, self.limits.wait)
            .await
        {
            self.local.remove(room, member.conn_id);
            return Err(StoreError::Unexpected(
                "the room's channel subscription was not confirmed".into(),
            ));
        }
        let (since, epoch) = since.map_or((-1, ""), |(k, e)| (k.min(i64::MAX as u64) as i64, e));
        let args: Vec<Value> = vec![
            member.session.as_ref().into(),
            member.user.as_ref().into(),
            member.token.as_ref().into(),
            self.limits.lease_ms.into(),
            epoch_candidate().into(),
            since.into(),
            epoch.into(),
            self.limits.history_ttl_ms.into(),
            channel_name(room).into(),
            room.into(),
            self.limits.keep_ms.into(),
        ];
        let answer: Result<Vec<Value>, _> = self
            .store
            .run("room_join", &self.scripts.join, room_keys(room), args)
            .await;
        let joined = answer.and_then(|a| parse_joined(a, since >= 0));
        match joined {
            Ok(joined) => {
                self.remember(&member.session, room).await;
                Ok(joined)
            }
            Err(error) => {
                self.local.remove(room, member.conn_id);
                Err(error)
            }
        }
    }

    /// Lists `room` in the session's hash, so a resumed socket learns it is still in it. A
    /// failure only loses that hint (a `join` still works).
    async fn remember(&self, session: &str, room: &str) {
        let call = self
            .store
            .redis()
            .hset::<(), _, _>(session_key(session), (session_field(room), 1));
        if let Err(error) = self.store.timed("room_remember", call).await {
            tracing::debug!(%error, room, "listing the room in the session failed");
        }
    }

    async fn forget(&self, session: &str, rooms: &[String]) {
        if rooms.is_empty() {
            return;
        }
        let fields: Vec<String> = rooms.iter().map(|r| session_field(r)).collect();
        let call = self
            .store
            .redis()
            .hdel::<(), _, _>(session_key(session), fields);
        if let Err(error) = self.store.timed("room_remember", call).await {
            tracing::debug!(%error, "unlisting rooms from the session failed");
        }
    }

    /// Leaves `room` (idempotent). On an error nothing happened.
    pub async fn leave(&self, member: &Member, room: &str) -> Result<(), StoreError> {
        let args: Vec<Value> = vec![
            member.session.as_ref().into(),
            channel_name(room).into(),
            room.into(),
        ];
        self.store
            .run::<Value, _, _>("room_leave", &self.scripts.leave, room_keys(room), args)
            .await?;
        self.local.remove(room, member.conn_id);
        self.forget(&member.session, &[room.to_string()]).await;
        Ok(())
    }

    /// Publishes the frame whose head is `head` (see
    /// [`crate::protocol::rooms::publication_head`]); `idempotency`: published at most once
    /// per key within the history TTL (a client message id, an operator's key).
    pub async fn publish(
        &self,
        room: &str,
        head: String,
        idempotency: Option<&str>,
    ) -> Result<Publication, StoreError> {
        let published = self
            .history
            .publish("room_publish", &stream(room), head, idempotency)
            .await?;
        if matches!(published, Publication::New { .. }) {
            self.metrics.room_messages.inc();
        }
        Ok(published)
    }

    /// Where `room`'s stream stands and what came after `since` (an offset and its epoch), for
    /// a socket that saw a gap in the live publications.
    pub async fn recover(&self, room: &str, since: (u64, &str)) -> Result<Position, StoreError> {
        self.history.read(&stream(room), Some(since)).await
    }

    /// `GET /rooms/{R}`.
    pub async fn info(&self, room: &str) -> Result<RoomInfo, StoreError> {
        let args: Vec<Value> = vec![
            channel_name(room).into(),
            room.into(),
            epoch_candidate().into(),
            self.limits.history_ttl_ms.into(),
        ];
        let answer: Vec<Value> = self
            .store
            .run("room_info", &self.scripts.info, room_keys(room), args)
            .await?;
        match &answer[..] {
            [members, users, offset, epoch] => Ok(RoomInfo {
                members: as_u64(members)?,
                users: sorted_strings(users)?,
                offset: as_u64(offset)?,
                epoch: as_string(epoch)?,
            }),
            _ => Err(unexpected("room info", &answer)),
        }
    }

    /// One message from a room's channel (see [`scripts`] for the payloads).
    pub fn deliver(&self, channel: &str, payload: &str) {
        let Some(room) = room_of_channel(channel) else {
            return;
        };
        let posted = if let Some(publication) = parse_publication(payload) {
            let text = Utf8Bytes::from(publication.frame.to_string());
            let at = Some((publication.offset, Arc::from(publication.epoch)));
            self.local.deliver(room, at, None, text)
        } else if let Some((skip, frame)) = parse_presence(payload) {
            self.local
                .deliver(room, None, skip, Utf8Bytes::from(frame.to_string()))
        } else {
            crate::warn_throttled!(channel, "ignoring a malformed room message");
            0
        };
        self.metrics.room_deliveries.inc_by(posted as u64);
    }
}

/// `p <session> <frame>`: the session that caused the event (which does not get it), or
/// `None` for `-`, and the frame.
fn parse_presence(payload: &str) -> Option<(Option<&str>, &str)> {
    let (session, frame) = payload.strip_prefix("p ")?.split_once(' ')?;
    Some(((session != "-").then_some(session), frame))
}

fn sorted_strings(value: &Value) -> Result<Vec<String>, StoreError> {
    let mut out: Vec<String> = match value {
        Value::Array(values) => values.iter().map(as_string).collect::<Result<_, _>>()?,
        Value::Null => Vec::new(),
        other => return Err(unexpected("a list", std::slice::from_ref(other))),
    };
    out.sort();
    out.dedup();
    Ok(out)
}

fn parse_joined(answer: Vec<Value>, asked: bool) -> Result<Joined, StoreError> {
    let [offset, epoch, recovered, users, missed] = &answer[..] else {
        return Err(unexpected("room join", &answer));
    };
    let missed = frames_oldest_first(missed)?;
    Ok(Joined {
        offset: as_u64(offset)?,
        epoch: as_string(epoch)?,
        recovered: asked.then_some(recovered.as_i64() == Some(1)),
        users: sorted_strings(users)?,
        missed,
    })
}
