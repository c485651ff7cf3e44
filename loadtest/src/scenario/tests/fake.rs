//! A small in-process fake of the server (loopback only): it speaks the documented frames,
//! keeps a counter per session across connections, continues a resuming client at least from
//! its `last_count` (saying `"repaired": true` when that raised the counter), and can be told
//! to skip a number, to drain each session once (bye, close 1001), to fence each session once
//! (close 1008 `session resumed elsewhere`), to lose a session's counter whenever it comes
//! back (Redis restarted without its data), or to move a counter on behind a resuming
//! client's back.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{
    handshake::server::{Request, Response},
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

/// How the fake misbehaves.
#[derive(Clone, Copy, Default)]
pub struct Fake {
    /// Count a new session starts from (the welcome count).
    pub start: u64,
    /// After this many replies, jump the counter by one (a lost increment).
    pub skip_after: Option<u64>,
    /// Send a heartbeat this often.
    pub heartbeat: Option<Duration>,
    /// Drain each session once, after this many replies on its connection.
    pub drain_after: Option<u64>,
    /// When a session comes back, count this many more for it first (another client's
    /// frames).
    pub skew_resumes: u64,
    /// When a session comes back, its counter is gone (starts again at 0) unless the client's
    /// `last_count` repairs it.
    pub forget_on_resume: bool,
    /// Close each session once with 1008 `session resumed elsewhere`, after this many replies
    /// on its connection (as a newer socket of the session would make the server do).
    pub fence_after: Option<u64>,
    /// Ignore `last_count`, as a server from before the repair existed.
    pub ignore_last_count: bool,
    /// Answer every this many-th text frame `{"error":"unavailable","retry":true}`, without
    /// counting it (Redis did not answer in time).
    pub unavailable_every: Option<u64>,
}

/// Counters by session and the sessions drained or fenced already, shared by every
/// connection.
#[derive(Default)]
struct Sessions {
    counts: HashMap<String, u64>,
    ended: HashSet<String>,
    made: u64,
}

/// What the upgrade request asked for: `session_uuid` and `last_count` from its query.
#[derive(Default)]
struct Asked {
    session: Option<String>,
    last_count: Option<u64>,
}

impl Asked {
    fn of(request: &Request) -> Asked {
        let mut asked = Asked::default();
        for pair in request.uri().query().unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("session_uuid", id)) => asked.session = Some(id.to_string()),
                Some(("last_count", n)) => asked.last_count = n.parse().ok(),
                _ => {}
            }
        }
        asked
    }
}

/// Starts the fake on an ephemeral loopback port; returns its URL. It lives as long as the
/// test's runtime.
pub async fn serve(fake: Fake) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/chat/", listener.local_addr().unwrap());
    let sessions = Arc::new(Mutex::new(Sessions::default()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(session(tcp, fake, Arc::clone(&sessions)));
        }
    });
    url
}

async fn session(tcp: tokio::net::TcpStream, fake: Fake, sessions: Arc<Mutex<Sessions>>) {
    let mut asked = Asked::default();
    // The error type is tungstenite's (an HTTP response), fixed by its callback API.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        asked = Asked::of(request);
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let (id, mut count, resumed, repaired) = {
        let mut s = sessions.lock().unwrap();
        let id = asked.session.unwrap_or_else(|| {
            s.made += 1;
            format!("made-{}", s.made)
        });
        let mut resumed = s.counts.contains_key(&id);
        let count = s.counts.entry(id.clone()).or_insert(fake.start);
        if resumed && fake.forget_on_resume {
            *count = 0;
            resumed = false;
        }
        if resumed {
            *count += fake.skew_resumes;
        }
        let repaired = match asked.last_count {
            Some(n) if n > *count && !fake.ignore_last_count => {
                *count = n;
                true
            }
            _ => false,
        };
        (id, *count, resumed, repaired)
    };
    // `repaired` only when true, as the server writes it.
    let repaired = if repaired { r#","repaired":true"# } else { "" };
    let welcome = format!(
        r#"{{"session_uuid":"{id}","count":{count},"resumed":{resumed},"instance":"fake"{repaired}}}"#
    );
    if ws.send(Message::text(welcome)).await.is_err() {
        return;
    }
    let mut replies = 0;
    let mut frames = 0;
    let mut beat = tokio::time::interval(fake.heartbeat.unwrap_or(Duration::from_secs(3600)));
    beat.tick().await;
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(_))) => {
                    frames += 1;
                    if fake.unavailable_every.is_some_and(|k| frames % k == 0) {
                        let reply = r#"{"error":"unavailable","retry":true}"#;
                        if ws.send(Message::text(reply)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    count += 1;
                    if fake.skip_after == Some(replies) {
                        count += 1;
                    }
                    replies += 1;
                    sessions.lock().unwrap().counts.insert(id.clone(), count);
                    let reply = format!(r#"{{"count":{count}}}"#);
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                    let fence = fake.fence_after == Some(replies)
                        && sessions.lock().unwrap().ended.insert(id.clone());
                    if fence {
                        let close = CloseFrame {
                            code: CloseCode::Policy,
                            reason: "session resumed elsewhere".into(),
                        };
                        let _ = ws.close(Some(close)).await;
                        return;
                    }
                    let drain = fake.drain_after == Some(replies)
                        && sessions.lock().unwrap().ended.insert(id.clone());
                    if drain {
                        let bye = format!(
                            r#"{{"bye":true,"total":{count},"reconnect_after_ms":20}}"#
                        );
                        let _ = ws.send(Message::text(bye)).await;
                        let close = CloseFrame {
                            code: CloseCode::Away,
                            reason: "server shutting down".into(),
                        };
                        let _ = ws.close(Some(close)).await;
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = beat.tick(), if fake.heartbeat.is_some() => {
                let hb = r#"{"ts":"2026-01-01T00:00:00.000Z"}"#;
                if ws.send(Message::text(hb)).await.is_err() {
                    return;
                }
            }
        }
    }
}
