//! The JWT of an upgrade: the key it must be signed with (chosen at start-up) and its checks.
//! Verification is `jsonwebtoken`'s (RustCrypto backend); nothing cryptographic is written here.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;
use tokio::time::Instant;

/// Longest `sub` accepted. It is shown to other clients and stored with every session the
/// user owns, so it is bounded; 255 fits e-mail addresses and provider ids (`auth0|…`).
pub const MAX_SUB_LEN: usize = 255;

/// Shortest `AUTH_SECRET`: RFC 7518 section 3.2 asks for an HS256 key at least as long as the
/// hash (256 bits); a shorter one can be brute-forced from a single token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims wsfleet reads. Others are allowed and ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The public user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Rooms the user may join: names or `prefix*` patterns. Absent: every room.
    #[serde(default)]
    pub rooms: Option<Vec<String>>,
}

impl Claims {
    /// `exp` on tokio's clock, for the socket's timer.
    pub fn expires_at(&self) -> Instant {
        let exp = UNIX_EPOCH + Duration::from_secs(self.exp);
        let left = exp
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Instant::now() + left
    }
}

/// Why a token was refused (HTTP 401). The texts are the JSON error's; they say which rule
/// failed and never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("missing token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("invalid token")]
    Invalid,
}

/// The key every token must be signed with, and the checks. Chosen at start-up; cloning
/// copies the key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({:?}, key hidden)", self.algorithm())
    }
}

impl Verifier {
    /// HS256 with a shared secret (`AUTH_SECRET`).
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 or ES256 (P-256), whichever the PEM public key is (`AUTH_PUBLIC_KEY_FILE`). The
    /// key is fully parsed here, so a bad one fails at start-up rather than at every upgrade.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            check_rsa(&key)?;
            return Ok(Self::new(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // jsonwebtoken builds the P-256 verifier from the point here, before it looks at
            // any signature: an error means another curve or a bad point.
            let p256 = jsonwebtoken::crypto::verify("AA", b"", &key, Algorithm::ES256);
            if p256.is_err() {
                return Err("the EC key is not a P-256 public key (ES256 needs P-256)".into());
            }
            return Ok(Self::new(key, Algorithm::ES256));
        }
        Err("not a PEM RSA or EC public key (expected -----BEGIN PUBLIC KEY-----)".into())
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // No grace: a token is refused from its `exp` second on, the same instant the open
        // socket's timer closes it; clock skew is for the issuer to allow for in `exp`.
        validation.leeway = 0;
        validation.validate_nbf = true;
        // wsfleet configures no audience; a token's `aud` is not checked (docs/SECURITY.md).
        validation.validate_aud = false;
        Verifier { key, validation }
    }

    /// The one algorithm tokens must be signed with (`alg` of any other value, `none`
    /// included, is refused).
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Verifies `token`: signature, `alg`, `exp` (required, not past), `nbf` (if present, not
    /// future), `sub` (required, 1-255 bytes, no control characters).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid,
            },
        )?;
        let sub = &data.claims.sub;
        if sub.is_empty() || sub.len() > MAX_SUB_LEN || sub.chars().any(char::is_control) {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

/// Parses the RSA key as jsonwebtoken will on every verification, which reports a bad key as
/// a bad signature.
fn check_rsa(key: &DecodingKey) -> Result<(), String> {
    use rsa::{pkcs1::DecodeRsaPublicKey, traits::PublicKeyParts, RsaPublicKey};
    let jsonwebtoken::DecodingKeyKind::SecretOrDer(der) = key.kind() else {
        return Ok(());
    };
    let key = RsaPublicKey::from_pkcs1_der(der)
        .map_err(|e| format!("not a valid RSA public key: {e}"))?;
    // Shorter RSA keys are breakable; NIST has disallowed them since 2013.
    if key.size() < 256 {
        return Err(format!(
            "the RSA key has {} bits; at least 2048 are needed",
            key.size() * 8
        ));
    }
    Ok(())
}
