//! Test harness: nodes in-process (port 0) around the shared harness of tests/common (a real
//! `redis-server` per test, nodes of the real binary as child processes), and a real
//! WebSocket client.
//!
//! Everything started here is stopped by PID when its handle drops. Logs stay quiet unless
//! `TEST_LOG` is set.

use std::{net::SocketAddr, sync::Once, time::Duration};

use serde_json::Value;
use tokio::task::JoinHandle;
use wsfleet::{config::Config, startup::Application};

pub use crate::client::{refused_upgrade, Client};
pub use crate::common::{
    free_port, node_args, node_command, wait_ready, ChildNode, RedisServer, SIGKILL, SIGTERM,
};

/// Longest wait for any single expected event in a test.
pub const PATIENCE: Duration = Duration::from_secs(10);

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            std::mem::forget(wsfleet::telemetry::init(
                wsfleet::config::LogFormat::Pretty,
                "test",
                "blue",
            ));
        }
    });
}

/// Polls `check` every 50 ms until it returns `Some` or `PATIENCE` runs out.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::common::eventually_within(PATIENCE, what, check).await
}

/// A node running inside the test process.
pub struct TestApp {
    pub addr: SocketAddr,
    pub instance: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(redis: &RedisServer, extra: &[&str]) -> TestApp {
    init_tracing();
    let config = <Config as clap::Parser>::try_parse_from(node_args(redis, extra)).unwrap();
    let settings = config.into_settings().unwrap();
    let app = Application::build(settings).await.expect("app builds");
    let addr = app.address();
    let instance = app.instance_id().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let test_app = TestApp {
        addr,
        instance,
        stop: Some(stop),
        handle: Some(handle),
    };
    test_app.wait_ready().await;
    test_app
}

impl TestApp {
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, session: Option<&str>) -> String {
        ws_url(self.addr, session)
    }

    pub async fn wait_ready(&self) {
        wait_ready(self.addr).await;
    }

    /// Triggers the drain and waits for the node to finish it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().unwrap().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

pub fn ws_url(addr: SocketAddr, session: Option<&str>) -> String {
    match session {
        Some(s) => format!("ws://{addr}/ws/chat/?session_uuid={s}"),
        None => format!("ws://{addr}/ws/chat/"),
    }
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("GET answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}
