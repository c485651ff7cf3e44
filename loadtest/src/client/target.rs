//! Where each socket goes (URL, resolved once) and comes from (source address): the
//! routing of `--url` and `--source-ips` by the socket's global index.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tokio_tungstenite::tungstenite::http::Uri;

use super::token::{user_of, Minter, TOKEN_LIFETIME};

/// One `--url`, with the address it resolved to (once, before the run: thousands of
/// lookups would measure the resolver).
#[derive(Debug, Clone)]
pub struct Destination {
    pub url: String,
    pub addr: SocketAddr,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// At least one.
    pub destinations: Vec<Destination>,
    /// Local addresses to bind to (`--source-ips`); empty: the kernel chooses.
    pub source_ips: Vec<IpAddr>,
    pub session_prefix: Option<String>,
    pub connect_timeout: Duration,
    /// `--auth-secret`: every dial carries a fresh token for the socket's own user.
    pub auth: Option<Minter>,
    /// The `rooms` scenario: which room each socket joins.
    pub rooms: Option<RoomLayout>,
}

/// Sockets `0..members` are the first room's members, the next `members` the second's, and
/// so on: as the URLs take turns fastest (see [`Target::route`]), each room's members are
/// spread over every destination.
#[derive(Debug, Clone)]
pub struct RoomLayout {
    /// Room names are `<prefix>-<n>`.
    pub prefix: String,
    pub members: usize,
}

impl RoomLayout {
    /// The room of socket `i`, and its place among the room's members.
    pub fn seat(&self, i: usize) -> (usize, usize) {
        (i / self.members.max(1), i % self.members.max(1))
    }

    pub fn name(&self, room: usize) -> String {
        format!("{}-{room}", self.prefix)
    }
}

impl Target {
    /// Resolves every URL; fails (before any socket is opened) on one that does not resolve
    /// or whose address family no source address shares.
    pub async fn resolve(
        urls: &[String],
        source_ips: &[IpAddr],
        session_prefix: Option<String>,
        connect_timeout: Duration,
    ) -> Result<Target> {
        let mut destinations = Vec::with_capacity(urls.len());
        for url in urls {
            let (host, port) = host_and_port(url)?;
            let addr = tokio::net::lookup_host((host.as_str(), port))
                .await
                .with_context(|| format!("resolving {host} of --url {url}"))?
                .next()
                .with_context(|| format!("{host} of --url {url} has no address"))?;
            if let Some(ip) = source_ips.iter().find(|ip| ip.is_ipv4() != addr.is_ipv4()) {
                bail!(
                    "--source-ips {ip} cannot reach {addr} (--url {url}): not the same IP version"
                );
            }
            destinations.push(Destination {
                url: url.clone(),
                addr,
            });
        }
        Ok(Target {
            destinations,
            source_ips: source_ips.to_vec(),
            session_prefix,
            connect_timeout,
            auth: None,
            rooms: None,
        })
    }

    /// The room socket `i` joins while connecting, in the rooms scenario.
    pub fn room_of(&self, i: usize) -> Option<String> {
        let layout = self.rooms.as_ref()?;
        Some(layout.name(layout.seat(i).0))
    }

    /// Where socket `i` (its index over the whole run, all workers) goes and from which
    /// local address. URLs take turns fastest, then source addresses, so with 2 URLs and 2
    /// addresses the sockets cycle through all 4 pairs: each pair has its own range of
    /// local ports, which is what lets a run exceed the ~28k ports of one pair.
    pub fn route(&self, i: usize) -> (&Destination, Option<IpAddr>) {
        let d = self.destinations.len();
        let source =
            (!self.source_ips.is_empty()).then(|| self.source_ips[(i / d) % self.source_ips.len()]);
        (&self.destinations[i % d], source)
    }

