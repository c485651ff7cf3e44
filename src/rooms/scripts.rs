//! The rooms' Lua scripts. Every key of a room shares the hash tag `{room:R}`, so each script
//! touches one Redis Cluster slot; presence events and publications are sent from inside the
//! scripts (`SPUBLISH` on the room's channel, same slot), which is what makes "each `user_left`
//! once" and "live order = offset order" hold: nothing runs between a change and its event.
//!
//! KEYS, always in this order (see [`super::RoomKeys`]):
//! 1. `members`: sorted set, session → lease expiry (ms, Redis's clock);
//! 2. `sessions`: hash, session → public user id;
//! 3. `holders`: hash, session → writer token of the socket that holds the membership;
//! 4. `users`: hash, user → how many of its sessions are members;
//! 5. `meta`: hash, `offset` (the latest publication) and `epoch`;
//! 6. `history`: list of the latest publications' frames, newest first.
//!
//! 5 and 6 are the room's publication stream, which src/history/ publishes to; its Lua
//! functions (`epoch_of`, `position`) are the ones the scripts here use on them.
//!
//! Channel payloads (read by `super::Rooms::deliver`): `m <offset> <epoch> <frame>` for a
//! publication, `p <session> <frame>` for a presence event (`-`: for everyone; otherwise the
//! session that caused it, which does not get it).

use crate::history::STREAM_LUA;

/// Functions every script starts with (after the stream functions, `epoch_of` and `position`,
/// of src/history/).
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end
local function presence(kind, room, user)
  return '{"type":"' .. kind .. '","room":' .. cjson.encode(room) .. ',"user":' .. cjson.encode(user) .. '}'
end
local function remove(session, channel, room)
  local user = redis.call('HGET', KEYS[2], session)
  redis.call('ZREM', KEYS[1], session)
  redis.call('HDEL', KEYS[2], session)
  redis.call('HDEL', KEYS[3], session)
  if user then
    if redis.call('HINCRBY', KEYS[4], user, -1) <= 0 then
      redis.call('HDEL', KEYS[4], user)
      redis.call('SPUBLISH', channel, 'p - ' .. presence('user_left', room, user))
    end
  end
end
local function sweep(now, channel, room)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, session in ipairs(gone) do remove(session, channel, room) end
  return gone
end
local function keep(ms)
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ms) end
end
"#;

/// Joins (or re-joins) a session. ARGV: session, user, writer token, lease ms, epoch candidate,
/// since (-1: no recovery asked), the client's epoch, history TTL ms, channel, room, keep ms.
///
/// Returns `{offset, epoch, recovered (-1 not asked, 0, 1), users, missed frames newest
/// first}`. A session already in the room is taken over by this socket without an event.
pub const JOIN: &str = r#"
local now = now_ms()
local session, user, channel, room = ARGV[1], ARGV[2], ARGV[9], ARGV[10]
sweep(now, channel, room)
local known = redis.call('HGET', KEYS[2], session)
if known and known ~= user then
  remove(session, channel, room)
  known = nil
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), session)
redis.call('HSET', KEYS[3], session, ARGV[3])
if not known then
  redis.call('HSET', KEYS[2], session, user)
  if redis.call('HINCRBY', KEYS[4], user, 1) == 1 then
    redis.call('SPUBLISH', channel, 'p ' .. session .. ' ' .. presence('user_joined', room, user))
  end
end
keep(ARGV[11])
local offset, epoch, recovered, missed = position(KEYS[5], KEYS[6], ARGV[5], ARGV[8], ARGV[6], ARGV[7])
return {offset, epoch, recovered, redis.call('HKEYS', KEYS[4]), missed}
"#;

/// Takes over the memberships of a resumed session for its new socket, without events.
/// ARGV: session, writer token, lease ms, keep ms. Returns 1, or 0 when the session is no
/// longer a member (its grace ran out).
pub const TAKE: &str = r#"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
keep(ARGV[4])
return 1
"#;

/// Leaves. ARGV: session, channel, room. Idempotent.
pub const LEAVE: &str = r#"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then remove(ARGV[1], ARGV[2], ARGV[3]) end
return 1
"#;

/// A socket closed: its memberships stay for the grace period unless a newer socket of the
/// session holds them already. ARGV: session, writer token, grace ms, channel, room.
pub const RELEASE: &str = r#"
local now = now_ms()
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
end
sweep(now, ARGV[4], ARGV[5])
return 1
"#;

/// Renews this instance's memberships of one room, then removes the expired ones (theirs
/// sockets closed more than the grace ago, or their instance died). ARGV: lease ms, channel,
/// room, keep ms, history TTL ms, then session and writer token per membership.
/// Returns the sessions removed.
pub const RENEW: &str = r#"
local now = now_ms()
local until_ms = now + tonumber(ARGV[1])
for i = 6, #ARGV, 2 do
  if redis.call('HGET', KEYS[3], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i])
  end
end
local gone = sweep(now, ARGV[2], ARGV[3])
keep(ARGV[4])
if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('PEXPIRE', KEYS[5], ARGV[5]) end
return gone
"#;

/// What `GET /rooms/{R}` shows, after removing expired members. ARGV: channel, room, epoch
/// candidate, history TTL ms. Returns `{members, users, offset, epoch}`.
pub const INFO: &str = r#"
sweep(now_ms(), ARGV[1], ARGV[2])
local epoch = epoch_of(KEYS[5], KEYS[6], ARGV[3], ARGV[4])
return {redis.call('ZCARD', KEYS[1]), redis.call('HKEYS', KEYS[4]),
        tonumber(redis.call('HGET', KEYS[5], 'offset')), epoch}
"#;

/// `body` with the shared functions in front.
pub fn with_prelude(body: &str) -> String {
    format!("{STREAM_LUA}{PRELUDE}{body}")
}
