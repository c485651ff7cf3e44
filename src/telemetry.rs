//! Logging: one JSON object per line (or pretty text for humans), every line stamped with the
//! instance id and colour so that the merged logs of a fleet stay readable.

use std::fmt;

use serde_json::{Map, Value};
use tracing::{field::Field, Event, Subscriber};
use tracing_subscriber::{
    field::Visit,
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields, FormattedFields},
    registry::LookupSpan,
    EnvFilter,
};

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the default `info` filter.
/// Calling it twice is harmless (the second call does nothing), which tests rely on.
pub fn init(format: LogFormat, instance: &str, color: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLine {
                instance: instance.to_string(),
                color: color.to_string(),
            })
            .try_init(),
        LogFormat::Pretty => builder.with_target(true).try_init(),
    };
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
