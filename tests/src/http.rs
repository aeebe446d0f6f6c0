//! A small HTTP/1.1 client for the web port, on hyper's own client connection: one request per
//! connection, every wait bounded by [`LINE_TIMEOUT`], the body as it came over the wire
//! (de-chunked, never decompressed, so a test can measure a gzipped page), and a reader of
//! Server-Sent Events.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::LINE_TIMEOUT;

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and headers (names in lower case), for messages and `contains` checks.
    pub head: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, de-chunked but not decompressed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case), if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Result<hyper::Response<Incoming>> {
    let stream = tokio::time::timeout(LINE_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    tokio::time::timeout(LINE_TIMEOUT, sender.send_request(request))
        .await
        .context("no response")?
        .context("request failed")
}

/// Sends one request and reads the whole response.
///
/// # Errors
/// If the connection fails or the response does not come within [`LINE_TIMEOUT`].
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Result<Response> {
    let response = send(addr, method, path, headers, body).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut head = format!("HTTP/1.1 {}", response.status());
    for (name, value) in &headers {
        head.push_str(&format!(
            "\r\n{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let bytes = tokio::time::timeout(LINE_TIMEOUT, response.into_body().collect())
        .await
        .context("body did not end")??
        .to_bytes();
    Ok(Response {
        status,
        head,
        headers,
        body: bytes.to_vec(),
    })
}

/// `GET path` with `headers`.
///
/// # Errors
/// As [`request`].
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    request(addr, "GET", path, headers, None).await
}

/// `POST path` of a form (`application/x-www-form-urlencoded` body `form`).
///
/// # Errors
/// As [`request`].
pub async fn post_form(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    form: &str,
) -> Result<Response> {
    let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, Some(form.to_owned())).await
}

/// Signs in to the dashboard with `token`; returns the `Cookie` header value of the session.
///
/// # Errors
/// If the sign-in is not answered with a redirect and a session cookie.
pub async fn sign_in(web: SocketAddr, token: &str) -> Result<String> {
    let r = post_form(web, "/teacher/login", &[], &format!("token={token}")).await?;
    if r.status != 303 {
        bail!("sign-in answered {}: {}", r.status, r.text());
    }
    let cookie = r.header("set-cookie").unwrap_or_default();
    let pair = cookie
        .split(';')
        .next()
        .filter(|p| p.starts_with("attendanced_session="))
        .ok_or_else(|| anyhow!("no session cookie in {cookie:?}"))?;
    Ok(pair.to_owned())
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sse {
    /// `event:` (`message` if none was named).
    pub event: String,
    /// `id:`, if the event had one.
    pub id: Option<String>,
    /// `data:` lines, joined by line breaks.
    pub data: String,
}

impl Sse {
    /// The data as JSON.
    ///
    /// # Errors
    /// If it is not JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.data).with_context(|| format!("not JSON: {}", self.data))
    }
}

/// An open event stream.
pub struct EventStream {
    body: Incoming,
    buffer: String,
}

impl EventStream {
    /// Opens `path` as an event stream; returns its status too (a refusal has no stream worth
    /// reading).
    ///
    /// # Errors
    /// If the request fails.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Self)> {
        let mut all = vec![("accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let response = send(addr, "GET", path, &all, None).await?;
        let status = response.status().as_u16();
        Ok((
            status,
            Self {
                body: response.into_body(),
                buffer: String::new(),
            },
        ))
    }

    /// The next event (comments, such as keep-alives, are skipped).
    ///
    /// # Errors
    /// If the stream ends or nothing comes within [`LINE_TIMEOUT`].
    pub async fn next(&mut self) -> Result<Sse> {
        tokio::time::timeout(LINE_TIMEOUT, self.next_unbounded())
            .await
            .context("no event within the timeout")?
    }

    /// The next event named `event`, skipping others.
    ///
    /// # Errors
    /// As [`EventStream::next`].
    pub async fn next_named(&mut self, event: &str) -> Result<Sse> {
        for _ in 0..10_000 {
            let e = self.next().await?;
            if e.event == event {
                return Ok(e);
            }
        }
        bail!("no {event} event among 10000")
    }

    async fn next_unbounded(&mut self) -> Result<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Ok(event);
                }
                continue;
            }
            let frame = self
                .body
                .frame()
                .await
                .ok_or_else(|| anyhow!("event stream ended"))??;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data)?);
            }
        }
    }
}

fn parse(block: &str) -> Option<Sse> {
    let mut event = None;
    let mut id = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() && event.is_none() {
        return None;
    }
    Some(Sse {
        event: event.unwrap_or_else(|| "message".to_owned()),
        id,
        data: data.join("\n"),
    })
}

/// What `/healthz` of the web server at `web` says of `dependency` (`postgres`, `redis`): whether
/// it is up, and the overall status (`ok`, `degraded`); `/healthz` itself must answer 200.
///
/// # Errors
/// If `/healthz` does not answer 200 with JSON naming the dependency.
pub async fn dependency_health(web: SocketAddr, dependency: &str) -> Result<(bool, String)> {
    let r = get(web, "/healthz", &[]).await?;
    anyhow::ensure!(r.status == 200, "/healthz: {}", r.head);
    let v: serde_json::Value = serde_json::from_str(&r.text())?;
    let up = v["dependencies"][dependency]["up"]
        .as_bool()
        .with_context(|| format!("no {dependency} in /healthz: {v}"))?;
    Ok((up, v["status"].as_str().unwrap_or_default().to_owned()))
}
