//! `POST /broadcast`: an operator message to every socket of the fleet.
//!
//! Checks run in this order so that nothing about the body is revealed to a caller without
//! the token: endpoint enabled (403), token (401), size (413), JSON (400), `message` (422).

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    Json,
};
use serde::Serialize;
use serde_json::Value;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::ApiError;
use crate::{
    error::ErrorBody,
    fanout,
    protocol::{timestamp_now, ChannelMessage},
    state::SharedState,
};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body of `POST /broadcast`.
// Read by hand rather than with a `Json` extractor, so that the checks run in the order above.
#[derive(Debug, ToSchema)]
pub struct BroadcastRequest {
    /// Sent to every socket as `{"broadcast": <message>, "ts": …}`: a string or any JSON value.
    #[schema(value_type = Value, example = "maintenance at 22:00")]
    pub message: Value,
}

/// The answer of `POST /broadcast`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    /// Instances subscribed to the channel when it was published (Redis's `PUBLISH` count).
    pub instances: u64,
    /// Sockets of the fleet at that moment, from the registry.
    pub connections: u64,
}

/// An operator message to every socket of the fleet.
#[utoipa::path(
    post,
    path = "/broadcast",
    tag = "broadcast",
    request_body(content = BroadcastRequest, description = "At most 64 KiB"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Published on the fan-out channel", body = Published),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Broadcast is disabled: no `BROADCAST_TOKEN` is configured",
            body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 422, description = "The body is not a JSON object with a `message` field",
            body = ErrorBody),
        (status = 503, description = "Redis is unavailable; nothing was published",
            body = ErrorBody),
    ),
)]
pub async fn publish(
    State(app): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let Some(token) = &app.settings.broadcast_token else {
        return Err(ApiError::Forbidden(
            "broadcast is disabled: no BROADCAST_TOKEN is configured".into(),
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
        return Err(ApiError::Unauthorized);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
    let request = match value {
        Value::Object(mut fields) => fields
            .remove("message")
            .map(|message| BroadcastRequest { message }),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::Unprocessable(r#"body must be a JSON object with a "message" field"#.into())
    })?;

    let published = ChannelMessage::Broadcast {
        message: request.message,
        ts: timestamp_now(),
    };
    let instances = fanout::publish(&app.store, &published)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "broadcast not published");
            ApiError::Unavailable("redis unavailable".into())
        })?;
    app.metrics.broadcasts_published.inc();
    let connections = match app.registry.snapshot().await {
        Ok(records) => records.iter().map(|r| r.connections).sum(),
        Err(_) => app.registry.fleet_connections(),
    };
    tracing::info!(instances, connections, "broadcast published");
    Ok((
        StatusCode::ACCEPTED,
        Json(Published {
            instances,
            connections,
        }),
    ))
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive and
/// may be followed by more than one space (RFC 7235 section 2.1); the token is taken as is.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}
