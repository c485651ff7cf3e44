//! CPU use during the measured phase, from /proc: this process, any processes named with
//! `--sample-pid` (the server, Redis), and the whole machine.
//!
//! Client and server share the machine, so a throughput number means little without knowing
//! who was busy: a saturated client measures the client. Sampling exactly the measured window
//! from inside the tool avoids guessing from a `top` snapshot.

use std::time::Instant;

use serde::Serialize;

/// Linux reports per-process times in USER_HZ ticks, 100 per second on every mainstream
/// architecture (it is fixed by the kernel ABI, independent of CONFIG_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU use of one process or of the machine over the window, in percent of one core, and
/// as CPU seconds: the window may outlast the run phase (it is read once the sockets have
/// closed), so a cost per message or delivery is `cpu_seconds` ÷ count, not the percent times
/// the run phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuUse {
    pub name: String,
    pub percent_of_one_core: f64,
    pub cpu_seconds: f64,
}

/// The counters at the start of the window.
pub struct CpuWindow {
    started: Instant,
    processes: Vec<(String, String, Option<u64>)>,
    machine: Option<MachineTicks>,
}

impl CpuWindow {
    /// Starts a window over this process (`loadtest`) and the named pids.
    pub fn start(named: &[(String, u32)]) -> Self {
        let mut processes = vec![("loadtest".to_string(), "/proc/self/stat".to_string())];
        processes.extend(
            named
                .iter()
                .map(|(name, pid)| (name.clone(), format!("/proc/{pid}/stat"))),
        );
        Self {
            started: Instant::now(),
            processes: processes
                .into_iter()
                .map(|(name, path)| {
                    let ticks = read_process_ticks(&path);
                    (name, path, ticks)
                })
                .collect(),
            machine: read_machine_ticks(),
        }
    }

    /// Ends the window. A process that vanished or cannot be read is left out.
    pub fn finish(self) -> Vec<CpuUse> {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut uses: Vec<CpuUse> = self
            .processes
            .into_iter()
            .filter_map(|(name, path, before)| {
                let ticks = read_process_ticks(&path)?.checked_sub(before?)?;
                Some(CpuUse {
                    name,
                    percent_of_one_core: 100.0 * ticks as f64 / TICKS_PER_SECOND / seconds,
                    cpu_seconds: ticks as f64 / TICKS_PER_SECOND,
                })
            })
            .collect();
        if let (Some(before), Some(after)) = (self.machine, read_machine_ticks()) {
            if let Some(busy) = after.busy_cores_since(&before) {
                let machine = 100.0 * busy;
                let sampled: f64 = uses.iter().map(|u| u.percent_of_one_core).sum();
                // What the sampled processes do not explain: other work on the machine
                // (or the kernel's softirq time for loopback traffic), which makes the run
                // less trustworthy when large.
                let other = (machine - sampled).max(0.0);
                uses.push(CpuUse {
                    name: "other".into(),
                    percent_of_one_core: other,
                    cpu_seconds: other / 100.0 * seconds,
                });
                uses.push(CpuUse {
                    name: format!("machine ({} cores)", after.cores),
                    percent_of_one_core: machine,
                    cpu_seconds: machine / 100.0 * seconds,
                });
            }
        }
        uses
    }
}

fn read_process_ticks(path: &str) -> Option<u64> {
    parse_process_ticks(&std::fs::read_to_string(path).ok()?)
}

/// user + system ticks from a /proc/PID/stat line.
fn parse_process_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces or ')', so fields
    // are counted from the last ')': state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The aggregate `cpu` line of /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MachineTicks {
    idle: u64,
    total: u64,
    cores: usize,
}

impl MachineTicks {
    /// Cores' worth of busy time over the interval (2.0 = two cores fully busy).
    fn busy_cores_since(&self, before: &MachineTicks) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let idle = self.idle.checked_sub(before.idle)?;
        if total == 0 {
            return None;
        }
        Some((total - idle) as f64 / total as f64 * self.cores as f64)
    }
}

fn read_machine_ticks() -> Option<MachineTicks> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    let mut lines = stat.lines();
    let first = lines.next()?;
    let values: Vec<u64> = first
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
    // already inside user, so only the first eight add up to the total.
    let total = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    let cores = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(MachineTicks {
        idle,
        total,
        cores: cores.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_survive_odd_command_names() {
        let stat = "1234 (we ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_process_ticks(stat), Some(300));
        assert_eq!(parse_process_ticks("garbage"), None);
    }

    #[test]
    fn machine_busy_time_is_in_cores() {
        let before = parse_machine_ticks(
            "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\nintr 1",
        )
        .unwrap();
        assert_eq!(before.cores, 2);
        // 200 more ticks, 50 of them idle: three quarters busy on two cores.
        let after = MachineTicks {
            idle: 850,
            total: 1200,
            cores: 2,
        };
        assert_eq!(after.busy_cores_since(&before), Some(1.5));
    }
}
