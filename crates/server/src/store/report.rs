//! `attendanced report`: one line per student of a class on a day, with the status and the
//! minutes, from the attendance CSV; students of the class's roster without a row are listed
//! `Absent`. Columns are found by their header names, so a report reads the file of any
//! version that has them (the minutes columns are empty where a file has none).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use attendance_protocol::{ClassKey, Timestamp};
use futures::StreamExt;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// Most rows a report reads: a bound on the memory of one run, far above a year of a school's
/// marks in one file.
pub const MAX_REPORT_ROWS: usize = 10_000_000;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A bad `--class` or `--day`.
    #[error("{0}")]
    Usage(String),
    /// A row or the header could not be parsed.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
}

impl ReportError {
    /// Whether the command line was at fault (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Usage(_))
    }
}

/// What `attendanced report` was asked.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `COURSE_DIV`.
    pub class: &'a str,
    /// `YYYY-MM-DD`, local; today if `None`.
    pub day: Option<&'a str>,
    /// The CSV; the configured one if `None`.
    pub file: Option<&'a Path>,
    /// A roster CSV for the Absent lines.
    pub roster: Option<&'a Path>,
    /// The output format.
    pub format: ReportFormat,
}

/// `attendanced report`: the rendered report `request` asks for, under `config`'s file and
/// timezone.
///
/// # Errors
/// [`ReportError`]: a bad class or day ([`ReportError::Usage`]), a file that cannot be read.
pub async fn run(config: &crate::Config, request: Request<'_>) -> Result<String, ReportError> {
    let class = format!("{}_X_0", request.class)
        .parse::<attendance_protocol::StudentId>()
        .map_err(|e| {
            ReportError::Usage(format!(
                "--class {:?} is not COURSE_DIV: {e}",
                request.class
            ))
        })?
        .class;
    let tz = config.split().0.time_zone();
    let day = match request.day {
        Some(d) => d
            .parse::<Date>()
            .map_err(|e| ReportError::Usage(format!("--day {d:?} is not YYYY-MM-DD: {e}")))?,
        None => jiff::Timestamp::now().to_zoned(tz.clone()).date(),
    };
    let roster = match request.roster {
        Some(r) => read_roster(r).await?,
        None => Vec::new(),
    };
    let path = request.file.unwrap_or(&config.csv);
    let lines = report(path, &class, day, &tz, &roster).await?;
    Ok(render(&lines, request.format))
}

/// One student's line of a report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReportLine {
    /// Course.
    pub course: String,
    /// Division.
    pub division: String,
    /// Name.
    pub name: String,
    /// Roll.
    pub roll: String,
    /// `Present`, `Late`, `Left` or `Absent`.
    pub status: String,
    /// Minutes late (empty where the file does not say).
    pub minutes_late: String,
    /// Minutes attended (empty where the file does not say).
    pub minutes_attended: String,
    /// When the record was written (empty for a roster absentee with no row).
    pub marked_at: String,
    /// `shared-address` when 3 or more rolls of the class joined from this row's address within
    /// 2 minutes (a flag for the teacher, not a verdict); empty otherwise.
    pub flags: String,
}

/// The output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    /// CSV with a header row.
    #[default]
    Csv,
    /// A JSON array of objects.
    Json,
}

