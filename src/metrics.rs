//! Prometheus metrics (prometheus-client), all named `wsfleet_…`.
//!
//! No label ever carries a connection or session id: label values come from small fixed sets
//! (close codes, reject reasons, Redis operations; `labels.rs` lists them), anything else
//! counts as `other`, so the series count stays bounded whatever clients send. Every series of
//! those sets exists at 0 from start-up.

mod labels;
mod process;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
        info::Info,
    },
    registry::{Registry, Unit},
};

pub use labels::{
    CloseCodeValue, CodeLabel, OperationFamily, OperationLabel, ReasonLabel, CLOSE_CODES, OTHER,
    REDIS_OPERATIONS, REJECT_REASONS,
};

/// Builds the histogram of one Redis operation: 50 µs to ~3.3 s, doubling.
fn redis_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
    color: String,
}

/// Every metric the process exports. Cloning a metric handle is cheap (an `Arc`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections_active: Gauge,
    pub connections_max: Gauge,
    pub fleet_connections: Gauge,
    pub connections_opened: Counter,
    pub connections_closed: Family<CodeLabel, Counter>,
    pub upgrades_rejected: Family<ReasonLabel, Counter>,
    pub messages_received: Counter,
    pub messages_sent: Counter,
    pub message_duration: Histogram,
    pub redis_errors: OperationFamily<Counter>,
    pub redis_duration: OperationFamily<Histogram, fn() -> Histogram>,
    /// Seconds since a heartbeat last arrived through the channel; set at scrape time.
    pub heartbeat_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub heartbeats_received: Counter,
    pub startup_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub shutdown_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub redis_available: Gauge,
    pub pubsub_received: Counter,
    pub heartbeats_published: Counter,
    pub broadcasts_published: Counter,
    /// Rooms with a member on this instance (set at every lease renewal).
    pub rooms_active: Gauge,
    /// Publications to rooms made through this instance (client messages and operators').
    pub room_messages: Counter,
    /// Room frames (publications and presence events) handed to local sockets.
    pub room_deliveries: Counter,
    pub slow_consumer_closes: Counter,
    pub draining: Gauge,
}

