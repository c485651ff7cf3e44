//! `--redis-info`: what the run cost Redis, read from its `INFO` (plain RESP over TCP, no
//! client library: two inline commands and their bulk-string answers).
//!
//! Three samples: before any socket connects; once every socket is connected (in `rooms`,
//! joined) and before the run phase starts, which is where publishing starts; and, in
//! `rooms`, one second after the last publication was due, before the sockets close (closing
//! costs Redis commands that are no publication's). So `used_memory` after − before is what
//! the sockets (and their memberships) hold in Redis, and the `INFO commandstats` calls
//! between the last two are what publishing cost, plus the fleet's background work meanwhile
//! (lease renewals, heartbeats), which the per-command breakdown shows apart. Commands a
//! script runs (`redis.call`) are counted by Redis as commands of their own, beside the
//! script call itself.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    task::JoinHandle,
    time::Instant,
};

/// Longest wait for one sample.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// One reading of INFO.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub used_memory: u64,
    /// `cmdstat_<name>` → calls.
    pub calls: BTreeMap<String, u64>,
}

/// Reads INFO memory and INFO commandstats of the Redis at `addr` (host:port).
pub async fn sample(addr: &str) -> Result<Sample> {
    tokio::time::timeout(SAMPLE_TIMEOUT, read_sample(addr))
        .await
        .context("INFO timed out")?
}

async fn read_sample(addr: &str) -> Result<Sample> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .write_all(b"INFO memory\r\nINFO commandstats\r\n")
        .await?;
    let mut reader = BufReader::new(stream);
    let memory = read_bulk(&mut reader).await?;
    let commands = read_bulk(&mut reader).await?;
    Ok(parse(&memory, &commands))
}

/// One RESP bulk string (`$<len>\r\n<bytes>\r\n`); an error reply is an error.
async fn read_bulk(reader: &mut BufReader<TcpStream>) -> Result<String> {
    let mut head = String::new();
    reader.read_line(&mut head).await?;
    let Some(len) = head.trim_end().strip_prefix('$') else {
        bail!("INFO answered {:?}", head.trim_end());
    };
    let len: usize = len.parse().context("a bulk length")?;
    let mut body = vec![0; len + 2];
    reader.read_exact(&mut body).await?;
    body.truncate(len);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `used_memory:N` from INFO memory, `cmdstat_X:calls=N,…` from INFO commandstats.
pub fn parse(memory: &str, commands: &str) -> Sample {
    let used_memory = memory
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let calls = commands
        .lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
            Some((name.to_string(), calls.trim().parse().ok()?))
        })
        .collect();
    Sample { used_memory, calls }
}

/// The report's `redis` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedisCost {
    pub memory_before_bytes: u64,
    pub memory_connected_bytes: u64,
    /// (connected − before) ÷ sockets connected.
    pub memory_per_socket_bytes: f64,
    /// `rooms` only: commands run while publishing (from the run phase's start to a second
    /// after the last publication was due), by name, and their sum per publication sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands: Option<BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands_per_publication: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands_seconds: Option<f64>,
}

/// The samples of one run, taken by the process that coordinates it.
pub struct Probe {
    addr: String,
    before: Sample,
    connected: Option<Sample>,
    /// The last sample, under way: when it was taken (seconds after the run start) and what.
    end: Option<JoinHandle<Result<(f64, Sample)>>>,
    errors: Vec<String>,
}

impl Probe {
    /// The first sample, before anything connects; `None` without `--redis-info`, and an
    /// error when Redis cannot be read (the run would not measure what was asked).
    pub async fn start(addr: Option<&str>) -> Result<Option<Probe>> {
        let Some(addr) = addr else { return Ok(None) };
        let before = sample(addr)
            .await
            .with_context(|| format!("--redis-info {addr}"))?;
        Ok(Some(Probe {
            addr: addr.to_string(),
            before,
            connected: None,
            end: None,
            errors: Vec::new(),
        }))
    }

    /// Every socket is connected and the run phase is about to start: the second sample,
    /// and the last one scheduled `publishing` + 1 s later when there is publishing to
    /// measure.
    pub async fn connected(&mut self, publishing: Option<Duration>) {
        match sample(&self.addr).await {
            Ok(sample) => self.connected = Some(sample),
            Err(e) => self.errors.push(format!("redis-info: {e:#}")),
        }
        if let Some(span) = publishing {
            let addr = self.addr.clone();
            let started = Instant::now();
            self.end = Some(tokio::spawn(async move {
                tokio::time::sleep(span + Duration::from_secs(1)).await;
                let sample = sample(&addr).await?;
                Ok((started.elapsed().as_secs_f64(), sample))
            }));
        }
    }

    /// What it found, once the run is over, and the error kinds of samples that failed.
    pub async fn finish(
        mut self,
        sockets: u64,
        publications: u64,
    ) -> (Option<RedisCost>, Vec<String>) {
        let Some(connected) = self.connected.take() else {
            return (None, self.errors);
        };
        let end = match self.end.take() {
            Some(task) => match task.await {
                Ok(Ok(end)) => Some(end),
                Ok(Err(e)) => {
                    self.errors.push(format!("redis-info: {e:#}"));
                    None
                }
                Err(e) => {
                    self.errors.push(format!("task failed: {e}"));
                    None
                }
            },
            None => None,
        };
        let grown = connected.used_memory as f64 - self.before.used_memory as f64;
        let commands = end.as_ref().map(|(_, end)| delta(&connected, end));
        let per_publication = commands.as_ref().and_then(|c| {
            (publications > 0).then(|| c.values().sum::<u64>() as f64 / publications as f64)
        });
        let cost = RedisCost {
            memory_before_bytes: self.before.used_memory,
            memory_connected_bytes: connected.used_memory,
            memory_per_socket_bytes: if sockets > 0 {
                grown / sockets as f64
            } else {
                0.0
            },
            commands,
            commands_per_publication: per_publication,
            commands_seconds: end.map(|(seconds, _)| seconds),
        };
        (Some(cost), self.errors)
    }
}

/// Calls between two samples, by command; commands not called are left out.
fn delta(from: &Sample, to: &Sample) -> BTreeMap<String, u64> {
    to.calls
        .iter()
        .filter_map(|(name, &calls)| {
            let n = calls.saturating_sub(from.calls.get(name).copied().unwrap_or(0));
            (n > 0).then(|| (name.clone(), n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_gives_memory_and_calls_and_two_samples_give_what_ran_between() {
        let memory = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        let before = parse(
            memory,
            "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00\r\ncmdstat_ping:calls=3,usec=1\r\n",
        );
        assert_eq!(before.used_memory, 1_048_576);
        assert_eq!(before.calls["evalsha"], 10);
        let after = parse(
            memory,
            "cmdstat_evalsha:calls=25,usec=99\r\ncmdstat_ping:calls=3,usec=1\r\ncmdstat_spublish:calls=15,usec=9\r\n",
        );
        let ran = delta(&before, &after);
        assert_eq!(
            ran.into_iter().collect::<Vec<_>>(),
            vec![("evalsha".to_string(), 15), ("spublish".to_string(), 15)]
        );
    }
}
