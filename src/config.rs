//! Configuration: one clap struct (flags with environment fallbacks, `--help` from the doc
//! comments), turned into [`Settings`] with real types before anything is bound or connected.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
use thiserror::Error;

mod duration;
mod redis_url;
mod secrets;
pub use duration::parse_duration;
use duration::{
    parse_bounded, parse_positive, MAX_HISTORY_TTL_SECS, MAX_HTTP_TIMEOUT_SECS, MAX_INTERVAL_SECS,
    MAX_LEASE_PERIOD_SECS, MAX_PRESENCE_GRACE_SECS, MAX_REDIS_TIMEOUT_SECS, MAX_SESSION_TTL_SECS,
    MAX_SHUTDOWN_SECS,
};
use redis_url::check_redis_url;
#[cfg(test)]
use redis_url::redact_password;

/// Deployment colour of an instance (blue-green).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A string that never shows in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// wsfleet: one node of a Redis-backed WebSocket fleet.
#[derive(Debug, Parser)]
#[command(name = "wsfleet", version)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0:8000")]
    pub bind_addr: SocketAddr,

    /// Redis holding counters, the registry and the pub/sub channel: `redis://` or `rediss://`
    /// (TLS; the CA from the system roots, or SSL_CERT_FILE) for one server,
    /// `redis-sentinel://h:p?node=h2:p2&sentinelServiceName=NAME` (or `rediss-sentinel://`)
    /// for a Sentinel-managed primary, `redis-cluster://h:p?node=h2:p2&node=h3:p3` (or
    /// `rediss-cluster://`) for a Redis Cluster.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Name of this instance in the registry (default: unique per process).
    #[arg(long, env = "INSTANCE_ID", value_parser = parse_instance_id)]
    pub instance_id: Option<String>,

    /// Deployment colour.
    #[arg(long, env = "COLOR", value_enum, default_value_t = Color::Blue)]
    pub color: Color,

    /// How often the fleet sends `{"ts": …}` to every socket (at most 1h).
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_positive::<MAX_INTERVAL_SECS>)]
    pub heartbeat_interval: Duration,

    /// How often each socket is pinged; no pong for two intervals closes it (at most 1h).
    #[arg(long, env = "PING_INTERVAL", default_value = "20s", value_parser = parse_positive::<MAX_INTERVAL_SECS>)]
    pub ping_interval: Duration,

    /// Longest time from SIGTERM/SIGINT to exit (at most 1h).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_positive::<MAX_SHUTDOWN_SECS>)]
    pub shutdown_timeout: Duration,

    /// Window over which a drain spreads its closes (less than half of SHUTDOWN_TIMEOUT).
    #[arg(long, env = "DRAIN_SPREAD", default_value = "2s", value_parser = parse_bounded::<MAX_SHUTDOWN_SECS>)]
    pub drain_spread: Duration,

    /// Idle time after which a session's counter is forgotten (renewed by every message; at
    /// most 365 days).
    #[arg(long, env = "SESSION_TTL", default_value = "24h", value_parser = parse_positive::<MAX_SESSION_TTL_SECS>)]
    pub session_ttl: Duration,

    /// Bearer token for `POST /broadcast`; unset, the endpoint refuses every request.
    #[arg(long, env = "BROADCAST_TOKEN", hide_env_values = true)]
    pub broadcast_token: Option<String>,

    /// File holding the `POST /broadcast` token instead of BROADCAST_TOKEN (trailing newlines
    /// are not part of it).
    #[arg(long, env = "BROADCAST_TOKEN_FILE")]
    pub broadcast_token_file: Option<PathBuf>,

    /// HS256 secret (at least 32 bytes): turns authentication on; every upgrade then needs a
    /// JWT signed with it.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// File holding AUTH_SECRET instead (trailing newlines are not part of it).
    #[arg(long, env = "AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,

    /// PEM public key (RSA: RS256, P-256: ES256): turns authentication on; every upgrade then
    /// needs a JWT signed with the matching private key.
    #[arg(long, env = "AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<PathBuf>,

    /// Largest text frame accepted; a larger one closes the socket with 1009.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub max_message_bytes: u64,

    /// Fan-out frames (heartbeats, broadcasts) a socket may fall behind before it is closed
    /// 1013 as a slow consumer and released; rounded up to a power of two. The fan-out keeps
    /// this many recent frames in memory.
    // At least 16: a burst of a few broadcasts must not cut off a socket that reads. At most
    // 16384: the rings then hold up to 16384 frames (1 GiB of 64 KiB broadcasts).
    #[arg(long, env = "SEND_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=16384))]
    pub send_queue: u64,

    /// Messages per second per connection (burst of one second); above it, close 1008. 0 disables.
    #[arg(long, env = "RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,

    /// Most sockets this process holds; further upgrades get 503 (default: what the open-file
    /// limit allows).
    #[arg(long, env = "MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Comma-separated Origin values allowed to open a socket (default: any; requests without
    /// an Origin header, i.e. non-browser clients, are always allowed).
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Log output: one JSON object per line, or pretty for humans.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Registry lease: renewed this often, an instance that stops renewing leaves the fleet
    /// within 3 periods (at most 10m).
    #[arg(long, env = "LEASE_PERIOD", default_value = "5s", value_parser = parse_positive::<MAX_LEASE_PERIOD_SECS>)]
    pub lease_period: Duration,

    /// Longest wait for any one Redis command before it counts as unavailable (at most 1m).
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "2s", value_parser = parse_positive::<MAX_REDIS_TIMEOUT_SECS>)]
    pub redis_timeout: Duration,

    /// Replicas that must acknowledge each batch of counted messages (Redis `WAIT`) before
    /// their counts are sent; fewer within half of REDIS_TIMEOUT answers `unavailable` (the
    /// client's resend gets the same count). 0: no wait.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub redis_wait_replicas: u32,

    /// Plain HTTP: a request's headers must arrive within this (from the accept, or from its
    /// first byte on a kept-alive connection), else the connection is closed.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive::<MAX_HTTP_TIMEOUT_SECS>)]
    pub http_header_timeout: Duration,

    /// Plain HTTP: a kept-alive connection waiting this long for its next request is closed.
    /// Upgraded WebSockets are not affected.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_positive::<MAX_HTTP_TIMEOUT_SECS>)]
    pub http_idle_timeout: Duration,

    /// Rooms: how long a session stays in its rooms after its last socket closed (longer than
    /// a drain's reconnect, so drains cause no leave/join churn; at most 1h).
    #[arg(long, env = "PRESENCE_GRACE", default_value = "15s", value_parser = parse_bounded::<MAX_PRESENCE_GRACE_SECS>)]
    pub presence_grace: Duration,

    /// Rooms: most rooms one session may be in.
    #[arg(long, env = "MAX_ROOMS", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_rooms: u64,

    /// Publications each room (and the broadcast stream) keeps for recovery.
    #[arg(long, env = "HISTORY_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub history_size: u64,

    /// How long history is kept after a stream's newest publication (at most 7 days).
    #[arg(long, env = "HISTORY_TTL", default_value = "10m", value_parser = parse_positive::<MAX_HISTORY_TTL_SECS>)]
    pub history_ttl: Duration,
}