/// The lines of `class` on `day` (in `tz`) from the CSV at `path`, sorted by roll; rolls of
/// `roster` (roll, name) without a row are added as `Absent`.
///
/// # Errors
/// [`ReportError`] if the file cannot be read or parsed.
pub async fn report(
    path: &Path,
    class: &ClassKey,
    day: Date,
    tz: &TimeZone,
    roster: &[(String, String)],
) -> Result<Vec<ReportLine>, ReportError> {
    let shown = path.display().to_string();
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| ReportError::Read {
            path: shown.clone(),
            source,
        })?;
    let mut reader = csv_async::AsyncReaderBuilder::new()
        .has_headers(true)
        .create_reader(tokio::io::BufReader::new(file));
    let format = |message: String| ReportError::Format {
        path: shown.clone(),
        message,
    };
    let headers = reader
        .headers()
        .await
        .map_err(|e| format(format!("header: {e}")))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let need = |name: &str| column(name).ok_or_else(|| format(format!("no `{name}` column")));
    let (course, division, name, roll, status, marked_at) = (
        need("course")?,
        need("division")?,
        need("name")?,
        need("roll")?,
        need("status")?,
        need("marked_at")?,
    );
    let (late, attended) = (column("minutes_late"), column("minutes_attended"));
    let (joined_at, client_addr) = (column("joined_at"), column("client_addr"));
    // (address, joined at in ms, roll) of the rows kept, for the shared-address flag.
    let mut seen: Vec<(String, i128, String)> = Vec::new();
    let mut lines: BTreeMap<String, ReportLine> = BTreeMap::new();
    let mut records = reader.records();
    let mut n = 0usize;
    while let Some(record) = records.next().await {
        n += 1;
        if n > MAX_REPORT_ROWS {
            return Err(format(format!("more than {MAX_REPORT_ROWS} rows")));
        }
        let record = record.map_err(|e| format(format!("row {}: {e}", n + 1)))?;
        let cell = |i: usize| record.get(i).unwrap_or("").to_owned();
        if cell(course) != class.course.as_str() || cell(division) != class.division.as_str() {
            continue;
        }
        let at: Timestamp = match cell(marked_at).parse() {
            Ok(t) => t,
            Err(_) => return Err(format(format!("row {}: bad marked_at", n + 1))),
        };
        if local_date(at, tz) != Some(day) {
            continue;
        }
        let line = ReportLine {
            course: cell(course),
            division: cell(division),
            name: cell(name),
            roll: cell(roll),
            status: cell(status),
            minutes_late: late.map(cell).unwrap_or_default(),
            minutes_attended: attended.map(cell).unwrap_or_default(),
            marked_at: cell(marked_at),
            flags: String::new(),
        };
        let addr = client_addr.map(cell).unwrap_or_default();
        let joined = joined_at
            .map(cell)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| t.unix_millis());
        if let (false, Some(j)) = (addr.is_empty(), joined) {
            if !lines.contains_key(&line.roll) {
                seen.push((addr, j, line.roll.clone()));
            }
        }
        // One record per student and day; should a file hold two, the first stands.
        lines.entry(line.roll.clone()).or_insert(line);
    }
    for roll in shared_address_rolls(&mut seen) {
        if let Some(l) = lines.get_mut(&roll) {
            l.flags = "shared-address".to_owned();
        }
    }
    for (roll, name) in roster {
        lines.entry(roll.clone()).or_insert_with(|| ReportLine {
            course: class.course.to_string(),
            division: class.division.to_string(),
            name: name.clone(),
            roll: roll.clone(),
            status: "Absent".to_owned(),
            minutes_late: String::new(),
            minutes_attended: "0".to_owned(),
            marked_at: String::new(),
            flags: String::new(),
        });
    }
    Ok(lines.into_values().collect())
}

