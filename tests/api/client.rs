//! The real WebSocket client of the shared harness (testkit/), greeted with this server's
//! welcome frame.

pub use crate::common::refused_upgrade;

/// A real WebSocket client (tokio-tungstenite), with buffers sized like the server's.
pub type Client = crate::common::Client<wsfleet::protocol::Welcome>;
