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
    Json,
};
use fred::{
    interfaces::KeysInterface,
    types::{Expiration, SetOptions},
};
use serde::Serialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::ApiError;
use crate::{
    error::ErrorBody,
    fanout,
    history::Publication,
    identity::bearer_token,
    protocol::{
        broadcast_head,
        rooms::{is_room_name, publication_head},
        timestamp_now, validate_session_id, ChannelMessage,
    },
    state::SharedState,
    store::StoreError,
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

/// The body of `POST /broadcast`.
// Read by hand rather than with a `Json` extractor, so that the checks run in the order above.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // the document's description of the body; the handler reads a `Value`
pub struct BroadcastRequest {
    /// Sent as `{"broadcast": <message>, …}` (or a room's `message` frame): a string or any
    /// JSON value.
    #[schema(value_type = Value, example = "maintenance at 22:00")]
    pub message: Value,
    /// Publish to this room's members instead of the whole fleet.
    #[schema(value_type = Option<String>, example = "lobby")]
    pub room: Option<String>,
    /// Send only to this session's socket (not recorded, no offset).
    #[schema(value_type = Option<String>)]
    pub session: Option<String>,
}

/// The answer of `POST /broadcast`: one shape per target.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's description of the answers, built with `json!`
pub enum Published {
    /// To the whole fleet: the broadcast stream's offset and epoch, the instances the channel
    /// reached and the fleet's sockets at that moment.
    Fleet {
        instances: u64,
        connections: u64,
        offset: u64,
        epoch: String,
    },
    /// To a room: the room's offset and epoch.
    Room {
        room: String,
        offset: u64,
        epoch: String,
    },
    /// To one session: the instances the channel reached (the one holding its socket
    /// delivers it).
    Session { session: String, instances: u64 },
}

/// An operator message to the fleet, a room or one session.
#[utoipa::path(
    post,
    path = "/broadcast",
    tag = "broadcast",
    request_body(content = BroadcastRequest, description = "At most 64 KiB"),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1-64 visible ASCII characters: a repeat within HISTORY_TTL, on any \
            instance, publishes nothing and answers 200 with the first answer's body")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Published", body = Published),
        (status = 200, description = "A repeat of an `Idempotency-Key`: nothing was published",
            body = Published),
        (status = 400, description = "The body is not valid JSON, or a bad `Idempotency-Key`",
            body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "Broadcast is disabled: no `BROADCAST_TOKEN` is configured",
            body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 422, description = "No `message`, both `room` and `session`, or a bad name",
            body = ErrorBody),
        (status = 503, description = "Redis is unavailable; nothing was published",
            body = ErrorBody),
    ),
)]
pub async fn publish(
    State(app): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&app, &headers)?;
    let idempotency = idempotency_key(&headers)?;
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
    // Operators' keys and clients' message ids never share a key.
    let key = idempotency.map(|k| format!("k:{k}"));
    match target_of(&mut fields)? {
        Target::Fleet => to_fleet(&app, message, key).await,
        Target::Room(room) => to_room(&app, room, message, key).await,
        Target::Session(session) => to_session(&app, session, message, key).await,
    }
}

/// `Idempotency-Key`: 1-64 visible ASCII characters, or none.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty() && key.len() <= 64 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_string()))
        }
        _ => Err(ApiError::BadRequest(
            "Idempotency-Key must be 1-64 visible ASCII characters".into(),
        )),
    }
}

fn unavailable(error: StoreError) -> ApiError {
    tracing::warn!(%error, "broadcast not published");
    ApiError::Unavailable("redis unavailable".into())
}

/// The body a repeat of an idempotent request answers: what the first one stored (its
/// whole answer), or, while the first is still being answered, its offset and epoch.
fn first_answer(seen: &str, target: Value) -> Value {
    if let Ok(body @ Value::Object(_)) = serde_json::from_str::<Value>(seen) {
        return body;
    }
    let mut body = target;
    if let Some((offset, epoch)) = seen.split_once(' ') {
        body["offset"] = json!(offset.parse::<u64>().unwrap_or(0));
        body["epoch"] = json!(epoch);
    }
    body
}

