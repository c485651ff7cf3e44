//! wsfleet: one node of a horizontally scaled WebSocket fleet backed by Redis.
//!
//! # Layout
//! - [`config`]: flags and environment, validated into [`config::Settings`].
//! - [`telemetry`]: JSON (or pretty) logs stamped with instance and colour.
//! - [`startup`]: builds a node (Redis, listener) and runs it until a shutdown signal.
//! - [`shutdown`]: the signal future and the drain sequence.
//! - [`state`]: what every handler and socket shares.
//! - [`error`]: the JSON error of every HTTP answer.
//! - [`http`]: router and operator endpoints (`/healthz`, `/readyz`, `/metrics`, `/status`,
//!   `/broadcast`, `/rooms/{room}`, `/test/`), their OpenAPI document (`/openapi.json`,
//!   `http::openapi`), and the accept loop serving them with the plain-HTTP limits
//!   (`http::serve`).
//! - [`identity`]: who a socket is (a verified JWT, or in development the `user` parameter),
//!   the rooms it may join, and the token verifier chosen at start-up.
//! - [`ws`]: the WebSocket upgrade and one socket's session loop.
//! - [`protocol`]: the JSON frames on the wire and on the pub/sub channel.
//! - [`store`]: the Redis client, its failure policy and script calls.
//! - [`counter`]: the per-session message counter: the claim that fences older sockets, and
//!   each socket's exactly-once increments, sent to Redis in batches.
//! - [`batch`]: the one batching loop for the writes many sockets make to Redis.
//! - [`registry`]: the crash-safe fleet registry of instances and connections; its
//!   connects and disconnects go to Redis in batches (`registry_writes`).
//! - [`fanout`]: the pub/sub channel and its delivery to every local socket.
//! - [`shard_probes`]: in a Redis Cluster, readiness proves the subscription on every shard.
//! - [`rooms`]: fleet-wide rooms: presence by leases, publications with offsets, and the
//!   channel subscriptions that follow the local members.
//! - [`history`]: publication streams (rooms, broadcasts): offsets, epochs, history and
//!   recovery.
//! - [`inbox`]: each socket's queue of frames addressed to it (rooms, its session).
//! - [`heartbeat`]: the elected fleet heartbeat.
//! - [`metrics`]: Prometheus metrics.

pub mod batch;
pub mod config;
pub mod counter;
pub mod error;
pub mod fanout;
pub mod heartbeat;
pub mod history;
pub mod http;
pub mod identity;
pub mod inbox;
pub mod metrics;
pub mod protocol;
pub mod registry;
mod registry_writes;
pub mod rooms;
pub mod shard_probes;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod ws;
