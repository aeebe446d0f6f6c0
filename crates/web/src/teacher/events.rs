//! The dashboard's Server-Sent Events.
//!
//! A class page's stream sends `snapshot` (the whole class) first, then one `row` or `chat`
//! event per change, each with the board's sequence number as its `id`. A browser that
//! reconnects sends the last id it saw (`Last-Event-ID`, or `?last_event_id=` for a page that
//! reopens the stream itself) and gets exactly the changes it missed — or, if the ring no longer
//! holds them, a fresh `snapshot`. The class list's stream sends `classes` (every count) at
//! once and again after each change. Both end with `shutdown` when the daemon stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use attendance_protocol::{ClassKey, Timestamp};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use super::auth::{Scope, Signed};
use super::board::{Board, ClassView, Resume, Update, json_line};
use super::visible_class;
use crate::routes::WebState;

/// How soon a browser reconnects after the stream drops.
const RETRY: Duration = Duration::from_secs(1);
/// Updates the class list waits to gather before it re-reads the counts.
const LIST_BATCH: usize = 256;

#[derive(Debug, Deserialize)]
pub(crate) struct Resumed {
    last_event_id: Option<u64>,
}

/// The id a reconnecting client names: the header a browser's `EventSource` sends, else the
/// query parameter.
fn last_event_id(headers: &HeaderMap, query: &Resumed) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(query.last_event_id)
}

fn snapshot_event(seq: u64, view: &ClassView) -> Event {
    #[derive(serde::Serialize)]
    struct Snapshot<'a> {
        now: String,
        #[serde(flatten)]
        view: &'a ClassView,
    }
    let data = json_line(&Snapshot {
        now: Timestamp::now().to_string(),
        view,
    });
    Event::default()
        .event("snapshot")
        .id(seq.to_string())
        .data(data)
}

fn update_event(u: &Update) -> Event {
    Event::default()
        .event(u.event)
        .id(u.seq.to_string())
        .data(u.data.as_str())
}

fn shutdown_event() -> Event {
    Event::default().event("shutdown").data("{}")
}

/// `GET /teacher/class/{course}/{division}/events`.
pub(crate) async fn class(
    signed: Signed,
    State(state): State<WebState>,
    Path((course, division)): Path<(String, String)>,
    Query(query): Query<Resumed>,
    headers: HeaderMap,
) -> Response {
    let Some(class) = visible_class(&signed, &course, &division) else {
        return super::not_found();
    };
    let board = Arc::clone(&state.teacher().board);
    let (rx, resume) = board.resume(&class, last_event_id(&headers, &query));
    let mut pending = VecDeque::new();
    let mut last = 0;
    push_resume(&mut pending, &mut last, resume);
    let stream = ClassStream {
        board,
        class,
        rx,
        last,
        pending,
        shutdown: state.engine().shutdown_token().clone(),
        done: false,
    };
    sse(stream.into_stream())
}

fn push_resume(pending: &mut VecDeque<Event>, last: &mut u64, resume: Resume) {
    match resume {
        Resume::Replay(updates) => {
            for u in updates {
                *last = (*last).max(u.seq);
                pending.push_back(update_event(&u));
            }
        }
        Resume::Snapshot { seq, view } => {
            *last = seq;
            pending.push_back(snapshot_event(seq, &view).retry(RETRY));
        }
    }
}

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies (and the compression layer) must pass each event on as it comes.
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    response
}

struct ClassStream {
    board: Arc<Board>,
    class: ClassKey,
    rx: broadcast::Receiver<Arc<Update>>,
    /// The last sequence number sent (the snapshot's, or an update's).
    last: u64,
    pending: VecDeque<Event>,
    shutdown: CancellationToken,
    done: bool,
}

impl ClassStream {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move {
            loop {
                if let Some(event) = s.pending.pop_front() {
                    return Some((Ok(event), s));
                }
                if s.done {
                    return None;
                }
                let shutdown = s.shutdown.clone();
                tokio::select! {
                    () = shutdown.cancelled() => {
                        s.done = true;
                        s.pending.push_back(shutdown_event());
                    }
                    received = s.rx.recv() => match received {
                        Ok(u) => {
                            if u.class == s.class && u.seq > s.last {
                                s.last = u.seq;
                                s.pending.push_back(update_event(&u));
                            }
                        }
                        Err(RecvError::Lagged(_)) => {
                            // Too slow for the live updates: resume from the ring (or a
                            // snapshot), as a reconnect would.
                            let (rx, resume) = s.board.resume(&s.class, Some(s.last));
                            s.rx = rx;
                            push_resume(&mut s.pending, &mut s.last, resume);
                        }
                        Err(RecvError::Closed) => return None,
                    },
                }
            }
        })
    }
}

/// `GET /teacher/events`: the class list's counts, at once and after every change.
pub(crate) async fn classes(signed: Signed, State(state): State<WebState>) -> Response {
    let rx = state.teacher().board.subscribe();
    let stream = ListStream {
        state: state.clone(),
        scope: signed.scope,
        rx,
        first: true,
        shutdown: state.engine().shutdown_token().clone(),
        done: false,
    };
    sse(stream.into_stream())
}

struct ListStream {
    state: WebState,
    scope: Scope,
    rx: broadcast::Receiver<Arc<Update>>,
    first: bool,
    shutdown: CancellationToken,
    done: bool,
}

impl ListStream {
    fn counts(&self) -> Event {
        let o = super::overview(
            self.state.engine(),
            &self.state.teacher().board,
            &self.scope,
        );
        Event::default().event("classes").data(json_line(&o))
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move {
            if s.first {
                s.first = false;
                let event = s.counts().retry(RETRY);
                return Some((Ok(event), s));
            }
            if s.done {
                return None;
            }
            let shutdown = s.shutdown.clone();
            tokio::select! {
                () = shutdown.cancelled() => {
                    s.done = true;
                    Some((Ok(shutdown_event()), s))
                }
                received = s.rx.recv() => match received {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        // Everything already waiting is answered by one re-read.
                        for _ in 0..LIST_BATCH {
                            match s.rx.try_recv() {
                                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                                Err(_) => break,
                            }
                        }
                        let event = s.counts();
                        Some((Ok(event), s))
                    }
                    Err(RecvError::Closed) => None,
                },
            }
        })
    }
}
