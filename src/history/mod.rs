//! Publication streams (docs/PROTOCOL.md, "History and recovery"): each room and the
//! fleet-wide broadcast stream number their publications 1, 2, 3, … under an epoch, keep the
//! last `HISTORY_SIZE` of them for `HISTORY_TTL` after the newest, and replay them to a client
//! that comes back with the last offset it saw.
//!
//! A stream is two keys with one hash tag (one Cluster slot): `meta` (`offset`, `epoch`) and
//! `history` (frames, newest first). Publishing assigns the offset, appends to the history
//! and publishes on the stream's channel in one script, so live order is offset order and a
//! reader of the history at offset k has seen exactly the publications up to k. The epoch is
//! made anew whenever `meta` is gone (Redis lost its data, or the stream was idle past its
//! TTL): a client's offset of another epoch cannot be trusted, and it is told `recovered:
//! false`.
//!
//! Channel payload of a publication: `m <offset> <epoch> <frame>` (the epoch in front too, so
//! a receiver tells a new epoch's offsets from old ones without parsing the frame).

use std::sync::Arc;

use fred::types::{scripts::Script, Value};

use crate::store::{Store, StoreError, KEY_PREFIX};

mod scripts;

pub use scripts::STREAM_LUA;
use scripts::{PUBLISH_LUA, READ_LUA};

/// One stream's keys and channel.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The common part of its keys, with the hash tag (`wsfleet:{room:R}`).
    base: String,
    channel: String,
    /// Sharded pub/sub (rooms) or the fleet channel every instance subscribes to.
    sharded: bool,
}

impl Stream {
    /// The fleet-wide broadcast stream, published on `channel` (the fan-out channel).
    pub fn broadcast(channel: String) -> Stream {
        Stream {
            base: format!("{KEY_PREFIX}{{broadcast}}"),
            channel,
            sharded: false,
        }
    }

    /// A room's stream; its keys are among the room's (see src/rooms/scripts.rs).
    pub fn room(base: String, channel: String) -> Stream {
        Stream {
            base,
            channel,
            sharded: true,
        }
    }

    pub fn meta_key(&self) -> String {
        format!("{}:meta", self.base)
    }

    pub fn history_key(&self) -> String {
        format!("{}:history", self.base)
    }

    /// The key that remembers an idempotent publication (a client message id, an
    /// `Idempotency-Key`) for the history TTL.
    pub fn idempotency_key(&self, id: &str) -> String {
        format!("{}:idem:{id}", self.base)
    }
}

/// A fresh epoch, offered to Redis whenever it may have to start a stream.
pub fn epoch_candidate() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// How a publication went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// Published with this offset and epoch; `receivers`: subscribers the channel reached.
    New {
        offset: u64,
        epoch: String,
        receivers: u64,
    },
    /// A repeat of an idempotent publication: nothing was sent; `seen` is what the first one
    /// left in its key (`"<offset> <epoch>"`, or what the publisher stored since).
    Repeat { seen: String },
}

/// Where a stream stands, and what a client missed.
#[derive(Debug, Clone, Default)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
    /// `None`: no recovery asked.
    pub recovered: Option<bool>,
    /// Oldest first.
    pub missed: Vec<String>,
}

/// The stream scripts, with the history's size and TTL.
pub struct History {
    store: Store,
    publish: Script,
    read: Script,
    size: i64,
    ttl_ms: i64,
}

impl History {
    pub fn new(store: Store, size: u64, ttl: std::time::Duration) -> History {
        let script = |body: &str| Script::from_lua(format!("{STREAM_LUA}{body}"));
        History {
            store,
            publish: script(PUBLISH_LUA),
            read: script(READ_LUA),
            size: size.min(i64::MAX as u64) as i64,
            ttl_ms: ttl.as_millis().try_into().unwrap_or(i64::MAX),
        }
    }

    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// Publishes the frame whose head is `head`; with `idempotency`, at most once per key
    /// within the history TTL.
    pub async fn publish(
        &self,
        operation: &'static str,
        stream: &Stream,
        head: String,
        idempotency: Option<&str>,
    ) -> Result<Publication, StoreError> {
        let mut keys = vec![stream.meta_key(), stream.history_key()];
        if let Some(id) = idempotency {
            keys.push(stream.idempotency_key(id));
        }
        let command = if stream.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let args: Vec<Value> = vec![
            epoch_candidate().into(),
            head.into(),
            self.size.into(),
            self.ttl_ms.into(),
            stream.channel.as_str().into(),
            command.into(),
        ];
        let answer: Vec<Value> = self.store.run(operation, &self.publish, keys, args).await?;
        match &answer[..] {
            [new, offset, epoch, seen, rest @ ..] => {
                if new.as_i64() == Some(1) {
                    Ok(Publication::New {
                        offset: as_u64(offset)?,
                        epoch: as_string(epoch)?,
                        receivers: rest.first().and_then(Value::as_u64).unwrap_or(0),
                    })
                } else {
                    Ok(Publication::Repeat {
                        seen: as_string(seen)?,
                    })
                }
            }
            _ => Err(unexpected("publish", &answer)),
        }
    }

