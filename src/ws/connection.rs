//! A socket in the server: what surrounds its loop ([`super::session::Session`]). Before the
//! loop: the fan-out ring (subscribed before anything is announced), the registry, the
//! session's rooms taken over, where the broadcast stream starts and what the client missed,
//! the inbox and the session directory. After it: the close counted, the rooms released for
//! the grace period, the registry cleaned.

use std::sync::Arc;

use axum::extract::ws::WebSocket;
use tracing::Instrument;

use super::{
    rooms::SocketRooms,
    session::{Session, SocketSettings},
    Accepted,
};
use crate::{history::Cursor, inbox, protocol::Welcome, rooms::Member, state::SharedState};

/// Serves one upgraded socket to its end, inside its log span.
pub async fn run(socket: WebSocket, app: SharedState, accepted: Accepted) {
    let conn_id = accepted.conn_id;
    // The upgrade's request id links nginx's access log to this socket's events.
    let span = tracing::info_span!(
        "conn",
        conn_id,
        session = %accepted.session,
        user = %accepted.identity.user,
        request_id = %accepted.request_id
    );
    run_inner(socket, app, accepted, conn_id)
        .instrument(span)
        .await
}

async fn run_inner(mut socket: WebSocket, app: SharedState, accepted: Accepted, conn_id: u64) {
    let Accepted {
        session,
        token,
        claim,
        identity,
        since,
        slot: _slot,
        ..
    } = accepted;
    let (count, resumed) = (claim.count, claim.existed);
    // Subscribe before announcing presence so that nothing published after the welcome is lost.
    // A socket that subscribed after the drain was told on the rings sees the drain flag
    // before its first frame (see `Session::serve`).
    let fanout = app.fanout.subscribe(conn_id);
    app.metrics.connections_opened.inc();
    app.metrics.connections_active.inc();
    // A small future: the registry's writer task makes the Redis call (src/registry_writes.rs),
    // so no ~11 KB fred future is allocated per connect or held in this task.
    if let Err(error) = app.registry.add_connection(conn_id, session.clone()).await {
        tracing::warn!(%error, "registering the connection failed; the next lease renewal repairs it");
    }
    tracing::info!(
        count,
        resumed,
        repaired = claim.repaired,
        "connection opened"
    );

    let broadcasts = broadcast_start(&app, since).await;
    // Room traffic and messages to this session come through the inbox.
    let (postbox, inbox) = inbox::inbox(app.settings.send_queue);
    let member = Member {
        conn_id,
        session: session.clone(),
        token: Arc::from(token.as_str()),
        user: identity.user.clone(),
    };
    let rooms = if claim.rooms.is_empty() {
        Vec::new()
    } else {
        app.rooms.take(&member, claim.rooms.clone()).await
    };
    app.fanout
        .directory
        .register(session.clone(), conn_id, postbox.clone());
    let mut s = Session::new(
        SocketSettings::from(&app.settings),
        app.fanout.clone(),
        app.metrics.clone(),
        app.counter.for_socket(&session, &token, &claim),
    );
    s.expires = identity.expires;
    s.broadcasts = broadcasts
        .position
        .as_ref()
        .map(|(offset, epoch)| Cursor::new(*offset, epoch));
    s.backlog = broadcasts.missed;
    s.broadcast_history = Some((app.history.clone(), app.broadcasts.clone()));
    s.rooms = Some(SocketRooms::new(
        app.rooms.clone(),
        member,
        identity,
        postbox,
        rooms.clone(),
    ));
    let welcome = Welcome {
        session_uuid: session.to_string(),
        count,
        resumed,
        instance: app.registry.instance_id().to_string(),
        repaired: claim.repaired,
        rooms,
        offset: broadcasts.position.as_ref().map(|(offset, _)| *offset),
        epoch: broadcasts.position.map(|(_, epoch)| epoch.to_string()),
        recovered: broadcasts.recovered,
    };
    let (code, reason) = s.live(&mut socket, &welcome, fanout, Some(inbox)).await;
    app.metrics.closed(code);
    app.metrics.connections_active.dec();
    app.fanout.directory.unregister(&session, conn_id);
    if let Some(rooms) = &s.rooms {
        app.rooms.release(rooms.member(), rooms.memberships()).await;
    }
    if let Err(error) = app.registry.remove_connection(conn_id).await {
        tracing::warn!(%error, "unregistering the connection failed; its lease expires it");
    }
    tracing::info!(code, reason, total = s.counter.count(), "connection closed");
}

/// Where a new socket's broadcast stream starts, and what it recovers.
struct BroadcastStart {
    position: Option<(u64, Arc<str>)>,
    recovered: Option<bool>,
    missed: Vec<String>,
}

/// Reads the broadcast stream for a new socket, after it subscribed to its ring: with
/// `since`, what it missed (one Redis call); without, where the stream stands, as this
/// instance last saw it (no Redis call once one broadcast or read has been seen).
async fn broadcast_start(app: &SharedState, since: Option<(u64, String)>) -> BroadcastStart {
    if since.is_none() {
        if let Some(position) = app.fanout.broadcast_position() {
            return BroadcastStart {
                position: Some(position),
                recovered: None,
                missed: Vec::new(),
            };
        }
    }
    let asked = since.as_ref().map(|(k, e)| (*k, e.as_str()));
    match app.history.read(&app.broadcasts, asked).await {
        Ok(read) => {
            app.fanout.set_broadcast_position(read.offset, &read.epoch);
            BroadcastStart {
                position: Some((read.offset, Arc::from(read.epoch.as_str()))),
                recovered: read.recovered,
                missed: read.missed,
            }
        }
        Err(error) => {
            crate::warn_throttled!(%error, "broadcast history not read: redis unavailable");
            BroadcastStart {
                position: app.fanout.broadcast_position(),
                recovered: since.map(|_| false),
                missed: Vec::new(),
            }
        }
    }
}
