//! A small RESP2/RESP3 codec, enough for the comparison runs: commands out (`SUBSCRIBE`,
//! `PUBLISH`, `RPUSH`, `LLEN`, `PING`, `HELLO 3`), replies and pub/sub pushes in. The parser is
//! bounded (bulk length, element count, nesting) and works on a buffer, returning `None` until a
//! whole value has arrived.

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Largest bulk string accepted from the server.
const MAX_BULK: usize = 16 << 20;
/// Most elements in one aggregate.
const MAX_ELEMENTS: usize = 1 << 20;
/// Deepest nesting of aggregates.
const MAX_DEPTH: usize = 16;
/// Longest simple line (`+…`, `-…`, `:…`, headers).
const MAX_LINE: usize = 64 << 10;

/// A RESP protocol failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RespError {
    /// The socket failed.
    #[error("redis connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something this codec does not read, or past its bounds.
    #[error("unexpected RESP from the server: {0}")]
    Protocol(&'static str),
}

/// One RESP value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR …` (and RESP3 blob errors)
    Error(String),
    /// `:1`
    Int(i64),
    /// `$3\r\nfoo` (and RESP3 verbatim strings, doubles, big numbers and booleans as text)
    Bulk(Vec<u8>),
    /// `$-1`, `*-1`, `_`
    Null,
    /// `*2 …`
    Array(Vec<Value>),
    /// RESP3 out-of-band `>3 …` (pub/sub messages)
    Push(Vec<Value>),
    /// RESP3 `%2 …` (and `~` sets, as pairs of a value and `Null`)
    Map(Vec<(Value, Value)>),
}

/// What a pub/sub frame says.
#[derive(Debug, PartialEq)]
pub(crate) enum PubSub<'a> {
    /// `subscribe <channel> <count>`: the subscription is in place.
    Subscribed,
    /// `message <channel> <payload>`.
    Message {
        /// The payload.
        payload: &'a [u8],
    },
}

impl Value {
    /// Reads a pub/sub frame (an array in RESP2, a push in RESP3).
    pub(crate) fn pubsub(&self) -> Option<PubSub<'_>> {
        let (Self::Array(items) | Self::Push(items)) = self else {
            return None;
        };
        match items.as_slice() {
            [Self::Bulk(kind), _, Self::Int(_)] if kind == b"subscribe" => Some(PubSub::Subscribed),
            [Self::Bulk(kind), _, Self::Bulk(payload)] if kind == b"message" => {
                Some(PubSub::Message { payload })
            }
            _ => None,
        }
    }
}

/// Appends `args` as a RESP command (an array of bulk strings) to `out`.
pub(crate) fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one value from the start of `buf`: `Ok(None)` if it is not complete yet, else the value
/// and the bytes it used.
///
/// # Errors
/// On a malformed value or one past the codec's bounds.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
    let mut cursor = Cursor { buf, pos: 0 };
    Ok(cursor.value(0)?.map(|v| (v, cursor.pos)))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The next line without its CRLF, or `None` if it has not fully arrived.
    fn line(&mut self) -> Result<Option<&'a [u8]>, RespError> {
        let rest = &self.buf[self.pos..];
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                self.pos += end + 2;
                Ok(Some(&rest[..end]))
            }
            None if rest.len() > MAX_LINE => Err(RespError::Protocol("line too long")),
            None => Ok(None),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Option<Value>, RespError> {
        if depth > MAX_DEPTH {
            return Err(RespError::Protocol("nested too deeply"));
        }
        let Some(line) = self.line()? else {
            return Ok(None);
        };
        let (&tag, rest) = line
            .split_first()
            .ok_or(RespError::Protocol("empty line"))?;
        let text = || String::from_utf8_lossy(rest).into_owned();
        let value = match tag {
            b'+' => Value::Simple(text()),
            b'-' => Value::Error(text()),
            b':' => Value::Int(number(rest)?),
            b'_' => Value::Null,
            b',' | b'#' | b'(' => Value::Bulk(rest.to_vec()),
            b'$' | b'=' | b'!' => {
                let len = number(rest)?;
                if len < 0 {
                    Value::Null
                } else {
                    let Some(bytes) = self.bulk(len)? else {
                        return Ok(None);
                    };
                    if tag == b'!' {
                        Value::Error(String::from_utf8_lossy(&bytes).into_owned())
                    } else {
                        Value::Bulk(bytes)
                    }
                }
            }
            b'*' | b'>' | b'~' => {
                let len = number(rest)?;
                if len < 0 {
                    Value::Null
                } else {
                    let Some(items) = self.items(len, depth)? else {
                        return Ok(None);
                    };
                    match tag {
                        b'*' => Value::Array(items),
                        b'>' => Value::Push(items),
                        _ => Value::Map(items.into_iter().map(|v| (v, Value::Null)).collect()),
                    }
                }
            }
            b'%' => {
                let len = number(rest)?;
                let Some(items) = self.items(len.saturating_mul(2), depth)? else {
                    return Ok(None);
                };
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    pairs.push((k, v));
                }
                Value::Map(pairs)
            }
            _ => return Err(RespError::Protocol("unknown type byte")),
        };
        Ok(Some(value))
    }

    fn bulk(&mut self, len: i64) -> Result<Option<Vec<u8>>, RespError> {
        let len = usize::try_from(len).map_err(|_| RespError::Protocol("bad bulk length"))?;
        if len > MAX_BULK {
            return Err(RespError::Protocol("bulk string too long"));
        }
        let rest = &self.buf[self.pos..];
        if rest.len() < len + 2 {
            return Ok(None);
        }
        if &rest[len..len + 2] != b"\r\n" {
            return Err(RespError::Protocol("bulk string not followed by CRLF"));
        }
        self.pos += len + 2;
        Ok(Some(rest[..len].to_vec()))
    }

    fn items(&mut self, len: i64, depth: usize) -> Result<Option<Vec<Value>>, RespError> {
        let len = usize::try_from(len).map_err(|_| RespError::Protocol("bad length"))?;
        if len > MAX_ELEMENTS {
            return Err(RespError::Protocol("aggregate too long"));
        }
        let mut items = Vec::with_capacity(len.min(64));
        for _ in 0..len {
            let Some(item) = self.value(depth + 1)? else {
                return Ok(None);
            };
            items.push(item);
        }
        Ok(Some(items))
    }
}

