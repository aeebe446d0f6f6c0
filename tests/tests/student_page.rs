//! The student page `/` as the daemon serves it on the web port: the element ids the page's
//! script and the browser tests rely on, its assets with their content types, gzip within the
//! page's size budget, `ETag` revalidation with `304`, and a page the Content Security Policy
//! lets run (no inline script or style, nothing from elsewhere).

use anyhow::{Context as _, Result, ensure};
use attendance_tests::Daemon;
use attendance_tests::http::{Response, get};

/// The page and every asset it loads.
const ASSETS: [(&str, &str); 4] = [
    ("/", "text/html; charset=utf-8"),
    ("/student.js", "text/javascript; charset=utf-8"),
    ("/style.css", "text/css; charset=utf-8"),
    ("/favicon.svg", "image/svg+xml"),
];

/// What the page may weigh on the wire, gzipped, all files together (10 KiB until the
/// "Your record today" view of issue 18 took it to 10.3 KiB; still one round trip on 3G).
const GZIP_BUDGET: usize = 12 * 1024;

/// The start tag of the element with `id`, e.g. `<input id="identity" …>`.
fn tag_with_id<'a>(html: &'a str, id: &str) -> Result<&'a str> {
    let at = html
        .find(&format!(" id=\"{id}\""))
        .with_context(|| format!("no element with id {id:?}"))?;
    let start = html[..at].rfind('<').context("id outside a tag")?;
    let end = at + html[at..].find('>').context("unclosed tag")?;
    ensure!(
        html.matches(&format!(" id=\"{id}\"")).count() == 1,
        "id {id:?} is not unique"
    );
    Ok(&html[start..=end])
}

fn assert_tag(html: &str, id: &str, name: &str, attributes: &[&str]) -> Result<()> {
    let tag = tag_with_id(html, id)?;
    ensure!(
        tag.starts_with(&format!("<{name} ")),
        "#{id} is not a <{name}>: {tag}"
    );
    for a in attributes {
        ensure!(tag.contains(a), "#{id} lacks {a}: {tag}");
    }
    Ok(())
}

async fn page(d: &Daemon) -> Result<Response> {
    let r = get(d.web(), "/", &[]).await?;
    ensure!(r.status == 200, "{}", r.head);
    Ok(r)
}

