//! A student's commands: JOIN (with the kiosk hand-over), PRESENT and SAY.

use attendance_protocol::{
    AttendanceStatus, ErrorCode, Event, History, HistoryEntry, HistoryKind, Reply, ServerLine,
    StudentId, Text, Timestamp, Token,
};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Flow, Outbox, Session};
use crate::attendance::{Seat, seconds_left};
use crate::engine::ClassEvent;
use std::time::Duration;

use crate::cluster::{Claim, SeatClaim};
use crate::hub::{Resumed, SeatClock, UnknownToken, format_token, parse_token};
use crate::store::{Mark, Recorded, StoreError};

/// Whether a JOIN left the connection seated as the student it named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seated {
    Yes,
    No,
}

impl Session {
    /// The durable mark of `id` on the day of `today`, if any (the store is the one source of
    /// truth).
    pub(super) fn marked_today(&self, id: &StudentId, today: Timestamp) -> Option<Timestamp> {
        self.engine.store.marked_at(&id.class, &id.roll, today)
    }

    /// Seconds `seat`'s student must still stay at `now`; 0 once marked.
    fn required_seconds(&self, seat: &Seat, now: Instant, today: Timestamp) -> u64 {
        if self.marked_today(&seat.membership.id, today).is_some() {
            0
        } else {
            seconds_left(seat.due(), now)
        }
    }

    /// `JOIN id`, timed from `arrived` (the arrival of the line's first byte).
    pub(super) async fn join(
        &mut self,
        id: StudentId,
        code: Option<&Token>,
        arrived: Instant,
        out: &mut Outbox,
    ) -> (Flow, Seated) {
        let Some(peer) = self.peer.addr() else {
            let flow = self.refuse(
                out,
                ErrorCode::Denied,
                "students check in over the network, not the admin socket",
            );
            return (flow, Seated::No);
        };
        let now = Instant::now();
        // One clock read for every look-up this JOIN makes.
        let today = Timestamp::now();
        // Already seated: the same student again, or the next student at a kiosk.
        if let Some(seat) = &self.seat {
            if seat.membership.id == id {
                let required_seconds = self.required_seconds(seat, now, today);
                let flow = self.reply(
                    out,
                    Reply::Join {
                        id,
                        required_seconds,
                        resume: None,
                    },
                );
                return (flow, Seated::Yes);
            }
            // Free for the next student once the store answered this seat's PRESENT with a
            // mark (no look-up), or if the student was marked today on another connection.
            if !seat.recorded() && self.marked_today(&seat.membership.id, today).is_none() {
                let current = seat.membership.id.to_string();
                let flow = self.refuse(out, ErrorCode::Joined, format!("this connection is checked in as {current}, who is not marked present yet; send PRESENT first, or connect again to check in someone else"));
                return (flow, Seated::No);
            }
        }
        let admission = match self.admit(&id, code, peer.ip(), arrived, today, out) {
            Ok(a) => a,
            Err(flow) => return (flow, Seated::No),
        };
        let clock = SeatClock {
            since: admission.since,
            length: admission.length,
        };
        let day = Some(self.engine.store.local_date(today));
        let token = match self.claim_in_cluster(&id, clock).await {
            Ok(token) => token,
            Err(()) => {
                let flow = self.refuse(out, ErrorCode::Already, format!("roll {} is already checked in to {} on another node of this service; RESUME <token> takes the seat over", id.roll, id.class));
                return (flow, Seated::No);
            }
        };
        let taken = match &mut self.seat {
            // Marked: the connection is free for the next student (a lab kiosk).
            Some(seat) => self
                .engine
                .hub
                .rejoin_with(&mut seat.membership, &id, clock, day, token)
                .map(|(token, clock)| (None, token, clock)),
            None => {
                let transport = self.peer.transport().unwrap_or_default();
                self.engine
                    .hub
                    .join_with(&id, self.conn, clock, transport, day, token)
                    .map(|t| (Some(t.membership), t.token, t.clock))
            }
        };
        let (membership, token, clock) = match taken {
            Ok(t) => t,
            Err(_) => {
                let flow = self.refuse_already(out, &id);
                return (flow, Seated::No);
            }
        };
        let seat = match (membership, self.seat.take()) {
            (Some(m), _) => Seat::new(m, clock.since, clock.length),
            (None, Some(old)) => Seat::new(old.membership, clock.since, clock.length),
            // `rejoin` ran only with a seat.
            (None, None) => return (Flow::Continue, Seated::No),
        }
        .in_session(admission.scheduled);
        debug!(student = %id, "joined");
        self.engine.metrics.joined();
        let announce_addr = self.engine.live().announce_addresses;
        seat.membership.announce_with(|| Event::Join {
            class: id.class.clone(),
            name: id.name.clone(),
            addr: announce_addr.then(|| peer.ip()),
        });
        let required_seconds = self.required_seconds(&seat, now, today);
        let transport = self.peer.transport().unwrap_or_default();
        self.engine.publish(|| ClassEvent::Joined {
            id: id.clone(),
            addr: Some(peer.ip()),
            transport,
            at: today,
            seconds_left: required_seconds,
            marked_at: (required_seconds == 0)
                .then(|| self.marked_today(&id, today))
                .flatten(),
        });
        // After the JOIN's own event: the dashboard has the row to flag.
        let day = self.engine.store.local_date(today);
        let noted = self
            .engine
            .flags
            .note(&id.class, &id.roll, peer.ip(), now, day);
        for flag in noted.raised {
            info!(%flag, "check-in flagged for the teacher");
            self.engine.publish(|| ClassEvent::Flagged {
                flag,
                id: id.clone(),
            });
        }
        for flag in noted.joined {
            self.engine.publish(|| ClassEvent::Flagged {
                flag,
                id: id.clone(),
            });
        }
        self.seat = Some(seat);
        let resume = (token != 0 && required_seconds > 0)
            .then(|| Token::new(&format_token(token)).ok())
            .flatten();
        let flow = self.reply(
            out,
            Reply::Join {
                id,
                required_seconds,
                resume,
            },
        );
        (flow, Seated::Yes)
    }