/// Validated configuration, with real types, ready for [`crate::startup::Application::build`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind_addr: SocketAddr,
    pub redis_url: String,
    pub instance_id: String,
    pub color: Color,
    pub heartbeat_interval: Duration,
    pub ping_interval: Duration,
    pub shutdown_timeout: Duration,
    pub drain_spread: Duration,
    pub session_ttl: Duration,
    pub broadcast_token: Option<Secret>,
    /// Verifies upgrade tokens; `None`: authentication is off (development).
    pub auth: Option<crate::identity::Verifier>,
    pub max_message_bytes: usize,
    /// `SEND_QUEUE`, a power of two (the fan-out rings' size).
    pub send_queue: usize,
    /// `None`: no rate limit.
    pub rate_limit: Option<u32>,
    /// `None`: derived from the open-file limit at start-up.
    pub max_connections: Option<usize>,
    pub allowed_origins: Vec<String>,
    pub log_format: LogFormat,
    pub lease_period: Duration,
    pub redis_timeout: Duration,
    /// `REDIS_WAIT_REPLICAS`; `None`: no `WAIT`.
    pub redis_wait_replicas: Option<u32>,
    pub http_header_timeout: Duration,
    pub http_idle_timeout: Duration,
    pub presence_grace: Duration,
    pub max_rooms: usize,
    pub history_size: u64,
    pub history_ttl: Duration,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    /// `url` has its password replaced by `***` (see `redis_url::redact_password`).
    #[error("invalid REDIS_URL {url:?}: {reason}")]
    RedisUrl { url: String, reason: String },
    #[error(
        "DRAIN_SPREAD ({spread:?}) must be shorter than half of SHUTDOWN_TIMEOUT ({timeout:?})"
    )]
    DrainSpread { spread: Duration, timeout: Duration },
    #[error("ALLOWED_ORIGINS has an empty entry")]
    EmptyOrigin,
    #[error("BROADCAST_TOKEN is set but empty; unset it to disable /broadcast")]
    EmptyToken,
    #[error("{0} is set but empty")]
    EmptySecret(&'static str),
    #[error("{0} and {0}_FILE are both set; set one")]
    SecretTwice(&'static str),
    #[error("cannot read {name}_FILE {path:?}: {reason}")]
    SecretFile {
        name: &'static str,
        path: String,
        reason: String,
    },
    #[error("AUTH_SECRET and AUTH_PUBLIC_KEY_FILE are both set; set one (HS256 with the secret, or RS256/ES256 with the key)")]
    AuthTwice,
    #[error(
        "AUTH_SECRET has {0} bytes; at least 32 are needed (a random string: openssl rand -hex 32)"
    )]
    ShortAuthSecret(usize),
    #[error("invalid AUTH_PUBLIC_KEY_FILE {path:?}: {reason}")]
    PublicKey { path: String, reason: String },
}

