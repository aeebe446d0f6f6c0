//! Dashboard sign-in: the admin token or a `[[viewer]]` token buys a server-side session named
//! by an HttpOnly, SameSite=Strict cookie; every state-changing request is a POST carrying the
//! session's CSRF token; sign-in attempts are rate-limited per address. Tokens are compared in
//! constant time and never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use attendance_protocol::ClassKey;
use attendance_server::config::Viewer;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use subtle::ConstantTimeEq as _;

use crate::routes::WebState;

/// The session cookie's name.
pub const COOKIE: &str = "attendanced_session";
/// Sessions held at once; past it the one closest to expiry goes first.
const MAX_SESSIONS: usize = 1024;
/// Sign-in attempts an address may make in a burst…
const SIGN_IN_BURST: u32 = 5;
/// …and then one per this long.
const SIGN_IN_PERIOD: Duration = Duration::from_secs(12);
/// Addresses the rate limiter remembers before it forgets the ones with a full allowance.
const LIMITER_KEYS: usize = 10_000;

/// What a signed-in teacher may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every class (the admin token).
    All,
    /// Only these classes (a viewer token), as `COURSE_DIV`.
    Classes(Vec<String>),
}

impl Scope {
    /// Whether this scope may see `class`.
    pub fn allows(&self, class: &ClassKey) -> bool {
        match self {
            Self::All => true,
            Self::Classes(list) => {
                let key = format!("{}_{}", class.course, class.division);
                list.contains(&key)
            }
        }
    }
}

/// How a session was opened, kept so each request re-checks it against the live settings (a
/// reload that removes a viewer ends its sessions).
#[derive(Clone)]
enum Grant {
    Admin,
    Viewer { token: String },
}

struct Entry {
    grant: Grant,
    csrf: String,
    expires: Instant,
}

/// A signed-in request: who it is and what it may see.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The session id (the cookie's value).
    pub id: String,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// The classes it may see.
    pub scope: Scope,
    /// `admin` or the viewer's name, for the page header.
    pub who: String,
}

/// The sessions and the sign-in limiter.
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        let burst = NonZeroU32::new(SIGN_IN_BURST).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(SIGN_IN_PERIOD)
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            map: Mutex::new(HashMap::new()),
            limiter: RateLimiter::keyed(quota),
        }
    }
}

/// What a sign-in attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum SignIn {
    /// A new session.
    Opened {
        /// The session id, for the cookie.
        id: String,
        /// The viewer's name, or `admin`.
        who: String,
    },
    /// The token is neither the admin token nor a viewer's.
    Wrong,
    /// Too many attempts from this address; try again after this long.
    Limited(Duration),
    /// The OS's random generator failed: no session could be made.
    Failed,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks `token` from `addr`: rate-limited first, then against the admin token and every
    /// viewer's (all compared, in constant time each).
    pub fn sign_in(&self, state: &WebState, addr: IpAddr, token: &str, ttl: Duration) -> SignIn {
        if self.limiter.len() > LIMITER_KEYS {
            self.limiter.retain_recent();
        }
        if let Err(not_until) = self.limiter.check_key(&addr) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return SignIn::Limited(wait.max(Duration::from_secs(1)));
        }
        let engine = state.engine();
        let grant = if engine.is_admin_token(token) {
            Some((Grant::Admin, "admin".to_owned()))
        } else {
            let live = engine.live();
            find_viewer(&live.viewer, token).map(|v| {
                let who = if v.name.is_empty() {
                    "viewer".to_owned()
                } else {
                    v.name.clone()
                };
                (
                    Grant::Viewer {
                        token: v.token.clone(),
                    },
                    who,
                )
            })
        };
        let Some((grant, who)) = grant else {
            return SignIn::Wrong;
        };
        let (Some(id), Some(csrf)) = (random_hex(), random_hex()) else {
            return SignIn::Failed;
        };
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, e| e.expires > now);
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Entry {
                grant,
                csrf,
                expires: now + ttl,
            },
        );
        SignIn::Opened { id, who }
    }

    /// The live session named `id`, if any: expired ones, and viewers no longer configured,
    /// are gone.
    pub fn get(&self, state: &WebState, id: &str) -> Option<Signed> {
        let now = Instant::now();
        let mut map = self.lock();
        let entry = map.get(id)?;
        if entry.expires <= now {
            map.remove(id);
            return None;
        }
        let (scope, who) = match &entry.grant {
            Grant::Admin => (Scope::All, "admin".to_owned()),
            Grant::Viewer { token } => {
                let live = state.engine().live();
                match find_viewer(&live.viewer, token) {
                    Some(v) => (Scope::Classes(v.classes.clone()), v.name.clone()),
                    None => {
                        map.remove(id);
                        return None;
                    }
                }
            }
        };
        Some(Signed {
            id: id.to_owned(),
            csrf: entry.csrf.clone(),
            scope,
            who,
        })
    }

    /// Ends the session `id`.
    pub fn sign_out(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The viewer whose token is `token`: every viewer is compared (in constant time), so the time
/// taken does not tell which one matched.
fn find_viewer<'a>(viewers: &'a [Viewer], token: &str) -> Option<&'a Viewer> {
    let mut found = None;
    for v in viewers {
        if bool::from(v.token.as_bytes().ct_eq(token.as_bytes())) {
            found = Some(v);
        }
    }
    found
}

