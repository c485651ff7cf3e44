//! Redis access (fred): the connection, its failure policy, and Lua script calls. What is
//! stored under which key belongs to the module of each concern ([`crate::counter`],
//! [`crate::registry`], [`crate::heartbeat`], [`crate::fanout`]).
//!
//! Every command goes through [`Store::redis`], a handle that fails fast while the connection
//! is down, never retries a command that may have run (a retried `INCR` would skip a number)
//! and gives up after `--redis-timeout`. Callers turn an error into "unavailable"; nothing
//! waits on Redis without a bound.

use std::{future::Future, sync::Arc, time::Duration, time::Instant};

use fred::{
    clients::{Client, SubscriberClient, WithOptions},
    interfaces::ClientLike,
    prelude::{Builder, Config, ReconnectPolicy},
    types::{
        config::Options, scripts::Script, ClusterHash, CustomCommand, FromValue, MultipleKeys,
        MultipleValues, Value,
    },
};
use thiserror::Error;

use crate::metrics::{Metrics, OperationLabel};

/// All keys live under this prefix; see docs/DESIGN.md for the schema.
pub const KEY_PREFIX: &str = "wsfleet:";

/// The prefix of the fleet-wide keys (registry, heartbeat election) in a Redis Cluster: one
/// hash tag, so that the scripts reading several of them (the snapshot reads every instance's
/// record) run on one slot. Outside a cluster they keep their plain names under
/// [`KEY_PREFIX`], so that a promote from a version before cluster support shares them (see
/// docs/DESIGN.md, "Redis Cluster").
pub const CLUSTER_FLEET_PREFIX: &str = "wsfleet:{fleet}:";

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("redis returned an unexpected value: {0}")]
    Unexpected(String),
}

/// The shared Redis connection of one process.
///
/// Cloning is cheap: every clone talks over the same multiplexed connection.
#[derive(Clone)]
pub struct Store {
    /// Commands go through this: fail fast, one attempt, bounded wait.
    redis: WithOptions<Client>,
    /// Every call is timed and its failures counted here, by operation.
    metrics: Arc<Metrics>,
    /// `REDIS_URL` names a Redis Cluster (`redis-cluster://`).
    clustered: bool,
}

impl Store {
    /// Builds the client and starts connecting in the background. Returns at once if Redis is
    /// reachable within `timeout`; otherwise returns anyway (the fleet node starts unready and
    /// becomes ready when Redis comes up) after logging why.
    pub async fn connect(
        url: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let clustered = Config::from_url(url)?.server.is_clustered();
        let client =
            connect_client(|retry| Ok(builder(url, timeout, retry)?.build()?), timeout).await?;
        let options = Options {
            max_attempts: Some(1),
            timeout: Some(timeout),
            fail_fast: true,
            ..Default::default()
        };
        Ok(Store {
            redis: client.with_options(&options),
            metrics,
            clustered,
        })
    }

    /// A second connection for pub/sub, which Redis dedicates to subscriptions. It
    /// resubscribes by itself after a reconnect.
    pub async fn subscriber(url: &str, timeout: Duration) -> Result<SubscriberClient, StoreError> {
        let build = |retry| {
            Ok(builder(url, timeout, retry)?
                .with_performance_config(|perf| {
                    // fred's internal queue between the socket and our reader; a burst of
                    // broadcasts larger than this would be dropped before we see it.
                    perf.broadcast_channel_capacity = 4096;
                })
                .build_subscriber_client()?)
        };
        let client = connect_client(build, timeout).await?;
        let _resubscribe_task = client.manage_subscriptions();
        Ok(client)
    }

    pub fn redis(&self) -> &WithOptions<Client> {
        &self.redis
    }

    /// Where calls are recorded, for callers that record their own (a batch).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether this is a Redis Cluster: multi-key calls must then stay in one slot.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// The key of a fleet-wide `name` (`instances`, `heartbeat:leader`…): `wsfleet:<name>`, or
    /// `wsfleet:{fleet}:<name>` in a cluster (see [`CLUSTER_FLEET_PREFIX`]).
    pub fn fleet_key(&self, name: &str) -> String {
        let prefix = if self.clustered {
            CLUSTER_FLEET_PREFIX
        } else {
            KEY_PREFIX
        };
        format!("{prefix}{name}")
    }

    pub fn is_connected(&self) -> bool {
        self.redis.is_connected()
    }

