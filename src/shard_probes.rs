//! Readiness in a Redis Cluster: proof that the subscriber's connection to every shard
//! delivers.
//!
//! Rooms fan out through sharded pub/sub: a room's channel (`wsfleet:{room:R}`) is subscribed
//! (`SSUBSCRIBE`) on the primary that owns its slot, so the subscriber holds one connection
//! per primary, and any one of them can be down while the others (and `PING`) answer. So in a
//! cluster the subscriber task also subscribes, for every primary of fred's cached cluster
//! state, to one probe channel whose slot that primary owns (`wsfleet:{probe:N}`), and
//! `SPUBLISH`es a probe on each every [`PROBE_INTERVAL`](crate::fanout::PROBE_INTERVAL).
//! Readiness requires each of them seen within
//! [`SUBSCRIPTION_FRESHNESS`](crate::fanout::SUBSCRIPTION_FRESHNESS).
//!
//! A shard whose probe stays unseen is resubscribed by the task: its probe channel and every
//! room channel this process follows on that primary. fred resubscribes after a reconnect by
//! itself, but stops at the first shard that fails (a primary still down), leaving the shards
//! after it unsubscribed; and after a failover the slots have a new primary that holds none of
//! our subscriptions until they are sent again.
//!
//! Outside a cluster nothing here runs and [`ShardProbes::is_live`] is always true: the one
//! server's subscription is proven by the fleet channel's probe (src/fanout.rs).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use fred::{
    clients::SubscriberClient,
    interfaces::{ClusterInterface, PubsubInterface},
    types::config::Server,
};

use crate::{
    fanout::SUBSCRIPTION_FRESHNESS,
    store::{Store, KEY_PREFIX},
};

/// The probe channels' names: `wsfleet:{probe:<n>}`.
const PROBE_TAG: &str = "{probe:";

/// A shard is resubscribed at most this often while its probe is not seen.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);

/// The shard probes of one process (see the module docs).
pub struct ShardProbes {
    /// Set once the subscriber task finds the Redis is a cluster.
    clustered: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The probe channel of each primary, as of the last tick.
    required: Vec<String>,
    /// When each probe channel last delivered.
    seen: HashMap<String, Instant>,
    /// When each probe channel's shard was last (re)subscribed.
    subscribed: HashMap<String, Instant>,
}

impl Default for ShardProbes {
    fn default() -> Self {
        ShardProbes {
            clustered: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }
}

impl ShardProbes {
    /// Whether every primary's probe came through within the freshness window; always true
    /// outside a cluster.
    pub fn is_live(&self) -> bool {
        if !self.clustered.load(Ordering::Relaxed) {
            return true;
        }
        let state = self.state.lock().expect("probes lock");
        !state.required.is_empty()
            && state
                .required
                .iter()
                .all(|channel| fresh(state.seen.get(channel)))
    }

    /// Records a probe's delivery; `false` when `channel` is not a probe channel.
    pub fn deliver(&self, channel: &str) -> bool {
        let is_probe = channel
            .strip_prefix(KEY_PREFIX)
            .is_some_and(|rest| rest.starts_with(PROBE_TAG));
        if is_probe {
            let mut state = self.state.lock().expect("probes lock");
            state.seen.insert(channel.to_string(), Instant::now());
        }
        is_probe
    }

    /// Forgets every delivery: a subscriber connection dropped, and which shard it was is not
    /// worth telling apart (the live ones prove themselves again within a probe retry).
    pub fn forget_deliveries(&self) {
        self.state.lock().expect("probes lock").seen.clear();
    }