    /// With a cluster, claims `id`'s seat (served from `clock`) for this node under a fresh
    /// token, which the local seat is then to have: `Err` if another node holds the roll.
    /// Without a cluster (`Ok(None)`) the hub alone decides; with one that cannot be reached,
    /// too (the link logs it and tells admins, and reconciles the seat when it returns).
    async fn claim_in_cluster(&self, id: &StudentId, clock: SeatClock) -> Result<Option<u128>, ()> {
        let Some(cluster) = self.engine.cluster.clone() else {
            return Ok(None);
        };
        let token = crate::hub::token_for(clock);
        let claim = SeatClaim {
            id: id.clone(),
            token,
            served: Duration::ZERO,
            length: clock.length,
            grace: self.grace_for(&id.class),
        };
        match cluster.0.claim(&claim).await {
            Ok(Claim::Granted) | Err(_) => Ok(Some(token)),
            Ok(Claim::Taken) => Err(()),
        }
    }

    /// `ERR ALREADY` for `id`, saying whether the seat waits for a resume after a drop.
    fn refuse_already(&mut self, out: &mut Outbox, id: &StudentId) -> Flow {
        let grace = self.engine.live().resume_grace;
        let message = match self.engine.hub.parked_until(id, grace) {
            Some(until) => {
                let secs = seconds_left(until, Instant::now());
                format!(
                    "roll {} of {} dropped moments ago and its seat is kept for {secs} more seconds; send RESUME <token> from that session, or JOIN again after",
                    id.roll, id.class
                )
            }
            None => format!(
                "roll {} is already checked in to {} on another connection; RESUME <token> takes the seat over",
                id.roll, id.class
            ),
        };
        self.refuse(out, ErrorCode::Already, message)
    }

    /// `RESUME token`: the seat the token belongs to, with the time already served; on another
    /// connection still holding it, that one is told `EVENT REPLACED` and closed.
    pub(super) async fn resume(&mut self, token: &Token, out: &mut Outbox) -> Flow {
        let Some(peer) = self.peer.addr() else {
            return self.refuse(
                out,
                ErrorCode::Denied,
                "students check in over the network, not the admin socket",
            );
        };
        let Some(token) = parse_token(token.as_str()) else {
            return self.bad_token(out);
        };
        if let Some(seat) = &self.seat {
            let today = Timestamp::now();
            if !seat.recorded() && self.marked_today(&seat.membership.id, today).is_none() {
                let current = seat.membership.id.to_string();
                return self.refuse(out, ErrorCode::Joined, format!("this connection is checked in as {current}, who is not marked present yet; send PRESENT first, or RESUME from a new connection"));
            }
        }
        let transport = self.peer.transport().unwrap_or_default();
        let resumed = match self.engine.hub.resume(token, self.conn, transport) {
            Ok(r) => r,
            Err(UnknownToken) => match self.resume_from_cluster(token).await {
                Some(r) => r,
                None => return self.bad_token(out),
            },
        };
        // A marked seat this connection held (a kiosk) is given back first.
        self.seat = None;
        let id = resumed.membership.id.clone();
        debug!(student = %id, took_over = resumed.took_over, %peer, "resumed");
        let scheduled = self.scheduled_now(&id, Timestamp::now());
        let seat = Seat::new(
            resumed.membership,
            resumed.clock.since,
            resumed.clock.length,
        )
        .in_session(scheduled);
        let now = Instant::now();
        let required_seconds = self.required_seconds(&seat, now, Timestamp::now());
        self.seat = Some(seat);
        let resume = Token::new(&format_token(token)).ok();
        match resume {
            Some(resume) => self.reply(
                out,
                Reply::Resume {
                    id,
                    required_seconds,
                    resume,
                },
            ),
            None => self.bad_token(out),
        }
    }

