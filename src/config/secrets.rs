//! Secrets given as a value or as a file (`BROADCAST_TOKEN` / `BROADCAST_TOKEN_FILE`,
//! `AUTH_SECRET` / `AUTH_SECRET_FILE`): Docker and Kubernetes mount secrets as files, and a
//! value in the environment shows in `/proc/<pid>/environ` and in `docker inspect`.

use std::path::Path;

use super::ConfigError;
use crate::identity::{token::MIN_SECRET_BYTES, Verifier};

/// The secret named `name` from its value or from the file named by `{name}_FILE`, never both.
/// A file's trailing newlines (`echo` and editors add one) are not part of the secret.
pub(super) fn value_or_file(
    name: &'static str,
    value: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    let secret = match (value, file) {
        (Some(_), Some(_)) => return Err(ConfigError::SecretTwice(name)),
        (Some(value), None) => value,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
                name,
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, None) => return Ok(None),
    };
    if secret.is_empty() {
        return Err(ConfigError::EmptySecret(name));
    }
    Ok(Some(secret))
}

/// The token verifier: HS256 with `AUTH_SECRET` (or its file), or RS256/ES256 with the PEM
/// public key of `AUTH_PUBLIC_KEY_FILE`; `None` (authentication off) when neither is set.
pub(super) fn auth_verifier(
    secret: Option<String>,
    public_key_file: Option<&Path>,
) -> Result<Option<Verifier>, ConfigError> {
    match (secret, public_key_file) {
        (Some(_), Some(_)) => Err(ConfigError::AuthTwice),
        (Some(secret), None) if secret.len() < MIN_SECRET_BYTES => {
            Err(ConfigError::ShortAuthSecret(secret.len()))
        }
        (Some(secret), None) => Ok(Some(Verifier::hs256(secret.as_bytes()))),
        (None, Some(path)) => {
            let bad = |reason: String| ConfigError::PublicKey {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            Verifier::from_public_key_pem(&pem).map(Some).map_err(bad)
        }
        (None, None) => Ok(None),
    }
}
