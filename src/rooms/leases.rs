//! The leases that keep a session in its rooms (see the module docs of [`super`]): a resumed
//! socket taking its session's memberships over, a closing socket leaving them the grace
//! period, and each instance renewing its memberships and sweeping their rooms every
//! `LEASE_PERIOD`.

use std::{sync::Arc, time::Duration};

use fred::types::Value;
use tokio_util::sync::CancellationToken;

use super::{channel_name, local, room_keys, LocalMember, Member, Rooms};
use crate::store::StoreError;

/// Rooms renewed together by one step of [`Rooms::renew_all`].
const RENEW_GROUP: usize = 50;

impl Rooms {
    /// Takes over the memberships a resumed session had (its welcome's `rooms`) for the new
    /// socket, which holds them from now on without receiving their traffic until it joins.
    /// Returns the rooms the session is still in; the others are unlisted from the session.
    pub async fn take(&self, member: &Member, listed: Vec<String>) -> Vec<String> {
        let calls = listed.iter().map(|room| {
            let args: Vec<Value> = vec![
                member.session.as_ref().into(),
                member.token.as_ref().into(),
                self.limits.lease_ms.into(),
                self.limits.keep_ms.into(),
            ];
            self.store
                .run::<i64, _, _>("room_take", &self.scripts.take, room_keys(room), args)
        });
        let answers = futures_util::future::join_all(calls).await;
        let (mut kept, mut gone) = (Vec::new(), Vec::new());
        for (room, answer) in listed.into_iter().zip(answers) {
            match answer {
                Ok(0) => gone.push(room),
                // Kept, or unknown (Redis failed): the lease renewal holds it if it exists.
                _ => kept.push(room),
            }
        }
        for room in &kept {
            let entry = LocalMember {
                session: member.session.clone(),
                token: member.token.clone(),
                postbox: None,
            };
            // A held membership needs no subscription yet; the wait is only for joins.
            let _ = self
                .local
                .add(room, member.conn_id, entry, Duration::ZERO)
                .await;
        }
        self.forget(&member.session, &gone).await;
        kept
    }

    /// A socket closed: its memberships stay for the grace period (see the module docs).
    pub async fn release(&self, member: &Member, rooms: impl IntoIterator<Item = Arc<str>>) {
        let rooms: Vec<Arc<str>> = rooms.into_iter().collect();
        for room in &rooms {
            self.local.remove(room, member.conn_id);
        }
        let calls = rooms.iter().map(|room| {
            let args: Vec<Value> = vec![
                member.session.as_ref().into(),
                member.token.as_ref().into(),
                self.limits.grace_ms.into(),
                channel_name(room).into(),
                room.as_ref().into(),
            ];
            self.store.run::<Value, _, _>(
                "room_release",
                &self.scripts.release,
                room_keys(room),
                args,
            )
        });
        for answer in futures_util::future::join_all(calls).await {
            if let Err(error) = answer {
                // The lease then runs out by itself: the member leaves later, not never.
                tracing::debug!(%error, "releasing a room membership failed");
            }
        }
    }

    /// Renews this instance's memberships and sweeps their rooms, every lease period, until
    /// `cancel`.
    pub async fn keep_leases(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.limits.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => self.renew_all().await,
            }
            self.metrics.rooms_active.set(self.active() as i64);
        }
    }

    /// Renews every local membership once, spread evenly over most of a lease period in
    /// groups of [`RENEW_GROUP`] rooms: renewing thousands of rooms at once put thousands of
    /// script calls in front of every publication on the connection at each period (the p99
    /// of the many-rooms benchmark, docs/BENCHMARKS.md).
    async fn renew_all(&self) {
        let holdings = self.local.holdings();
        let groups = holdings.len().div_ceil(RENEW_GROUP).max(1);
        // Three quarters of the period: the last group is done well before the next round.
        let step = self.limits.renew_every * 3 / 4 / groups as u32;
        let start = tokio::time::Instant::now();
        for (i, group) in holdings.chunks(RENEW_GROUP).enumerate() {
            tokio::time::sleep_until(start + step * i as u32).await;
            let calls = group.iter().map(|(room, held)| self.renew(room, held));
            for (room, gone) in futures_util::future::join_all(calls).await {
                match gone {
                    Ok(gone) => {
                        for session in gone {
                            self.forget(&session, &[room.to_string()]).await;
                        }
                    }
                    Err(error) => {
                        crate::warn_throttled!(%error, "renewing room memberships failed")
                    }
                }
            }
        }
    }

    /// Renews this instance's memberships of `room` and sweeps it; returns who was removed.
    async fn renew(
        &self,
        room: &Arc<str>,
        held: &[local::Holding],
    ) -> (Arc<str>, Result<Vec<String>, StoreError>) {
        let mut args: Vec<Value> = vec![
            self.limits.lease_ms.into(),
            channel_name(room).into(),
            room.as_ref().into(),
            self.limits.keep_ms.into(),
            self.limits.history_ttl_ms.into(),
        ];
        for (session, token) in held {
            args.push(session.as_ref().into());
            args.push(token.as_ref().into());
        }
        let gone = self
            .store
            .run("room_renew", &self.scripts.renew, room_keys(room), args)
            .await;
        (room.clone(), gone)
    }
}