    /// Runs a Lua script by its hash, loading it first when Redis does not have it (after a
    /// restart or `SCRIPT FLUSH`). `EVAL` both runs and caches it, so the retry is safe: the
    /// `NOSCRIPT` answer means nothing ran.
    ///
    /// Sent as custom commands because fred never pipelines its own `EVALSHA` (it waits for
    /// each reply before writing the next command on the connection, which would serialise
    /// every message of the process behind one round trip). Our scripts handle `NOSCRIPT`
    /// per call, which is the reason fred's default exists.
    pub async fn run<R, K, V>(
        &self,
        operation: &'static str,
        script: &Script,
        keys: K,
        args: V,
    ) -> Result<R, StoreError>
    where
        R: FromValue,
        K: Into<MultipleKeys> + Send,
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        let started = Instant::now();
        let result = self.run_untimed(script, keys, args).await;
        self.record(operation, started, result.is_err());
        result
    }

    /// [`Store::run`] without the metrics, for callers that record their own (a batch).
    pub async fn run_untimed<R, K, V>(
        &self,
        script: &Script,
        keys: K,
        args: V,
    ) -> Result<R, StoreError>
    where
        R: FromValue,
        K: Into<MultipleKeys> + Send,
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        let keys = keys.into().inner();
        // Routed by the first key (every key of a call is in one slot): fred's `FirstKey`
        // would hash the script's sha1, the first argument, and Redis would answer MOVED.
        let route = keys
            .first()
            .map(|key| fred::util::redis_keyslot(key.as_bytes()));
        let args = match args.try_into().map_err(Into::into)? {
            Value::Array(values) => values,
            Value::Null => Vec::new(),
            single => vec![single],
        };
        let mut tail: Vec<Value> = Vec::with_capacity(1 + keys.len() + args.len());
        tail.push(Value::from(keys.len() as i64));
        tail.extend(keys.into_iter().map(Value::from));
        tail.extend(args);

        let mut call = Vec::with_capacity(tail.len() + 1);
        call.push(Value::from(script.sha1().clone()));
        call.extend(tail.iter().cloned());
        match self
            .redis
            .custom::<R, _>(command("EVALSHA", route), call)
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                let lua = script.lua().expect("scripts are built from source").clone();
                let mut call = Vec::with_capacity(tail.len() + 1);
                call.push(Value::from(lua));
                call.extend(tail);
                Ok(self.redis.custom(command("EVAL", route), call).await?)
            }
            other => Ok(other?),
        }
    }

    /// Runs one Redis call, recording its duration and any failure under `operation`.
    pub async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.record(operation, started, result.is_err());
        Ok(result?)
    }

    fn record(&self, operation: &'static str, started: Instant, failed: bool) {
        let label = OperationLabel { operation };
        self.metrics
            .redis_duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if failed {
            self.metrics.redis_errors.get_or_create(&label).inc();
        }
    }
}

/// A non-blocking custom command, which fred pipelines; in a cluster it goes to the node of
/// `slot`.
fn command(name: &'static str, slot: Option<u16>) -> CustomCommand {
    let route = slot.map_or(ClusterHash::FirstKey, ClusterHash::Custom);
    CustomCommand::new_static(name, route, false)
}

/// `retry_first`: whether the first connection retries by the reconnect policy (see
/// [`connect_client`]); reconnects after a lost connection always do.
fn builder(url: &str, timeout: Duration, retry_first: bool) -> Result<Builder, StoreError> {
    let config = Config::from_url(url)?;
    let mut builder = Builder::from_config(config);
    builder
        .with_config(|c| {
            // Keep trying in the background when Redis is down at start-up instead of
            // failing the process: readiness reports the outage.
            c.fail_fast = !retry_first;
        })
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
        })
        // Forever, 100 ms doubling to 2 s, with jitter so a fleet does not reconnect in step.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(builder)
}

/// Builds a client with `build(retry_first)` and connects it. fred waits one reconnect delay
/// (100-200 ms with our policy) even before the very first attempt of a client that retries
/// it, which was most of the start-up time (docs/PROFILE.md). So a first client tries once,
/// at once; only when Redis is not there yet does a second one keep trying in the background.
async fn connect_client<C: ClientLike>(
    build: impl Fn(bool) -> Result<C, StoreError>,
    timeout: Duration,
) -> Result<C, StoreError> {
    let once = build(false)?;
    let _connection_task = once.connect();
    match tokio::time::timeout(timeout, once.wait_for_connect()).await {
        Ok(Ok(())) => return Ok(once),
        // Its one attempt failed and it stopped. Said once, with the cause: a refused TLS
        // handshake or a wrong password is otherwise invisible behind the retries.
        Ok(Err(error)) => tracing::warn!(%error, "redis: the first connection attempt failed"),
        // Still trying: stop it, so that it cannot connect later, unused.
        Err(_) => {
            let _ = tokio::time::timeout(Duration::from_millis(100), once.quit()).await;
        }
    }
    let client = build(true)?;
    start(&client, timeout).await;
    Ok(client)
}

async fn start<C: ClientLike>(client: &C, timeout: Duration) {
    let _connection_task = client.connect();
    match tokio::time::timeout(timeout, client.wait_for_connect()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "redis not reachable yet; retrying in the background")
        }
        Err(_) => tracing::warn!("redis not reachable yet; retrying in the background"),
    }
}
