//! The fleet heartbeat: exactly one `{"ts": …}` per interval for the whole fleet, published
//! by an elected instance.
//!
//! Election is a Redis lease (`wsfleet:heartbeat:leader`, TTL 2 intervals; under
//! `wsfleet:{fleet}:` in a Redis Cluster, with the last beat's key) taken and renewed
//! by one script that also publishes, so "am I the leader" and "publish" cannot be split by a
//! failover. Every instance runs the script once per interval; only the lease holder
//! publishes. When it dies its lease expires within 2 intervals and the next instance to tick
//! takes over, so the gap is under 3 intervals.
//!
//! Clocks: the pace of the beats is this process's monotonic clock (a tokio interval), never
//! a wall clock. Redis's clock (`TIME`, and the lease's expiry) is only consulted at a
//! hand-over, where it keeps a new leader from beating within 0.9 interval of the old one's
//! last beat (`wsfleet:heartbeat:last`). A step of Redis's clock therefore cannot stop the
//! beats:
//! - the lease holder beats at every tick, whatever the stored last-beat time says (the
//!   script once compared it with `TIME`; after a backward step `now - last` stayed below the
//!   spacing for as long as the step, and the leader skipped every beat);
//! - a last-beat time in the future means Redis's clock stepped back since: a lease that
//!   clock keeps alive may belong to a dead leader (a backward step postpones every expiry by
//!   the step), so a contender takes the lease over. It does not beat at that tick (the
//!   holder may be alive and have just beaten), but at its next one, as the holder: one gap
//!   under 2 intervals instead of no beats for as long as the step;
//! - a forward step expires the lease early (a hand-over, as when a leader dies), and the
//!   new leader sees the last beat long ago and beats.

use std::{sync::Arc, time::Duration};

use fred::types::scripts::Script;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::{
    fanout::channel_name,
    metrics::Metrics,
    protocol::{timestamp_now, ChannelMessage},
    store::{Store, StoreError},
};

/// Returns 0: another instance leads; 1: leading, no beat this tick; 2: published.
///
/// KEYS: leader, last beat. ARGV: instance, lease ms, channel, message, spacing ms. The
/// holder publishes at every call (its own monotonic tick paces it); a taker checks the last
/// beat by Redis's clock (see the module docs for why a future last beat is a clock step).
const BEAT_LUA: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local stepped_back = last > now
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and not stepped_back then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if cur ~= ARGV[1] then
  if cur then
    redis.call('SET', KEYS[2], now, 'PX', ARGV[2])
    return 1
  end
  if not stepped_back and now - last < tonumber(ARGV[5]) then return 1 end
end
redis.call('SET', KEYS[2], now, 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 2";

/// Gives the lease up, only if this instance still holds it.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

fn leader_key(store: &Store) -> String {
    store.fleet_key("heartbeat:leader")
}

fn last_beat_key(store: &Store) -> String {
    store.fleet_key("heartbeat:last")
}

/// Runs the election and publishes heartbeats until `cancel`, then releases the lease so a
/// sibling takes over at its next tick.
pub async fn run(
    store: Store,
    instance: String,
    interval: Duration,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let beat = Script::from_lua(BEAT_LUA);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let lease_ms = 2 * interval.as_millis() as u64;
    let min_spacing_ms = interval.as_millis() as u64 * 9 / 10;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                let message = serde_json::to_string(&ChannelMessage::Heartbeat { ts: timestamp_now() })
                    .expect("heartbeats serialize");
                let result: Result<i64, StoreError> = store
                    .run(
                        "heartbeat",
                        &beat,
                        vec![leader_key(&store), last_beat_key(&store)],
                        vec![
                            instance.clone(),
                            lease_ms.to_string(),
                            channel_name(),
                            message,
                            min_spacing_ms.to_string(),
                        ],
                    )
                    .await;
                match result {
                    Ok(2) => {
                        metrics.heartbeats_published.inc();
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "heartbeat election failed");
                    }
                }
            }
        }
    }
    let release = Script::from_lua(RELEASE_LUA);
    if let Err(error) = store
        .run::<i64, _, _>("heartbeat_release", &release, leader_key(&store), instance)
        .await
    {
        tracing::debug!(%error, "releasing the heartbeat lease failed");
    }
}
