//! Building and running one node: [`Application::build`] connects to Redis and binds the
//! listener (keeping the address it really got, so tests can bind port 0);
//! [`Application::run_until_stopped`] serves until the given shutdown future resolves, then
//! drains (see [`crate::shutdown`]).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context;
use fred::clients::SubscriberClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    counter::WaitReplicas,
    fanout, heartbeat,
    history::History,
    http,
    metrics::Metrics,
    registry::{InstanceInfo, Registry},
    rooms::Rooms,
    shutdown,
    state::{AppState, Publishing, SharedState},
    store::Store,
};

/// File descriptors kept back from the socket budget: Redis connections, the listener,
/// log output and whatever the runtime opens.
const FD_RESERVE: u64 = 64;

pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    state: SharedState,
    subscriber: SubscriberClient,
    /// Ends the background tasks at the very end of the drain (see shutdown::drain).
    background: CancellationToken,
    /// The rooms' subscription task, started with the rooms.
    room_interest: tokio::task::JoinHandle<()>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let started = Instant::now();
        let metrics = Arc::new(Metrics::new(settings.color.as_str()));
        let max_connections = connection_limit(settings.max_connections)
            .context("failed to read or raise the open-file limit")?;
        let store = Store::connect(&settings.redis_url, settings.redis_timeout, metrics.clone())
            .await
            .context("failed to create the redis client")?;
        // REDIS_WAIT_REPLICAS: the increments get a connection of their own (see WaitReplicas).
        let wait = match settings.redis_wait_replicas {
            Some(replicas) => Some(WaitReplicas {
                replicas,
                connection: Store::connect(
                    &settings.redis_url,
                    settings.redis_timeout,
                    metrics.clone(),
                )
                .await
                .context("failed to create the redis client for increments")?,
            }),
            None => None,
        };
        let subscriber = Store::subscriber(&settings.redis_url, settings.redis_timeout)
            .await
            .context("failed to create the redis pub/sub client")?;
        let listener = TcpListener::bind(settings.bind_addr)
            .await
            .with_context(|| format!("failed to bind {}", settings.bind_addr))?;
        let address = listener
            .local_addr()
            .context("failed to read the bound address")?;

        let info = InstanceInfo {
            id: settings.instance_id.clone(),
            color: settings.color.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            addr: address.to_string(),
            started_at: crate::protocol::timestamp_now(),
        };
        let registry = Registry::new(
            store.clone(),
            info,
            settings.lease_period,
            settings.redis_timeout,
        );
        metrics.connections_max.set(max_connections as i64);
        metrics
            .startup_duration
            .set(started.elapsed().as_secs_f64());
        let background = CancellationToken::new();
        let history = Arc::new(History::new(
            store.clone(),
            settings.history_size,
            settings.history_ttl,
        ));
        let (rooms, room_interest) = Rooms::start(
            store.clone(),
            history.clone(),
            subscriber.clone(),
            &settings,
            metrics.clone(),
            background.clone(),
        );
        let state = Arc::new(AppState::new(
            settings,
            store,
            wait,
            registry,
            Publishing { rooms, history },
            metrics,
            max_connections,
        ));
        Ok(Application {
            listener,
            address,
            state,
            subscriber,
            background,
            room_interest,
        })
    }

    /// The address really bound (port 0 resolved).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn instance_id(&self) -> &str {
        self.state.registry.instance_id()
    }

    /// Serves until `shutdown` resolves, then drains and returns within `SHUTDOWN_TIMEOUT`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let settings = &state.settings;
        tracing::info!(
            address = %self.address,
            color = %settings.color,
            max_connections = state.max_connections,
            authentication = settings.auth.as_ref().map_or("off", |a| algorithm_name(a.algorithm())),
            "wsfleet listening"
        );
        if settings.auth.is_none() {
            tracing::warn!(
                "authentication is off: any client may open any session and call itself any user; set AUTH_SECRET, AUTH_SECRET_FILE or AUTH_PUBLIC_KEY_FILE in production"
            );
        }

        // Background work lives until the very end of the drain; see shutdown::drain.
        let background = self.background;
        let lease = tokio::spawn({
            let (state, cancel) = (state.clone(), background.clone());
            async move {
                let period = state.settings.lease_period;
                state
                    .registry
                    .keep_lease(period, &state.metrics, cancel)
                    .await
            }
        });
        let subscriber = tokio::spawn(fanout::run_subscriber(
            self.subscriber,
            state.store.clone(),
            settings.instance_id.clone(),
            state.fanout.clone(),
            state.rooms.clone(),
            state.metrics.clone(),
            background.clone(),
        ));
        let room_leases = tokio::spawn({
            let (rooms, cancel) = (state.rooms.clone(), background.clone());
            async move { rooms.keep_leases(cancel).await }
        });
        let heartbeat = tokio::spawn(heartbeat::run(
            state.store.clone(),
            settings.instance_id.clone(),
            settings.heartbeat_interval,
            state.metrics.clone(),
            background.clone(),
        ));

        let http_stop = CancellationToken::new();
        let limits = http::serve::Limits {
            header_timeout: settings.http_header_timeout,
            idle_timeout: settings.http_idle_timeout,
        };
        let mut server = tokio::spawn(http::serve::serve(
            self.listener,
            http::app(state.clone()),
            limits,
            http_stop.clone(),
        ));

        tokio::select! {
            _ = shutdown => {}
            result = &mut server => {
                background.cancel();
                return match result {
                    Ok(()) => Err(anyhow::anyhow!("the HTTP server stopped unexpectedly")),
                    Err(error) => Err(error).context("the HTTP server task panicked"),
                };
            }
        }
        shutdown::stop(
            &state,
            Instant::now(),
            shutdown::Background {
                cancel: background,
                tasks: vec![
                    lease,
                    subscriber,
                    heartbeat,
                    room_leases,
                    self.room_interest,
                ],
            },
            shutdown::Http {
                stop: http_stop,
                server,
            },
        )
        .await;
        Ok(())
    }
}

/// Raises the soft open-file limit to the hard one and derives how many sockets fit.
/// A `MAX_CONNECTIONS` above that is lowered to it, loudly: accepting sockets the process
/// cannot hold would turn into failed accepts instead of clean 503s.
fn connection_limit(configured: Option<usize>) -> std::io::Result<usize> {
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    let soft = rlimit::increase_nofile_limit(hard)?;
    let budget = soft.saturating_sub(FD_RESERVE).max(1) as usize;
    Ok(match configured {
        Some(wanted) if wanted > budget => {
            tracing::warn!(
                wanted,
                allowed = budget,
                open_file_limit = soft,
                "MAX_CONNECTIONS exceeds what the open-file limit allows; using the lower value (raise `ulimit -n` to go higher)"
            );
            budget
        }
        Some(wanted) => wanted,
        None => budget,
    })
}

/// The algorithm as the start-up log names it.
fn algorithm_name(algorithm: jsonwebtoken::Algorithm) -> &'static str {
    match algorithm {
        jsonwebtoken::Algorithm::HS256 => "HS256",
        jsonwebtoken::Algorithm::RS256 => "RS256",
        jsonwebtoken::Algorithm::ES256 => "ES256",
        _ => "other",
    }
}
