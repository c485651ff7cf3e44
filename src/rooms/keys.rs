//! A room's names in Redis: its keys and channel, all under the hash tag `{room:R}` (one
//! Cluster slot), its publication stream, and the session-hash field that lists it.

use crate::{history::Stream, store::KEY_PREFIX};

/// The channel of a room (sharded pub/sub; same slot as the room's keys).
pub fn channel_name(room: &str) -> String {
    format!("{KEY_PREFIX}{{room:{room}}}")
}

/// The room a channel belongs to.
pub(super) fn room_of_channel(channel: &str) -> Option<&str> {
    channel
        .strip_prefix(KEY_PREFIX)?
        .strip_prefix("{room:")?
        .strip_suffix('}')
}

/// A room's keys, in the order the scripts take them.
pub(super) fn room_keys(room: &str) -> Vec<String> {
    ["members", "sessions", "holders", "users", "meta", "history"]
        .iter()
        .map(|part| format!("{KEY_PREFIX}{{room:{room}}}:{part}"))
        .collect()
}

/// The session-hash field that lists a room of the session (see `counter::CLAIM_LUA`).
pub fn session_field(room: &str) -> String {
    format!("r:{room}")
}

/// A room's publication stream (its `meta` and `history` keys are among [`room_keys`]).
pub(super) fn stream(room: &str) -> Stream {
    Stream::room(format!("{KEY_PREFIX}{{room:{room}}}"), channel_name(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_keys_of_a_room_share_its_hash_tag() {
        let channel = channel_name("lobby.1");
        assert_eq!(channel, "wsfleet:{room:lobby.1}");
        assert_eq!(room_of_channel(&channel), Some("lobby.1"));
        assert_eq!(room_of_channel("wsfleet:fanout"), None);
        for key in room_keys("lobby.1") {
            assert!(key.starts_with("wsfleet:{room:lobby.1}:"), "{key}");
        }
    }
}
