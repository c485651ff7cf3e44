//! A `redis-server` of the test's own.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{eventually_within, free_port, wait_until, START_PATIENCE};

/// A `redis-server` on a free port ([`free_port`]), in a directory of its own, saving nothing
/// unless asked ([`RedisServer::save_and_kill`]). Killed, and its directory removed, on drop.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    /// Given to every start after the harness's own (a TLS port, `--replicaof`, …).
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts it and waits (without blocking the runtime) until it answers PING.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(|_| Vec::new()).await
    }

    /// [`RedisServer::start`] with more arguments for `redis-server`, made from the server's
    /// directory (for files such as certificates); e.g. a TLS port or `--replicaof`.
    pub async fn start_with(
        extra_args: impl FnOnce(&std::path::Path) -> Vec<String>,
    ) -> RedisServer {
        let mut server = RedisServer::create();
        server.extra_args = extra_args(&server.dir);
        server.restart().await;
        server
    }

    /// The server's own directory (removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// [`RedisServer::start`] for tests without a runtime.
    pub fn start_blocking() -> RedisServer {
        let mut server = RedisServer::create();
        server.spawn();
        let port = server.port;
        wait_until(START_PATIENCE, "redis to answer PING", || ping(port));
        server
    }

    /// The server's pid, for signals (SIGSTOP makes it hang with its sockets open).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("redis-server is running").id() as i32
    }

    fn create() -> RedisServer {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("wsfleet-test-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        RedisServer {
            port,
            dir,
            extra_args: Vec::new(),
            child: None,
        }
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dbfilename", "dump.rdb"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server)");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether it was started and not killed since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL): like a crash, nothing is saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes the data to disk, then kills the server; `restart` brings the data back.
    pub async fn save_and_kill(&mut self) {
        self.command("SAVE").await;
        self.kill();
    }

    /// Runs one command without arguments (`SAVE`, `FLUSHALL`, …) and returns its status reply.
    pub async fn command(&self, name: &'static str) -> String {
        let client = self.client().await;
        fred::interfaces::ClientLike::custom(
            &client,
            fred::types::CustomCommand::new_static(name, None, false),
            Vec::<String>::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("redis {name}: {e}"))
    }

    /// Starts again on the same port and directory (with whatever was saved).
    pub async fn restart(&mut self) {
        self.spawn();
        let port = self.port;
        eventually_within(START_PATIENCE, "redis to answer PING", || async move {
            ping(port).then_some(())
        })
        .await;
    }

    /// Removes the saved data so the next restart comes back empty.
    pub fn forget_saved_data(&self) {
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
    }

    /// A plain fred client for inspecting keys from the test.
    pub async fn client(&self) -> fred::clients::Client {
        use fred::interfaces::ClientLike;
        let config = fred::types::config::Config::from_url(&self.url()).unwrap();
        let client = fred::types::Builder::from_config(config).build().unwrap();
        client.init().await.expect("test redis client connects");
        client
    }

    /// One `redis-cli` command, for tests without a runtime: its output, trimmed, when it
    /// succeeded.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PING over loopback, answered with +PONG. Blocking, but short: a refused connect returns at
/// once, and a server that accepted answers within the timeout or is not ready.
fn ping(port: u16) -> bool {
    let patience = Duration::from_secs(1);
    let answer = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), patience)?;
        stream.set_read_timeout(Some(patience))?;
        stream.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"+PONG"))
    };
    answer().unwrap_or(false)
}
