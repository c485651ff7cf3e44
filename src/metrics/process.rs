//! The standard process metrics (`wsfleet_process_cpu_seconds_total`,
//! `wsfleet_process_resident_memory_bytes`, `wsfleet_process_open_fds`,
//! `wsfleet_process_max_fds`, `wsfleet_process_start_time_seconds`), read from /proc through the
//! `procfs` crate at scrape time.
//!
//! They are the names and meanings every Prometheus client library exports (client_golang's
//! process collector), under the `wsfleet_` prefix every name on `/metrics` carries, as the
//! `prometheus` crate does with a namespace. prometheus-client has no process collector of its
//! own, so this is one, registered like any collector.
//!
//! Linux only, as /proc is: elsewhere the collector exports nothing. A value /proc does not
//! give (no /proc mounted, `hidepid`) is left out of that scrape rather than exported as 0, so a
//! panel shows a gap instead of a plausible lie; reading it never fails the scrape.

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

/// Collects the process metrics of this process at each scrape.
#[derive(Debug)]
pub(super) struct ProcessMetrics;

#[cfg(target_os = "linux")]
impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use procfs::{process::LimitValue, WithCurrentSystemInfo};
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{counter::ConstCounter, gauge::ConstGauge},
            registry::Unit,
        };

        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?)?;
            let rss = ConstGauge::new(saturating_i64(stat.rss_bytes().get()));
            rss.encode(encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(&Unit::Bytes),
                rss.metric_type(),
            )?)?;
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = ConstGauge::new(boot as f64 + stat.starttime as f64 / ticks);
                start.encode(encoder.encode_descriptor(
                    "process_start_time",
                    "Start time of the process since the Unix epoch in seconds.",
                    Some(&Unit::Seconds),
                    start.metric_type(),
                )?)?;
            }
        }
        if let Ok(open) = me.fd_count() {
            let open = ConstGauge::new(saturating_i64(open as u64));
            open.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                open.metric_type(),
            )?)?;
        }
        if let Ok(limits) = me.limits() {
            // The soft limit, which is what `open` refuses at (the server raises it to the hard
            // limit at start-up). Unlimited is exported as 2^64, as client_golang does, so that
            // "open / max" stays near 0 instead of dividing by 0.
            let max = match limits.max_open_files.soft_limit {
                LimitValue::Value(max) => max as f64,
                LimitValue::Unlimited => u64::MAX as f64,
            };
            let max = ConstGauge::new(max);
            max.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                max.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
impl Collector for ProcessMetrics {
    fn encode(&self, _encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn the_process_metrics_have_the_conventional_names_types_and_units() {
        let mut registry = Registry::with_prefix("wsfleet");
        registry.register_collector(Box::new(ProcessMetrics));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE wsfleet_process_cpu_seconds counter",
            "# UNIT wsfleet_process_cpu_seconds seconds",
            "wsfleet_process_cpu_seconds_total ",
            "# TYPE wsfleet_process_resident_memory_bytes gauge",
            "# UNIT wsfleet_process_resident_memory_bytes bytes",
            "# TYPE wsfleet_process_start_time_seconds gauge",
            "# TYPE wsfleet_process_open_fds gauge",
            "# TYPE wsfleet_process_max_fds gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