impl Config {
    /// Checks what clap cannot check field by field and builds [`Settings`].
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        check_redis_url(&self.redis_url)?;
        // The drain has to fit spread closes, registry clean-up and the fleet poll into the
        // shutdown budget, so the spread may use at most half of it.
        // Checked: no panic whatever the two values (both are bounded by their parsers too).
        let spread_twice = self.drain_spread.checked_mul(2);
        if spread_twice.is_none_or(|twice| twice >= self.shutdown_timeout) {
            return Err(ConfigError::DrainSpread {
                spread: self.drain_spread,
                timeout: self.shutdown_timeout,
            });
        }
        let allowed_origins: Vec<String> = self
            .allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .collect();
        if allowed_origins.iter().any(String::is_empty) {
            return Err(ConfigError::EmptyOrigin);
        }
        if self.broadcast_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        let broadcast_token = secrets::value_or_file(
            "BROADCAST_TOKEN",
            self.broadcast_token,
            self.broadcast_token_file.as_deref(),
        )?
        .map(Secret);
        let auth_secret = secrets::value_or_file(
            "AUTH_SECRET",
            self.auth_secret,
            self.auth_secret_file.as_deref(),
        )?;
        let auth = secrets::auth_verifier(auth_secret, self.auth_public_key_file.as_deref())?;
        Ok(Settings {
            bind_addr: self.bind_addr,
            redis_url: self.redis_url,
            instance_id: self.instance_id.unwrap_or_else(default_instance_id),
            color: self.color,
            heartbeat_interval: self.heartbeat_interval,
            ping_interval: self.ping_interval,
            shutdown_timeout: self.shutdown_timeout,
            drain_spread: self.drain_spread,
            session_ttl: self.session_ttl,
            broadcast_token,
            auth,
            max_message_bytes: self.max_message_bytes as usize,
            send_queue: (self.send_queue as usize).next_power_of_two(),
            rate_limit: (self.rate_limit > 0).then_some(self.rate_limit),
            max_connections: self.max_connections.map(|n| n as usize),
            allowed_origins,
            log_format: self.log_format,
            lease_period: self.lease_period,
            redis_timeout: self.redis_timeout,
            redis_wait_replicas: (self.redis_wait_replicas > 0).then_some(self.redis_wait_replicas),
            http_header_timeout: self.http_header_timeout,
            http_idle_timeout: self.http_idle_timeout,
            presence_grace: self.presence_grace,
            max_rooms: self.max_rooms as usize,
            history_size: self.history_size,
            history_ttl: self.history_ttl,
        })
    }
}

/// `<pid>-<8 random hex>`: unique per process, and the pid helps an operator find it.
fn default_instance_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", std::process::id(), &random[..8])
}

fn parse_instance_id(s: &str) -> Result<String, String> {
    crate::protocol::validate_session_id(s)
        .map_err(|_| "must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'".to_string())?;
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests;
