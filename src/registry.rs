//! The fleet-wide registry in Redis: which instances are alive and which connections each
//! holds. Crash-safe by leases: every record expires unless its instance renews it, so a
//! SIGKILLed instance drops out of the fleet within 3 lease periods without anyone cleaning up.
//!
//! Keys (see docs/DESIGN.md):
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
    interfaces::{HashesInterface, KeysInterface, SortedSetsInterface},
    types::scripts::Script,
};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, KEY_PREFIX};

/// Renews the instance record and reports whether its connection hash still exists (0 after
/// Redis lost its data, so the caller knows to re-register what it holds).
const RENEW_LUA: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'color', ARGV[3], 'version', ARGV[4],
  'addr', ARGV[5], 'started_at', ARGV[6], 'draining', ARGV[7], 'last_seen', now)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
return redis.call('PEXPIRE', KEYS[3], ARGV[2])";

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

/// Adds one connection and keeps the hash under lease even if it was just created.
const REGISTER_LUA: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('PEXPIRE', KEYS[1], ARGV[3])";

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
    renew: Script,
    snapshot: Script,
    register: Script,
}

impl Registry {
    pub fn new(store: Store, info: InstanceInfo, lease_period: Duration) -> Self {
        Registry {
            store,
            info,
            ttl_ms: 3 * lease_period.as_millis() as u64,
            local: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            fleet_connections: AtomicU64::new(0),
            renew: Script::from_lua(RENEW_LUA),
            snapshot: Script::from_lua(SNAPSHOT_LUA),
            register: Script::from_lua(REGISTER_LUA),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.info.id
    }

    fn instance_key(&self) -> String {
        format!("{KEY_PREFIX}instance:{}", self.info.id)
    }

    fn conns_key(&self) -> String {
        format!("{KEY_PREFIX}instance:{}:conns", self.info.id)
    }

    /// Records a new socket locally and in Redis. A Redis failure is returned but the local
    /// record stays: the next renewal repairs Redis.
    pub async fn add_connection(&self, conn_id: u64, session: Arc<str>) -> Result<(), StoreError> {
        self.local
            .lock()
            .expect("registry lock poisoned")
            .insert(conn_id, session.clone());
        self.store
            .run::<i64, _, _>(
                "register",
                &self.register,
                self.conns_key(),
                (conn_id.to_string(), session.to_string(), self.ttl_ms as i64),
            )
            .await
            .map(drop)
    }

    pub async fn remove_connection(&self, conn_id: u64) -> Result<(), StoreError> {
        self.local
            .lock()
            .expect("registry lock poisoned")
            .remove(&conn_id);
        let redis = self.store.redis();
        self.store
            .timed(
                "unregister",
                redis.hdel::<i64, _, _>(self.conns_key(), conn_id.to_string()),
            )
            .await
            .map(drop)
    }

    /// Renews this instance's lease; re-registers every local connection if Redis lost them.
    pub async fn renew(&self) -> Result<(), StoreError> {
        let draining = if self.draining.load(Ordering::Relaxed) {
            "1"
        } else {
            "0"
        };
        let conns_existed: i64 = self
            .store
            .run(
                "renew",
                &self.renew,
                vec![
                    format!("{KEY_PREFIX}instances"),
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
        if conns_existed == 0 {
            self.reregister_connections().await?;
        }
        Ok(())
    }

    async fn reregister_connections(&self) -> Result<(), StoreError> {
        let pairs: Vec<(String, String)> = {
            let local = self.local.lock().expect("registry lock poisoned");
            local
                .iter()
                .map(|(id, session)| (id.to_string(), session.to_string()))
                .collect()
        };
        if pairs.is_empty() {
            return Ok(());
        }
        tracing::info!(
            connections = pairs.len(),
            "re-registering connections lost by redis"
        );
        // Chunked so that one call stays small even with ~20k sockets.
        let redis = self.store.redis();
        for chunk in pairs.chunks(1000) {
            let _: i64 = self
                .store
                .timed("reregister", redis.hset(self.conns_key(), chunk.to_vec()))
                .await?;
        }
        let _: i64 = self
            .store
            .timed(
                "reregister",
                redis.pexpire(self.conns_key(), self.ttl_ms as i64, None),
            )
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
                format!("{KEY_PREFIX}instances"),
                format!("{KEY_PREFIX}instance:"),
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
        let index = format!("{KEY_PREFIX}instances");
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
