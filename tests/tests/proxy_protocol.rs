//! The PROXY protocol behind a load balancer, against the real daemon: this test plays the
//! balancer on 127.0.0.1, writing the header HAProxy would before the client's bytes. The
//! header's client reaches the CSV, the class subnet rules, the flags and `max_per_address`,
//! on the student port and the web port; a trusted peer without a valid header is closed; an
//! untrusted peer is served as always, and its header is just a bad line.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use attendance_tests::{Client, Daemon, LINE_TIMEOUT, bin_path, read_rows};
use ppp::v2::{Builder, Command as V2Command, Protocol, Type, Version};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The balancer is this test, on loopback; headers have 200 ms to arrive.
const TRUST_LOOPBACK: &str = "[proxy_protocol]\nfrom = [\"127.0.0.1/32\"]\ntimeout = \"200ms\"\n";

/// A daemon trusting 127.0.0.1 as its balancer, with `toml` before the `[proxy_protocol]`
/// table, and PRESENT accepted at once.
fn behind_balancer(toml: &str) -> Result<Daemon> {
    Daemon::start_with_config(
        &format!("{toml}\n{TRUST_LOOPBACK}"),
        &["--class-length", "0s"],
    )
}

fn v1(client: &str) -> String {
    let (ip, port) = client.rsplit_once(':').expect("ip:port");
    format!("PROXY TCP4 {ip} 127.0.0.1 {port} 65001\r\n")
}

fn v2(command: V2Command, client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().expect("client address");
    let server: SocketAddr = "127.0.0.1:65001".parse().expect("server address");
    Builder::with_addresses(Version::Two | command, Protocol::Stream, (client, server))
        // HAProxy may add TLVs; they must be read past, not taken for the protocol.
        .write_tlv(Type::NoOp, &[0; 5])
        .expect("tlv")
        .build()
        .expect("v2 header")
}

/// Connects to `addr` as the balancer and writes `header` first.
async fn proxied(addr: SocketAddr, header: &[u8]) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(header).await?;
    Ok(stream)
}

/// A student behind the balancer on the student port: the header, then the greeting.
async fn student(d: &Daemon, header: &[u8]) -> Result<Client> {
    Client::from_stream(proxied(d.addr, header).await?).await
}

/// Joins and marks `id` over `c`, then returns the address of its row in the CSV.
async fn marked_from(d: &Daemon, c: &mut Client, id: &str) -> Result<String> {
    let joined = c.cmd(&format!("JOIN {id}")).await?;
    anyhow::ensure!(joined.starts_with("OK JOIN "), "{joined}");
    let marked = c.cmd("PRESENT").await?;
    anyhow::ensure!(marked.starts_with("OK PRESENT "), "{marked}");
    let roll = id.rsplit('_').next().unwrap_or_default();
    let rows = read_rows(&d.csv_path()).await?;
    let row = rows
        .iter()
        .find(|r| r.roll == roll)
        .with_context(|| format!("no row for {id}: {rows:?}"))?;
    Ok(row.client_addr.clone())
}