    /// How to open socket `i`: with `session_uuid=<prefix>-<i>` when resuming sessions.
    pub fn dial(&self, i: usize) -> Dial {
        let (destination, source) = self.route(i);
        let url = match &self.session_prefix {
            None => destination.url.clone(),
            Some(prefix) => with_session(&destination.url, &format!("{prefix}-{i}")),
        };
        Dial {
            url: self.with_token(url, i),
            addr: destination.addr,
            source,
        }
    }

    /// How to open socket `i` again on `session` (the id its welcome named): same URL,
    /// address and source as its first connection.
    pub fn dial_session(&self, i: usize, session: &str) -> Dial {
        let (destination, source) = self.route(i);
        Dial {
            url: self.with_token(with_session(&destination.url, session), i),
            addr: destination.addr,
            source,
        }
    }

    /// `url` with a token for socket `i`'s user, when the fleet wants one. Minted per dial:
    /// a reconnect gets a fresh one.
    fn with_token(&self, url: String, i: usize) -> String {
        match &self.auth {
            None => url,
            Some(minter) => with_param(&url, "token", &minter.mint(&user_of(i), TOKEN_LIFETIME)),
        }
    }
}

/// Everything one connection attempt needs: the URL (with its session, if any), the
/// address it resolved to, and the local address to bind.
#[derive(Debug, Clone)]
pub struct Dial {
    pub url: String,
    pub addr: SocketAddr,
    pub source: Option<IpAddr>,
}

impl Dial {
    /// The same dial for a client that resumes its session having been told count `acked`
    /// last: `last_count=<acked>` asks the server to continue at least from there
    /// (docs/PROTOCOL.md), so a counter Redis lost is repaired rather than restarted at 0.
    pub fn resuming_from(&self, acked: u64) -> Dial {
        Dial {
            url: with_param(&self.url, "last_count", &acked.to_string()),
            ..self.clone()
        }
    }
}

impl Dial {
    /// The same dial asking for the broadcasts after `since` (`since=k&epoch=e`): the
    /// welcome says whether they follow (docs/PROTOCOL.md, recovery).
    pub fn recovering(&self, since: &crate::recovery::Position) -> Dial {
        let url = with_param(&self.url, "since", &since.offset.to_string());
        Dial {
            url: with_param(&url, "epoch", &percent_encoded(&since.epoch)),
            ..self.clone()
        }
    }
}

/// `value` safe in a query: everything but unreserved characters percent-encoded. (An epoch
/// is the server's string; today it is hex, but the client does not rely on that.)
fn percent_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `url` asking for `session`.
fn with_session(url: &str, session: &str) -> String {
    with_param(url, "session_uuid", session)
}

/// `url` with `name=value` added to its query. Names and values here are ours (session ids
/// are `[A-Za-z0-9_-]`, counts are digits, tokens base64url and dots), so nothing needs
/// percent-encoding.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