/// 128 random bits from the OS as 32 hex digits; `None` if the OS's generator fails.
fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `a` and `b` are equal, compared in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The session cookie for `id` (Secure under TLS), expiring with the session.
pub fn session_cookie(id: &str, ttl: Duration, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE}={id}; Path=/teacher; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A cookie that ends the session in the browser.
pub fn cleared_cookie(tls: bool) -> HeaderValue {
    if tls {
        HeaderValue::from_static(
            "attendanced_session=; Path=/teacher; HttpOnly; SameSite=Strict; Max-Age=0; Secure",
        )
    } else {
        HeaderValue::from_static(
            "attendanced_session=; Path=/teacher; HttpOnly; SameSite=Strict; Max-Age=0",
        )
    }
}

/// The session id in the request's cookies, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// Whether a POST comes from a page of this server: a browser names the page's origin (or
/// says `Sec-Fetch-Site: same-origin`); a request that names another site is refused. Tools
/// such as curl send neither and are judged by the CSRF token alone.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

/// The live session the request's cookie names, if any.
pub fn signed(headers: &HeaderMap, state: &WebState) -> Option<Signed> {
    session_id(headers).and_then(|id| state.teacher().sessions.get(state, id))
}

impl FromRequestParts<WebState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        signed(&parts.headers, state).ok_or_else(|| not_signed_in(parts))
    }
}

/// No (live) session: pages go to the sign-in page; the event streams and downloads get 401.
fn not_signed_in(parts: &Parts) -> Response {
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|a| a.contains("text/html") || a.contains("*/*"));
    if wants_html && !parts.uri.path().ends_with("/events") {
        Redirect::to("/teacher/login").into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "sign in at /teacher/login\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_under_tls() {
        let c = session_cookie("ab", Duration::from_secs(60), true);
        let c = c.to_str().expect("ascii");
        for part in [
            "attendanced_session=ab",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=60",
            "Secure",
        ] {
            assert!(c.contains(part), "{c}");
        }
        let plain = session_cookie("ab", Duration::from_secs(60), false);
        assert!(!plain.to_str().expect("ascii").contains("Secure"));
    }

    #[test]
    fn the_session_id_is_found_among_other_cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; attendanced_session=xyz; b=2"),
        );
        assert_eq!(session_id(&h), Some("xyz"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("attendanced_session="),
        );
        assert_eq!(session_id(&h), None);
    }

    #[test]
    fn a_post_naming_another_site_is_not_same_origin() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no browser headers: judged by the token");
        h.insert(header::HOST, HeaderValue::from_static("school:8000"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://school:8000"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn a_viewer_scope_allows_only_its_classes() {
        let scope = Scope::Classes(vec!["CN_D1".to_owned()]);
        let key = |s: &str| -> ClassKey {
            let id: attendance_protocol::StudentId = s.parse().expect("id");
            id.class
        };
        assert!(scope.allows(&key("CN_D1_A_1")));
        assert!(!scope.allows(&key("CN_D2_A_1")));
        assert!(Scope::All.allows(&key("CN_D2_A_1")));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", ""));
    }
}
