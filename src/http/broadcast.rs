//! `POST /broadcast`: an operator message to every socket of the fleet, to the members of
//! one room (`"room"`), or to one session's socket (`"session"`).
//!
//! Checks run in this order so that nothing about the body is revealed to a caller without
//! the token: endpoint enabled (403), token (401), size (413), JSON (400), `message`, and
//! `room`/`session` (422).

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
    protocol::{
        rooms::{is_room_name, publication_head},
        timestamp_now, validate_session_id, ChannelMessage,
    },
    state::SharedState,
};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The operator check of every operator endpoint: a token is configured (else 403) and the
/// request presents it as a bearer token (else 401).
pub fn authorize(app: &SharedState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &app.settings.broadcast_token else {
        return Err(ApiError::Forbidden(
            "operator endpoints are disabled: no BROADCAST_TOKEN is configured".into(),
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
    Ok(())
}

/// Where a broadcast goes.
enum Target {
    Fleet,
    Room(String),
    Session(String),
}

/// The `room` or `session` field of the body, not both.
fn target_of(fields: &mut serde_json::Map<String, Value>) -> Result<Target, ApiError> {
    let text = |field: &str, value: Value| match value {
        Value::String(text) => Ok(text),
        _ => Err(ApiError::Unprocessable(format!(
            "\"{field}\" must be a string"
        ))),
    };
    match (fields.remove("room"), fields.remove("session")) {
        (Some(_), Some(_)) => Err(ApiError::Unprocessable(
            r#"give "room" or "session", not both"#.into(),
        )),
        (Some(room), None) => {
            let room = text("room", room)?;
            if !is_room_name(&room) {
                return Err(ApiError::Unprocessable(
                    r#""room" must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'"#
                        .into(),
                ));
            }
            Ok(Target::Room(room))
        }
        (None, Some(session)) => {
            let session = text("session", session)?;
            if session.is_empty() || validate_session_id(&session).is_err() {
                return Err(ApiError::Unprocessable(
                    r#""session" must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"#.into(),
                ));
            }
            Ok(Target::Session(session))
        }
        (None, None) => Ok(Target::Fleet),
    }
}

pub async fn publish(
    State(app): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&app, &headers)?;
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
    let missing =
        || ApiError::Unprocessable(r#"body must be a JSON object with a "message" field"#.into());
    let Value::Object(mut fields) = value else {
        return Err(missing());
    };
    let message = fields.remove("message").ok_or_else(missing)?;
    match target_of(&mut fields)? {
        Target::Fleet => {}
        Target::Room(room) => return to_room(&app, room, message).await,
        Target::Session(session) => return to_session(&app, session, message).await,
    }

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

/// A room's members get a `message` frame from `operator`, with the room's next offset.
async fn to_room(
    app: &SharedState,
    room: String,
    message: Value,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let head = publication_head(&room, "operator", &message, None, &timestamp_now());
    let published = app
        .rooms
        .publish(&room, head, None)
        .await
        .map_err(|error| {
            tracing::warn!(%error, room, "room broadcast not published");
            ApiError::Unavailable("redis unavailable".into())
        })?;
    app.metrics.broadcasts_published.inc();
    tracing::info!(room, offset = published.offset, "room broadcast published");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "room": room, "offset": published.offset, "epoch": published.epoch })),
    ))
}

/// The session's socket, wherever it is, gets the `broadcast` frame (not recorded).
async fn to_session(
    app: &SharedState,
    session: String,
    message: Value,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let direct = ChannelMessage::Direct {
        session: session.clone(),
        message,
        ts: timestamp_now(),
    };
    let instances = fanout::publish(&app.store, &direct)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "session broadcast not published");
            ApiError::Unavailable("redis unavailable".into())
        })?;
    app.metrics.broadcasts_published.inc();
    tracing::info!(instances, "session broadcast published");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "session": session, "instances": instances })),
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
