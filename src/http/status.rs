//! What an instance reports about itself and its fleet: `GET /status` (JSON, for operators and
//! `make status`) and `GET /metrics` (OpenMetrics text, for Prometheus).

use axum::{extract::State, http::header, response::IntoResponse, Json};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{config::Color, state::SharedState};

/// The answer of `/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// This instance's id (`INSTANCE_ID`).
    pub instance: String,
    pub color: Color,
    /// The server's version.
    #[schema(value_type = String, example = "0.1.0")]
    pub version: &'static str,
    /// Seconds since this process started.
    pub uptime_s: u64,
    /// Whether this instance is draining (shutting down).
    pub draining: bool,
    pub connections: Connections,
    /// The live instances of the fleet, from the registry in Redis; empty while Redis cannot
    /// be read.
    pub instances: Vec<InstanceStatus>,
}

/// Open sockets.
#[derive(Debug, Serialize, ToSchema)]
pub struct Connections {
    /// On this instance.
    pub local: usize,
    /// In the whole fleet, from the registry; the last count seen while Redis cannot be read.
    pub fleet: u64,
}

/// One live instance of the fleet, as the registry holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceStatus {
    pub id: String,
    /// The colour the instance registered with (`blue` or `green`).
    #[schema(example = "blue")]
    pub color: String,
    /// Its open sockets.
    pub connections: u64,
    pub draining: bool,
    /// Its last lease renewal (RFC 3339, UTC, milliseconds, by Redis's clock); null if the
    /// registry holds a time that cannot be shown.
    #[schema(required = true, format = DateTime, example = "2025-01-01T12:00:00.000Z")]
    pub last_seen: Option<String>,
}

/// This instance, its connections and the live instances of the fleet.
#[utoipa::path(
    get,
    path = "/status",
    tag = "fleet",
    responses((status = 200, description = "This instance and the live fleet", body = Status)),
)]
pub async fn status(State(app): State<SharedState>) -> Json<Status> {
    // With Redis down the instance list is empty and the fleet count is the last one seen.
    let instances = app.registry.snapshot().await.unwrap_or_default();
    let instances = instances
        .iter()
        .map(|i| InstanceStatus {
            id: i.id.clone(),
            color: i.color.clone(),
            connections: i.connections,
            draining: i.draining,
            last_seen: chrono::DateTime::from_timestamp_millis(i.last_seen as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        })
        .collect();
    Json(Status {
        instance: app.registry.instance_id().to_string(),
        color: app.settings.color,
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: app.started.elapsed().as_secs(),
        draining: app.is_draining(),
        connections: Connections {
            local: app.local_connections(),
            fleet: app.registry.fleet_connections(),
        },
        instances,
    })
}

/// The media type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus metrics in the OpenMetrics text format, names prefixed `wsfleet_`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "fleet",
    responses((status = 200, description = "The metrics, in the OpenMetrics text format",
        body = String, content_type = OPENMETRICS)),
)]
pub async fn metrics(State(app): State<SharedState>) -> impl IntoResponse {
    // Values that are cheaper to compute at scrape time than to keep current.
    app.metrics
        .fleet_connections
        .set(app.registry.fleet_connections() as i64);
    app.metrics
        .heartbeat_age
        .set(app.fanout.heartbeat_age().unwrap_or(-1.0));
    ([(header::CONTENT_TYPE, OPENMETRICS)], app.metrics.encode())
}
