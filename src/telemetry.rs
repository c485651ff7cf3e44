//! Logging: one JSON object per line (or pretty text for humans), every line stamped with the
//! instance id and colour so that the merged logs of a fleet stay readable.
//!
//! Logging never blocks the server. Lines go through a bounded queue to a writer thread of
//! their own (tracing-appender's non-blocking writer, lossy): if stdout stalls (a stuck log
//! shipper, a full pipe), the queue fills and further lines are dropped and counted
//! (`wsfleet_log_lines_dropped_total`), while sockets, probes and the drain go on. Warnings that
//! can repeat per frame or per connection go through [`warn_throttled!`](crate::warn_throttled).

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use serde_json::{Map, Value};
use tracing::{field::Field, Event, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    field::Visit,
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields, FormattedFields},
    registry::LookupSpan,
    EnvFilter,
};

use crate::config::LogFormat;

/// Lines queued for the writer thread before new ones are dropped. A JSON line is ~300 bytes,
/// so this bounds the queue near 5 MB, and holds ~1 s of `RUST_LOG=debug` under load: enough to
/// ride out a slow reader, small enough that a stalled one costs little memory. (The crate's
/// default, 128 000, would be ~40 MB.)
const QUEUED_LINES: usize = 16_384;

/// How often a [`warn_throttled!`](crate::warn_throttled) call site may log: once per 10 s
/// still shows within one scrape interval or two that something goes on, while a Redis outage
/// at 10 000 frames/s writes one line per call site instead of 100 000.
pub const THROTTLE_INTERVAL: Duration = Duration::from_secs(10);

/// Counts the lines the writer dropped; set by the first [`init`].
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` overrides the default `info` filter.
/// Calling it twice is harmless (the second call does nothing), which tests rely on.
///
/// Keep the returned guard until the process exits and end with [`LogGuard::flush`]; dropping
/// it earlier stops the writer thread, and later lines are lost.
pub fn init(format: LogFormat, instance: &str, color: &str) -> LogGuard {
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("wsfleet-log")
        .finish(std::io::stdout());
    let dropped = writer.error_counter();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLine {
                instance: instance.to_string(),
                color: color.to_string(),
            })
            .try_init(),
        LogFormat::Pretty => builder.with_target(true).try_init(),
    };
    if installed.is_ok() {
        let _ = DROPPED.set(dropped);
    }
    LogGuard(Some(worker))
}

/// Log lines dropped so far because stdout did not keep up (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Keeps the log writer thread alive; [`LogGuard::flush`] writes out what is queued.
#[must_use = "dropping the guard stops the log writer; keep it until the process exits"]
pub struct LogGuard(Option<WorkerGuard>);

impl LogGuard {
    /// Waits up to `patience` for the queued lines to be written, then gives up: with a stalled
    /// stdout, waiting longer would only make the process overrun its shutdown deadline.
    /// Returns whether everything was written.
    pub fn flush(mut self, patience: Duration) -> bool {
        self.0
            .take()
            .is_none_or(|worker| stop_writer(worker, patience))
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(worker) = self.0.take() {
            stop_writer(worker, Duration::ZERO);
        }
    }
}

/// Drops tracing-appender's guard on a thread of its own and waits at most `patience`. Its drop
/// waits for the writer (up to ~1.1 s) and, when the queue is full, prints to stdout, which
/// would block for good on a stalled pipe; the process must still exit, so it is not waited on.
fn stop_writer(worker: WorkerGuard, patience: Duration) -> bool {
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("wsfleet-log-flush".into())
        .spawn(move || {
            drop(worker);
            let _ = done.send(());
        });
    // Without a thread (out of resources) the guard was dropped with the closure, here.
    spawned.is_ok() && finished.recv_timeout(patience).is_ok()
}

/// One call site's state for [`warn_throttled!`](crate::warn_throttled): when it last logged and
/// how many lines it held back since. Lock-free, `const`-constructible for a `static`.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Milliseconds since the process's first throttle check, plus one, of the last line
    /// logged; 0: never.
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new() -> Self {
        Throttle {
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, saying `n` lines were held back since the last one; `None`: hold
    /// this one back.
    pub fn admit(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let now_ms = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
        self.admit_at(now_ms, THROTTLE_INTERVAL)
    }

    fn admit_at(&self, now_ms: u64, interval: Duration) -> Option<u64> {
        let stamp = now_ms.saturating_add(1);
        let last = self.last_ms.load(Ordering::Acquire);
        let due = last == 0 || stamp.saturating_sub(last) >= interval.as_millis() as u64;
        // Of racing callers, one wins the slot; the others count as held back.
        if due
            && self
                .last_ms
                .compare_exchange(last, stamp, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// `tracing::warn!` for warnings that can repeat per frame or per connection: each call site
/// logs at most once per [`THROTTLE_INTERVAL`](crate::telemetry::THROTTLE_INTERVAL), with a
/// `suppressed` field counting the lines it held back since its last one. Same arguments as
/// `tracing::warn!`.
#[macro_export]
macro_rules! warn_throttled {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::telemetry::Throttle = $crate::telemetry::Throttle::new();
        if let Some(suppressed) = THROTTLE.admit() {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

/// Formats an event as `{"timestamp", "level", "target", "instance", "color", "message", …}`,
/// with the fields of the event and of every enclosing span flattened in.
struct JsonLine {
    instance: String,
    color: String,
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), crate::protocol::timestamp_now().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("instance".into(), self.instance.clone().into());
        line.insert("color".into(), self.color.clone().into());
        // Span fields were already rendered as JSON by `JsonFields`; outer spans first so
        // that inner ones win on a name clash.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields) {
                        line.extend(map);
                    }
                }
            }
        }
        event.record(&mut FieldVisitor(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct FieldVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain, once, so the log says why and not just what.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.0.insert(field.name().into(), text.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new();
        let interval = Duration::from_secs(10);
        assert_eq!(throttle.admit_at(0, interval), Some(0));
        for ms in [1, 500, 9_998] {
            assert_eq!(throttle.admit_at(ms, interval), None, "at {ms} ms");
        }
        assert_eq!(throttle.admit_at(10_000, interval), Some(3));
        assert_eq!(throttle.admit_at(10_001, interval), None);
        assert_eq!(throttle.admit_at(60_000, interval), Some(1));
        assert_eq!(throttle.admit_at(u64::MAX, interval), Some(0));
    }

    #[test]
    fn flushing_a_guard_whose_writer_is_stuck_gives_up_in_time() {
        struct Stuck(std::sync::mpsc::Receiver<()>);
        impl std::io::Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                // Blocks until the test ends (the sender is dropped), like a full pipe.
                let _ = self.0.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (release, stuck) = std::sync::mpsc::channel();
        let (mut writer, worker) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(2)
            .finish(Stuck(stuck));
        for _ in 0..10 {
            std::io::Write::write_all(&mut writer, b"line\n").unwrap();
        }
        assert!(writer.error_counter().dropped_lines() > 0);
        let started = Instant::now();
        assert!(!LogGuard(Some(worker)).flush(Duration::from_millis(200)));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(release);
    }
}