/// The host and port of a ws:// URL (port 80 when none is given).
pub fn host_and_port(url: &str) -> Result<(String, u16)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("--url {url:?} is not a URL"))?;
    let host = uri
        .host()
        .with_context(|| format!("--url {url:?} has no host"))?;
    // `[::1]` in a URL is `::1` to the resolver.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), uri.port_u16().unwrap_or(80)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(urls: &[&str], sources: &[&str]) -> Target {
        Target {
            destinations: urls
                .iter()
                .map(|u| Destination {
                    url: u.to_string(),
                    addr: "127.0.0.1:1".parse().unwrap(),
                })
                .collect(),
            source_ips: sources.iter().map(|s| s.parse().unwrap()).collect(),
            session_prefix: None,
            connect_timeout: Duration::from_secs(1),
            auth: None,
            rooms: None,
        }
    }

    #[test]
    fn urls_carry_a_session_only_when_resuming() {
        let mut target = target(&["ws://127.0.0.1:8000/ws/chat/"], &[]);
        assert_eq!(target.dial(3).url, "ws://127.0.0.1:8000/ws/chat/");
        target.session_prefix = Some("lt".into());
        assert_eq!(
            target.dial(3).url,
            "ws://127.0.0.1:8000/ws/chat/?session_uuid=lt-3"
        );
        target.destinations[0].url.push_str("?x=1");
        assert_eq!(
            target.dial(0).url,
            "ws://127.0.0.1:8000/ws/chat/?x=1&session_uuid=lt-0"
        );
        assert_eq!(
            target.dial_session(0, "made-1").url,
            "ws://127.0.0.1:8000/ws/chat/?x=1&session_uuid=made-1"
        );
    }

    #[test]
    fn with_a_secret_every_dial_carries_a_token_for_the_sockets_own_user() {
        let mut t = target(&["ws://a/ws/chat/"], &[]);
        t.session_prefix = Some("lt".into());
        let secret = wsfleet::config::Secret::from("s".repeat(32));
        t.auth = Some(Minter::new(&secret));
        let verifier = wsfleet::identity::Verifier::hs256(secret.expose().as_bytes());
        for (dial, user) in [
            (t.dial(3), "lt-user-3"),
            (t.dial_session(4, "made-4"), "lt-user-4"),
            (t.dial(5).resuming_from(2), "lt-user-5"),
        ] {
            let (_, token) = dial.url.split_once("token=").expect("a token");
            let token = token.split('&').next().unwrap();
            assert_eq!(verifier.verify(token).unwrap().sub, user, "{}", dial.url);
        }
    }

    #[test]
    fn a_resuming_dial_carries_the_last_count_it_was_told() {
        let t = target(&["ws://a/ws/chat/"], &["127.0.0.2"]);
        let session = t.dial_session(0, "lt-0");
        let again = session.resuming_from(41);
        assert_eq!(again.url, "ws://a/ws/chat/?session_uuid=lt-0&last_count=41");
        assert_eq!((again.addr, again.source), (session.addr, session.source));
        assert_eq!(
            session.resuming_from(0).url,
            "ws://a/ws/chat/?session_uuid=lt-0&last_count=0",
            "a session told nothing yet still says so"
        );
    }

    #[test]
    fn a_recovering_dial_carries_the_stream_position_encoded() {
        let dial = target(&["ws://h:1/ws/chat/"], &[]).dial_session(0, "s");
        let since = crate::recovery::Position {
            offset: 41,
            epoch: "ab 9&".into(),
        };
        assert_eq!(
            dial.resuming_from(3).recovering(&since).url,
            "ws://h:1/ws/chat/?session_uuid=s&last_count=3&since=41&epoch=ab%209%26"
        );
    }

    #[test]
    fn sockets_cycle_through_every_url_and_source_pair() {
        let t = target(&["ws://a/", "ws://b/"], &["127.0.0.1", "127.0.0.2"]);
        let pairs: Vec<(String, String)> = (0..5)
            .map(|i| {
                let (d, ip) = t.route(i);
                (d.url.clone(), ip.unwrap().to_string())
            })
            .collect();
        let expected = [
            ("ws://a/", "127.0.0.1"),
            ("ws://b/", "127.0.0.1"),
            ("ws://a/", "127.0.0.2"),
            ("ws://b/", "127.0.0.2"),
            ("ws://a/", "127.0.0.1"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(u, ip)| (u.to_string(), ip.to_string()))
            .collect();
        assert_eq!(pairs, expected);
        assert_eq!(target(&["ws://a/"], &[]).route(7).1, None);
        let again = t.dial_session(3, "s");
        assert_eq!(
            (again.url.as_str(), again.source),
            ("ws://b/?session_uuid=s", Some("127.0.0.2".parse().unwrap()))
        );
    }

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            host_and_port("ws://127.0.0.1:8001/ws/chat/").unwrap(),
            ("127.0.0.1".to_string(), 8001)
        );
        assert_eq!(
            host_and_port("ws://localhost/ws/").unwrap(),
            ("localhost".to_string(), 80)
        );
        assert_eq!(
            host_and_port("ws://[::1]:9/").unwrap(),
            ("::1".to_string(), 9)
        );
        assert!(host_and_port("not a url").is_err());
    }
}
