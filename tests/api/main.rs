//! Integration tests: real redis-server, real nodes, real WebSocket clients.

mod bad_input;
mod broadcast;
mod client;
mod counting;
mod faults;
mod heartbeat;
mod helpers;
mod http;
mod shutdown;
mod sockets;
