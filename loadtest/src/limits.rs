//! Checks, before any socket is opened, that the machine lets this run hold the sockets
//! asked for (open files per process, hence the number of workers; local ports per source
//! and destination; memory), and names the knob to turn when it does not.
//!
//! Failing up front beats discovering the limit as thousands of `EMFILE` errors halfway
//! through a run, which would read as a server failure.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use crate::{
    cli::Common,
    client::host_and_port,
    workers::plan::{auto_workers, Workers},
};

/// Descriptors the process needs besides its sockets: stdio, the runtime's epoll and wakers,
/// the JSON report file, /proc reads.
const FD_RESERVE: u64 = 64;

/// Memory one open socket costs this tool, client side only: the 4 KiB read buffer, the
/// WebSocket and task state, kernel socket structures. A 25,000-socket hold over two
/// workers measured ~8 KB of RSS per idle socket (103 MB per worker of 12,500 sockets,
/// debug build) and next to no kernel socket memory (/proc/net/sockstat); the budget is 4x
/// that, for read buffers that grow and the 4 bytes per reply kept for the percentiles.
/// The server's share on the same machine is not counted: it is not ours.
pub const CLIENT_BYTES_PER_SOCKET: u64 = 32 * 1024;

/// What the limits allow for this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Processes holding sockets: 1 means this process, in-process.
    pub workers: usize,
    /// The open-file limit of this process after raising it.
    pub open_files: u64,
}

/// Checks, before anything connects, that the machine lets the run hold `--connections`
/// sockets, and decides how many worker processes it takes. Each error names the knob.
pub fn plan(common: &Common) -> Result<Plan> {
    let sockets = common.connections as u64;
    let (_, hard) = rlimit::Resource::NOFILE
        .get()
        .context("reading the open-file limit")?;
    let open_files = rlimit::increase_nofile_limit(hard).context("raising the open-file limit")?;
    let workers = choose_workers(sockets, common.workers, open_files, hard)?;
    let destinations: BTreeSet<(String, u16)> = common
        .urls
        .iter()
        .map(|u| host_and_port(u))
        .collect::<Result<_>>()?;
    ensure_local_ports(sockets, common.source_ips.len().max(1), destinations.len())?;
    ensure_memory(sockets)?;
    Ok(Plan {
        workers,
        open_files,
    })
}

/// How many processes hold the sockets, given the open-file limit each process gets.
fn choose_workers(sockets: u64, asked: Workers, soft: u64, hard: u64) -> Result<usize> {
    let per_process = soft.saturating_sub(FD_RESERVE).max(1);
    let fewest = auto_workers(sockets as usize, per_process as usize);
    match asked {
        Workers::Auto => Ok(fewest),
        Workers::Count(k) if k as u64 > sockets => {
            bail!("--workers {k} is more than the {sockets} sockets to open (--connections)")
        }
        Workers::Count(k) if k < fewest => bail!(
            "{sockets} sockets in {k} process(es) need about {} open files each, but a process \
             may have only {soft} (hard limit {hard}): use --workers {fewest} or more (or \
             --workers auto), or raise the hard limit (LimitNOFILE=, /etc/security/limits.conf)",
            (sockets as usize).div_ceil(k) as u64 + FD_RESERVE
        ),
        Workers::Count(k) => Ok(k),
    }
}

/// Raises the soft open-file limit to the hard one and checks that `sockets` fit under it
/// (a worker process checks its own slice). Returns the limit now in force.
pub fn ensure_open_files(sockets: usize) -> Result<u64> {
    let (_, hard) = rlimit::Resource::NOFILE
        .get()
        .context("reading the open-file limit")?;
    let soft = rlimit::increase_nofile_limit(hard).context("raising the open-file limit")?;
    check_fit(sockets as u64, soft, hard)?;
    Ok(soft)
}

fn check_fit(sockets: u64, soft: u64, hard: u64) -> Result<()> {
    let needed = sockets + FD_RESERVE;
    if needed > soft {
        let per_process = soft.saturating_sub(FD_RESERVE);
        bail!(
            "{sockets} sockets need about {needed} open files, but this process may have only \
             {soft} (hard limit {hard}). Raise the hard limit (`ulimit -Hn` as root, \
             LimitNOFILE= for a service, /etc/security/limits.conf) or split the load over \
             several processes of at most {per_process} sockets each (--workers)."
        );
    }
    Ok(())
}

/// Each (source address, destination) pair has its own ephemeral port range
/// (`net.ipv4.ip_local_port_range`): the kernel only needs each 4-tuple to be unique, and
/// with IP_BIND_ADDRESS_NO_PORT that holds for bound sockets too (see client/connect.rs). Sockets
/// are spread evenly over the pairs, so the busiest pair must fit in the range.
fn ensure_local_ports(sockets: u64, sources: usize, destinations: usize) -> Result<()> {
    // Not every system exposes it (containers, other OSes): then there is nothing to check.
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return Ok(());
    };
    let Some(available) = port_range_size(&text) else {
        return Ok(());
    };
    check_ports(sockets, sources, destinations, available, text.trim())
}