/// Keeps the whole first answer under the idempotency key (which the publication made), so
/// that repeats answer it byte for byte. A failure only leaves the shorter form.
async fn remember_answer(app: &SharedState, key: &str, body: &Value) {
    let call = app.store.redis().set::<(), _, _>(
        key,
        body.to_string(),
        Some(Expiration::KEEPTTL),
        Some(SetOptions::XX),
        false,
    );
    if let Err(error) = app.store.timed("publish", call).await {
        tracing::debug!(%error, "keeping the answer of an idempotent broadcast failed");
    }
}

/// Every socket of the fleet, through the broadcast stream (offset, history).
async fn to_fleet(
    app: &SharedState,
    message: Value,
    key: Option<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let head = broadcast_head(&message, &timestamp_now());
    let published = app
        .history
        .publish("publish", &app.broadcasts, head, key.as_deref())
        .await
        .map_err(unavailable)?;
    let (offset, epoch, instances) = match published {
        Publication::New {
            offset,
            epoch,
            receivers,
        } => (offset, epoch, receivers),
        Publication::Repeat { seen } => {
            return Ok((StatusCode::OK, Json(first_answer(&seen, json!({})))));
        }
    };
    app.metrics.broadcasts_published.inc();
    let connections = match app.registry.snapshot().await {
        Ok(records) => records.iter().map(|r| r.connections).sum(),
        Err(_) => app.registry.fleet_connections(),
    };
    tracing::info!(instances, connections, offset, "broadcast published");
    let body = json!({
        "instances": instances,
        "connections": connections,
        "offset": offset,
        "epoch": epoch,
    });
    if let Some(key) = &key {
        remember_answer(app, &app.broadcasts.idempotency_key(key), &body).await;
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// A room's members get a `message` frame from `operator`, with the room's next offset.
async fn to_room(
    app: &SharedState,
    room: String,
    message: Value,
    key: Option<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let head = publication_head(&room, "operator", &message, None, &timestamp_now());
    let published = app
        .rooms
        .publish(&room, head, key.as_deref())
        .await
        .map_err(unavailable)?;
    match published {
        Publication::New { offset, epoch, .. } => {
            app.metrics.broadcasts_published.inc();
            tracing::info!(room, offset, "room broadcast published");
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "room": room, "offset": offset, "epoch": epoch })),
            ))
        }
        Publication::Repeat { seen } => Ok((
            StatusCode::OK,
            Json(first_answer(&seen, json!({ "room": room }))),
        )),
    }
}

/// The session's socket, wherever it is, gets the `broadcast` frame (not recorded).
async fn to_session(
    app: &SharedState,
    session: String,
    message: Value,
    key: Option<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let idempotency = key.map(|k| app.broadcasts.idempotency_key(&format!("s:{session}:{k}")));
    if let Some(key) = &idempotency {
        // Taken first: the message is not recorded, so this key is all that stops a repeat.
        let call = app.store.redis().set::<Option<String>, _, _>(
            key.as_str(),
            "taken",
            Some(Expiration::PX(app.history.ttl_ms())),
            Some(SetOptions::NX),
            true,
        );
        if let Some(seen) = app
            .store
            .timed("publish", call)
            .await
            .map_err(unavailable)?
        {
            let target = json!({ "session": session });
            return Ok((StatusCode::OK, Json(first_answer(&seen, target))));
        }
    }
    let direct = ChannelMessage::Direct {
        session: session.clone(),
        message,
        ts: timestamp_now(),
    };
    let instances = fanout::publish(&app.store, &direct)
        .await
        .map_err(unavailable)?;
    app.metrics.broadcasts_published.inc();
    tracing::info!(instances, "session broadcast published");
    let body = json!({ "session": session, "instances": instances });
    if let Some(key) = &idempotency {
        remember_answer(app, key, &body).await;
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
}
