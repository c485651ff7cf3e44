//! Opening the sockets: connecting with bounded concurrency (each where its [`Target`] route
//! says), and keeping them read until the run phase takes them.

use std::{io, net::SocketAddr, ops::Range};

use futures_util::{stream, StreamExt};
use tokio::{net::TcpSocket, sync::watch, task::JoinSet, time::Instant};
use tokio_tungstenite::client_async_with_config;
use wsfleet::protocol::ServerFrame;

use super::{
    error_kind, next_event, rooms, ws_config, Conn, Dial, Event, Joined, RoomFrame, Target,
};
use crate::{live::LIVE, stats::Totals};

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
            let dial = target.dial(i);
            let room = target.room_of(i);
            let own_deadline = deadline.min(Instant::now() + target.connect_timeout);
            async move {
                // In the rooms scenario a socket is open once it is in its room too.
                let attempt = async {
                    let mut conn = connect_one(&dial).await?;
                    if let Some(room) = room {
                        let users = rooms::join(&mut conn.socket, &room).await?;
                        conn.room = Some(Joined {
                            users,
                            early: Vec::new(),
                        });
                    }
                    Ok::<_, String>(conn)
                };
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

/// Reads one parked socket until released. Heartbeats, broadcasts and presence events before
/// the run phase are not counted (the report counts the run phase); publications to its room
/// are kept for the run phase to judge; anything else ends the socket.
async fn park(
    i: usize,
    mut conn: Conn,
    mut released: watch::Receiver<bool>,
) -> Result<(usize, Conn), String> {
    loop {
        tokio::select! {
            // Reading is cancel-safe: a frame is either returned whole or still buffered.
            event = next_event(&mut conn.socket) => match event {
                Event::Frame(ServerFrame::Heartbeat(_) | ServerFrame::Broadcast(_))
                | Event::Room(RoomFrame::Presence) => {}
                Event::Room(RoomFrame::Message(message)) if conn.room.is_some() => {
                    if let Some(joined) = &mut conn.room {
                        joined.early.push(*message);
                    }
                }
                other => return Err(other.describe()),
            },
            _ = released.wait_for(|released| *released) => return Ok((i, conn)),
        }
    }
}

/// TCP connect (from `source` when given), upgrade, and the welcome frame: a socket counts
/// as open once it has all three.
pub async fn connect_one(dial: &Dial) -> Result<Conn, String> {
    let io_kind = |e: io::Error| format!("connect: io {:?}", e.kind());
    let tcp = if dial.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io_kind)?;
    if let Some(ip) = dial.source {
        bind_address_no_port(&tcp).map_err(io_kind)?;
        tcp.bind(SocketAddr::new(ip, 0)).map_err(io_kind)?;
    }
    let stream = tcp.connect(dial.addr).await.map_err(io_kind)?;
    // Nagle off: small frames would otherwise wait for the previous one's ACK.
    stream.set_nodelay(true).map_err(io_kind)?;
    let (mut socket, _response) = client_async_with_config(&dial.url, stream, Some(ws_config()))
        .await
        .map_err(|e| format!("connect: {}", error_kind(&e)))?;
    match next_event(&mut socket).await {
        Event::Frame(ServerFrame::Welcome(welcome)) => Ok(Conn {
            socket,
            welcome,
            room: None,
        }),
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
    use std::time::Duration;

    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use wsfleet::protocol::CountReply;

    use super::*;

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