    /// The seat of `token` held (or left after a drop) on another node, taken over here: its
    /// served time continues.
    async fn resume_from_cluster(&self, token: u128) -> Option<Resumed> {
        let cluster = self.engine.cluster.clone()?;
        let remote = match cluster.0.resume(token).await {
            Ok(r) => r?,
            Err(e) => {
                warn!(error = %e, "a resume could not ask the other nodes");
                return None;
            }
        };
        let now = Instant::now();
        let clock = SeatClock {
            since: now.checked_sub(remote.served).unwrap_or(now),
            length: remote.length,
        };
        let day = Some(self.engine.store.local_date(Timestamp::now()));
        let transport = self.peer.transport().unwrap_or_default();
        let taken = self
            .engine
            .hub
            .join_with(&remote.id, self.conn, clock, transport, day, Some(token))
            .ok()?;
        info!(student = %remote.id, served = ?remote.served, "resumed a seat from another node");
        Some(Resumed {
            membership: taken.membership,
            clock: taken.clock,
            took_over: true,
        })
    }

    fn bad_token(&mut self, out: &mut Outbox) -> Flow {
        self.refuse(
            out,
            ErrorCode::BadToken,
            "no seat is held with that resume token (its grace may have run out); send JOIN COURSE_DIV_NAME_ROLL",
        )
    }

    /// Whether this connection still holds its seat; if a resume elsewhere took it over,
    /// `EVENT REPLACED` is queued and the connection is to close.
    pub(super) fn still_holds(&mut self, out: &mut Outbox) -> bool {
        match &self.seat {
            Some(seat) if !seat.membership.holds() => {
                self.send(out, &ServerLine::Event(Event::Replaced));
                false
            }
            _ => true,
        }
    }

    /// `ID_Present` (the original client's last line): join if not yet joined as `id`, then
    /// mark present. Already seated as `id`, it is one reply: `OK PRESENT`.
    pub(super) async fn join_present(
        &mut self,
        id: StudentId,
        arrived: Instant,
        out: &mut Outbox,
    ) -> Flow {
        let seated_as_id = self.seat.as_ref().is_some_and(|s| s.membership.id == id);
        if !seated_as_id {
            match self.join(id, None, arrived, out).await {
                (Flow::Continue, Seated::Yes) => {}
                (flow, _) => return flow,
            }
        }
        self.present(out).await
    }

