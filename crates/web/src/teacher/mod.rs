//! The teacher dashboard `/teacher`: sign-in, the class list and class pages, their live
//! Server-Sent Events, and the CSV download.
//!
//! - [`auth`]: sessions, the sign-in limiter, CSRF and origin checks;
//! - [`board`]: today's rows and chat per class, from the engine's event stream, with the ring
//!   a reconnecting event stream resumes from;
//! - [`pages`]: the HTML (scripts and styles are files: the CSP allows nothing inline);
//! - [`events`]: the event streams;
//! - [`download`]: a class's records of one day, streamed from the CSV file.

use std::sync::Arc;

use attendance_protocol::{ClassKey, Field, FieldKind, Timestamp};
use attendance_server::engine::Engine;
use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::routes::WebState;

pub mod auth;
pub mod board;
pub mod code;
pub mod download;
pub mod events;
pub mod pages;

use self::auth::{Scope, SignIn, Signed};
use self::board::Board;

/// Sign-in sessions and the dashboard's picture of today.
#[derive(Debug, Default)]
pub struct Teacher {
    /// The sign-in sessions.
    pub sessions: auth::Sessions,
    /// Today's classes.
    pub board: Arc<Board>,
}

/// Starts keeping the board: call before the web port is announced.
pub fn start(state: &WebState) {
    let engine = Arc::clone(state.engine());
    let events = engine.subscribe();
    let board = Arc::clone(&state.teacher().board);
    state.tracker().spawn(board.follow(engine, events));
}

/// `/teacher` and below.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/teacher", get(list_page))
        .route("/teacher/", get(|| async { Redirect::to("/teacher") }))
        .route("/teacher/login", get(login_page).post(sign_in))
        .route("/teacher/logout", axum::routing::post(sign_out))
        .route("/teacher/api/classes", get(classes_json))
        .route("/teacher/events", get(events::classes))
        .route("/teacher/class/{course}/{division}", get(class_page))
        .route(
            "/teacher/class/{course}/{division}/events",
            get(events::class),
        )
        .route(
            "/teacher/class/{course}/{division}/attendance.csv",
            get(download::csv),
        )
        .route("/teacher/class/{course}/{division}/code", get(code::code))
        .route(
            "/teacher/class/{course}/{division}/report.csv",
            get(download::report),
        )
        .route("/teacher/teacher.js", get(pages::script))
        .route("/teacher/teacher.css", get(pages::style))
}

/// A class named in a path, if it is a valid class the session may see (the caller answers
/// 404 otherwise: a viewer is not told which other classes exist).
pub(crate) fn visible_class(signed: &Signed, course: &str, division: &str) -> Option<ClassKey> {
    let course = Field::new(FieldKind::Course, course).ok()?;
    let division = Field::new(FieldKind::Division, division).ok()?;
    let class = ClassKey { course, division };
    signed.scope.allows(&class).then_some(class)
}

/// The answer for a class that does not exist or may not be seen.
pub(crate) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// One class in the list, with the same numbers `attend admin` shows.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ClassCounts {
    /// `COURSE_DIV`.
    pub class: String,
    /// The course.
    pub course: String,
    /// The division.
    pub division: String,
    /// Students who joined today (since the daemon started).
    pub joined: usize,
    /// Marks of today on disk (`attend admin status` counts the same marks).
    pub marked: usize,
    /// Seated now (`attend admin classes`).
    pub connected: usize,
}

/// The class list and, for the admin, the daemon's totals (`attend admin status`).
#[derive(Debug, Serialize)]
pub struct Overview {
    /// The server's clock.
    pub now: String,
    /// The classes this session may see, sorted.
    pub classes: Vec<ClassCounts>,
    /// Connections open now (every transport); admin only.
    pub connections: Option<usize>,
    /// Students seated now, over all classes; admin only.
    pub seated: Option<usize>,
    /// Marks of today; admin only.
    pub marks_today: Option<usize>,
}

