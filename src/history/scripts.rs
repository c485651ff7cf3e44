//! The streams' Lua: the functions every stream script starts with (shared with the rooms'
//! scripts), publishing, and reading.

/// The stream functions, shared with the rooms' scripts (src/rooms/scripts.rs), whose stream
/// keys stand at other KEYS indexes: hence the keys as arguments.
///
/// `epoch_of(meta, history, candidate, ttl)`: the stream's epoch, made from `candidate` (with
/// offset 0 and an empty history) when `meta` is gone; `meta` lives `ttl` ms from now.
///
/// `position(meta, history, candidate, ttl, since, client_epoch)`: `offset, epoch, recovered,
/// missed`: where the stream stands and, with `since` ≥ 0, what came after it (recovered: -1
/// not asked, 0 impossible, 1 `missed` holds every frame after `since`, newest first).
pub const STREAM_LUA: &str = r#"
local function epoch_of(meta, history, candidate, ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = candidate
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
    redis.call('DEL', history)
  end
  redis.call('PEXPIRE', meta, ttl)
  return epoch
end
local function position(meta, history, candidate, ttl, since, client_epoch)
  local epoch = epoch_of(meta, history, candidate, ttl)
  local offset = tonumber(redis.call('HGET', meta, 'offset'))
  since = tonumber(since)
  local recovered = -1
  local missed = {}
  if since >= 0 then
    recovered = 0
    if client_epoch == epoch and since <= offset then
      local n = offset - since
      if n == 0 then
        recovered = 1
      elseif n <= redis.call('LLEN', history) then
        missed = redis.call('LRANGE', history, 0, n - 1)
        recovered = 1
      end
    end
  end
  return offset, epoch, recovered, missed
end
"#;

/// Publishes. KEYS: meta, history, and optionally an idempotency key. ARGV: epoch candidate,
/// frame head (the frame without offset, epoch and closing brace), history size, history TTL
/// ms, channel, `PUBLISH` or `SPUBLISH`. With an idempotency key that exists, publishes
/// nothing and returns what it holds.
/// Returns `{1 (published) or 0 (repeat), offset, epoch, what the key holds, receivers}`
/// (receivers: the instances the channel reached, as `PUBLISH` counts them).
pub(super) const PUBLISH_LUA: &str = r#"
local epoch = epoch_of(KEYS[1], KEYS[2], ARGV[1], ARGV[4])
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {0, 0, epoch, seen} end
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = ARGV[2] .. ',"offset":' .. offset .. ',"epoch":' .. cjson.encode(epoch) .. '}'
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('LPUSH', KEYS[2], frame)
  redis.call('LTRIM', KEYS[2], 0, size - 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if KEYS[3] then redis.call('SET', KEYS[3], offset .. ' ' .. epoch, 'PX', ARGV[4]) end
local receivers = redis.call(ARGV[6], ARGV[5], 'm ' .. offset .. ' ' .. epoch .. ' ' .. frame)
return {1, offset, epoch, '', receivers}
"#;

/// Reads where a stream stands and, with `since` ≥ 0, what came after it. KEYS: meta,
/// history. ARGV: epoch candidate, history TTL ms, since (-1: none), the client's epoch.
/// Returns `{offset, epoch, recovered (-1 not asked, 0, 1), frames newest first}`.
pub(super) const READ_LUA: &str = r#"
local offset, epoch, recovered, missed = position(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return {offset, epoch, recovered, missed}
"#;
