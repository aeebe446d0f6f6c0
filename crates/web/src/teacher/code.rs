//! `/teacher/class/{course}/{division}/code`: what the projector shows — the class's rotating
//! check-in code (digits, for the back rows of a big hall), the QR code of the check-in link,
//! the seconds until the code changes, and the head of the tamper-evident row chain.

use attendance_protocol::ClassKey;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth::Signed;
use super::{not_found, visible_class};
use crate::routes::WebState;

/// The JSON the class page polls.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Projector {
    /// The current 6-digit code; `None` for a class without one.
    pub code: Option<String>,
    /// Seconds until it changes.
    pub seconds_left: Option<i64>,
    /// The check-in link the QR code carries.
    pub link: Option<String>,
    /// The QR code of the link, as an SVG document.
    pub qr_svg: Option<String>,
    /// The hash of the CSV's last row (hex), as the log and `attendanced verify` show it.
    pub chain_head: Option<String>,
    /// Rows in the CSV.
    pub chain_rows: Option<u64>,
}

/// The check-in link of `class` with `code`, on the host the teacher's page was loaded from.
fn link(headers: &HeaderMap, tls: bool, class: &ClassKey, code: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    format!(
        "{scheme}://{host}/?class={}_{}&code={code}",
        class.course, class.division
    )
}

/// An SVG of the QR code of `text`, if it fits one.
fn qr_svg(text: &str) -> Option<String> {
    let qr = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        qr.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(256, 256)
            .quiet_zone(true)
            .build(),
    )
}

/// What the projector shows for `class` now.
pub fn projector(state: &WebState, headers: &HeaderMap, class: &ClassKey) -> Projector {
    let engine = state.engine();
    let (chain_head, chain_rows) = engine.chain_head().unzip();
    match engine.class_code(class) {
        Some((code, seconds_left)) => {
            let link = link(headers, state.tls(), class, &code);
            Projector {
                qr_svg: qr_svg(&link),
                code: Some(code),
                seconds_left: Some(seconds_left),
                link: Some(link),
                chain_head,
                chain_rows,
            }
        }
        None => Projector {
            code: None,
            seconds_left: None,
            link: None,
            qr_svg: None,
            chain_head,
            chain_rows,
        },
    }
}

/// `GET …/code`.
pub async fn code(
    signed: Signed,
    State(state): State<WebState>,
    headers: HeaderMap,
    Path((course, division)): Path<(String, String)>,
) -> Response {
    let Some(class) = visible_class(&signed, &course, &division) else {
        return not_found();
    };
    let mut response = axum::Json(projector(&state, &headers, &class)).into_response();
    // A code is good for 30 s: never from a cache.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_is_on_the_pages_host_and_its_qr_is_an_svg() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            "att.school.example:8000".parse().expect("host"),
        );
        let id: attendance_protocol::StudentId = "CN_D1_X_0".parse().expect("id");
        let l = link(&headers, false, &id.class, "005924");
        assert_eq!(l, "http://att.school.example:8000/?class=CN_D1&code=005924");
        let svg = qr_svg(&l).expect("fits");
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    }
}
