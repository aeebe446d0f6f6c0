//! A class's roster: the students enrolled, from a CSV with `name` and `roll` columns (any
//! order, a header row, UTF-8 with or without a BOM, LF or CRLF). With a roster, an unknown
//! roll, or a name that does not match the roll, is refused at JOIN, and enrolled students
//! with no record when a scheduled session closes are recorded `Absent`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Most students a roster may list: a bound on memory for a file anyone could point at.
pub const MAX_ROSTER: usize = 100_000;

/// Why a roster could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    /// The file could not be read.
    #[error("roster {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a roster.
    #[error("roster {path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
}

/// Why a student is not on the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotEnrolled {
    /// No such roll.
    UnknownRoll,
    /// The roll is enrolled under another name.
    WrongName,
}

/// The students of one class: roll → name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    students: HashMap<String, String>,
}

impl Roster {
    /// Reads the roster at `path`.
    ///
    /// # Errors
    /// [`RosterError`] if it cannot be read, lacks the columns, repeats a roll or is too long.
    pub fn load(path: &Path) -> Result<Self, RosterError> {
        let text = std::fs::read_to_string(path).map_err(|source| RosterError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| RosterError::Format {
            path: path.to_owned(),
            message,
        })
    }

    /// A roster from CSV text.
    ///
    /// # Errors
    /// What is wrong, naming the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim_start_matches('\u{feff}');
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err("empty file: expected a header row with name and roll".to_owned());
        };
        let cols: Vec<String> = split(header).map(|c| c.to_ascii_lowercase()).collect();
        let find = |name: &str| {
            cols.iter()
                .position(|c| c == name)
                .ok_or_else(|| format!("no `{name}` column in the header {header:?}"))
        };
        let (name_at, roll_at) = (find("name")?, find("roll")?);
        let mut students = HashMap::new();
        for (i, line) in lines {
            if students.len() >= MAX_ROSTER {
                return Err(format!("more than {MAX_ROSTER} students"));
            }
            let cells: Vec<String> = split(line).collect();
            let (Some(name), Some(roll)) = (cells.get(name_at), cells.get(roll_at)) else {
                return Err(format!("line {}: fewer columns than the header", i + 1));
            };
            if roll.is_empty() || name.is_empty() {
                return Err(format!("line {}: an empty name or roll", i + 1));
            }
            if students.insert(roll.clone(), name.clone()).is_some() {
                return Err(format!("line {}: roll {roll} is listed twice", i + 1));
            }
        }
        Ok(Self { students })
    }

    /// Whether `name` with `roll` is enrolled (names compared without regard to case).
    ///
    /// # Errors
    /// [`NotEnrolled`] saying which part does not match.
    pub fn check(&self, name: &str, roll: &str) -> Result<(), NotEnrolled> {
        match self.students.get(roll) {
            None => Err(NotEnrolled::UnknownRoll),
            Some(n) if n.to_lowercase() == name.to_lowercase() => Ok(()),
            Some(_) => Err(NotEnrolled::WrongName),
        }
    }

    /// The enrolled students (roll, name) for whom `recorded` says no, sorted by roll.
    pub fn absentees(&self, recorded: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .students
            .iter()
            .filter(|(roll, _)| !recorded(roll))
            .map(|(r, n)| (r.clone(), n.clone()))
            .collect();
        out.sort();
        out
    }

    /// Every (roll, name), in no order.
    pub fn students(&self) -> impl Iterator<Item = (&str, &str)> {
        self.students.iter().map(|(r, n)| (r.as_str(), n.as_str()))
    }

    /// How many students it lists.
    pub fn len(&self) -> usize {
        self.students.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.students.is_empty()
    }
}

/// The cells of one CSV line: comma-separated, trimmed, optionally in double quotes.
fn split(line: &str) -> impl Iterator<Item = String> + '_ {
    line.trim_end_matches('\r')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roster_checks_rolls_and_names_and_lists_absentees() {
        let r = Roster::parse("\u{feff}roll,name\r\n18BCP043,JayPatel\r\n\r\n7,\"Ann\"\r\n")
            .expect("roster");
        assert_eq!(r.len(), 2);
        assert_eq!(r.check("JayPatel", "18BCP043"), Ok(()));
        assert_eq!(r.check("jaypatel", "18BCP043"), Ok(()));
        assert_eq!(r.check("Bob", "18BCP043"), Err(NotEnrolled::WrongName));
        assert_eq!(r.check("JayPatel", "99"), Err(NotEnrolled::UnknownRoll));
        assert_eq!(
            r.absentees(|roll| roll == "7"),
            [("18BCP043".to_owned(), "JayPatel".to_owned())]
        );
    }

    #[test]
    fn a_bad_roster_says_what_is_wrong() {
        assert!(Roster::parse("").expect_err("refused").contains("header"));
        assert!(
            Roster::parse("name,id\nA,1\n")
                .expect_err("refused")
                .contains("`roll`")
        );
        assert!(
            Roster::parse("name,roll\nA\n")
                .expect_err("refused")
                .contains("line 2")
        );
        assert!(
            Roster::parse("name,roll\nA,1\nB,1\n")
                .expect_err("refused")
                .contains("twice")
        );
        let big = format!(
            "name,roll\n{}",
            (0..=MAX_ROSTER)
                .map(|i| format!("N{i},{i}\n"))
                .collect::<String>()
        );
        assert!(
            Roster::parse(&big)
                .expect_err("refused")
                .contains("more than")
        );
    }
}