fn number(digits: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::Protocol("bad number"))
}

/// Reads whole RESP values from a byte stream.
#[derive(Debug)]
pub(crate) struct RespReader<R> {
    read: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> RespReader<R> {
    /// Wraps a reader.
    pub(crate) fn new(read: R) -> Self {
        Self {
            read,
            buf: BytesMut::with_capacity(512),
        }
    }

    /// The next value, or `None` when the server closed the connection between values.
    ///
    /// # Errors
    /// On I/O failure, a malformed value, or a close in the middle of one.
    pub(crate) async fn next(&mut self) -> Result<Option<Value>, RespError> {
        loop {
            if let Some((value, used)) = parse(&self.buf)? {
                self.buf.advance(used);
                return Ok(Some(value));
            }
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(RespError::Protocol("connection closed inside a value"))
                };
            }
        }
    }

    /// The next value, treating a close as an error.
    ///
    /// # Errors
    /// As [`RespReader::next`], and on close.
    pub(crate) async fn expect(&mut self) -> Result<Value, RespError> {
        self.next()
            .await?
            .ok_or(RespError::Protocol("connection closed"))
    }
}

/// Sends one command.
///
/// # Errors
/// If the write fails.
pub(crate) async fn send<W: AsyncWrite + Unpin>(
    write: &mut W,
    args: &[&[u8]],
) -> Result<(), RespError> {
    let mut out = Vec::with_capacity(64);
    encode(args, &mut out);
    write.write_all(&out).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> Value {
        match parse(bytes) {
            Ok(Some((v, used))) if used == bytes.len() => v,
            other => panic!("parse {bytes:?}: {other:?}"),
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&[b"PUBLISH", b"ch", b"1 2"], &mut out);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$3\r\n1 2\r\n");
    }

    #[test]
    fn scalars_parse() {
        assert_eq!(parsed(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(parsed(b"-ERR no\r\n"), Value::Error("ERR no".into()));
        assert_eq!(parsed(b":42\r\n"), Value::Int(42));
        assert_eq!(parsed(b"$3\r\nfoo\r\n"), Value::Bulk(b"foo".to_vec()));
        assert_eq!(parsed(b"$-1\r\n"), Value::Null);
        assert_eq!(parsed(b"_\r\n"), Value::Null);
    }

    #[test]
    fn pubsub_frames_are_recognised_in_resp2_and_resp3() {
        let sub = parsed(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
        assert_eq!(sub.pubsub(), Some(PubSub::Subscribed));
        let msg = parsed(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5\r\nhello\r\n");
        assert_eq!(msg.pubsub(), Some(PubSub::Message { payload: b"hello" }));
        assert_eq!(parsed(b":1\r\n").pubsub(), None);
    }

    #[test]
    fn a_resp3_map_parses() {
        let map = parsed(b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n");
        assert_eq!(
            map,
            Value::Map(vec![(
                Value::Bulk(b"server".to_vec()),
                Value::Bulk(b"redis".to_vec())
            )])
        );
    }

    #[test]
    fn partial_input_waits_for_more() -> Result<(), RespError> {
        let whole = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5\r\nhello\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut])?, None, "cut at {cut}");
        }
        Ok(())
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(parse(b"$99999999999\r\n").is_err());
        assert!(parse(b"*99999999999\r\n").is_err());
        assert!(parse(b"?\r\n").is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[tokio::test]
    async fn the_reader_splits_a_stream_into_values() -> Result<(), RespError> {
        let bytes: &[u8] = b"+OK\r\n:3\r\n";
        let mut reader = RespReader::new(bytes);
        assert_eq!(reader.next().await?, Some(Value::Simple("OK".into())));
        assert_eq!(reader.next().await?, Some(Value::Int(3)));
        assert_eq!(reader.next().await?, None);
        Ok(())
    }
}
