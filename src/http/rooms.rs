//! `GET /rooms/{room}`: a room as operators see it (same bearer token as `/broadcast`).

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    Json,
};
use serde_json::{json, Value};

use super::{broadcast::authorize, ApiError};
use crate::{protocol::rooms::is_room_name, state::SharedState};

pub async fn show(
    State(app): State<SharedState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    if !is_room_name(&room) {
        return Err(ApiError::BadRequest(
            "room names are 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'".into(),
        ));
    }
    let info = app.rooms.info(&room).await.map_err(|error| {
        tracing::warn!(%error, "room not read");
        ApiError::Unavailable("redis unavailable".into())
    })?;
    Ok(Json(json!({
        "room": room,
        "members": info.members,
        "users": info.users,
        "offset": info.offset,
        "epoch": info.epoch,
    })))
}