/// The counts of every class `scope` may see: seated from the hub, marks from the store's
/// index, students of today from the board.
pub fn overview(engine: &Engine, board: &Board, scope: &Scope) -> Overview {
    use std::collections::BTreeMap;
    let snap = engine.snapshot();
    let mut all: BTreeMap<ClassKey, ClassCounts> = BTreeMap::new();
    fn entry<'a>(
        all: &'a mut BTreeMap<ClassKey, ClassCounts>,
        scope: &Scope,
        class: &ClassKey,
    ) -> Option<&'a mut ClassCounts> {
        if !scope.allows(class) {
            return None;
        }
        Some(all.entry(class.clone()).or_insert_with(|| ClassCounts {
            class: format!("{}_{}", class.course, class.division),
            course: class.course.to_string(),
            division: class.division.to_string(),
            joined: 0,
            marked: 0,
            connected: 0,
        }))
    }
    for (class, n) in &snap.classes {
        if let Some(c) = entry(&mut all, scope, class) {
            c.connected = *n;
        }
    }
    for (class, n) in engine.class_marks_today() {
        if let Some(c) = entry(&mut all, scope, &class) {
            c.marked = n;
        }
    }
    for (class, today, _) in board.counts() {
        if let Some(c) = entry(&mut all, scope, &class) {
            c.joined = today;
        }
    }
    let admin = *scope == Scope::All;
    Overview {
        now: Timestamp::now().to_string(),
        classes: all.into_values().collect(),
        connections: admin.then_some(snap.connections),
        seated: admin.then(|| snap.joined()),
        marks_today: admin.then_some(snap.marks_today),
    }
}

async fn classes_json(signed: Signed, State(state): State<WebState>) -> Response {
    let o = overview(state.engine(), &state.teacher().board, &signed.scope);
    axum::Json(o).into_response()
}

async fn list_page(signed: Signed) -> Response {
    pages::html(pages::list(&signed))
}

async fn class_page(
    signed: Signed,
    State(state): State<WebState>,
    Path((course, division)): Path<(String, String)>,
) -> Response {
    let Some(class) = visible_class(&signed, &course, &division) else {
        return not_found();
    };
    let today = state.engine().local_date(Timestamp::now());
    pages::html(pages::class(&signed, &class, &today.to_string()))
}

async fn login_page(headers: HeaderMap, State(state): State<WebState>) -> Response {
    if auth::signed(&headers, &state).is_some() {
        return Redirect::to("/teacher").into_response();
    }
    pages::html(pages::login(
        None,
        state.engine().startup().admin_token_path().display(),
    ))
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if !auth::same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site sign-in refused\n").into_response();
    }
    let ip = peer.ip();
    let ttl = state.engine().live().web_session_ttl;
    let token_path = state.engine().startup().admin_token_path();
    match state
        .teacher()
        .sessions
        .sign_in(&state, ip, form.token.trim(), ttl)
    {
        SignIn::Opened { id, who } => {
            info!(%ip, %who, "dashboard sign-in");
            let mut response = Redirect::to("/teacher").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                auth::session_cookie(&id, ttl, state.tls()),
            );
            response
        }
        SignIn::Wrong => {
            warn!(%ip, "dashboard sign-in refused: wrong token");
            let page = pages::login(
                Some("That token is neither the admin token nor a viewer's."),
                token_path.display(),
            );
            (StatusCode::UNAUTHORIZED, pages::html(page)).into_response()
        }
        SignIn::Limited(wait) => {
            warn!(%ip, "dashboard sign-in rate-limited");
            let secs = wait.as_secs().max(1);
            let page = pages::login(
                Some(&format!(
                    "Too many sign-in attempts from your address; try again in {secs} s."
                )),
                token_path.display(),
            );
            let mut response = (StatusCode::TOO_MANY_REQUESTS, pages::html(page)).into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
        SignIn::Failed => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no session could be made (the system's random generator failed)\n",
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    signed: Signed,
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !auth::same_origin(&headers) || !auth::same_secret(&form.csrf, &signed.csrf) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token\n").into_response();
    }
    state.teacher().sessions.sign_out(&signed.id);
    let mut response = Redirect::to("/teacher/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, auth::cleared_cookie(state.tls()));
    response
}
