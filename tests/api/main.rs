//! Integration tests: real redis-server, real nodes, real WebSocket clients.

mod bad_input;
mod broadcast;
mod client;
#[path = "../common/mod.rs"]
mod common;
mod counting;
mod faults;
mod heartbeat;
mod helpers;
mod http;
mod logging;
mod metrics;
mod settings;
mod shutdown;
mod sockets;