#[tokio::test]
async fn the_page_carries_every_element_id_of_the_contract() -> Result<()> {
    let d = Daemon::start(&[])?;
    let r = page(&d).await?;
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    assert!(
        html.starts_with("<!doctype html>\n<html lang=\"en\">"),
        "{html}"
    );
    assert!(
        html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
    );
    assert_tag(&html, "join-form", "form", &[])?;
    assert!(html.contains(r#"<label for="identity">"#));
    assert_tag(
        &html,
        "identity",
        "input",
        &[
            r#"name="identity""#,
            r#"autocomplete="off""#,
            r#"placeholder="ComputerNetworks_Div1_JayPatel_18BCP043""#,
        ],
    )?;
    assert_tag(&html, "join", "button", &[r#"type="submit""#])?;
    // The submit button is inside the join form, so Enter in the field submits.
    let form = &html[html.find(r#"<form id="join-form""#).unwrap_or(0)..];
    let form = &form[..form.find("</form>").unwrap_or(0)];
    assert!(
        form.contains(r#"id="identity""#) && form.contains(r#"id="join""#),
        "{form}"
    );
    assert_tag(&html, "error", "p", &[r#"role="alert""#, "hidden"])?;
    assert_tag(
        &html,
        "status",
        "p",
        &[r#"aria-live="polite""#, r#"data-state="connecting""#],
    )?;
    assert!(html.contains(r#"aria-live="polite">Connecting…</p>"#));
    assert_tag(&html, "class-view", "section", &["hidden"])?;
    for id in ["class-name", "student-name", "time-left", "marked"] {
        tag_with_id(&html, id)?;
    }
    assert_tag(&html, "countdown", "progress", &[])?;
    assert_tag(&html, "events", "ul", &[r#"aria-live="polite""#])?;
    assert_tag(&html, "chat-form", "form", &[])?;
    assert!(html.contains(r#"<label for="chat-input">"#));
    assert_tag(&html, "chat-input", "input", &["disabled"])?;
    assert_tag(
        &html,
        "chat-send",
        "button",
        &[r#"type="submit""#, "disabled"],
    )?;
    for id in [
        "server-time",
        "connected-for",
        "clients",
        "ping",
        "heartbeat",
    ] {
        tag_with_id(&html, id)?;
    }
    let help = tag_with_id(&html, "drop-help")?;
    assert!(help.starts_with("<p "), "{help}");
    let text = &html[html.find(help).unwrap_or(0)..];
    assert!(text.contains("reconnects by itself") && text.contains("screen on"));
    Ok(())
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_types_and_the_security_headers() -> Result<()>
{
    let d = Daemon::start(&[])?;
    for (path, content_type) in ASSETS {
        let r = get(d.web(), path, &[]).await?;
        assert_eq!(r.status, 200, "{path}: {}", r.head);
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        assert!(!r.body.is_empty(), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    // Every local file the page links to is one of them.
    let html = page(&d).await?.text();
    for attr in [" src=\"", " href=\""] {
        for link in html.split(attr).skip(1) {
            let link = link.split('"').next().unwrap_or_default();
            assert!(
                ASSETS.iter().any(|(p, _)| *p == link),
                "{link} is not served"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn gzip_is_sent_when_accepted_and_the_whole_page_fits_the_budget() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut total = 0;
    for (path, _) in ASSETS {
        let plain = get(d.web(), path, &[]).await?;
        assert_eq!(plain.header("content-encoding"), None, "{path}");
        let r = get(d.web(), path, &[("Accept-Encoding", "gzip")]).await?;
        assert_eq!(r.status, 200, "{path}: {}", r.head);
        assert_eq!(
            r.header("content-encoding"),
            Some("gzip"),
            "{path}: {}",
            r.head
        );
        assert!(
            r.body.starts_with(&[0x1f, 0x8b]),
            "{path}: not a gzip stream"
        );
        assert!(
            r.header("vary")
                .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
            "{path}: {}",
            r.head
        );
        assert!(
            r.body.len() < plain.body.len(),
            "{path}: gzip did not shrink it"
        );
        eprintln!(
            "{path}: {} bytes, {} gzipped",
            plain.body.len(),
            r.body.len()
        );
        total += r.body.len();
    }
    eprintln!("total gzipped: {total} bytes");
    assert!(
        total < GZIP_BUDGET,
        "{total} bytes gzipped, budget {GZIP_BUDGET}"
    );
    Ok(())
}

#[tokio::test]
async fn a_browser_holding_the_current_version_gets_304_and_no_body() -> Result<()> {
    let d = Daemon::start(&[])?;
    for (path, _) in ASSETS {
        let r = get(d.web(), path, &[]).await?;
        let etag = r.header("etag").context("no ETag")?.to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "{path}: a strong tag, {etag}"
        );
        // The same tag every time (computed once, from the content).
        assert_eq!(
            get(d.web(), path, &[]).await?.header("etag"),
            Some(etag.as_str())
        );
        for accept in ["identity", "gzip"] {
            let cached = get(
                d.web(),
                path,
                &[("If-None-Match", &etag), ("Accept-Encoding", accept)],
            )
            .await?;
            assert_eq!(cached.status, 304, "{path}: {}", cached.head);
            assert!(cached.body.is_empty(), "{path}");
            assert_eq!(cached.header("etag"), Some(etag.as_str()), "{path}");
            assert_eq!(cached.header("cache-control"), Some("no-cache"), "{path}");
        }
        let listed = format!("\"0000000000000000\", W/{etag}");
        let weak = get(d.web(), path, &[("If-None-Match", &listed)]).await?;
        assert_eq!(weak.status, 304, "{path}: a list, compared weakly");
        let stale = get(d.web(), path, &[("If-None-Match", "\"0000000000000000\"")]).await?;
        assert_eq!(stale.status, 200, "{path}: an old tag gets the file");
    }
    Ok(())
}

#[tokio::test]
async fn the_page_has_no_inline_script_or_style_and_nothing_from_elsewhere() -> Result<()> {
    let d = Daemon::start(&[])?;
    let html = page(&d).await?.text();
    let lower = html.to_ascii_lowercase();
    assert!(
        !lower.contains("http://") && !lower.contains("https://"),
        "{html}"
    );
    assert!(!lower.contains("//"), "no protocol-relative URLs either");
    assert_eq!(lower.matches("<script").count(), 1, "{html}");
    assert!(html.contains(r#"<script src="/student.js" defer></script>"#));
    assert!(
        !lower.contains("style="),
        "no style attributes (CSP style-src 'self')"
    );
    assert!(!lower.contains("<style"), "no style elements");
    assert!(!lower.contains("javascript:"));
    // No inline event handlers (onclick= …), which the CSP would block as inline script.
    for word in lower.split(|c: char| c.is_whitespace() || c == '<') {
        assert!(
            !(word.starts_with("on") && word.contains('=')),
            "inline handler {word:?}"
        );
    }
    let css = get(d.web(), "/style.css", &[]).await?.text();
    assert!(!css.contains("url(") && !css.contains("@import"), "{css}");
    let js = get(d.web(), "/student.js", &[]).await?.text();
    assert!(
        !js.contains("http://") && !js.contains("https://"),
        "same origin only"
    );
    assert!(
        !js.contains("eval(") && !js.contains("innerHTML"),
        "no eval, no HTML injection"
    );
    Ok(())
}
