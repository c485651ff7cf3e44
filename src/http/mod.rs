//! The HTTP side: the router and the operator endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/status`, `POST /broadcast`, `GET /rooms/{room}`, the `/test/` page); [`serve`] runs it on
//! the listener.

mod broadcast;
mod rooms;
pub mod serve;

use std::time::Duration;

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Json, Router,
};
use fred::interfaces::ClientLike;
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::{DefaultOnFailure, TraceLayer},
};

pub use crate::error::ApiError;

use crate::{state::SharedState, ws};

/// No plain HTTP request may hold shutdown up longer than this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

const TEST_PAGE: &str = include_str!("test_page.html");

/// The whole application router.
pub fn app(state: SharedState) -> Router {
    let http = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/broadcast", post(broadcast::publish))
        .route("/rooms/{room}", get(rooms::show))
        .route("/test/", get(test_page))
        .route("/test", get(|| async { Redirect::permanent("/test/") }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            HTTP_TIMEOUT,
        ));
    // The socket routes get no timeout layer: upgraded connections live for hours.
    let sockets = Router::new()
        .route("/ws/chat/", get(ws::upgrade))
        .route("/ws/chat", get(ws::upgrade));
    // Every request gets an `x-request-id` (nginx's, or a new UUID), carried by the span of
    // every log line it causes and echoed in the response.
    let request_ids = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(TraceLayer::new_for_http()
            // 503 from /readyz is an answer, not a failure: keep it out of the error log.
            .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
            .make_span_with(|request: &Request<_>| {
            let id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id());
    http.merge(sockets)
        .fallback(|| async { ApiError::NotFound })
        .layer(request_ids)
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 only when Redis answers, the pub/sub subscription delivers and we are not draining.
async fn readyz(State(app): State<SharedState>) -> Response {
    let reason = if app.is_draining() {
        Some("draining")
    } else if app
        .store
        .timed("ping", app.store.redis().ping::<String>(None))
        .await
        .is_err()
    {
        Some("redis unavailable")
    } else if !app.fanout.subscription_is_live() {
        Some("pub/sub subscription not delivering")
    } else {
        None
    };
    app.metrics
        .redis_available
        .set(i64::from(reason != Some("redis unavailable")));
    match reason {
        None => (StatusCode::OK, Json(json!({ "ready": true }))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<SharedState>) -> impl IntoResponse {
    // Values that are cheaper to compute at scrape time than to keep current.
    app.metrics
        .fleet_connections
        .set(app.registry.fleet_connections() as i64);
    app.metrics
        .heartbeat_age
        .set(app.fanout.heartbeat_age().unwrap_or(-1.0));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
}

async fn status(State(app): State<SharedState>) -> Json<serde_json::Value> {
    // With Redis down the instance list is empty and the fleet count is the last one seen.
    let instances = app.registry.snapshot().await.unwrap_or_default();
    let instances: Vec<_> = instances
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "color": i.color,
                "connections": i.connections,
                "draining": i.draining,
                "last_seen": chrono::DateTime::from_timestamp_millis(i.last_seen as i64)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            })
        })
        .collect();
    Json(json!({
        "instance": app.registry.instance_id(),
        "color": app.settings.color.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": app.started.elapsed().as_secs(),
        "draining": app.is_draining(),
        "connections": {
            "local": app.local_connections(),
            "fleet": app.registry.fleet_connections(),
        },
        "instances": instances,
    }))
}

async fn test_page() -> Html<&'static str> {
    Html(TEST_PAGE)
}
