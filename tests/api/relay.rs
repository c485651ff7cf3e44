//! A TCP relay between a node and Redis that can hold traffic: what a congested or partitioned
//! link does to commands already written (they arrive late, not never).
//!
//! While held, bytes from the node are read and kept back; on release they are delivered in
//! order, even if the node has given up on them or closed its side meanwhile. Replies from Redis
//! pass through untouched.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

pub struct Relay {
    pub port: u16,
    held: watch::Sender<bool>,
    /// Every task of the relay; dropping the relay aborts them and closes every connection.
    _tasks: JoinSet<()>,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to Redis on `redis_port`.
    pub async fn start(redis_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (held, watch) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pumps = JoinSet::new();
            while let Ok((node, _)) = listener.accept().await {
                let Ok(redis) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
                    continue;
                };
                let (node_read, node_write) = node.into_split();
                let (redis_read, redis_write) = redis.into_split();
                pumps.spawn(towards_redis(node_read, redis_write, watch.clone()));
                pumps.spawn(towards_node(redis_read, node_write));
            }
        });
        Relay {
            port,
            held,
            _tasks: tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on, what the node writes is kept back.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Delivers what was kept back, in order, and lets traffic flow again.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
}

async fn towards_redis(
    mut node: tokio::net::tcp::OwnedReadHalf,
    mut redis: tokio::net::tcp::OwnedWriteHalf,
    mut held: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match node.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if held.wait_for(|held| !held).await.is_err() {
            return;
        }
        if redis.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // The node closed its side: keep Redis's side open so that what was delivered late is
    // still run (a closed connection could make Redis drop it), until the relay is dropped.
    std::future::pending::<()>().await;
    drop(redis);
}

async fn towards_node(
    mut redis: tokio::net::tcp::OwnedReadHalf,
    mut node: tokio::net::tcp::OwnedWriteHalf,
) {
    let _ = tokio::io::copy(&mut redis, &mut node).await;
    let _ = node.shutdown().await;
}
