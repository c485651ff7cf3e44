//! Tokens for a fleet with authentication on (`AUTH_SECRET`): `--auth-secret` makes the load
//! tester sign one HS256 token per connection attempt, for a user of its own per socket, so
//! every socket owns its session and a resumed one is still its owner.

use std::{process::ExitCode, time::Duration};

use clap::Args;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use wsfleet::config::{parse_duration, Secret};

/// How long a minted token is valid: longer than any run, so no socket is closed
/// `token expired` mid-run (expiry has its own tests in the server).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

/// Signs tokens with the fleet's HS256 secret.
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Minter(key hidden)")
    }
}

impl Minter {
    pub fn new(secret: &Secret) -> Self {
        Minter {
            key: EncodingKey::from_secret(secret.expose().as_bytes()),
        }
    }

    /// A token for `sub`, valid for `lifetime` from now.
    pub fn mint(&self, sub: &str, lifetime: Duration) -> String {
        let claims = Claims {
            sub,
            exp: jsonwebtoken::get_current_timestamp() + lifetime.as_secs(),
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.key).expect("HS256 signs")
    }
}

/// The user of socket `i` (its index over the whole run): the same on every connection of
/// it, in every worker process.
pub fn user_of(i: usize) -> String {
    format!("lt-user-{i}")
}

/// `wsfleet-loadtest token`: prints one token, to try a fleet with authentication by hand
/// (the `/test/` page's token field, `websocat "ws://…?token=…"`).
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The fleet's AUTH_SECRET (HS256). Prefer the environment variable: a command line is
    /// visible to every user of the machine.
    #[arg(long, env = "LOADTEST_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: String,
    /// The user (`sub`).
    #[arg(long)]
    pub sub: String,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Rooms the user may join (names or `prefix*`), repeatable; none: every room.
    #[arg(long = "room")]
    pub rooms: Vec<String>,
}

#[derive(Serialize)]
struct FullClaims<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    rooms: &'a [String],
}

/// Entry point for `wsfleet-loadtest token …`.
pub fn main(args: &TokenArgs) -> ExitCode {
    let claims = FullClaims {
        sub: &args.sub,
        exp: jsonwebtoken::get_current_timestamp() + args.ttl.as_secs(),
        rooms: &args.rooms,
    };
    let key = EncodingKey::from_secret(args.auth_secret.as_bytes());
    match jsonwebtoken::encode(&Header::default(), &claims, &key) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wsfleet-loadtest token: {error}");
            ExitCode::from(3)
        }
    }
}
