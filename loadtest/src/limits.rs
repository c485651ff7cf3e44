//! Checks, before any socket is opened, that the machine lets this process hold the sockets
//! asked for, and names the knob to turn when it does not.
//!
//! Failing up front beats discovering the limit as thousands of `EMFILE` errors halfway
//! through a run, which would read as a server failure.

use anyhow::{bail, Context, Result};

/// Descriptors the process needs besides its sockets: stdio, the runtime's epoll and wakers,
/// the JSON report file, /proc reads.
const FD_RESERVE: u64 = 64;

/// Raises the soft open-file limit to the hard one and checks that `sockets` fit under it.
/// Returns the limit now in force.
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
             several processes of at most {per_process} sockets each."
        );
    }
    Ok(())
}

/// All sockets go to one address and port, so each needs its own local port: the ephemeral
/// range (`net.ipv4.ip_local_port_range`) bounds how many can be open at once.
pub fn ensure_local_ports(sockets: usize) -> Result<()> {
    // Not every system exposes it (containers, other OSes): then there is nothing to check.
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return Ok(());
    };
    let Some(available) = port_range_size(&text) else {
        return Ok(());
    };
    if sockets as u64 > available {
        bail!(
            "{sockets} sockets to one address need {sockets} local ports, but \
             net.ipv4.ip_local_port_range ({}) offers only {available}. Widen it with \
             `sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"` or use fewer sockets.",
            text.trim()
        );
    }
    Ok(())
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
    fn port_ranges_parse() {
        assert_eq!(port_range_size("32768\t60999\n"), Some(28_232));
        assert_eq!(port_range_size("1024 65535"), Some(64_512));
        assert_eq!(port_range_size("garbage"), None);
        assert_eq!(port_range_size("10 5"), None);
    }
}
