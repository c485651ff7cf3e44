//! Nodes of the real `wsfleet` binary, and the command line every test node starts from.

use std::{net::SocketAddr, path::PathBuf, process::Command};

use tokio::process::Child;

use crate::{
    eventually_within, free_port, send_signal, workspace_binary, RedisServer, START_PATIENCE,
};

/// Command-line flags for a node on `redis` with test-friendly timings; a flag in `extra`
/// replaces the default of the same name (clap refuses a flag given twice). The first
/// element is the program name, as `clap::Parser::try_parse_from` wants it.
pub fn node_args(redis: &RedisServer, extra: &[&str]) -> Vec<String> {
    let url = redis.url();
    let defaults = [
        ("--bind-addr", "127.0.0.1:0"),
        ("--redis-url", url.as_str()),
        ("--lease-period", "500ms"),
        ("--redis-timeout", "500ms"),
        ("--drain-spread", "200ms"),
        ("--shutdown-timeout", "5s"),
    ];
    let mut args = vec!["wsfleet".to_string()];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The real binary ([`workspace_binary`] `wsfleet`, `WSFLEET_BIN` overrides) with
/// [`node_args`], listening on `addr`, named `instance` (or a generated id), its stdout and
/// stderr going to the returned log file. Not started yet.
pub fn node_command(
    addr: SocketAddr,
    redis: &RedisServer,
    instance: Option<&str>,
    extra: &[&str],
) -> (Command, PathBuf) {
    let bind = addr.to_string();
    let args = node_args(redis, &[&["--bind-addr", bind.as_str()], extra].concat());
    let log = std::env::temp_dir().join(format!(
        "wsfleet-test-{}-{}-{}.log",
        instance.unwrap_or("node"),
        addr.port(),
        std::process::id()
    ));
    let file = std::fs::File::create(&log).unwrap();
    let mut command = Command::new(workspace_binary("WSFLEET_BIN", "wsfleet"));
    command
        .args(&args[1..])
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    if let Some(instance) = instance {
        command.args(["--instance-id", instance]);
    }
    (command, log)
}

/// Waits until `GET http://ADDR/readyz` answers 200.
pub async fn wait_ready(addr: SocketAddr) {
    let url = format!("http://{addr}/readyz");
    eventually_within(START_PATIENCE, &format!("{url} to answer 200"), || {
        let url = url.clone();
        async move {
            let response = reqwest::get(&url).await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
}

/// The real binary as a child process, for signals (SIGTERM drain, SIGKILL crash) and for
/// listening where an in-process node cannot be reached from (another network namespace).
pub struct ChildNode {
    pub addr: SocketAddr,
    pub instance: String,
    pub child: Child,
    pub log: PathBuf,
}

impl ChildNode {
    /// On a free loopback port ([`free_port`]).
    pub async fn start(redis: &RedisServer, instance: &str, extra: &[&str]) -> ChildNode {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        ChildNode::start_on(addr, redis, instance, extra).await
    }

    /// With more environment variables (e.g. `SSL_CERT_FILE`), on a free loopback port.
    pub async fn start_with_env(
        redis: &RedisServer,
        instance: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ChildNode {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        ChildNode::launch(addr, redis, instance, extra, None, env).await
    }

    /// On `addr`, which must be free.
    pub async fn start_on(
        addr: SocketAddr,
        redis: &RedisServer,
        instance: &str,
        extra: &[&str],
    ) -> ChildNode {
        ChildNode::launch(addr, redis, instance, extra, None, &[]).await
    }

    /// With `RUST_LOG=rust_log` and stdout a pipe that nobody reads (a stalled log shipper):
    /// once the pipe's 64 KiB are full, every write to it blocks. The pipe stays open as long
    /// as the node does (`child.stdout` is kept, never read).
    pub async fn start_with_stalled_stdout(
        redis: &RedisServer,
        instance: &str,
        extra: &[&str],
        rust_log: &str,
    ) -> ChildNode {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        ChildNode::launch(addr, redis, instance, extra, Some(rust_log), &[]).await
    }

    /// `stalled_stdout_log`: `None`, stdout and stderr go to the log file; `Some(filter)`,
    /// stdout is an unread pipe and `RUST_LOG` is `filter`.
    async fn launch(
        addr: SocketAddr,
        redis: &RedisServer,
        instance: &str,
        extra: &[&str],
        stalled_stdout_log: Option<&str>,
        env: &[(&str, &str)],
    ) -> ChildNode {
        let (command, log) = node_command(addr, redis, Some(instance), extra);
        let mut command = tokio::process::Command::from(command);
        command.envs(env.iter().copied());
        if let Some(filter) = stalled_stdout_log {
            command
                .env("RUST_LOG", filter)
                .stdout(std::process::Stdio::piped());
        }
        let child = command
            .kill_on_drop(true)
            .spawn()
            .expect("the wsfleet binary starts");
        let node = ChildNode {
            addr,
            instance: instance.to_string(),
            child,
            log,
        };
        wait_ready(addr).await;
        node
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("child still running") as i32;
        assert!(send_signal(pid, signal), "kill({pid}, {signal}) failed");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}
