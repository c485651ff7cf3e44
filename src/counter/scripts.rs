//! The counter's Lua scripts. Each runs atomically in Redis, which is what makes fencing and
//! the no-repeat rules hold: nothing can run between a script's read and its write.
//!
//! The session hash `wsfleet:session:<id>` holds:
//! - `n`: the counter (absent until the first counted message);
//! - `w`: the writer token of the newest socket of the session (see [`CLAIM_LUA`]);
//! - `r:<room>`: one per room the session is in (written by src/rooms; a session with a room
//!   but no counter exists, and its welcome lists its rooms);
//! - `u`: the session's owner, the verified user (`sub`) that created it; absent for sessions
//!   created without authentication.

/// Claims a session for a new socket and reads its counter. KEYS[1]: the session; ARGV: the
/// socket's writer token, the TTL in ms, `last_count` (0 when the client gave none), and the
/// socket's verified user ('' or absent without authentication).
///
/// Ownership first: a session owned by another user is refused before anything is written,
/// so the owner's socket is not fenced and the TTL is not renewed; `{-1, 0, 0, {}}`. A verified
/// user that claims a session without an owner becomes its owner. Without authentication
/// ownership is neither checked nor recorded.
///
/// Writing the token fences every older socket of the session, on any instance: their
/// increments carry their own token and are refused from now on, so the count returned here
/// is exact (nothing an older socket had in flight can land after it). A `last_count` above
/// the stored counter (Redis lost data or restarted from an older dump) raises it.
///
/// Returns `{existed, count, repaired, rooms}`: whether Redis held a counter or a room of the
/// session, the count the socket starts from, whether `last_count` raised it, and the
/// session's rooms.
pub const CLAIM_LUA: &str = r"
local f = redis.call('HMGET', KEYS[1], 'n', 'u')
local user = ARGV[4] or ''
if user ~= '' and f[2] and f[2] ~= user then return {-1, 0, 0, {}} end
local existed = 0
if f[1] then existed = 1 end
local n = tonumber(f[1]) or 0
local rooms = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, 2) == 'r:' then rooms[#rooms + 1] = string.sub(field, 3) end
end
if #rooms > 0 then existed = 1 end
local repaired = 0
local floor = tonumber(ARGV[3])
if floor > n then
  n = floor
  repaired = 1
  redis.call('HSET', KEYS[1], 'n', n)
end
if user ~= '' and not f[2] then
  redis.call('HSET', KEYS[1], 'w', ARGV[1], 'u', user)
else
  redis.call('HSET', KEYS[1], 'w', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {existed, n, repaired, rooms}";

/// [`CLAIM_LUA`]'s `existed` for a session owned by another user.
pub const NOT_OWNER: i64 = -1;

/// The counting of one entry, shared by [`INCREMENT_BATCH_LUA`] and
/// [`INCREMENT_NODE_BATCH_LUA`] (a macro: `concat!` takes literals only).
macro_rules! count_lua {
    () => {
        r"local ttl = ARGV[1]
local function count(key, token, unsure, floor)
  local f = redis.call('HMGET', key, 'w', 'n')
  local n = tonumber(f[2]) or 0
  if f[1] then
    if f[1] ~= token then return -1 end
    if n > floor then
      if unsure == '1' then
        redis.call('PEXPIRE', key, ttl)
        return n
      end
      return -2
    end
  end
  if n < floor then n = floor end
  n = n + 1
  if f[1] then
    redis.call('HSET', key, 'n', n)
  else
    redis.call('HSET', key, 'n', n, 'w', token)
  end
  redis.call('PEXPIRE', key, ttl)
  return n
end
"
    };
}

/// Counts one message per entry. KEYS[i] is a session; ARGV[1] the TTL in ms, then three
/// values per entry: the socket's writer token, whether the socket has attempts in doubt
/// (answered `unavailable` since its last count: 1, else 0), and the highest count the socket
/// has told its client (its floor).
///
/// While `w` is this socket's token, no one else counts for the session, so the counter is the
/// floor unless attempts of this socket that it gave up on were run after all (Redis ran them
/// after the socket stopped waiting). Per entry, in order:
/// - another socket claimed the session since (`w` is not this token): -1, nothing counted;
/// - the counter is above the floor and this attempt has attempts in doubt before it: one of
///   them was counted, and this message is the client's resend of it, so that count is
///   answered again;
/// - the counter is above the floor and nothing was in doubt: a later attempt of this socket
///   was counted before this one arrived (a reconnect of the Redis connection reordered them),
///   so this one is old: -2, nothing counted;
/// - otherwise the counter goes up by one, from at least the floor: if Redis lost the session
///   (restart without data, an older dump, a TTL that ran out) the count continues above the
///   highest one the socket has told its client, and the socket claims the session again.
///
/// One entry failing (a key of the wrong type) answers that entry with nil; the others count.
pub const INCREMENT_BATCH_LUA: &str = concat!(
    count_lua!(),
    r"local out = {}
local a = 2
for i = 1, #KEYS do
  local ok, n = pcall(count, KEYS[i], ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]))
  out[i] = ok and n or false
  a = a + 3
end
return out"
);

/// [`INCREMENT_BATCH_LUA`] for the sessions of one Redis Cluster node, in several slots: one
/// call per node and batch instead of one per slot (with sessions spread over 16384 slots, a
/// batch has nearly as many slots as messages). A script's declared keys must share a slot, so
/// only KEYS[1] (the first entry's session, which routes the call) is declared; ARGV[1] is the
/// TTL, then four values per entry: its session key, then the three of
/// [`INCREMENT_BATCH_LUA`]. `allow-cross-slot-keys` (Redis 7) lets the script touch keys of
/// other slots of this node. A key whose slot moved to another node meanwhile fails its entry
/// alone (nil; the script does not stop): that socket's resend is `unsure` and safe, as after
/// any `unavailable`.
pub const INCREMENT_NODE_BATCH_LUA: &str = concat!(
    "#!lua flags=allow-cross-slot-keys\n",
    count_lua!(),
    r"local out = {}
local a = 2
for i = 1, (#ARGV - 1) / 4 do
  local ok, n = pcall(count, ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]))
  out[i] = ok and n or false
  a = a + 4
end
return out"
);

/// Answer of [`INCREMENT_BATCH_LUA`] for a fenced socket.
pub const FENCED: i64 = -1;
/// Answer of [`INCREMENT_BATCH_LUA`] for an attempt that arrived after a later one was counted.
pub const STALE: i64 = -2;
