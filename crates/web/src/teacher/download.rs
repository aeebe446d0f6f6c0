//! `GET /teacher/class/{course}/{division}/attendance.csv?day=YYYY-MM-DD`: the class's rows of
//! one local day (today by default), the same columns as the log, streamed from the CSV file a
//! chunk at a time — never built in memory.
//!
//! A row's day is the local day of its `marked_at` in the configured zone, as the daemon's
//! "already marked today" counts it. Only the current file is read: rows in files rotated away
//! (renamed, then `SIGHUP`) are not.

use attendance_protocol::{ClassKey, Timestamp};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde::Deserialize;
use tracing::warn;

use super::auth::Signed;
use super::visible_class;
use crate::routes::WebState;

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 32 * 1024;
/// The columns a row is matched on (see the log's header).
const COURSE: usize = 0;
const DIVISION: usize = 1;
const MARKED_AT: usize = 5;

#[derive(Debug, Deserialize)]
pub(crate) struct Day {
    day: Option<String>,
}

/// The day asked for (today by default), or the 400 answer to a bad one.
fn day_of(
    engine: &attendance_server::engine::Engine,
    query: &Day,
) -> Result<jiff::civil::Date, Box<Response>> {
    match query.day.as_deref() {
        None | Some("") => Ok(engine.local_date(Timestamp::now())),
        Some(d) => d.parse::<jiff::civil::Date>().map_err(|_| {
            Box::new(
                (
                    StatusCode::BAD_REQUEST,
                    "day must be a date like 2026-12-05\n",
                )
                    .into_response(),
            )
        }),
    }
}

/// `GET …/report.csv?day=`: the class's report of the day, as `attendanced report` prints it
/// (one line per student with status and minutes, the roster's absentees included).
pub(crate) async fn report(
    signed: Signed,
    State(state): State<WebState>,
    Path((course, division)): Path<(String, String)>,
    Query(query): Query<Day>,
) -> Response {
    use attendance_server::store::report as r;
    let Some(class) = visible_class(&signed, &course, &division) else {
        return super::not_found();
    };
    let engine = state.engine();
    let day = match day_of(engine, &query) {
        Ok(d) => d,
        Err(resp) => return *resp,
    };
    let roster = engine.class_roster(&class);
    let tz = engine.startup().time_zone();
    let lines = match r::report(&engine.startup().csv, &class, day, &tz, &roster).await {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "report: cannot read the log");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the attendance log cannot be read\n",
            )
                .into_response();
        }
    };
    let mut response = r::render(&lines, r::ReportFormat::Csv).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let name = format!("attachment; filename=\"report-{course}-{division}-{day}.csv\"");
    if let Ok(v) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The handler.
pub(crate) async fn csv(
    signed: Signed,
    State(state): State<WebState>,
    Path((course, division)): Path<(String, String)>,
    Query(query): Query<Day>,
) -> Response {
    let Some(class) = visible_class(&signed, &course, &division) else {
        return super::not_found();
    };
    let engine = std::sync::Arc::clone(state.engine());
    let day = match day_of(&engine, &query) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let path = engine.startup().csv.clone();
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "CSV download: cannot open the log");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the attendance log cannot be read\n",
            )
                .into_response();
        }
    };
    let records = csv_async::AsyncReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .create_reader(file)
        .into_byte_records();
    let filter = Filter {
        class,
        day,
        engine: std::sync::Arc::clone(&engine),
    };
    let body = futures::stream::unfold(
        (records, filter, true, false),
        |(mut records, filter, mut header, mut done)| async move {
            if done {
                return None;
            }
            let mut chunk = Vec::with_capacity(CHUNK);
            while chunk.len() < CHUNK {
                match records.next().await {
                    Some(Ok(record)) => {
                        if std::mem::take(&mut header) || filter.keeps(&record) {
                            encode(&record, &mut chunk);
                        }
                    }
                    Some(Err(e)) => {
                        // A torn last line (a write in progress) or a hand-edited file: the
                        // rows read so far are sent, the rest is cut.
                        warn!(error = %e, "CSV download stopped at an unreadable row");
                        done = true;
                        break;
                    }
                    None => {
                        done = true;
                        break;
                    }
                }
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from(chunk)),
                (records, filter, header, done),
            ))
        },
    );
    let name = format!(
        "attachment; filename=\"attendance-{course}-{division}-{day}.csv\"",
        course = course,
        division = division
    );
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

struct Filter {
    class: ClassKey,
    day: jiff::civil::Date,
    engine: std::sync::Arc<attendance_server::engine::Engine>,
}

impl Filter {
    fn keeps(&self, record: &csv_async::ByteRecord) -> bool {
        let field = |i: usize| record.get(i).and_then(|f| std::str::from_utf8(f).ok());
        field(COURSE) == Some(self.class.course.as_str())
            && field(DIVISION) == Some(self.class.division.as_str())
            && field(MARKED_AT)
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| self.engine.local_date(t) == self.day)
    }
}

/// Appends `record` as one CSV line, quoting a field only where it needs it.
fn encode(record: &csv_async::ByteRecord, out: &mut Vec<u8>) {
    for (i, field) in record.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if field
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
        {
            out.push(b'"');
            for &b in field {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(field);
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_where_needed() {
        let record = csv_async::ByteRecord::from(vec!["CN", "a,b", "say \"hi\"", ""]);
        let mut out = Vec::new();
        encode(&record, &mut out);
        assert_eq!(out, b"CN,\"a,b\",\"say \"\"hi\"\"\",\n");
    }
}
