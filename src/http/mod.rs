//! The HTTP side: the router ([`app`]), the documented API (`/healthz`, `/readyz`,
//! `/metrics`, `/status`, `POST /broadcast`, `GET /rooms/{room}`, `/openapi.json`; listed once
//! in [`openapi::api`]), the `/test/` page and the WebSocket routes; [`serve`] runs it on the
//! listener.

mod broadcast;
mod health;
pub mod openapi;
mod rooms;
pub mod serve;
mod status;
mod test_page;

use std::time::Duration;

use axum::{extract::Request, http::StatusCode, routing::get, Router};
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

/// The whole application router.
pub fn app(state: SharedState) -> Router {
    let (api, _document) = openapi::api().split_for_parts();
    let http = api
        .merge(test_page::routes())
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
