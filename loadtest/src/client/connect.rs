//! Opening the sockets: where each goes (URL) and comes from (source address), connecting
//! with bounded concurrency, and keeping them read until the run phase takes them.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    ops::Range,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use futures_util::{stream, StreamExt};
use tokio::{net::TcpSocket, sync::watch, task::JoinSet, time::Instant};
use tokio_tungstenite::{client_async_with_config, tungstenite::http::Uri};
use wsfleet::protocol::ServerFrame;

use super::{error_kind, next_event, ws_config, Conn, Event};
use crate::{live::LIVE, stats::Totals};

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
        })
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

    /// The URL for socket `i`: with `session_uuid=<prefix>-<i>` when resuming sessions.
    pub fn url_for(&self, i: usize) -> String {
        let url = &self.route(i).0.url;
        match &self.session_prefix {
            None => url.clone(),
            Some(prefix) => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}session_uuid={prefix}-{i}")
            }
        }
    }
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

/// Opens the sockets with global indices `indices`, at most `concurrency` attempts at a
/// time, each bounded by the connect timeout and all by `deadline`. Failures are counted in
/// `totals`; the open sockets are [`Parked`] until the run phase takes them.
pub async fn connect_all(
    target: &Target,
    indices: Range<usize>,
    concurrency: usize,
    deadline: Instant,
    totals: &mut Totals,
) -> Parked {
    let attempts = stream::iter(indices)
        .map(|i| {
            let url = target.url_for(i);
            let (destination, source) = target.route(i);
            let addr = destination.addr;
            let own_deadline = deadline.min(Instant::now() + target.connect_timeout);
            async move {
                let attempt = connect_one(&url, addr, source);
                match tokio::time::timeout_at(own_deadline, attempt).await {
                    Ok(result) => result.map(|conn| (i, conn)),
                    Err(_) => Err("connect: timeout".to_string()),
                }
            }
        })
        .buffer_unordered(concurrency);
    futures_util::pin_mut!(attempts);
    let (release, released) = watch::channel(false);
    let mut parked = Parked {
        release,
        sockets: JoinSet::new(),
    };
    while let Some(result) = attempts.next().await {
        match result {
            Ok((i, conn)) => {
                LIVE.connected();
                totals.connections_ok += 1;
                parked.sockets.spawn(park(i, conn, released.clone()));
            }
            Err(kind) => {
                LIVE.connect_failed();
                totals.connection_failed(kind);
            }
        }
    }
    parked
}

/// Open sockets waiting for the run phase, each read by a task of its own meanwhile.
///
/// A socket nobody reads does not answer the server's pings (tungstenite answers them as it
/// reads), and the server closes it after two ping intervals (40 s by default). Connecting
/// tens of thousands of sockets on a busy machine, and then waiting at the workers' barrier,
/// can take longer than that, so every socket is read from the moment it is open.
pub struct Parked {
    /// `true` ends the parking: each task hands its socket back.
    release: watch::Sender<bool>,
    /// One per open socket: its global index and the socket, or why it ended while parked.
    sockets: JoinSet<Result<(usize, Conn), String>>,
}

impl Parked {
    /// Hands the sockets over to the run phase, with their global index. Those that ended
    /// while parked are errors in `totals` (they connected, so they are not connection
    /// failures, and they are not open at the end).
    pub async fn release(mut self, totals: &mut Totals) -> Vec<(usize, Conn)> {
        let _ = self.release.send(true);
        let mut conns = Vec::with_capacity(self.sockets.len());
        while let Some(joined) = self.sockets.join_next().await {
            match joined {
                Ok(Ok(conn)) => conns.push(conn),
                Ok(Err(kind)) => totals.error(format!("before the run: {kind}")),
                Err(e) => totals.error(format!("task failed: {e}")),
            }
        }
        conns
    }
}

/// Reads one parked socket until released. Heartbeats and broadcasts before the run phase
/// are not counted (the report counts the run phase); anything else ends the socket.
async fn park(
    i: usize,
    mut conn: Conn,
    mut released: watch::Receiver<bool>,
) -> Result<(usize, Conn), String> {
    loop {
        tokio::select! {
            // Reading is cancel-safe: a frame is either returned whole or still buffered.
            event = next_event(&mut conn.socket) => match event {
                Event::Frame(ServerFrame::Heartbeat(_) | ServerFrame::Broadcast(_)) => {}
                other => return Err(other.describe()),
            },
            _ = released.wait_for(|released| *released) => return Ok((i, conn)),
        }
    }
}