/// The rolls whose address had 3 or more rolls join within 2 minutes (the daemon's
/// `shared-address` flag, from the file: sorted by address and time, one pass).
fn shared_address_rolls(seen: &mut [(String, i128, String)]) -> Vec<String> {
    const WINDOW_MS: i128 = 120_000;
    seen.sort();
    let mut out = Vec::new();
    let mut start = 0;
    for end in 0..seen.len() {
        while seen[start].0 != seen[end].0 || seen[end].1 - seen[start].1 >= WINDOW_MS {
            start += 1;
        }
        if end + 1 - start >= 3 {
            out.extend(seen[start..=end].iter().map(|(_, _, r)| r.clone()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The (roll, name) pairs of a roster CSV, read as the daemon reads it at start-up.
///
/// # Errors
/// [`ReportError`] if the file cannot be read or is not a roster.
pub async fn read_roster(path: &Path) -> Result<Vec<(String, String)>, ReportError> {
    let owned = path.to_owned();
    let loaded =
        tokio::task::spawn_blocking(move || crate::attendance::roster::Roster::load(&owned))
            .await
            .map_err(|e| ReportError::Read {
                path: path.display().to_string(),
                source: std::io::Error::other(e),
            })?;
    let roster = loaded.map_err(|e| ReportError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(roster
        .students()
        .map(|(roll, name)| (roll.to_owned(), name.to_owned()))
        .collect())
}

/// The local day of `at` in `tz`.
fn local_date(at: Timestamp, tz: &TimeZone) -> Option<Date> {
    let ts = jiff::Timestamp::from_millisecond(i64::try_from(at.unix_millis()).ok()?).ok()?;
    Some(ts.to_zoned(tz.clone()).date())
}

/// `lines` in `format`.
pub fn render(lines: &[ReportLine], format: ReportFormat) -> String {
    match format {
        ReportFormat::Json => {
            let mut s = serde_json::to_string_pretty(lines).unwrap_or_else(|_| "[]".to_owned());
            s.push('\n');
            s
        }
        ReportFormat::Csv => {
            let mut s = String::from(
                "course,division,name,roll,status,minutes_late,minutes_attended,marked_at,flags\n",
            );
            for l in lines {
                // Fields are protocol fields and timestamps: no commas, quotes or newlines.
                let _ = writeln!(
                    s,
                    "{},{},{},{},{},{},{},{},{}",
                    l.course,
                    l.division,
                    l.name,
                    l.roll,
                    l.status,
                    l.minutes_late,
                    l.minutes_attended,
                    l.marked_at,
                    l.flags
                );
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "course,division,name,roll,status,marked_at,joined_at,client_addr\n\
        CN,D1,Ann,1,Present,2026-10-24T22:30:00.000Z,2026-10-24T21:30:00.000Z,127.0.0.1\n\
        CN,D1,Bob,2,Present,2026-10-25T08:00:00.000Z,2026-10-25T07:00:00.000Z,127.0.0.1\n\
        CN,D2,Cat,3,Present,2026-10-25T08:00:00.000Z,2026-10-25T07:00:00.000Z,127.0.0.1\n";

    fn class(s: &str) -> ClassKey {
        let id: attendance_protocol::StudentId = format!("{s}_X_0").parse().expect("id");
        id.class
    }

    #[tokio::test]
    async fn a_report_lists_the_class_on_its_local_day_with_roster_absentees() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.csv");
        std::fs::write(&path, FILE).expect("write");
        let tz = TimeZone::get("Europe/Berlin").expect("tz");
        // 22:30 UTC on the 24th is 00:30 on the 25th in Berlin (summer time, +02:00).
        let day = Date::constant(2026, 10, 25);
        let roster = vec![
            ("1".to_owned(), "Ann".to_owned()),
            ("9".to_owned(), "Zed".to_owned()),
        ];
        let lines = report(&path, &class("CN_D1"), day, &tz, &roster)
            .await
            .expect("report");
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.roll.as_str(), l.status.as_str()))
            .collect();
        assert_eq!(got, [("1", "Present"), ("2", "Present"), ("9", "Absent")]);
        let csv = render(&lines, ReportFormat::Csv);
        assert!(csv.contains("\nCN,D1,Zed,9,Absent,,0,,\n"), "{csv}");
        let json = render(&lines, ReportFormat::Json);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(parsed[2]["status"], "Absent");
        // In UTC the first row is the 24th.
        let utc = report(&path, &class("CN_D1"), day, &TimeZone::UTC, &[])
            .await
            .expect("report");
        assert_eq!(utc.len(), 1);
    }

    #[test]
    fn three_rolls_from_one_address_within_two_minutes_are_flagged() {
        let row = |a: &str, ms: i128, r: &str| (a.to_owned(), ms, r.to_owned());
        let mut seen = vec![
            row("10.0.0.5", 0, "1"),
            row("10.0.0.5", 60_000, "2"),
            row("10.0.0.9", 60_000, "7"),
            row("10.0.0.5", 119_999, "3"),
            row("10.0.0.5", 500_000, "4"),
        ];
        assert_eq!(shared_address_rolls(&mut seen), ["1", "2", "3"]);
    }

    #[tokio::test]
    async fn a_file_without_the_columns_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "a,b\n1,2\n").expect("write");
        let e = report(
            &path,
            &class("CN_D1"),
            Date::constant(2026, 1, 1),
            &TimeZone::UTC,
            &[],
        )
        .await
        .expect_err("no columns");
        assert!(e.to_string().contains("no `course` column"), "{e}");
    }
}
