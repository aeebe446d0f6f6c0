//! Whether a JOIN is admitted to its class, by the class's rules (`[[class]]`): its subnets,
//! its timetable, its roster and its rotating code; and, for a scheduled class, the session
//! the seat belongs to and how long the student must serve in it.

use std::net::IpAddr;
use std::time::Duration;

use attendance_protocol::{ErrorCode, StudentId, Timestamp, Token};
use jiff::civil::Date;
use tokio::time::Instant;

use super::{Flow, Outbox, Session};
use crate::attendance::Scheduled;
use crate::attendance::code;
use crate::attendance::roster::NotEnrolled;
use crate::attendance::rules::{jiff_now, protocol_time};
use crate::attendance::schedule::Window;

/// Where a seat's served time starts and how long it must be.
#[derive(Debug, Clone, Copy)]
pub(super) struct Admission {
    /// When served time starts counting (the session's start, for a JOIN before it).
    pub(super) since: Instant,
    /// The time to serve.
    pub(super) length: Duration,
    /// The session, for a scheduled class.
    pub(super) scheduled: Option<Scheduled>,
}

impl Session {
    /// Admits `id`'s JOIN (whose line arrived at `arrived`; `today` read once), with
    /// `code` if it gave one; or refuses it with the class's reason, as `Err(flow)`.
    pub(super) fn admit(
        &mut self,
        id: &StudentId,
        code: Option<&Token>,
        ip: IpAddr,
        arrived: Instant,
        today: Timestamp,
        out: &mut Outbox,
    ) -> Result<Admission, Flow> {
        let class_length = self.engine.live().class_length;
        let ad_hoc = Admission {
            since: arrived,
            length: class_length,
            scheduled: None,
        };
        let Some(rule) = self.engine.rules.get(&id.class) else {
            return Ok(ad_hoc);
        };
        if let Some(nets) = &rule.subnets {
            if !nets.allows(ip) {
                let msg = format!(
                    "{} accepts check-ins only from its room's network ({}); this connection comes from {ip}",
                    id.class,
                    nets.describe()
                );
                return Err(self.refuse(out, ErrorCode::Forbidden, msg));
            }
        }
        let wall = jiff_now(today);
        let tz = self.engine.startup.time_zone();
        let session = match &rule.schedule {
            None => None,
            Some(schedule) => match schedule.window_at(wall, &tz) {
                Window::Open(session) => Some(session),
                Window::Closed { next_opening } => {
                    let msg = match next_opening {
                        Some(next) => format!(
                            "{} {} is not open for check-in now; it opens at {}",
                            protocol_time(next.timestamp()),
                            id.class,
                            next.strftime("%H:%M on %A %-d %B (%Z)")
                        ),
                        None => format!("- {} has no sessions in its timetable", id.class),
                    };
                    return Err(self.refuse(out, ErrorCode::Closed, msg));
                }
            },
        };
        if let Some(roster) = &rule.roster {
            match roster.check(id.name.as_str(), id.roll.as_str()) {
                Ok(()) => {}
                Err(NotEnrolled::UnknownRoll) => {
                    let msg = format!("roll {} is not on the roster of {}", id.roll, id.class);
                    return Err(self.refuse(out, ErrorCode::NotEnrolled, msg));
                }
                Err(NotEnrolled::WrongName) => {
                    let msg = format!(
                        "roll {} of {} is enrolled under another name than {}",
                        id.roll, id.class, id.name
                    );
                    return Err(self.refuse(out, ErrorCode::NotEnrolled, msg));
                }
            }
        }
        if let Some(secret) = &rule.secret {
            let unix = wall.as_second();
            let ok = code.is_some_and(|c| code::accepts(secret, unix, c.as_str()));
            if !ok {
                let msg = match code {
                    None => format!(
                        "{} needs its 6-digit check-in code: JOIN {id} <CODE>, the code on the teacher's screen",
                        id.class
                    ),
                    Some(_) => format!(
                        "that is not the current check-in code of {}; look at the teacher's screen and try again",
                        id.class
                    ),
                };
                return Err(self.refuse(out, ErrorCode::BadCode, msg));
            }
        }
        let Some(session) = session else {
            return Ok(ad_hoc);
        };
        let day = session.start.date();
        let start = session.start.timestamp();
        // The first JOIN of the day counts for lateness, not a JOIN after a drop.
        let first = self.first_join(id, day).map_or(wall, jiff_now);
        let joined_after = duration_between(start, first);
        let wait = duration_between(wall, start);
        Ok(Admission {
            since: arrived + wait,
            length: rule.timing.required_for(joined_after),
            scheduled: Some(Scheduled {
                session_start: protocol_time(start),
                joined_after,
                timing: rule.timing,
            }),
        })
    }

    /// When `id` first joined on `day`, if its seat dropped before (the hub keeps the timeline
    /// of rolls that dropped).
    fn first_join(&self, id: &StudentId, day: Date) -> Option<Timestamp> {
        self.engine
            .hub
            .timeline(id, day)?
            .iter()
            .find(|e| e.kind == attendance_protocol::HistoryKind::Join)
            .map(|e| e.at)
    }

    /// The session `id`'s seat belongs to now (for a RESUME), if its class is scheduled and in
    /// session.
    pub(super) fn scheduled_now(&self, id: &StudentId, today: Timestamp) -> Option<Scheduled> {
        let rule = self.engine.rules.get(&id.class)?;
        let schedule = rule.schedule.as_ref()?;
        let wall = jiff_now(today);
        let Window::Open(session) = schedule.window_at(wall, &self.engine.startup.time_zone())
        else {
            return None;
        };
        let start = session.start.timestamp();
        let first = self
            .first_join(id, session.start.date())
            .map_or(wall, jiff_now);
        Some(Scheduled {
            session_start: protocol_time(start),
            joined_after: duration_between(start, first),
            timing: rule.timing,
        })
    }
}

/// The time from `a` to `b`; zero if `b` is not later.
fn duration_between(a: jiff::Timestamp, b: jiff::Timestamp) -> Duration {
    let d = b.duration_since(a);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}
