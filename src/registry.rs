//! The fleet-wide registry in Redis: which instances are alive and which connections each
//! holds. Crash-safe by leases: every record expires unless its instance renews it, so a
//! SIGKILLed instance drops out of the fleet within 3 lease periods without anyone cleaning up.
//!
//! Keys (see docs/DESIGN.md; in a Redis Cluster each is under `wsfleet:{fleet}:` instead, one
//! slot for the scripts that read several: [`Store::fleet_key`]):
//! - `wsfleet:instances` — sorted set, instance id scored by its last renewal (ms).
//! - `wsfleet:instance:<id>` — hash of the instance's record, TTL 3 lease periods.
//! - `wsfleet:instance:<id>:conns` — hash connection id → session id, same TTL.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use fred::{
    interfaces::{KeysInterface, SortedSetsInterface},
    types::scripts::Script,
};
use serde::{Deserialize, Serialize};

use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    registry_writes::{Change, ConnectionWrites},
    store::{Store, StoreError},
};

/// Renews the instance record and its connection hash, and returns how many connections the
/// hash holds, so the caller can tell when Redis and the process disagree.
const RENEW_LUA: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'color', ARGV[3], 'version', ARGV[4],
  'addr', ARGV[5], 'started_at', ARGV[6], 'draining', ARGV[7], 'last_seen', now)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return redis.call('HLEN', KEYS[3])";

/// Replaces the connection hash with the given pairs (ARGV[1] is the TTL), atomically.
const RESYNC_LUA: &str = r"
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return (#ARGV - 1) / 2";

/// Every live instance with its connection count, as JSON; forgets index entries whose
/// record expired (instances that crashed).
const SNAPSHOT_LUA: &str = r"
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local h = redis.call('HGETALL', key)
  if #h == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    local rec = {}
    for i = 1, #h, 2 do rec[h[i]] = h[i + 1] end
    rec['connections'] = redis.call('HLEN', key .. ':conns')
    table.insert(out, rec)
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)";

/// One live instance as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub color: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub addr: String,
    #[serde(default, deserialize_with = "flag")]
    pub draining: bool,
    /// Milliseconds since the Unix epoch, by Redis's clock.
    #[serde(deserialize_with = "number")]
    pub last_seen: u64,
    pub connections: u64,
}

/// What this instance tells the registry about itself.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub id: String,
    pub color: String,
    pub version: String,
    pub addr: String,
    pub started_at: String,
}

/// This process's side of the registry: the local truth (which sockets it holds) and the
/// calls that mirror it into Redis.
pub struct Registry {
    store: Store,
    info: InstanceInfo,
    /// Records live this long without renewal: 3 lease periods.
    ttl_ms: u64,
    /// Connection id → session id of every socket this process holds. The source the Redis
    /// hash is rebuilt from after Redis lost its data.
    local: Mutex<HashMap<u64, Arc<str>>>,
    draining: AtomicBool,
    /// Fleet-wide connection count from the last successful snapshot.
    fleet_connections: AtomicU64,
    /// Renewals in a row at which Redis's count differed from ours (see `renew`).
    mismatches: AtomicU64,
    /// False until the first renewal, which always rewrites the hash: a process reusing a
    /// crashed instance's id must not inherit its leftover connections.
    synced_once: AtomicBool,
    renew: Script,
    resync: Script,
    snapshot: Script,
    /// Connects and disconnects, batched into the connection hash.
    writes: ConnectionWrites,
}

