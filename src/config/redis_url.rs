//! `REDIS_URL`: checked at start-up in fred's own URL forms, and shown without its password.

use super::ConfigError;

/// Parses `url` as fred does at start-up (its own URL forms: no parsing here) and refuses a
/// scheme fred would take for a plain server, before anything connects. A `rediss://` URL also
/// loads the trusted CAs here, so a bad SSL_CERT_FILE fails at start-up.
pub(super) fn check_redis_url(url: &str) -> Result<(), ConfigError> {
    use fred::types::config::ServerConfig;
    let error = |reason: String| ConfigError::RedisUrl {
        url: redact_password(url),
        reason,
    };
    const SUPPORTED: &str =
        "use redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://";
    let config =
        fred::types::config::Config::from_url(url).map_err(|e| error(e.details().into()))?;
    // fred takes any other scheme for a plain server (`http://x` included); refuse it.
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    match config.server {
        ServerConfig::Centralized { .. } if matches!(scheme, "redis" | "rediss") => Ok(()),
        ServerConfig::Clustered { .. } | ServerConfig::Sentinel { .. } => Ok(()),
        _ => Err(error(SUPPORTED.into())),
    }
}

/// The URL with the password of its userinfo replaced by `***` (`redis://user:***@host`), for
/// error messages. Whatever stands before the last `@` is taken as the userinfo, so a password
/// holding `/`, `?` or `@` is hidden whole; a userinfo without `:` is a user name and is kept.
pub(super) fn redact_password(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:***{host}"),
        None => url.to_string(),
    }
}
