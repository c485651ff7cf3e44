//! The JSON error every HTTP route, and the WebSocket upgrade before it upgrades, answers
//! with: `{"error": "<short reason>"}`. Its own module because both `http` and `ws` use it.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use thiserror::Error;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A short reason for a human, e.g. `missing or wrong bearer token`.
    #[schema(example = "missing or wrong bearer token")]
    pub error: String,
}

use crate::identity::TokenError;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The upgrade's JWT was missing or refused (`crate::identity::TokenError`).
    #[error("{0}")]
    BadToken(crate::identity::TokenError),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::BadToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(ErrorBody {
            error: self.to_string(),
        });
        match self {
            ApiError::Unauthorized | ApiError::BadToken(TokenError::Missing) => {
                (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
            }
            // RFC 6750 section 3.1: a token was presented and refused.
            ApiError::BadToken(_) => (
                status,
                [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
                body,
            )
                .into_response(),
            _ => (status, body).into_response(),
        }
    }
}
