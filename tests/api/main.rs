//! Integration tests: real redis-server, real nodes, real WebSocket clients.

mod bad_input;
mod broadcast;
mod client;
mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod counter_script;
mod counting;
mod drain_deadline;
mod exactly_once;
mod faults;
mod heartbeat;
mod helpers;
mod history;
mod http;
mod identity;
mod limits;
mod logging;
mod metrics;
mod openapi;
mod presence;
mod redis_tls;
mod relay;
mod rooms;
mod sentinel;
mod settings;
mod shutdown;
mod slow_consumers;
mod sockets;
mod wait_replicas;
