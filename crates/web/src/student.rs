//! The student page `/` and the assets it needs, embedded in the binary.
//!
//! The files live in `crates/web/assets/student/` and are compiled in (no disk reads, nothing to
//! deploy beside the binary). Each is served with `Cache-Control: no-cache` and a strong
//! `ETag` computed at compile time, so a browser revalidates on every load and gets a bodiless
//! `304` while the daemon has not changed; compression is the router's.

use axum::Router;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::routes::WebState;

/// One embedded file: its bytes, content type and quoted strong entity tag.
#[derive(Debug)]
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: &'static str,
}

/// FNV-1a (64 bits): stable across builds and Rust versions, unlike `std`'s `DefaultHasher`,
/// and evaluable at compile time. Not cryptographic, which an entity tag need not be.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"<16 hex digits>"`: an entity tag is a quoted string.
const fn quoted_hex(hash: u64) -> [u8; 18] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = DIGITS[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

/// The entity tag's bytes as text (always ASCII: checked at compile time).
const fn as_str(tag: &'static [u8; 18]) -> &'static str {
    match std::str::from_utf8(tag) {
        Ok(s) => s,
        Err(_) => panic!("an entity tag is ASCII"),
    }
}

/// An [`Asset`] of `assets/student/<file>`, its tag computed while compiling.
macro_rules! asset {
    ($file:literal, $content_type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../assets/student/", $file));
        static TAG: [u8; 18] = quoted_hex(fnv1a(BODY));
        Asset {
            body: BODY,
            content_type: $content_type,
            etag: as_str(&TAG),
        }
    }};
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static SCRIPT: Asset = asset!("student.js", "text/javascript; charset=utf-8");
static STYLE: Asset = asset!("style.css", "text/css; charset=utf-8");
static FAVICON: Asset = asset!("favicon.svg", "image/svg+xml");

/// `/` and its assets. `style.css` is written to be shared by the other pages.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve(&INDEX, &h) }))
        .route(
            "/student.js",
            get(|h: HeaderMap| async move { serve(&SCRIPT, &h) }),
        )
        .route(
            "/style.css",
            get(|h: HeaderMap| async move { serve(&STYLE, &h) }),
        )
        .route(
            "/favicon.svg",
            get(|h: HeaderMap| async move { serve(&FAVICON, &h) }),
        )
}

/// The asset, or `304 Not Modified` if the request already holds this version.
fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let validators = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_static(asset.etag)),
    ];
    if none_match(request, asset.etag) {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    let content_type: [(HeaderName, HeaderValue); 1] = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    )];
    (validators, content_type, asset.body).into_response()
}

/// Whether `If-None-Match` names `etag` (or is `*`). RFC 9110 §13.1.2: a list of tags, compared
/// weakly (a `W/` prefix is ignored); an unreadable header matches nothing.
fn none_match(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(if_none_match: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in if_none_match {
            h.append(header::IF_NONE_MATCH, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_asset_has_a_distinct_quoted_tag_of_its_content() {
        let all = [&INDEX, &SCRIPT, &STYLE, &FAVICON];
        for a in all {
            assert_eq!(a.etag.len(), 18, "{}", a.etag);
            assert!(
                a.etag.starts_with('"') && a.etag.ends_with('"'),
                "{}",
                a.etag
            );
            assert_eq!(a.etag, format!("\"{:016x}\"", fnv1a(a.body)));
            assert!(HeaderValue::from_str(a.etag).is_ok());
        }
        let mut tags: Vec<_> = all.iter().map(|a| a.etag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), all.len());
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_star() {
        let tag = INDEX.etag;
        assert!(!none_match(&headers(&[]), tag));
        assert!(!none_match(&headers(&["\"0000000000000000\""]), tag));
        assert!(none_match(&headers(&["*"]), tag));
        let mut h = headers(&["\"x\", W/\"y\""]);
        assert!(!none_match(&h, tag));
        h.append(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}"))
                .unwrap_or(HeaderValue::from_static("")),
        );
        assert!(none_match(&h, tag));
    }

    #[test]
    fn a_matching_request_gets_304_without_a_body_and_others_the_asset() {
        let ok = serve(&SCRIPT, &HeaderMap::new());
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            ok.headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("no-cache")
        );
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(SCRIPT.etag));
        let cached = serve(&SCRIPT, &h);
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            cached
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok()),
            Some(SCRIPT.etag)
        );
        assert!(cached.headers().get(header::CONTENT_TYPE).is_none());
    }

    #[test]
    fn the_page_links_only_its_own_assets_and_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(INDEX.body).unwrap_or_default();
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains(" style="));
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains(r#"<script src="/student.js" defer></script>"#));
    }
}
