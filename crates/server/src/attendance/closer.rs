//! The close of a scheduled class's session: at its end, every seat is given back and every
//! student who checked in gets a record — `Present` or `Late` if they served the required time
//! (whether or not they sent `PRESENT`), `Left` with the minutes served if not — and every
//! roster student with no record is recorded `Absent`. Each connected student is told
//! `EVENT ENDED <status> <minutes>` and closed.

use std::sync::Arc;
use std::time::Duration;

use attendance_protocol::{AttendanceStatus, ClassKey, Event, ServerLine, Timestamp};
use tracing::{info, warn};

use super::rules::{jiff_now, protocol_time};
use super::status::{ABSENT, Decided};
use crate::engine::Engine;
use crate::store::Mark;

/// Most sessions one closer task closes: a bound on its loop (years of daily classes).
const MAX_SESSIONS: u32 = 100_000;

/// What a close wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Records of students who checked in (Present, Late or Left).
    pub recorded: usize,
    /// Absent records of roster students.
    pub absent: usize,
}

/// Closes each session of scheduled class `key` at its end, until the daemon shuts down.
pub async fn close_sessions(engine: Arc<Engine>, key: ClassKey) {
    let Some(schedule) = engine.rules.get(&key).and_then(|r| r.schedule.clone()) else {
        return;
    };
    let tz = engine.startup.time_zone();
    for _ in 0..MAX_SESSIONS {
        let now = jiff::Timestamp::now();
        let Some(end) = schedule.next_end(now, &tz) else {
            return;
        };
        let wait = Duration::try_from(end.timestamp().duration_since(now)).unwrap_or_default();
        tokio::select! {
            () = engine.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let start = end
            .checked_sub(jiff::SignedDuration::try_from(schedule.length).unwrap_or_default())
            .map_or(end.timestamp(), |z| z.timestamp());
        let closed = close_session(&engine, &key, protocol_time(start)).await;
        info!(
            class = %key,
            recorded = closed.recorded,
            absent = closed.absent,
            "session closed"
        );
    }
}

/// How far short of the required time a student connected at the close may be and still have
/// served it (clock granularity, not time away).
const CLOSE_SLACK: Duration = Duration::from_secs(1);

/// Closes the session of `key` that started at `start`, now: see the module's doc.
pub async fn close_session(engine: &Engine, key: &ClassKey, start: Timestamp) -> Closed {
    let Some(rule) = engine.rules.get(key) else {
        return Closed::default();
    };
    let now = Timestamp::now();
    let day = engine.store.local_date(start);
    let endings = engine.hub.end_class(key, day);
    let mut closed = Closed::default();
    let mut lines = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for ending in endings {
        seen.insert(ending.id.roll.as_str().to_owned());
        if engine.store.marked_at(key, &ending.id.roll, now).is_some() {
            continue;
        }
        let joined_after =
            Duration::try_from(jiff_now(ending.first_join).duration_since(jiff_now(start)))
                .unwrap_or_default();
        // Connected at the close: the clocks that measure the JOIN (wall, to the millisecond),
        // the time served (monotonic) and the close (a timer) differ by milliseconds, which
        // must not turn a student who stayed to the end into `Left`.
        let required = rule.timing.required_for(joined_after);
        let served = if ending.conn.is_some() && ending.served + CLOSE_SLACK >= required {
            ending.served.max(required)
        } else {
            ending.served
        };
        let decided = rule
            .timing
            .decide(joined_after, served, true)
            .unwrap_or(Decided {
                status: AttendanceStatus::Left,
                minutes_late: 0,
                minutes_attended: super::status::whole_minutes(served),
            });
        let mark = Mark {
            id: ending.id.clone(),
            marked_at: now,
            joined_at: ending.first_join,
            addr: None,
            status: decided.status,
            minutes_late: decided.minutes_late,
            minutes_attended: decided.minutes_attended,
            session_start: start,
        };
        match engine.store.record(mark).await {
            Ok(_) => closed.recorded += 1,
            Err(e) => warn!(student = %ending.id, error = %e, "record at session close not stored"),
        }
        if let Some(conn) = ending.conn {
            let line = ServerLine::Event(Event::Ended {
                status: decided.status,
                minutes_attended: decided.minutes_attended,
            })
            .encode();
            lines.push((conn, line));
        }
    }
    if let Some(roster) = &rule.roster {
        let absent = roster.absentees(|roll| {
            seen.contains(roll)
                || attendance_protocol::Field::new(attendance_protocol::FieldKind::Roll, roll)
                    .ok()
                    .is_some_and(|r| engine.store.marked_at(key, &r, now).is_some())
        });
        for (roll, name) in absent {
            let id = format!("{}_{}_{}_{}", key.course, key.division, name, roll)
                .parse::<attendance_protocol::StudentId>();
            let Ok(id) = id else {
                warn!(class = %key, %roll, "roster entry is not a valid student ID; no Absent record");
                continue;
            };
            let mark = Mark {
                id,
                marked_at: now,
                joined_at: start,
                addr: None,
                status: ABSENT.status,
                minutes_late: 0,
                minutes_attended: 0,
                session_start: start,
            };
            match engine.store.record(mark).await {
                Ok(_) => closed.absent += 1,
                Err(e) => warn!(class = %key, %roll, error = %e, "Absent record not stored"),
            }
        }
    }
    engine.hub.tell_ended(key, lines);
    // Deleting the session's last rows would leave a valid chain: the checkpoint tells.
    if let Err(e) = engine
        .store
        .checkpoint(crate::store::chain::CheckpointReason::SessionClose)
        .await
    {
        warn!(class = %key, error = %e, "checkpoint at session close not written");
    }
    closed
}
