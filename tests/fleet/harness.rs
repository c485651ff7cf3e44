//! The fleet under test: private run dir and ports, the real make targets, clean-up by pid.

use super::*;

/// Ports per fleet: nginx, Redis (12 for `REDIS=cluster`: six nodes and their bus ports), the
/// instances (a scale-up and a promote start more).
const PORTS_PER_FLEET: u16 = 24;

/// A port is free when nothing accepts connections on it.
pub(crate) fn port_is_free(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_err()
}

/// A process is gone when /proc has no entry for it, or only a zombie's.
pub(crate) fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

pub(crate) fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// What one `make` call printed (stdout and stderr, interleaved) and how it exited.
#[derive(Debug)]
pub(crate) struct MakeOutput {
    pub(crate) code: Option<i32>,
    pub(crate) text: String,
}

impl MakeOutput {
    pub(crate) fn assert_ok(&self, what: &str) {
        assert_eq!(self.code, Some(0), "{what} failed:\n{}", self.text);
    }
}

/// A fleet started by the make targets in a private run directory.
pub(crate) struct Fleet {
    pub(crate) root: PathBuf,
    pub(crate) run_dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) redis_port: u16,
    pub(crate) base_port: u16,
    pub(crate) wsfleet_bin: PathBuf,
    pub(crate) loadtest_bin: PathBuf,
    /// Every pid and port the run directory ever recorded: all must be gone after `make down`.
    pub(crate) pids: BTreeSet<u32>,
    pub(crate) ports: BTreeSet<u16>,
    pub(crate) calls: usize,
    pub(crate) is_down: bool,
}

impl Fleet {
    pub(crate) fn new(name: &str) -> Fleet {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let wsfleet_bin = workspace_binary("WSFLEET_BIN", "wsfleet");
        let loadtest_bin = workspace_binary("LOADTEST_BIN", "wsfleet-loadtest");
        let run_dir =
            std::env::temp_dir().join(format!("wsfleet-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir).unwrap();
        // nginx, Redis, then the instances: the scripts take the first free ports from
        // BASE_PORT up, skipping taken ones.
        let block = free_ports(PORTS_PER_FLEET);
        let (port, redis_port, base_port) = (block, block + 1, block + 2);
        Fleet {
            root,
            run_dir,
            port,
            redis_port,
            base_port,
            wsfleet_bin,
            loadtest_bin,
            pids: BTreeSet::new(),
            ports: [port, redis_port].into(),
            calls: 0,
            is_down: false,
        }
    }

    /// Runs `make TARGET VAR=…` against this fleet, killed if it outlives `limit`.
    pub(crate) fn make(
        &mut self,
        target: &str,
        vars: &[(&str, &str)],
        limit: Duration,
    ) -> MakeOutput {
        self.calls += 1;
        let out_path = self
            .run_dir
            .join(format!("make-{:02}-{target}.out", self.calls));
        let out = File::create(&out_path).unwrap();
        let mut command = Command::new("make");
        command
            .arg("--no-print-directory")
            .arg(target)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // Nothing of the caller's environment may point the scripts elsewhere.
        for var in [
            "MAKEFLAGS",
            "MFLAGS",
            "MAKELEVEL",
            "REDIS_URL",
            "REDIS",
            "RUNTIME",
            "N",
            "PROMOTE_ENV",
            "BROADCAST_TOKEN",
            "CARGO_TARGET_DIR",
        ] {
            command.env_remove(var);
        }
        command
            .env("RUN_DIR", &self.run_dir)
            .env("PORT", self.port.to_string())
            .env("NGINX_ADDRESS", "127.0.0.1")
            .env("REDIS_PORT", self.redis_port.to_string())
            .env("BASE_PORT", self.base_port.to_string())
            .env("SKIP_BUILD", "1")
            .env("WSFLEET_BIN", &self.wsfleet_bin)
            .env("LOADTEST_BIN", &self.loadtest_bin)
            .env("LOG_FORMAT", "json");
        for (name, value) in vars {
            command.env(name, value);
        }
        let started = Instant::now();
        let mut child = command.spawn().expect("make runs");
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&out_path).unwrap_or_default();
                panic!("make {target} did not finish within {limit:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        eprintln!(
            "--- make {target} {vars:?}: exit {code:?} after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        self.record_state();
        MakeOutput { code, text }
    }

    /// Notes every pid and port the run directory holds now.
    pub(crate) fn record_state(&mut self) {
        for dir in [self.run_dir.clone(), self.run_dir.join("nginx")] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                match path.extension().and_then(|e| e.to_str()) {
                    Some("pid") => self.pids.extend(text.trim().parse::<u32>().ok()),
                    Some("port") => self.ports.extend(text.trim().parse::<u16>().ok()),
                    _ => {}
                }
            }
        }
    }