fn check_ports(
    sockets: u64,
    sources: usize,
    destinations: usize,
    available: u64,
    range: &str,
) -> Result<()> {
    let pairs = (sources * destinations).max(1) as u64;
    let per_pair = sockets.div_ceil(pairs);
    if per_pair > available {
        bail!(
            "{sockets} sockets over {sources} source address(es) x {destinations} destination(s) \
             need {per_pair} local ports per pair, but net.ipv4.ip_local_port_range ({range}) \
             offers {available}: add source addresses (--source-ips 127.0.0.1,127.0.0.2,...), \
             more --url destinations, or widen the range (sysctl -w \
             net.ipv4.ip_local_port_range=\"1024 65535\")"
        );
    }
    Ok(())
}

/// The sockets' memory must fit in what the machine has available now (MemAvailable), or
/// the run ends in swapping or the OOM killer, which reads as a server failure.
fn ensure_memory(sockets: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return Ok(());
    };
    let Some(available) = mem_available_bytes(&text) else {
        return Ok(());
    };
    check_memory(sockets, available)
}

fn check_memory(sockets: u64, available: u64) -> Result<()> {
    let needed = sockets * CLIENT_BYTES_PER_SOCKET;
    if needed > available {
        let mib = |b: u64| b / (1024 * 1024);
        bail!(
            "{sockets} sockets need about {} MiB in this tool ({} KiB each), but only {} MiB \
             are available (MemAvailable in /proc/meminfo): use fewer sockets, free memory, or \
             run the load tester on another machine",
            mib(needed),
            CLIENT_BYTES_PER_SOCKET / 1024,
            mib(available)
        );
    }
    Ok(())
}

/// MemAvailable from /proc/meminfo, in bytes.
fn mem_available_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Parses "32768\t60999" into the number of ports in the range.
fn port_range_size(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    let (low, high) = (parts.next()?.ok()?, parts.next()?.ok()?);
    (high >= low).then(|| high - low + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_must_fit_under_the_limit_with_a_reserve() {
        assert!(check_fit(19_900, 20_000, 20_000).is_ok());
        let err = check_fit(19_990, 20_000, 20_000).unwrap_err().to_string();
        assert!(err.contains("hard limit 20000"), "{err}");
        assert!(err.contains("at most 19936 sockets"), "{err}");
    }

    #[test]
    fn workers_are_as_many_as_the_open_file_limit_needs() {
        assert_eq!(
            choose_workers(100, Workers::Auto, 20_000, 20_000).unwrap(),
            1
        );
        assert_eq!(
            choose_workers(25_000, Workers::Auto, 20_000, 20_000).unwrap(),
            2
        );
        assert_eq!(
            choose_workers(100_000, Workers::Auto, 20_000, 20_000).unwrap(),
            6
        );
        assert_eq!(
            choose_workers(30, Workers::Count(3), 20_000, 20_000).unwrap(),
            3
        );
        let err = choose_workers(25_000, Workers::Count(1), 20_000, 20_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("use --workers 2 or more"), "{err}");
        let err = choose_workers(2, Workers::Count(3), 20_000, 20_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 2 sockets"), "{err}");
    }

    #[test]
    fn each_source_and_destination_pair_has_its_own_port_range() {
        assert!(check_ports(28_232, 1, 1, 28_232, "32768 60999").is_ok());
        let err = check_ports(30_000, 1, 1, 28_232, "32768 60999")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--source-ips"), "{err}");
        assert!(err.contains("need 30000 local ports per pair"), "{err}");
        assert!(check_ports(100_000, 2, 2, 28_232, "32768 60999").is_ok());
        assert!(check_ports(100_000, 2, 1, 28_232, "32768 60999").is_err());
    }

    #[test]
    fn memory_must_fit_in_what_is_available() {
        assert!(check_memory(1_000, 1 << 30).is_ok());
        let err = check_memory(1_000_000, 1 << 30).unwrap_err().to_string();
        assert!(err.contains("MemAvailable"), "{err}");
        let meminfo = "MemTotal:       24684084 kB\nMemFree: 1 kB\nMemAvailable:   24219080 kB\n";
        assert_eq!(mem_available_bytes(meminfo), Some(24_219_080 * 1024));
        assert_eq!(mem_available_bytes("nothing"), None);
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(port_range_size("32768\t60999\n"), Some(28_232));
        assert_eq!(port_range_size("1024 65535"), Some(64_512));
        assert_eq!(port_range_size("garbage"), None);
        assert_eq!(port_range_size("10 5"), None);
    }
}