/// Waits for the server to close `stream` and returns what it sent before. A reset counts as
/// closed: a server that closes with our bytes unread makes the kernel send one.
async fn closed_by_server(mut stream: TcpStream) -> Result<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(LINE_TIMEOUT, stream.read_to_end(&mut got))
        .await
        .context("the server kept the connection open")?;
    match read {
        Ok(_) => Ok(got),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(got),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn a_v1_header_from_the_balancer_puts_the_client_address_in_the_csv() -> Result<()> {
    let d = behind_balancer("")?;
    let mut c = student(&d, v1("192.0.2.7:51234").as_bytes()).await?;
    assert_eq!(marked_from(&d, &mut c, "CN_D1_Ann_1").await?, "192.0.2.7");
    Ok(())
}

#[tokio::test]
async fn a_v2_header_with_tlvs_puts_the_client_address_in_the_csv() -> Result<()> {
    let d = behind_balancer("")?;
    let mut c = student(&d, &v2(V2Command::Proxy, "198.51.100.9:40000")).await?;
    assert_eq!(
        marked_from(&d, &mut c, "CN_D1_Bob_2").await?,
        "198.51.100.9"
    );
    // The header and the first line in one segment: nothing after the header is lost.
    let mut header_and_join = v1("198.51.100.10:40001").into_bytes();
    header_and_join.extend_from_slice(b"JOIN CN_D1_Cat_3\nPRESENT\n");
    let mut c = student(&d, &header_and_join).await?;
    assert!(c.reply().await?.starts_with("OK JOIN "));
    assert!(c.reply().await?.starts_with("OK PRESENT "));
    let rows = read_rows(&d.csv_path()).await?;
    assert!(
        rows.iter()
            .any(|r| r.roll == "3" && r.client_addr == "198.51.100.10"),
        "{rows:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_v2_local_header_and_v1_unknown_keep_the_balancers_own_address() -> Result<()> {
    let d = behind_balancer("")?;
    let mut c = student(&d, &v2(V2Command::Local, "203.0.113.1:1")).await?;
    assert_eq!(marked_from(&d, &mut c, "CN_D1_Dan_4").await?, "127.0.0.1");
    let mut c = student(&d, b"PROXY UNKNOWN\r\n").await?;
    assert_eq!(marked_from(&d, &mut c, "CN_D1_Eve_5").await?, "127.0.0.1");
    Ok(())
}

#[tokio::test]
async fn class_subnet_rules_see_the_headers_client_not_the_balancer() -> Result<()> {
    let d = behind_balancer(
        "[[class]]\ncourse = \"Lab\"\ndivision = \"Div1\"\nsubnet = [\"192.0.2.0/24\"]\n",
    )?;
    let mut inside = student(&d, v1("192.0.2.20:5000").as_bytes()).await?;
    let joined = inside.cmd("JOIN Lab_Div1_Ann_1").await?;
    assert!(joined.starts_with("OK JOIN "), "{joined}");
    let mut outside = student(&d, &v2(V2Command::Proxy, "203.0.113.5:5000")).await?;
    let refused = outside.cmd("JOIN Lab_Div1_Bob_2").await?;
    assert!(refused.starts_with("ERR FORBIDDEN "), "{refused}");
    assert!(refused.contains("203.0.113.5"), "{refused}");
    Ok(())
}

#[tokio::test]
async fn max_per_address_counts_the_clients_behind_the_balancer() -> Result<()> {
    let d = behind_balancer("max_per_address = 1\n")?;
    // Two clients through one balancer address: both served.
    let mut a = student(&d, v1("192.0.2.1:1000").as_bytes()).await?;
    let mut b = student(&d, v1("192.0.2.2:1000").as_bytes()).await?;
    assert_eq!(a.cmd("PING 1").await?, "OK PONG 1");
    assert_eq!(b.cmd("PING 2").await?, "OK PONG 2");
    // A second connection of the first client: over its limit.
    let again = proxied(d.addr, v1("192.0.2.1:1001").as_bytes()).await?;
    let said = String::from_utf8(closed_by_server(again).await?)?;
    assert!(said.starts_with("ERR FULL "), "{said:?}");
    Ok(())
}

#[tokio::test]
async fn three_rolls_behind_one_client_address_are_flagged_with_that_address() -> Result<()> {
    let d = behind_balancer("")?;
    let mut clients = Vec::new();
    for (roll, client) in [
        (1, "192.0.2.9"),
        (2, "192.0.2.9"),
        (3, "192.0.2.9"),
        (4, "192.0.2.10"),
    ] {
        let mut c = student(&d, v1(&format!("{client}:{}", 2000 + roll)).as_bytes()).await?;
        let joined = c.cmd(&format!("JOIN Net_D1_S{roll}_{roll}")).await?;
        assert!(joined.starts_with("OK JOIN "), "{joined}");
        clients.push(c);
    }
    let out = Command::new(bin_path("attend"))
        .args(["admin", "flags", "--json", "--socket"])
        .arg(d.dir.path().join("attendanced.sock"))
        .env("ATTEND_SERVER", "127.0.0.1:1")
        .env_remove("ATTEND_ADMIN_SOCKET")
        .stdin(Stdio::null())
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let flags = v["flags"].as_array().context("flags")?;
    // One flag: the three rolls of 192.0.2.9, not four rolls of the balancer's 127.0.0.1.
    assert_eq!(flags.len(), 1, "{v}");
    assert_eq!(flags[0]["kind"], "shared-address", "{v}");
    assert_eq!(flags[0]["rolls"].as_array().map(Vec::len), Some(3), "{v}");
    assert!(v.to_string().contains("192.0.2.9"), "{v}");
    assert!(!v.to_string().contains("127.0.0.1"), "{v}");
    Ok(())
}

#[tokio::test]
async fn a_trusted_peer_that_sends_no_header_in_time_is_closed_unanswered() -> Result<()> {
    let d = behind_balancer("")?;
    let silent = TcpStream::connect(d.addr).await?;
    assert_eq!(closed_by_server(silent).await?, b"");
    // Half a header, then nothing: the same.
    let half = proxied(d.addr, b"PROXY TCP4 192.0.2.7 ").await?;
    assert_eq!(closed_by_server(half).await?, b"");
    Ok(())
}

#[tokio::test]
async fn garbage_instead_of_a_header_from_a_trusted_peer_is_closed_and_counted() -> Result<()> {
    let mut d = Daemon::start_with_config(TRUST_LOOPBACK, &["--metrics-listen", "127.0.0.1:0"])?;
    // A client that bypassed the balancer's PROXY setting: its first line is not a header.
    let line = proxied(d.addr, b"JOIN CN_D1_Ann_1\n").await?;
    assert_eq!(closed_by_server(line).await?, b"");
    let web = proxied(d.web(), b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    assert_eq!(closed_by_server(web).await?, b"");
    let line = d.wait_for_log("metrics listening on ")?;
    let metrics: SocketAddr = line
        .split("metrics listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no address")?
        .parse()?;
    let text = attendance_tests::http::get(metrics, "/metrics", &[])
        .await?
        .text();
    assert!(
        text.contains("attendanced_proxy_header_errors_total 2"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn an_untrusted_peer_is_served_as_before_and_its_header_is_a_bad_line() -> Result<()> {
    let d = Daemon::start_with_config(
        "[proxy_protocol]\nfrom = [\"10.9.9.9/32\"]\n",
        &["--class-length", "0s"],
    )?;
    let mut c = d.connect().await?;
    assert_eq!(marked_from(&d, &mut c, "CN_D1_Ann_1").await?, "127.0.0.1");
    // A header from a peer that is not the balancer claims nothing.
    let mut c = d.connect().await?;
    let answer = c.cmd(v1("192.0.2.7:1").trim_end()).await?;
    assert!(answer.starts_with("ERR "), "{answer}");
    assert_eq!(marked_from(&d, &mut c, "CN_D1_Bob_2").await?, "127.0.0.1");
    // A v2 header's signature holds the line QUIT (so that servers without the protocol end
    // such a connection): it is read as one.
    let v2_line = proxied(d.addr, &v2(V2Command::Proxy, "192.0.2.7:1")).await?;
    let said = String::from_utf8_lossy(&closed_by_server(v2_line).await?).into_owned();
    assert!(said.contains("OK BYE"), "{said}");
    Ok(())
}

#[tokio::test]
async fn the_web_port_reads_the_header_for_websocket_students_and_health_checks() -> Result<()> {
    let d = behind_balancer("")?;
    // A phone's /ws through the balancer.
    let stream = proxied(d.web(), v1("192.0.2.44:6000").as_bytes()).await?;
    let mut c = Client::connect_ws_over(stream, d.web()).await?;
    assert_eq!(marked_from(&d, &mut c, "CN_D1_Web_8").await?, "192.0.2.44");
    // HAProxy's health check: a v2 LOCAL header, then GET /healthz.
    let mut check = v2(V2Command::Local, "127.0.0.1:1");
    check.extend_from_slice(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let answer = closed_by_server(proxied(d.web(), &check).await?).await?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    Ok(())
}
