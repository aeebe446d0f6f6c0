//! The dashboard's HTML: small pages rendered here (every value escaped), with their script and
//! style served as files, as the Content-Security-Policy allows nothing inline. The live parts
//! are filled in by `teacher.js` from the event streams.

use std::fmt::Display;
use std::fmt::Write as _;

use attendance_protocol::ClassKey;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Scope, Signed};

const SCRIPT: &str = include_str!("../../assets/teacher/teacher.js");
const STYLE: &str = include_str!("../../assets/teacher/teacher.css");

/// `text` with the five HTML metacharacters escaped (for text and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page as a response: HTML, never cached (it names the session's CSRF token).
pub fn html(body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /teacher/teacher.js`.
pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /teacher/teacher.css`.
pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

fn page(title: &str, page: &str, data: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · attendanced</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"/teacher/teacher.css\">\n\
         <script src=\"/teacher/teacher.js\" defer></script>\n</head>\n\
         <body data-page=\"{page}\"{data}>\n{main}</body>\n</html>\n",
        title = escape(title),
    )
}

fn header_bar(signed: &Signed) -> String {
    format!(
        "<header class=\"bar\"><a href=\"/teacher\" class=\"home\">attendanced · classes</a>\
         <span class=\"who\">signed in as {who}</span>\
         <form method=\"post\" action=\"/teacher/logout\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" id=\"sign-out\">Sign out</button></form></header>\n",
        who = escape(&signed.who),
        csrf = escape(&signed.csrf),
    )
}

/// The sign-in page, with `error` shown if given. `token_path` is where the admin token is.
pub fn login(error: Option<&str>, token_path: impl Display) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!(
            "<p id=\"login-error\" class=\"error\" role=\"alert\">{}</p>\n",
            escape(e)
        )
    });
    let main = format!(
        "<main class=\"narrow\">\n<h1>Teacher sign-in</h1>\n{error}\
         <form method=\"post\" action=\"/teacher/login\" id=\"login-form\">\n\
         <label for=\"token\">Admin or viewer token</label>\n\
         <input type=\"password\" id=\"token\" name=\"token\" required autocomplete=\"current-password\" autofocus>\n\
         <button type=\"submit\" id=\"sign-in\">Sign in</button>\n</form>\n\
         <p class=\"hint\">The admin token is in <code>{path}</code> on the server (its path is in the \
         daemon's log at start-up). A viewer token from the <code>[[viewer]]</code> settings shows \
         only its classes.</p>\n</main>\n",
        path = escape(&token_path.to_string()),
    );
    page("Sign in", "login", "", &main)
}

/// The class list.
pub fn list(signed: &Signed) -> String {
    let totals = if signed.scope == Scope::All {
        "<dl class=\"totals\"><dt>Connections</dt><dd id=\"total-connections\">–</dd>\
         <dt>Seated now</dt><dd id=\"total-seated\">–</dd>\
         <dt>Marked today</dt><dd id=\"total-marked\">–</dd></dl>\n"
    } else {
        ""
    };
    let main = format!(
        "{bar}<main>\n<h1>Classes today</h1>\n{totals}\
         <p id=\"live\" class=\"live\" data-state=\"connecting\">Connecting…</p>\n\
         <table id=\"classes\"><caption>Every class with students today</caption>\
         <thead><tr><th scope=\"col\">Class</th><th scope=\"col\">Joined</th>\
         <th scope=\"col\">Marked</th><th scope=\"col\">Connected now</th></tr></thead>\
         <tbody></tbody></table>\n\
         <p id=\"no-classes\" class=\"hint\">No student has checked in yet today.</p>\n</main>\n",
        bar = header_bar(signed),
    );
    page("Classes", "list", " data-events=\"/teacher/events\"", &main)
}

/// A class page; `today` is the local date, the download's default.
pub fn class(signed: &Signed, class: &ClassKey, today: &str) -> String {
    let (course, division) = (
        escape(class.course.as_str()),
        escape(class.division.as_str()),
    );
    let base = format!("/teacher/class/{course}/{division}");
    let mut data = String::new();
    let _ = write!(
        data,
        " data-events=\"{base}/events\" data-code=\"{base}/code\" data-class=\"{course}_{division}\""
    );
    let main = format!(
        "{bar}<main>\n<h1><span id=\"class-title\">{course} · {division}</span></h1>\n\
         <p id=\"live\" class=\"live\" data-state=\"connecting\">Connecting…</p>\n\
         <dl class=\"totals\"><dt>Joined</dt><dd id=\"count-joined\">0</dd>\
         <dt>Present</dt><dd id=\"count-marked\">0</dd>\
         <dt>Connected now</dt><dd id=\"count-connected\">0</dd></dl>\n\
         <p><label><input type=\"checkbox\" id=\"show-addr\" checked> Show addresses</label></p>\n\
         <div class=\"scroll\"><table id=\"students\"><caption>Students of today</caption>\
         <thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Roll</th>\
         <th scope=\"col\" class=\"addr\">Address</th><th scope=\"col\">Joined at</th>\
         <th scope=\"col\">Time served</th><th scope=\"col\">Status</th></tr></thead>\
         <tbody></tbody></table></div>\n\
         <section aria-labelledby=\"chat-h\"><h2 id=\"chat-h\">Chat</h2>\
         <ul id=\"chat\" aria-live=\"polite\"></ul></section>\n\
         <section id=\"projector\" aria-labelledby=\"code-h\" hidden><h2 id=\"code-h\">Check-in code</h2>\
         <p class=\"code\" id=\"code\" aria-live=\"polite\"></p><p id=\"code-left\"></p>\
         <div id=\"qr\"></div><p id=\"code-link\"></p></section>\n\
         <section aria-labelledby=\"dl-h\"><h2 id=\"dl-h\">Records</h2>\
         <p id=\"chain\"></p>\
         <form method=\"get\" action=\"{base}/attendance.csv\" id=\"download-form\">\
         <label for=\"day\">Day</label> <input type=\"date\" id=\"day\" name=\"day\" value=\"{today}\" required> \
         <button type=\"submit\" id=\"download\">Download CSV</button> \
         <button type=\"submit\" id=\"download-report\" formaction=\"{base}/report.csv\">Download report</button></form></section>\n</main>\n",
        bar = header_bar(signed),
        today = escape(today),
    );
    page(
        &format!("{} {}", class.course, class.division),
        "class",
        &data,
        &main,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn pages_have_no_inline_script_or_style() {
        let signed = Signed {
            id: "i".into(),
            csrf: "c".into(),
            scope: Scope::All,
            who: "admin".into(),
        };
        let id: attendance_protocol::StudentId = "CN_D1_A_1".parse().expect("id");
        for html in [
            login(Some("no"), "/x"),
            list(&signed),
            class(&signed, &id.class, "2026-12-05"),
        ] {
            assert!(!html.contains("<script>"), "{html}");
            assert!(!html.contains("style="), "{html}");
            assert!(!html.contains("http://") && !html.contains("https://"));
        }
    }
}
