//! Who a socket is, decided before its upgrade: the public user id, the rooms it may join and
//! when its token expires.
//!
//! With authentication on (`AUTH_SECRET`, `AUTH_SECRET_FILE` or `AUTH_PUBLIC_KEY_FILE`, see
//! [`token::Verifier`]) every upgrade carries a JWT and the user is its `sub`. Without it
//! (development) the user is whatever the client says in `user`, or an id derived from the
//! session id that does not reveal it (SPEC "Identity"; docs/PROTOCOL.md, "Identity").

pub mod token;

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::time::Instant;

pub use token::{Claims, TokenError, Verifier};

/// Longest `user` parameter (development only).
pub const MAX_USER_LEN: usize = 64;

/// Who a socket is. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The public user id: the token's `sub`; without authentication the `user` parameter or
    /// `anon-` + 12 hex of SHA-256 of the session id. Shown to other clients (room presence,
    /// senders); never the session id.
    pub user: Arc<str>,
    /// The `rooms` claim: names and `prefix*` patterns. `None`: every room.
    rooms: Option<Arc<[Box<str>]>>,
    /// When the token expires; the socket is closed 1008 `token expired` then. `None`
    /// without authentication.
    pub expires: Option<Instant>,
    /// The user was proven by a token, so it owns the sessions it creates.
    verified: bool,
}

impl Identity {
    /// Whether this user may join `room`: no `rooms` claim (or no authentication) allows
    /// every room; a pattern ending in `*` allows the rooms starting with what precedes it
    /// (a literal prefix, nothing else is special); any other entry is one exact name.
    pub fn may_join(&self, room: &str) -> bool {
        let Some(patterns) = &self.rooms else {
            return true;
        };
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => **p == *room,
        })
    }

    /// The owner to record on a session this socket claims (see `counter::scripts::CLAIM_LUA`):
    /// the verified user, or `None` without authentication, where ownership is not enforced
    /// because the user is whatever the client says and would prove nothing.
    pub fn owner(&self) -> Option<&str> {
        self.verified.then_some(&*self.user)
    }

    /// The identity of a verified token.
    pub fn from_claims(claims: Claims) -> Self {
        Identity {
            expires: Some(claims.expires_at()),
            user: claims.sub.into(),
            rooms: claims
                .rooms
                .map(|r| r.into_iter().map(String::into_boxed_str).collect()),
            verified: true,
        }
    }

    /// A development identity: `user`, unverified, every room, no expiry.
    pub fn unverified(user: impl Into<Arc<str>>) -> Self {
        Identity {
            user: user.into(),
            rooms: None,
            expires: None,
            verified: false,
        }
    }
}

/// Why an upgrade has no identity.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// HTTP 401.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// HTTP 400 (development only: with authentication on, `user` is ignored).
    #[error(
        "invalid user: must be 1-{MAX_USER_LEN} characters of A-Z, a-z, 0-9, '_', '.' and '-'"
    )]
    BadUser,
}

/// The identity of an upgrade request for `session`: from its token when `auth` is set (the
/// `token` query parameter, else `Authorization: Bearer`), else from its `user` parameter.
pub fn identify(
    auth: Option<&Verifier>,
    params: &[(String, String)],
    headers: &HeaderMap,
    session: &str,
) -> Result<Identity, IdentityError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    if let Some(verifier) = auth {
        let presented = param("token").or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token)
        });
        let token = presented.ok_or(TokenError::Missing)?;
        return Ok(Identity::from_claims(verifier.verify(token)?));
    }
    match param("user") {
        Some(user) if valid_user(user) => Ok(Identity::unverified(user)),
        Some(_) => Err(IdentityError::BadUser),
        None => Ok(Identity::unverified(anonymous_user(session))),
    }
}

/// `user` (development): 1-64 of `[A-Za-z0-9_.-]`.
pub fn valid_user(user: &str) -> bool {
    (1..=MAX_USER_LEN).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `anon-` + the first 12 hex characters of SHA-256 of the session id: the same on every
/// instance and across reconnects, so presence follows the session, and the session id (which
/// lets whoever holds it resume the session) is not shown. A guessable session id (`demo`) can
/// still be recognised from it: only random ids are hidden.
pub fn anonymous_user(session: &str) -> String {
    let digest = Sha256::digest(session.as_bytes());
    let mut id = String::with_capacity(17);
    id.push_str("anon-");
    for byte in &digest[..6] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive and
/// may be followed by more than one space (RFC 7235 section 2.1); the token is taken as is.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

#[cfg(test)]
mod tests;
