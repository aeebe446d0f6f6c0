//! What the two reference servers, `bare_marks` and `loop_marks`, share: the kiosk shape's
//! protocol subset, its replies and the fixed row, so that the two answer and write alike and
//! differ only in how they are built.

use std::net::{IpAddr, SocketAddr};

/// Longest line taken; a longer one closes the connection.
pub(crate) const MAX_LINE: usize = 4096;
/// The answer to `PRESENT`, once its row is on disk.
pub(crate) const REPLY_PRESENT: &[u8] = b"OK PRESENT 2026-11-29T18:00:00.000Z\n";

/// One line of the kiosk shape.
pub(crate) enum Request<'a> {
    /// `JOIN <id>`.
    Join(&'a [u8]),
    /// `PRESENT`.
    Present,
    /// Anything else.
    Other,
}

impl<'a> Request<'a> {
    /// Reads one line, without its `\n`.
    pub(crate) fn parse(line: &'a [u8]) -> Self {
        match line.strip_prefix(b"JOIN ") {
            Some(id) => Self::Join(id),
            None if line == b"PRESENT" => Self::Present,
            None => Self::Other,
        }
    }
}

/// Appends what is answered at once: `OK JOIN <id> 0` to a `JOIN`, an `ERR` to anything but a
/// `PRESENT` (which is answered with [`REPLY_PRESENT`] after its sync).
pub(crate) fn answer(request: &Request<'_>, out: &mut Vec<u8>) {
    match request {
        Request::Join(id) => {
            out.extend_from_slice(b"OK JOIN ");
            out.extend_from_slice(id);
            out.extend_from_slice(b" 0\n");
        }
        Request::Present => {}
        Request::Other => out.extend_from_slice(b"ERR UNKNOWN only JOIN and PRESENT\n"),
    }
}

/// Appends the fixed row of a mark by `who` (the id of its `JOIN`) from `ip`.
pub(crate) fn row(rows: &mut Vec<u8>, who: &[u8], ip: IpAddr) {
    rows.extend_from_slice(who);
    rows.extend_from_slice(
        format!(",Present,2026-11-29T18:00:00.000Z,2026-11-29T18:00:00.000Z,{ip}\n").as_bytes(),
    );
}

/// The address from the first argument that is not a flag, `default` without one; loopback
/// addresses only.
///
/// # Errors
/// If the argument is not an address, or not a loopback one.
pub(crate) fn loopback_addr(arg: Option<&str>, default: u16) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    let addr = match arg {
        Some(a) => a.parse().with_context(|| format!("address {a:?}"))?,
        None => SocketAddr::from(([127, 0, 0, 1], default)),
    };
    if !addr.ip().is_loopback() {
        anyhow::bail!("{addr}: loopback addresses only");
    }
    Ok(addr)
}