    /// Where `stream` stands; with `since` (an offset and its epoch), the publications after
    /// it when the history still holds them all.
    pub async fn read(
        &self,
        stream: &Stream,
        since: Option<(u64, &str)>,
    ) -> Result<Position, StoreError> {
        let (since, epoch) = since.map_or((-1, ""), |(k, e)| (k.min(i64::MAX as u64) as i64, e));
        let args: Vec<Value> = vec![
            epoch_candidate().into(),
            self.ttl_ms.into(),
            since.into(),
            epoch.into(),
        ];
        let keys = vec![stream.meta_key(), stream.history_key()];
        let answer: Vec<Value> = self
            .store
            .run("history_read", &self.read, keys, args)
            .await?;
        let [offset, epoch, recovered, missed] = &answer[..] else {
            return Err(unexpected("history read", &answer));
        };
        Ok(Position {
            offset: as_u64(offset)?,
            epoch: as_string(epoch)?,
            recovered: (since >= 0).then_some(recovered.as_i64() == Some(1)),
            missed: frames_oldest_first(missed)?,
        })
    }
}

/// How far a socket has given a stream to its client: each publication once, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub offset: u64,
    pub epoch: Arc<str>,
}

impl Cursor {
    pub fn new(offset: u64, epoch: &str) -> Cursor {
        Cursor {
            offset,
            epoch: Arc::from(epoch),
        }
    }

    /// Whether the publication at `offset` of `epoch` is new to the client, moving the cursor
    /// to it when it is. Offsets of another epoch start over: Redis lost the stream, and the
    /// new epoch's publications are all new.
    pub fn admit(&mut self, offset: u64, epoch: &Arc<str>) -> bool {
        if *self.epoch != **epoch {
            self.epoch = epoch.clone();
        } else if offset <= self.offset {
            return false;
        }
        self.offset = offset;
        true
    }

    /// Whether publications between the cursor and `offset` of the same epoch never came (a
    /// live message lost on its way to this instance, e.g. while its subscriber connection was
    /// re-established): they are then to be read from the history first.
    pub fn gap_before(&self, offset: u64, epoch: &str) -> bool {
        *self.epoch == *epoch && offset > self.offset.saturating_add(1)
    }
}

/// A history reply (newest first) in the order a client must get it.
pub fn frames_oldest_first(frames: &Value) -> Result<Vec<String>, StoreError> {
    let mut frames = match frames {
        Value::Array(frames) => frames
            .iter()
            .map(as_string)
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    frames.reverse();
    Ok(frames)
}

/// A publication as it comes through a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    pub offset: u64,
    pub epoch: &'a str,
    pub frame: &'a str,
}

/// Reads `m <offset> <epoch> <frame>`; `None` for anything else.
pub fn parse_publication(payload: &str) -> Option<Received<'_>> {
    let mut parts = payload.strip_prefix("m ")?.splitn(3, ' ');
    let offset = parts.next()?.parse().ok()?;
    let (epoch, frame) = (parts.next()?, parts.next()?);
    Some(Received {
        offset,
        epoch,
        frame,
    })
}

pub fn as_u64(value: &Value) -> Result<u64, StoreError> {
    value
        .as_u64()
        .ok_or_else(|| StoreError::Unexpected(format!("expected a count, got {value:?}")))
}

pub fn as_string(value: &Value) -> Result<String, StoreError> {
    value
        .as_string()
        .ok_or_else(|| StoreError::Unexpected(format!("expected a string, got {value:?}")))
}

pub fn unexpected(what: &str, answer: &[Value]) -> StoreError {
    StoreError::Unexpected(format!("{what} answered {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_on_a_channel_carry_their_offset_in_front() {
        assert_eq!(
            parse_publication(r#"m 12 e1 {"a":"b c"}"#),
            Some(Received {
                offset: 12,
                epoch: "e1",
                frame: r#"{"a":"b c"}"#
            })
        );
        assert_eq!(parse_publication("p - {}"), None);
        assert_eq!(parse_publication("m x e {}"), None);
        assert_eq!(parse_publication("m 1 {}"), None);
        assert_eq!(parse_publication(r#"{"type":"heartbeat"}"#), None);
    }

    #[test]
    fn a_cursor_admits_each_offset_once_and_starts_over_with_a_new_epoch() {
        let (old, new): (Arc<str>, Arc<str>) = (Arc::from("old"), Arc::from("new"));
        let mut cursor = Cursor::new(3, "old");
        assert!(!cursor.admit(2, &old));
        assert!(!cursor.admit(3, &old));
        assert!(cursor.admit(4, &old));
        assert!(!cursor.admit(4, &old));
        assert!(cursor.admit(1, &new), "a new epoch starts over");
        assert!(!cursor.admit(1, &new));
        assert!(cursor.admit(2, &new));
        assert!(!cursor.gap_before(3, "new"), "the next one");
        assert!(cursor.gap_before(4, "new"), "3 never came");
        assert!(!cursor.gap_before(9, "newer"), "another epoch starts over");
    }

    #[test]
    fn stream_keys_share_the_streams_hash_tag() {
        let stream = Stream::broadcast("wsfleet:fanout".into());
        for key in [
            stream.meta_key(),
            stream.history_key(),
            stream.idempotency_key("k"),
        ] {
            assert!(key.starts_with("wsfleet:{broadcast}:"), "{key}");
        }
    }
}