    /// `PRESENT`: a mark once the seat's class length is served (or the mark already made
    /// today), `ERR EARLY` before.
    pub(super) async fn present(&mut self, out: &mut Outbox) -> Flow {
        let Some(seat) = &self.seat else {
            return self.not_joined(out, "PRESENT");
        };
        let id = &seat.membership.id;
        let now = Instant::now();
        if !seat.served(now) {
            // Marked earlier today (on another connection): no need to stay again.
            if let Some(at) = self.marked_today(id, Timestamp::now()) {
                if let Some(seat) = &mut self.seat {
                    seat.set_recorded();
                }
                return self.reply(out, Reply::present(at));
            }
            self.send(out, &ServerLine::early(seconds_left(seat.due(), now)));
            return Flow::Continue;
        }
        // Fenced: a node whose lease ran out (paused, cut off) may have lost the seat to
        // another node; it does not mark for a seat it no longer holds.
        if let Some(cluster) = self.engine.cluster.clone() {
            let seats = crate::cluster::lease_seats(&self.engine, Some(id));
            let lost = match seats.first() {
                Some(seat) => matches!(cluster.0.confirm(seat).await, Ok(false)),
                // Given up already (an eviction raced this PRESENT).
                None => true,
            };
            if lost {
                warn!(student = %id, "seat lost to another node; not marking here");
                self.engine.hub.evict(&id.class, &id.roll, 0);
                self.send(out, &ServerLine::Event(Event::Replaced));
                return Flow::Close;
            }
        }
        let marked_at = Timestamp::now();
        let mut mark = Mark::present(
            id.clone(),
            seat.joined_at(marked_at, now),
            marked_at,
            self.peer.addr().map(|a| a.ip()),
        );
        if let Some(s) = seat.scheduled() {
            let served = now.saturating_duration_since(seat.since());
            if let Some(d) = s.timing.decide(s.joined_after, served, false) {
                mark.status = d.status;
                mark.minutes_late = d.minutes_late;
                mark.minutes_attended = d.minutes_attended;
            }
            mark.session_start = s.session_start;
        }
        let (status, minutes_late) = (mark.status, mark.minutes_late);
        match self.engine.store.record(mark).await {
            Ok(Recorded::New(at)) => {
                if let Some(seat) = &mut self.seat {
                    seat.set_recorded();
                    let id = &seat.membership.id;
                    debug!(student = %id, %status, "marked");
                    seat.membership.announce_with(|| Event::Present {
                        name: id.name.clone(),
                    });
                    self.engine
                        .publish(|| ClassEvent::Marked { id: id.clone(), at });
                }
                self.reply(
                    out,
                    Reply::Present {
                        marked_at: at,
                        status,
                        minutes_late,
                    },
                )
            }
            Ok(Recorded::Existing(at)) => {
                if let Some(seat) = &mut self.seat {
                    seat.set_recorded();
                }
                self.reply(out, Reply::present(at))
            }
            Err(StoreError::Storage(e)) => {
                warn!(peer = %self.peer, error = %e, "mark not stored");
                self.refuse(out, ErrorCode::Storage, "the mark could not be stored (disk or database); you are NOT marked yet, send PRESENT again")
            }
            Err(_) => self.refuse(
                out,
                ErrorCode::ShuttingDown,
                "the server is shutting down; you are NOT marked, try again when it is back",
            ),
        }
    }

    /// `HISTORY`: this seat's timeline for today: the JOIN, and the mark once it is made.
    pub(super) fn history(&mut self, out: &mut Outbox) -> Flow {
        let Some(seat) = &self.seat else {
            return self.not_joined(out, "HISTORY");
        };
        let now = Instant::now();
        let today = Timestamp::now();
        let required = seat.length();
        let served = now.saturating_duration_since(seat.since()).min(required);
        let day = self.engine.store.local_date(today);
        // A seat that dropped has its timeline in the hub; one that never did, just its join.
        let mut entries = self
            .engine
            .hub
            .timeline(&seat.membership.id, day)
            .unwrap_or_else(|| {
                vec![HistoryEntry {
                    kind: HistoryKind::Join,
                    at: seat.joined_at(today, now),
                }]
            });
        let marked = self.marked_today(&seat.membership.id, today);
        if let Some(at) = marked {
            if entries.len() >= attendance_protocol::MAX_HISTORY {
                entries.remove(0);
            }
            entries.push(HistoryEntry {
                kind: HistoryKind::Mark,
                at,
            });
        }
        let history = History {
            status: marked.map(|_| AttendanceStatus::Present),
            served_seconds: served.as_secs(),
            required_seconds: required.as_secs(),
            minutes_late: 0,
            entries,
        };
        self.reply(out, Reply::History(history))
    }

    /// `SAY text`: chat to the class, within the chat rate.
    pub(super) fn say(&mut self, text: Text, out: &mut Outbox) -> Flow {
        let Some(seat) = &self.seat else {
            return self.not_joined(out, "SAY");
        };
        if self.chat.check().is_err() {
            let live = self.engine.live();
            let (rate, burst) = (live.chat_rate, live.chat_burst);
            drop(live);
            return self.refuse(out, ErrorCode::Rate, format!("chat is limited to {rate} messages a second (bursts of {burst}); message not sent"));
        }
        let name = seat.membership.id.name.clone();
        self.engine.publish(|| ClassEvent::Said {
            id: seat.membership.id.clone(),
            text: text.clone(),
        });
        seat.membership.announce(Event::Say { name, text });
        self.reply(out, Reply::Say)
    }
}