/// TCP connect (from `source` when given), upgrade, and the welcome frame: a socket counts
/// as open once it has all three.
async fn connect_one(url: &str, addr: SocketAddr, source: Option<IpAddr>) -> Result<Conn, String> {
    let io_kind = |e: io::Error| format!("connect: io {:?}", e.kind());
    let tcp = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io_kind)?;
    if let Some(ip) = source {
        bind_address_no_port(&tcp).map_err(io_kind)?;
        tcp.bind(SocketAddr::new(ip, 0)).map_err(io_kind)?;
    }
    let stream = tcp.connect(addr).await.map_err(io_kind)?;
    // Nagle off: small frames would otherwise wait for the previous one's ACK.
    stream.set_nodelay(true).map_err(io_kind)?;
    let (mut socket, _response) = client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|e| format!("connect: {}", error_kind(&e)))?;
    match next_event(&mut socket).await {
        Event::Frame(ServerFrame::Welcome(welcome)) => Ok(Conn { socket, welcome }),
        Event::Frame(other) => Err(format!("connect: first frame not a welcome: {other:?}")),
        other => Err(format!("connect: before welcome: {}", other.describe())),
    }
}

/// Binding to an address normally reserves a local port right away, for every destination:
/// one source address would then run out after ~28k sockets in total. With
/// IP_BIND_ADDRESS_NO_PORT the kernel picks the port at connect time, unique per 4-tuple,
/// so each (source, destination) pair gets the whole ephemeral range.
#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the descriptor is open for the whole call (borrowed from `socket`), and the
    // pointer and length describe `one`, a live c_int, as the option expects.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the option does not exist; binding still works, with fewer ports per address.
#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_socket: &TcpSocket) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use wsfleet::protocol::CountReply;

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
        }
    }

    #[test]
    fn urls_carry_a_session_only_when_resuming() {
        let mut target = target(&["ws://127.0.0.1:8000/ws/chat/"], &[]);
        assert_eq!(target.url_for(3), "ws://127.0.0.1:8000/ws/chat/");
        target.session_prefix = Some("lt".into());
        assert_eq!(
            target.url_for(3),
            "ws://127.0.0.1:8000/ws/chat/?session_uuid=lt-3"
        );
        target.destinations[0].url.push_str("?x=1");
        assert_eq!(
            target.url_for(0),
            "ws://127.0.0.1:8000/ws/chat/?x=1&session_uuid=lt-0"
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

    /// A server that pings right after the welcome and closes (1008) unless the pong comes
    /// within 200 ms, as wsfleet does after two ping intervals; it answers text with 1.
    async fn strict_pinger() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws/chat/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let welcome = r#"{"session_uuid":"s","count":0,"resumed":false,"instance":"t"}"#;
            ws.send(Message::text(welcome)).await.unwrap();
            ws.send(Message::Ping(Vec::new().into())).await.unwrap();
            let pong = tokio::time::timeout(Duration::from_millis(200), async {
                while let Some(Ok(frame)) = ws.next().await {
                    if matches!(frame, Message::Pong(_)) {
                        return;
                    }
                }
            })
            .await;
            if pong.is_err() {
                let _ = ws.close(None).await;
                return;
            }
            while let Some(Ok(frame)) = ws.next().await {
                if frame.is_text() {
                    ws.send(Message::text(r#"{"count":1}"#)).await.unwrap();
                }
            }
        });
        url
    }

    #[tokio::test]
    async fn parked_sockets_answer_pings_while_they_wait_for_the_run() {
        let url = strict_pinger().await;
        let target = Target::resolve(&[url], &[], None, Duration::from_secs(5))
            .await
            .unwrap();
        let mut totals = Totals::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let parked = connect_all(&target, 0..1, 1, deadline, &mut totals).await;
        // Waiting at the barrier, longer than the server's patience for a pong.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut conns = parked.release(&mut totals).await;
        assert_eq!((conns.len(), totals.error_count()), (1, 0), "{totals:?}");
        let (i, conn) = &mut conns[0];
        assert_eq!(*i, 0);
        conn.socket.send(Message::text("hi")).await.unwrap();
        let event = next_event(&mut conn.socket).await;
        assert!(
            matches!(
                event,
                Event::Frame(ServerFrame::Count(CountReply { count: 1 }))
            ),
            "{event:?}"
        );
    }
}