    /// The pid of our nginx master (from the pid file `make up` made it write).
    pub(crate) fn nginx_master_pid(&self) -> u32 {
        let path = self.run_dir.join("nginx").join("nginx.pid");
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_else(|| panic!("no nginx pid in {}", path.display()))
    }

    /// `nginx -s SIGNAL` for our nginx, the way scripts/lib-nginx.sh runs nginx (`nginx_cmd`:
    /// its prefix, configuration and error log under the run directory).
    pub(crate) fn nginx_signal(&self, signal: &str) {
        let dir = self.run_dir.join("nginx");
        let out = Command::new("nginx")
            .arg("-p")
            .arg(format!("{}/", dir.display()))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-s", signal])
            .output()
            .expect("nginx runs");
        assert!(
            out.status.success(),
            "nginx -s {signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn ws_url(&self, session: &str) -> String {
        format!(
            "ws://127.0.0.1:{}/ws/chat/?session_uuid={session}",
            self.port
        )
    }

    /// `GET /status` of the first instance of the run directory that answers (on its loopback
    /// port: /status is not on nginx's public listener): the colours of the live instances of
    /// the registry, sorted.
    pub(crate) async fn colours(&self) -> Vec<String> {
        let Some(body) = self.status().await else {
            return vec![];
        };
        let mut colours: Vec<String> = body["instances"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|i| i["draining"] != true)
                    .filter_map(|i| i["color"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        colours.sort();
        colours
    }

    /// The registry as the first of our instances that answers sees it.
    async fn status(&self) -> Option<Value> {
        let entries = std::fs::read_dir(&self.run_dir).ok()?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !(name.starts_with("wsfleet-") && name.ends_with(".port")) {
                continue;
            }
            let Ok(port) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let url = format!("http://127.0.0.1:{}/status", port.trim());
            if let Ok(response) = reqwest::get(&url).await {
                if let Ok(body) = response.json::<Value>().await {
                    return Some(body);
                }
            }
        }
        None
    }

    /// `/status` is not on nginx's public listener.
    pub(crate) async fn public_status_code(&self) -> u16 {
        let url = format!("http://127.0.0.1:{}/status", self.port);
        reqwest::get(&url).await.map_or(0, |r| r.status().as_u16())
    }

    /// Waits until the registry lists exactly `n` instances, all of `colour`.
    pub(crate) async fn expect_instances(&self, n: usize, colour: &str) {
        let want = vec![colour.to_string(); n];
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.colours().await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/status: wanted {n} x {colour}, got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `make down`, then: every process the run directory ever recorded has exited, and every
    /// port it used is free.
    pub(crate) fn down_and_check_nothing_is_left(&mut self) {
        let out = self.make("down", &[], Duration::from_secs(60));
        out.assert_ok("make down");
        self.is_down = true;
        let deadline = Instant::now() + Duration::from_secs(10);
        let left = loop {
            let left: Vec<(u32, String)> = self
                .pids
                .iter()
                .filter(|pid| !process_is_gone(**pid))
                .map(|pid| (*pid, cmdline(*pid)))
                .collect();
            if left.is_empty() || Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            left.is_empty(),
            "processes left after make down: {left:?}\n{}",
            out.text
        );
        let busy: Vec<u16> = self
            .ports
            .iter()
            .copied()
            .filter(|p| !port_is_free(*p))
            .collect();
        assert!(
            busy.is_empty(),
            "ports still open after make down: {busy:?}"
        );
        assert!(
            self.pids.len() >= 3,
            "expected at least redis, nginx and one instance to have run: {:?}",
            self.pids
        );
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.is_down {
            // A failed test: stop what it started, politely first.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.make("down", &[], Duration::from_secs(60))
            }));
        }
        let run_dir = self.run_dir.to_string_lossy().to_string();
        for pid in &self.pids {
            // Only what is still ours: its command line names our run directory, or it is a
            // redis-server whose title names one of our ports.
            let line = cmdline(*pid);
            let our_redis = line
                .strip_prefix("redis-server 127.0.0.1:")
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u16>().ok())
                .is_some_and(|port| self.ports.contains(&port));
            let ours = line.contains(&run_dir) || our_redis;
            if !process_is_gone(*pid) && ours {
                send_signal(*pid as i32, SIGKILL);
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "the fleet's run directory is kept: {}",
                self.run_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}
