//! The rules of the configured classes (`[[class]]`), loaded once at start-up: their
//! timetables, rosters, code secrets and subnets, looked up by class at each JOIN.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use attendance_protocol::ClassKey;
use jiff::tz::TimeZone;

use super::code::{self, CodeError};
use super::roster::{Roster, RosterError};
use super::schedule::ClassSchedule;
use super::status::Timing;
use super::subnet::Subnets;
use crate::config::ClassConfig;

/// Why the classes' rules could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// A roster could not be read.
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// A code secret could not be read or made.
    #[error(transparent)]
    Code(#[from] CodeError),
    /// A `[[class]]` table is invalid (the config check catches this first).
    #[error("{0}")]
    Invalid(String),
}

/// One configured class's rules.
#[derive(Debug, Clone)]
pub struct ClassRule {
    /// The class.
    pub key: ClassKey,
    /// Its timetable; `None`: ad hoc.
    pub schedule: Option<ClassSchedule>,
    /// Required time, lateness and length.
    pub timing: Timing,
    /// Its resume grace, if it has its own.
    pub grace: Option<Duration>,
    /// Its roster.
    pub roster: Option<Roster>,
    /// Its code secret, if JOIN needs a code.
    pub secret: Option<Vec<u8>>,
    /// Its subnet allow-list.
    pub subnets: Option<Subnets>,
}

/// Every configured class's rules.
#[derive(Debug, Clone, Default)]
pub struct ClassRules {
    classes: HashMap<ClassKey, ClassRule>,
}

impl ClassRules {
    /// Loads `classes`: rosters from their files, code secrets from (or into) `state_dir`.
    ///
    /// # Errors
    /// [`RulesError`] naming the file or class at fault.
    pub fn load(classes: &[ClassConfig], state_dir: &Path) -> Result<Self, RulesError> {
        let mut out = HashMap::new();
        for c in classes {
            let key = c.key().ok_or_else(|| {
                RulesError::Invalid(format!("bad class {}_{}", c.course, c.division))
            })?;
            let schedule = c.schedule().map_err(RulesError::Invalid)?;
            let roster = c.roster.as_deref().map(Roster::load).transpose()?;
            let secret = c
                .code
                .then(|| code::load_or_create_secret(state_dir, &c.course, &c.division))
                .transpose()?;
            let subnets = (!c.subnet.is_empty())
                .then(|| Subnets::parse(&c.subnet))
                .transpose()
                .map_err(RulesError::Invalid)?;
            let rule = ClassRule {
                key: key.clone(),
                schedule,
                timing: c.timing(),
                grace: c.grace,
                roster,
                secret,
                subnets,
            };
            out.insert(key, rule);
        }
        Ok(Self { classes: out })
    }

    /// The rules of `class`, if it has any.
    pub fn get(&self, class: &ClassKey) -> Option<&ClassRule> {
        if self.classes.is_empty() {
            return None;
        }
        self.classes.get(class)
    }

    /// Every configured class.
    pub fn iter(&self) -> impl Iterator<Item = &ClassRule> {
        self.classes.values()
    }
}

/// The wall-clock now as jiff sees it, from the protocol's timestamp type.
pub fn jiff_now(now: attendance_protocol::Timestamp) -> jiff::Timestamp {
    i64::try_from(now.unix_millis())
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or_else(jiff::Timestamp::now)
}

/// `t` as the protocol's timestamp (RFC 3339 UTC with milliseconds).
pub fn protocol_time(t: jiff::Timestamp) -> attendance_protocol::Timestamp {
    attendance_protocol::Timestamp::from_unix_millis(t.as_millisecond())
        .unwrap_or_else(attendance_protocol::Timestamp::now)
}

/// How `TimeZone` is named in messages.
pub fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("the system zone").to_owned()
}
