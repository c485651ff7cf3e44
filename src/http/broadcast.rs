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
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::{
    fanout,
    identity::bearer_token,
    protocol::{timestamp_now, ChannelMessage},
    state::SharedState,
};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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
    let message = match value {
        Value::Object(mut fields) => fields.remove("message"),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::Unprocessable(r#"body must be a JSON object with a "message" field"#.into())
    })?;

    let published = ChannelMessage::Broadcast {
        message,
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
        Json(json!({ "instances": instances, "connections": connections })),
    ))
}