impl Metrics {
    pub fn new(color: &str) -> Self {
        let mut registry = Registry::with_prefix("wsfleet");
        let m = Metrics {
            connections_active: Gauge::default(),
            connections_max: Gauge::default(),
            fleet_connections: Gauge::default(),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            upgrades_rejected: Family::default(),
            messages_received: Counter::default(),
            messages_sent: Counter::default(),
            // 50 µs to ~3.3 s: a Redis round trip on loopback is ~100 µs, a stalled one seconds.
            message_duration: Histogram::new(exponential_buckets(0.00005, 2.0, 17)),
            redis_errors: OperationFamily::new(Family::default()),
            redis_duration: OperationFamily::new(Family::new_with_constructor(redis_histogram)),
            heartbeat_age: Gauge::default(),
            heartbeats_received: Counter::default(),
            startup_duration: Gauge::default(),
            shutdown_duration: Gauge::default(),
            redis_available: Gauge::default(),
            pubsub_received: Counter::default(),
            heartbeats_published: Counter::default(),
            broadcasts_published: Counter::default(),
            rooms_active: Gauge::default(),
            room_messages: Counter::default(),
            room_deliveries: Counter::default(),
            slow_consumer_closes: Counter::default(),
            draining: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connections_active",
            "WebSocket connections open on this instance",
            m.connections_active.clone(),
        );
        r.register(
            "connections_max",
            "Most sockets this instance accepts (MAX_CONNECTIONS or the open-file limit)",
            m.connections_max.clone(),
        );
        r.register(
            "fleet_connections",
            "WebSocket connections open in the whole fleet, from the Redis registry",
            m.fleet_connections.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections accepted",
            m.connections_opened.clone(),
        );
        r.register(
            "connections_closed",
            "WebSocket connections closed, by close code (1006: no close frame; other: a code outside the known set)",
            m.connections_closed.clone(),
        );
        r.register(
            "upgrades_rejected",
            "WebSocket upgrade requests refused, by reason",
            m.upgrades_rejected.clone(),
        );
        r.register(
            "messages_received",
            "Text frames received from clients",
            m.messages_received.clone(),
        );
        r.register(
            "messages_sent",
            "Frames sent to clients (replies, heartbeats, broadcasts)",
            m.messages_sent.clone(),
        );
        r.register_with_unit(
            "message_handling",
            "Time from a text frame's arrival to its reply being written",
            Unit::Seconds,
            m.message_duration.clone(),
        );
        r.register(
            "redis_errors",
            "Redis commands that failed or timed out, by operation",
            m.redis_errors.family().clone(),
        );
        r.register_with_unit(
            "redis_command_duration",
            "Redis command round trips, by operation",
            Unit::Seconds,
            m.redis_duration.family().clone(),
        );
        r.register_with_unit(
            "heartbeat_age",
            "Time since the last fleet heartbeat arrived (-1: none yet)",
            Unit::Seconds,
            m.heartbeat_age.clone(),
        );
        r.register(
            "heartbeats_received",
            "Fleet heartbeats received through the channel",
            m.heartbeats_received.clone(),
        );
        r.register_with_unit(
            "startup_duration",
            "Time from process start to serving",
            Unit::Seconds,
            m.startup_duration.clone(),
        );
        r.register_with_unit(
            "shutdown_duration",
            "Time the last drain took (0 until one happens)",
            Unit::Seconds,
            m.shutdown_duration.clone(),
        );
        r.register(
            "redis_available",
            "1 while the Redis connection is up",
            m.redis_available.clone(),
        );
        r.register(
            "pubsub_messages_received",
            "Messages received on the fan-out channel",
            m.pubsub_received.clone(),
        );
        r.register(
            "heartbeats_published",
            "Heartbeats this instance published as the elected publisher",
            m.heartbeats_published.clone(),
        );
        r.register(
            "broadcasts_published",
            "Operator broadcasts published through this instance",
            m.broadcasts_published.clone(),
        );
        r.register(
            "rooms_active",
            "Rooms with at least one member on this instance",
            m.rooms_active.clone(),
        );
        r.register(
            "room_messages",
            "Publications to rooms made through this instance",
            m.room_messages.clone(),
        );
        r.register(
            "room_deliveries",
            "Room frames (publications, presence events) handed to local sockets",
            m.room_deliveries.clone(),
        );
        r.register(
            "slow_consumer_closes",
            "Sockets closed because they fell too far behind the fan-out",
            m.slow_consumer_closes.clone(),
        );
        r.register(
            "draining",
            "1 while this instance drains for shutdown",
            m.draining.clone(),
        );
        r.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("WSFLEET_COMMIT"),
                color: color.to_string(),
            }),
        );
        r.register_collector(Box::new(LogLinesDropped));
        r.register_collector(Box::new(process::ProcessMetrics));
        // Every series known in advance exists from the start, at 0. Not the Redis duration
        // histograms: a quantile of no observations is no data either way, and 12 empty
        // histograms would add ~240 lines to every scrape.
        let codes = CLOSE_CODES.iter().map(|&code| CloseCodeValue::Known(code));
        for code in codes.chain([CloseCodeValue::Other]) {
            let _ = m.connections_closed.get_or_create(&CodeLabel { code });
        }
        for reason in REJECT_REASONS.iter().chain([&OTHER]) {
            let _ = m.upgrades_rejected.get_or_create(&ReasonLabel { reason });
        }
        m.redis_errors.create_all();
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts a refused upgrade; `reason` should be one of [`REJECT_REASONS`] (else `other`).
    pub fn rejected(&self, reason: &'static str) {
        let reason = labels::known_or_other("upgrade reject reason", REJECT_REASONS, reason);
        self.upgrades_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a closed socket under its code, or `other` when it is not in [`CLOSE_CODES`]
    /// (clients choose their close codes).
    pub fn closed(&self, code: u16) {
        self.connections_closed
            .get_or_create(&CodeLabel {
                code: CloseCodeValue::of(code),
            })
            .inc();
    }
}

/// `wsfleet_log_lines_dropped_total`, read from the log writer at scrape time.
#[derive(Debug)]
struct LogLinesDropped;

impl Collector for LogLinesDropped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(crate::telemetry::dropped_lines());
        let metric = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because stdout did not keep up (logging never blocks the server)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_metrics_are_exported_with_the_wsfleet_prefix() {
        let m = Metrics::new("blue");
        m.messages_received.inc();
        m.closed(1001);
        let text = m.encode();
        for name in [
            "# TYPE wsfleet_connections_active gauge",
            "# TYPE wsfleet_fleet_connections gauge",
            "# TYPE wsfleet_messages_received counter",
            "wsfleet_messages_received_total 1",
            "wsfleet_connections_closed_total{code=\"1001\"} 1",
            "wsfleet_connections_closed_total{code=\"1000\"} 0",
            "wsfleet_connections_closed_total{code=\"other\"} 0",
            "wsfleet_upgrades_rejected_total{reason=\"capacity\"} 0",
            "wsfleet_redis_errors_total{operation=\"increment\"} 0",
            "# TYPE wsfleet_log_lines_dropped counter",
            "wsfleet_log_lines_dropped_total 0",
            "wsfleet_message_handling_seconds_bucket",
            "wsfleet_build_info{version=",
            ",commit=\"",
        ] {
            assert!(text.contains(name), "missing {name:?} in\n{text}");
        }
    }
}