    /// One probe round (called by the subscriber task every probe tick, in a cluster only):
    /// finds each primary's probe channel in fred's cached cluster state, resubscribes the
    /// shards whose probe is not fresh, and publishes a probe on every one.
    pub async fn tick(&self, client: &SubscriberClient, store: &Store, probe: &str) {
        self.clustered.store(true, Ordering::Relaxed);
        let Some(routing) = client.cached_cluster_state() else {
            return;
        };
        let channels: Vec<(String, Server)> = routing
            .unique_primary_nodes()
            .into_iter()
            .filter_map(|primary| {
                let channel = probe_channel_on(&primary, |slot| routing.get_server(slot))?;
                Some((channel, primary))
            })
            .collect();
        let stale: Vec<(String, Server)> = {
            let mut state = self.state.lock().expect("probes lock");
            state.required = channels.iter().map(|(c, _)| c.clone()).collect();
            let now = Instant::now();
            let stale: Vec<_> = channels
                .iter()
                .filter(|(channel, _)| !fresh(state.seen.get(channel)))
                .filter(|(channel, _)| {
                    state
                        .subscribed
                        .get(channel)
                        .is_none_or(|at| now.duration_since(*at) >= RESUBSCRIBE_EVERY)
                })
                .cloned()
                .collect();
            for (channel, _) in &stale {
                state.subscribed.insert(channel.clone(), now);
            }
            stale
        };
        for (channel, primary) in &stale {
            // The probe channel and every room channel this process follows on that primary,
            // one SSUBSCRIBE per slot (Redis wants one slot per command).
            let mut by_slot: HashMap<u16, Vec<String>> = HashMap::new();
            by_slot
                .entry(fred::util::redis_keyslot(channel.as_bytes()))
                .or_default()
                .push(channel.clone());
            for tracked in client.tracked_shard_channels() {
                let slot = fred::util::redis_keyslot(tracked.as_bytes());
                if routing.get_server(slot) == Some(primary) && &*tracked != channel.as_str() {
                    by_slot.entry(slot).or_default().push(tracked.to_string());
                }
            }
            for (_, group) in by_slot {
                if let Err(error) = client.ssubscribe(group).await {
                    crate::warn_throttled!(%error, %primary, "resubscribing a shard failed");
                    break;
                }
            }
        }
        for (channel, _) in &channels {
            let call = store.redis().spublish::<i64, _, _>(channel.clone(), probe);
            if let Err(error) = store.timed("publish", call).await {
                tracing::debug!(%error, channel, "shard probe publish failed");
            }
        }
    }
}

fn fresh(seen: Option<&Instant>) -> bool {
    seen.is_some_and(|at| at.elapsed() <= SUBSCRIPTION_FRESHNESS)
}

/// The first `wsfleet:{probe:<n>}` whose slot `owner_of` says `primary` owns.
fn probe_channel_on<'a>(
    primary: &Server,
    owner_of: impl Fn(u16) -> Option<&'a Server>,
) -> Option<String> {
    (0..100_000u32)
        .map(|n| format!("{KEY_PREFIX}{PROBE_TAG}{n}}}"))
        .find(|channel| owner_of(fred::util::redis_keyslot(channel.as_bytes())) == Some(primary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_primary_gets_a_probe_channel_in_its_own_slots() {
        let primaries: Vec<Server> = (0..3).map(|i| Server::new("127.0.0.1", 7000 + i)).collect();
        // Three equal ranges, as `redis-cli --cluster create` makes them.
        let owner = |slot: u16| Some(&primaries[(slot / 5462) as usize]);
        for (i, primary) in primaries.iter().enumerate() {
            let channel = probe_channel_on(primary, owner).unwrap();
            assert!(channel.starts_with("wsfleet:{probe:"), "{channel}");
            let slot = fred::util::redis_keyslot(channel.as_bytes());
            assert_eq!(slot as usize / 5462, i, "{channel} in slot {slot}");
        }
    }

    #[test]
    fn only_probe_channels_count_and_outside_a_cluster_it_is_always_live() {
        let probes = ShardProbes::default();
        assert!(probes.is_live());
        assert!(!probes.deliver("wsfleet:{room:lobby}"));
        assert!(!probes.deliver("wsfleet:fanout"));
        assert!(probes.deliver("wsfleet:{probe:3}"));
        probes.clustered.store(true, Ordering::Relaxed);
        // Nothing required yet: a cluster whose state is unknown is not proven.
        assert!(!probes.is_live());
        probes.state.lock().unwrap().required = vec!["wsfleet:{probe:3}".into()];
        assert!(probes.is_live());
        probes.forget_deliveries();
        assert!(!probes.is_live());
    }
}