impl Registry {
    /// Starts the task that writes connections into Redis; each write waits at most `timeout`.
    pub fn new(
        store: Store,
        info: InstanceInfo,
        lease_period: Duration,
        timeout: Duration,
    ) -> Self {
        let ttl_ms = 3 * lease_period.as_millis() as u64;
        let conns_key = conns_key(&store, &info.id);
        Registry {
            writes: ConnectionWrites::start(store.clone(), conns_key, ttl_ms, timeout),
            store,
            info,
            ttl_ms,
            local: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            fleet_connections: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            synced_once: AtomicBool::new(false),
            renew: Script::from_lua(RENEW_LUA),
            resync: Script::from_lua(RESYNC_LUA),
            snapshot: Script::from_lua(SNAPSHOT_LUA),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.info.id
    }

    fn instance_key(&self) -> String {
        self.store.fleet_key(&format!("instance:{}", self.info.id))
    }

    fn conns_key(&self) -> String {
        conns_key(&self.store, &self.info.id)
    }

    /// Records a new socket locally and in Redis. A Redis failure is returned but the local
    /// record stays: the next renewal repairs Redis.
    pub async fn add_connection(&self, conn_id: u64, session: Arc<str>) -> Result<(), StoreError> {
        self.local
            .lock()
            .expect("registry lock poisoned")
            .insert(conn_id, session.clone());
        self.writes.apply(Change::Add { conn_id, session }).await
    }

    pub async fn remove_connection(&self, conn_id: u64) -> Result<(), StoreError> {
        self.local
            .lock()
            .expect("registry lock poisoned")
            .remove(&conn_id);
        self.writes.apply(Change::Remove { conn_id }).await
    }

    /// Renews this instance's lease every `period` and refreshes the fleet count, until
    /// `cancel`. A failure is logged once per outage; the next tick tries again.
    pub async fn keep_lease(&self, period: Duration, metrics: &Metrics, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(period);
        let mut redis_up = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let result = match self.renew().await {
                        Ok(()) => self.snapshot().await.map(drop),
                        Err(error) => Err(error),
                    };
                    match result {
                        Ok(()) => {
                            if !redis_up {
                                tracing::info!("redis reachable again; registry renewed");
                            }
                            redis_up = true;
                            metrics.fleet_connections.set(self.fleet_connections() as i64);
                        }
                        Err(error) => {
                            if redis_up {
                                tracing::warn!(%error, "registry lease renewal failed");
                            }
                            redis_up = false;
                        }
                    }
                    metrics.redis_available.set(i64::from(redis_up));
                }
            }
        }
    }

    /// Renews this instance's lease and repairs its connection hash when Redis disagrees with
    /// the process: at once when Redis lost everything (a restart without data), otherwise
    /// after two renewals in a row (one may just race a connect or disconnect in flight), which
    /// also clears entries left by a failed `HDEL` during a Redis blip.
    pub async fn renew(&self) -> Result<(), StoreError> {
        let draining = if self.draining.load(Ordering::Relaxed) {
            "1"
        } else {
            "0"
        };
        let registered: u64 = self
            .store
            .run(
                "renew",
                &self.renew,
                vec![
                    self.store.fleet_key("instances"),
                    self.instance_key(),
                    self.conns_key(),
                ],
                vec![
                    self.info.id.clone(),
                    self.ttl_ms.to_string(),
                    self.info.color.clone(),
                    self.info.version.clone(),
                    self.info.addr.clone(),
                    self.info.started_at.clone(),
                    draining.to_string(),
                ],
            )
            .await?;
        let held = self.local.lock().expect("registry lock poisoned").len() as u64;
        if registered == held {
            self.mismatches.store(0, Ordering::Relaxed);
            self.synced_once.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let strikes = self.mismatches.fetch_add(1, Ordering::Relaxed) + 1;
        if registered == 0 || strikes >= 2 || !self.synced_once.load(Ordering::Relaxed) {
            self.resync_connections(registered, held).await?;
            self.mismatches.store(0, Ordering::Relaxed);
            self.synced_once.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn resync_connections(&self, registered: u64, held: u64) -> Result<(), StoreError> {
        let mut args: Vec<String> = vec![self.ttl_ms.to_string()];
        {
            let local = self.local.lock().expect("registry lock poisoned");
            for (id, session) in local.iter() {
                args.push(id.to_string());
                args.push(session.to_string());
            }
        }
        tracing::info!(
            registered,
            held,
            "rewriting this instance's connections in redis"
        );
        let _: i64 = self
            .store
            .run("resync", &self.resync, self.conns_key(), args)
            .await?;
        Ok(())
    }

    /// Every live instance, from Redis. Also refreshes the cached fleet-wide count.
    pub async fn snapshot(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let json: String = self
            .store
            .run(
                "snapshot",
                &self.snapshot,
                self.store.fleet_key("instances"),
                self.store.fleet_key("instance:"),
            )
            .await?;
        let records: Vec<InstanceRecord> =
            serde_json::from_str(&json).map_err(|e| StoreError::Unexpected(e.to_string()))?;
        let total = records.iter().map(|r| r.connections).sum();
        self.fleet_connections.store(total, Ordering::Relaxed);
        Ok(records)
    }

    /// The fleet-wide connection count from the last snapshot.
    pub fn fleet_connections(&self) -> u64 {
        self.fleet_connections.load(Ordering::Relaxed)
    }

    /// Marks this instance draining in Redis, so siblings polling the fleet see it.
    pub async fn set_draining(&self) -> Result<(), StoreError> {
        self.draining.store(true, Ordering::Relaxed);
        self.renew().await
    }

    /// Forgets every connection of this instance (after its sockets are closed).
    pub async fn remove_all_connections(&self) -> Result<(), StoreError> {
        self.local.lock().expect("registry lock poisoned").clear();
        let redis = self.store.redis();
        self.store
            .timed("deregister", redis.del::<i64, _>(self.conns_key()))
            .await
            .map(drop)
    }

    /// Removes this instance from the registry entirely (last step of shutdown).
    pub async fn deregister(&self) -> Result<(), StoreError> {
        let redis = self.store.redis();
        let keys = vec![self.instance_key(), self.conns_key()];
        let index = self.store.fleet_key("instances");
        self.store
            .timed("deregister", redis.del::<i64, _>(keys))
            .await?;
        self.store
            .timed(
                "deregister",
                redis.zrem::<i64, _, _>(index, self.info.id.clone()),
            )
            .await?;
        Ok(())
    }
}

fn conns_key(store: &Store, instance_id: &str) -> String {
    store.fleet_key(&format!("instance:{instance_id}:conns"))
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(matches!(v.as_str(), Some("1") | Some("true")) || v.as_u64() == Some(1))
}

fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| serde::de::Error::custom(format!("not a number: {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_records_parse_from_the_scripts_json() {
        let json = r#"[{"id":"a","color":"blue","version":"0.1.0","addr":"127.0.0.1:1",
            "started_at":"x","draining":"1","last_seen":"1700000000000","connections":3}]"#;
        let records: Vec<InstanceRecord> = serde_json::from_str(json).unwrap();
        assert_eq!(records[0].connections, 3);
        assert!(records[0].draining);
        assert_eq!(records[0].last_seen, 1_700_000_000_000);
    }
}
