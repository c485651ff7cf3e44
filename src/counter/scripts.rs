//! The counter's Lua scripts. Each runs atomically in Redis, which is what makes fencing and
//! the no-repeat rules hold: nothing can run between a script's read and its write.
//!
//! The session hash `wsfleet:session:<id>` holds:
//! - `n`: the counter (absent until the first counted message);
//! - `w`: the writer token of the newest socket of the session (see [`CLAIM_LUA`]);
//! - `q`: the sequence number of that socket's attempt that was counted last.

/// Claims a session for a new socket and reads its counter. KEYS[1]: the session; ARGV: the
/// socket's writer token, the TTL in ms, and `last_count` (0 when the client gave none).
///
/// Writing the token fences every older socket of the session, on any instance: their
/// increments carry their own token and are refused from now on, so the count returned here
/// is exact (nothing an older socket had in flight can land after it). A `last_count` above
/// the stored counter (Redis lost data or restarted from an older dump) raises it.
///
/// Returns `{existed, count, repaired}`: whether Redis held a counter, the count the socket
/// starts from, and whether `last_count` raised it.
pub const CLAIM_LUA: &str = r"
local n = redis.call('HGET', KEYS[1], 'n')
local existed = 0
if n then existed = 1 end
n = tonumber(n) or 0
local repaired = 0
local floor = tonumber(ARGV[3])
if floor > n then
  n = floor
  repaired = 1
  redis.call('HSET', KEYS[1], 'n', n)
end
redis.call('HSET', KEYS[1], 'w', ARGV[1], 'q', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {existed, n, repaired}";

/// Counts one message per entry. KEYS[i] is a session; ARGV[1] the TTL in ms, then four
/// values per entry: the socket's writer token, the sequence number of this attempt on the
/// socket, the first of the socket's attempts still in doubt (answered `unavailable` since
/// its last count; 0: none), and the highest count the socket has seen (its floor).
///
/// Per entry, in order:
/// - another socket claimed the session since (`w` is not this token): -1, nothing counted;
/// - a later attempt of this socket was counted already (an old attempt delivered late, after
///   a reconnect of the Redis connection): -2, nothing counted;
/// - one of the attempts in doubt was counted after all (Redis ran it after the socket had
///   stopped waiting): this message is the client's resend of it, so the same count is
///   answered again;
/// - otherwise the counter goes up by one, from at least the floor: if Redis lost the session
///   (restart without data, an older dump, a TTL that ran out) the count continues above the
///   highest one the socket has told its client, and the socket claims the session again.
///
/// One entry failing (a key of the wrong type) answers that entry with nil; the others count.
pub const INCREMENT_BATCH_LUA: &str = r"
local ttl = ARGV[1]
local function count(key, token, seq, unsure, floor)
  local f = redis.call('HMGET', key, 'w', 'q', 'n')
  local n = tonumber(f[3]) or 0
  if f[1] then
    if f[1] ~= token then return -1 end
    local q = tonumber(f[2]) or 0
    if seq <= q then return -2 end
    if unsure > 0 and q >= unsure then
      redis.call('HSET', key, 'q', seq)
      redis.call('PEXPIRE', key, ttl)
      return n
    end
  end
  if n < floor then n = floor end
  n = n + 1
  redis.call('HSET', key, 'n', n, 'w', token, 'q', seq)
  redis.call('PEXPIRE', key, ttl)
  return n
end
local out = {}
local a = 2
for i = 1, #KEYS do
  local ok, n = pcall(count, KEYS[i], ARGV[a], tonumber(ARGV[a + 1]),
    tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
  out[i] = ok and n or false
  a = a + 4
end
return out";

/// Answer of [`INCREMENT_BATCH_LUA`] for a fenced socket.
pub const FENCED: i64 = -1;
/// Answer of [`INCREMENT_BATCH_LUA`] for an attempt that arrived after a later one.
pub const STALE: i64 = -2;
