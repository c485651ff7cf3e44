//! `GET /healthz` (the process runs) and `GET /readyz` (it can serve: Redis answers, the
//! pub/sub subscription delivers, it is not draining), for load balancers and orchestrators.

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};
use fred::interfaces::ClientLike;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::SharedState;

/// The answer of `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: whatever answers at all is alive.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

/// The answer of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why the instance is not ready; absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotReady>,
}

/// Why an instance is not ready, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum NotReady {
    /// The shutdown signal came: readiness fails first, then the drain.
    #[serde(rename = "draining")]
    Draining,
    /// Redis did not answer a `PING` within `--redis-timeout`.
    #[serde(rename = "redis unavailable")]
    RedisUnavailable,
    /// Nothing came back through the pub/sub channel in the last 3 s.
    #[serde(rename = "pub/sub subscription not delivering")]
    SubscriptionNotDelivering,
}

/// 200 while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    responses((status = 200, description = "The process runs", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// 200 only when Redis answers, the pub/sub subscription delivers and we are not draining.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    responses(
        (status = 200, description = "Ready to take sockets", body = Readiness,
            example = json!({"ready": true})),
        (status = 503, description = "Not ready, with the reason", body = Readiness,
            example = json!({"ready": false, "reason": "draining"})),
    ),
)]
pub async fn readyz(State(app): State<SharedState>) -> impl IntoResponse {
    let reason = if app.is_draining() {
        Some(NotReady::Draining)
    } else if app
        .store
        .timed("ping", app.store.redis().ping::<String>(None))
        .await
        .is_err()
    {
        Some(NotReady::RedisUnavailable)
    } else if !app.fanout.subscription_is_live() {
        Some(NotReady::SubscriptionNotDelivering)
    } else {
        None
    };
    app.metrics
        .redis_available
        .set(i64::from(reason != Some(NotReady::RedisUnavailable)));
    let status = match reason {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let ready = reason.is_none();
    (status, Json(Readiness { ready, reason }))
}
