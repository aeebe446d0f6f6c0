//! The live bus: one task publishes what this node's members were told (and its seat
//! releases), one task keeps the subscriptions of the classes this node has members of, and
//! proves them alive with a probe through its own channel.
//!
//! A message on a class channel is one of
//! - `L <owner> <seq>\n<line>`: a line for the class's members (`seq` counts the lines of that
//!   class from that owner; a number skipped is a line missed, told as `EVENT LAGGED n`);
//! - `S <owner> <seq>`: the owner's last `seq` of the class, sent every heartbeat so a gap in
//!   a quiet class is found too;
//! - `E <owner> <roll> <token>`: the owner resumed that seat; whoever held it gives it up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use attendance_protocol::{ClassKey, Field, FieldKind};
use attendance_server::hub::parse_token;
use bytes::Bytes;
use futures::StreamExt as _;
use redis::aio::PubSubSink;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

use crate::{COMMAND_TIMEOUT, Inner, keys, lock};

/// What the publisher task sends.
#[derive(Debug)]
pub(crate) enum Out {
    /// A line told to a class's members here.
    Line { class: ClassKey, line: Bytes },
    /// This node resumed the seat: its previous holder gives it up.
    Evict {
        class: ClassKey,
        roll: Field,
        token: String,
    },
    /// A seat given back here.
    Release {
        class: ClassKey,
        roll: Field,
        token: String,
    },
    /// The class has no member here any more.
    Closed(ClassKey),
}

/// Most messages sent in one pipeline.
const BATCH: usize = 256;
/// Releases kept while Redis is down, sent when it is back (the rest expire with the lease).
const MAX_PENDING_RELEASES: usize = 10_000;
/// How often the subscription is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe not back within this makes the subscription deaf: it is made afresh.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);
/// Longest wait between two attempts to subscribe.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest time the publisher waits at shutdown for the seats here to be given back.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);

/// Publishes what is queued, in pipelines, until shutdown (then until every seat here was
/// given back, within [`SHUTDOWN_DRAIN`]).
pub(crate) async fn publish(inner: Arc<Inner>, mut rx: mpsc::Receiver<Out>) {
    let Some(host) = inner.host.get().cloned() else {
        return;
    };
    let mut p = Publisher {
        inner: &inner,
        seqs: HashMap::new(),
        pending: Vec::new(),
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut sync = tokio::time::interval(host.heartbeat());
    sync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
                p.flush(&mut batch).await;
            }
            _ = sync.tick() => p.sync().await,
            () = host.shutdown_token().cancelled() => break,
        }
    }
    let deadline = Instant::now() + SHUTDOWN_DRAIN;
    while Instant::now() < deadline {
        let got =
            tokio::time::timeout(Duration::from_millis(50), rx.recv_many(&mut batch, BATCH)).await;
        if !batch.is_empty() {
            p.flush(&mut batch).await;
        }
        if matches!(got, Ok(0)) || (rx.is_empty() && host.lease_seats().is_empty()) {
            break;
        }
    }
}

struct Publisher<'a> {
    inner: &'a Inner,
    /// The last sequence number of each class's lines from here.
    seqs: HashMap<ClassKey, u64>,
    /// Releases that could not be sent (Redis down).
    pending: Vec<(ClassKey, Field, String)>,
}

impl Publisher<'_> {
    async fn flush(&mut self, batch: &mut Vec<Out>) {
        let inner = self.inner;
        let mut dropped = std::mem::take(&mut *lock(&inner.dropped));
        let mut pipe = redis::pipe();
        let mut messages = 0usize;
        let mut releases = Vec::new();
        for out in batch.drain(..) {
            match out {
                Out::Line { class, line } => {
                    let skipped = dropped.remove(&class).unwrap_or(0);
                    let seq = self.seqs.entry(class.clone()).or_insert(0);
                    *seq += 1 + skipped;
                    let mut payload = format!("L {} {seq}\n", inner.owner).into_bytes();
                    payload.extend_from_slice(&line);
                    pipe.cmd("PUBLISH")
                        .arg(keys::class_channel(&class))
                        .arg(payload)
                        .ignore();
                    messages += 1;
                }
                Out::Evict { class, roll, token } => {
                    pipe.cmd("PUBLISH")
                        .arg(keys::class_channel(&class))
                        .arg(format!("E {} {roll} {token}", inner.owner))
                        .ignore();
                    messages += 1;
                }
                Out::Release { class, roll, token } => releases.push((class, roll, token)),
                Out::Closed(class) => {
                    self.seqs.remove(&class);
                }
            }
        }
        // Lines dropped of classes with nothing else in this batch: the next number jumps.
        for (class, n) in dropped {
            if let Some(seq) = self.seqs.get_mut(&class) {
                *seq += n;
            }
        }
        if inner.is_down() {
            // Lines are not sent (their numbers are spent: the other nodes see the gap);
            // releases wait for Redis, within a bound.
            let room = MAX_PENDING_RELEASES.saturating_sub(self.pending.len());
            self.pending.extend(releases.into_iter().take(room));
            return;
        }
        // Releases first: a member that hears a LEAVE may take the roll on another node at once.
        releases.extend(std::mem::take(&mut self.pending));
        for (class, roll, token) in releases {
            let mut c = inner.conn.clone();
            let mut call = inner.scripts.release.prepare_invoke();
            call.key(keys::seat(&class, &roll))
                .key(keys::token(&token))
                .arg(&inner.owner)
                .arg(&token);
            if inner
                .within(call.invoke_async::<i64>(&mut c))
                .await
                .is_err()
                && self.pending.len() < MAX_PENDING_RELEASES
            {
                self.pending.push((class, roll, token));
            }
        }
        if messages > 0 {
            let mut c = inner.conn.clone();
            let _ = inner.within(pipe.query_async::<()>(&mut c)).await;
        }
    }

    /// Tells each class's other nodes the last number sent, so a gap in a quiet class shows.
    async fn sync(&mut self) {
        if self.seqs.is_empty() || self.inner.is_down() {
            return;
        }
        let mut pipe = redis::pipe();
        for (class, seq) in &self.seqs {
            pipe.cmd("PUBLISH")
                .arg(keys::class_channel(class))
                .arg(format!("S {} {seq}", self.inner.owner))
                .ignore();
        }
        let mut c = self.inner.conn.clone();
        let _ = self.inner.within(pipe.query_async::<()>(&mut c)).await;
    }
}

/// Keeps the class subscriptions and the probe until shutdown, reconnecting by itself.
pub(crate) async fn subscribe(inner: Arc<Inner>) {
    let Some(host) = inner.host.get().cloned() else {
        return;
    };
    let shutdown = host.shutdown_token().clone();
    let mut sub = Subscriber {
        inner: &inner,
        host: &host,
        probe_channel: keys::probe_channel(&inner.owner),
        last: HashMap::new(),
        probe: None,
        nonce: 0,
    };
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        if sub.session().await {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Subscriber<'a> {
    inner: &'a Inner,
    host: &'a attendance_server::cluster::ClusterHost,
    probe_channel: String,
    /// The last number seen of each (channel, owner).
    last: HashMap<(String, String), u64>,
    /// The probe in flight: its nonce and when it was sent.
    probe: Option<(u64, Instant)>,
    nonce: u64,
}

impl Subscriber<'_> {
    /// One subscription, until it ends or goes deaf (or shutdown). Whether the probe came back
    /// at least once.
    async fn session(&mut self) -> bool {
        let inner = self.inner;
        let pubsub =
            match tokio::time::timeout(COMMAND_TIMEOUT, inner.client.get_async_pubsub()).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    inner.failed(&format!("cannot subscribe: {e}"));
                    return false;
                }
                Err(_) => {
                    inner.failed("cannot subscribe: no answer within 1s");
                    return false;
                }
            };
        let (mut sink, mut stream) = pubsub.split();
        let probe_channel = self.probe_channel.clone();
        if !within(sink.subscribe(&probe_channel)).await {
            inner.failed("cannot subscribe to the probe channel");
            return false;
        }
        let mut subscribed = HashSet::new();
        let mut dirty = true;
        let mut alive = false;
        self.probe = None;
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if dirty {
                if !self.resubscribe(&mut sink, &mut subscribed).await {
                    inner.failed("cannot subscribe to a class channel");
                    return alive;
                }
                dirty = false;
            }
            tokio::select! {
                () = self.host.shutdown_token().cancelled() => return alive,
                msg = stream.next() => match msg {
                    Some(msg) => {
                        if self.handle(msg.get_channel_name(), msg.get_payload_bytes()) {
                            alive = true;
                        }
                    }
                    None => {
                        inner.failed("the subscription's connection closed");
                        return alive;
                    }
                },
                () = inner.desired_changed.notified() => dirty = true,
                _ = tick.tick() => {
                    if let Some((_, at)) = self.probe {
                        if at.elapsed() > PROBE_DEADLINE {
                            warn!("cluster: the probe did not come back; subscribing afresh");
                            inner.failed("the probe through this node's own channel did not come back");
                            return alive;
                        }
                        continue;
                    }
                    self.nonce += 1;
                    let mut c = inner.conn.clone();
                    let sent = inner
                        .within(
                            redis::cmd("PUBLISH")
                                .arg(&probe_channel)
                                .arg(self.nonce)
                                .query_async::<u64>(&mut c),
                        )
                        .await;
                    if sent.is_ok() {
                        self.probe = Some((self.nonce, Instant::now()));
                    }
                }
            }
        }
    }

    /// Subscribes to the classes wanted and not yet subscribed, unsubscribes the others.
    async fn resubscribe(
        &mut self,
        sink: &mut PubSubSink,
        subscribed: &mut HashSet<String>,
    ) -> bool {
        let desired: HashSet<String> = lock(&self.inner.desired).keys().cloned().collect();
        for ch in desired.difference(subscribed).cloned().collect::<Vec<_>>() {
            if !within(sink.subscribe(&ch)).await {
                return false;
            }
            debug!(channel = %ch, "subscribed");
            subscribed.insert(ch);
        }
        for ch in subscribed.difference(&desired).cloned().collect::<Vec<_>>() {
            if !within(sink.unsubscribe(&ch)).await {
                return false;
            }
            subscribed.remove(&ch);
            self.last.retain(|(c, _), _| *c != ch);
        }
        true
    }

    /// Acts on one message. Whether it was this node's probe.
    fn handle(&mut self, channel: &str, payload: &[u8]) -> bool {
        if channel == self.probe_channel {
            let nonce = std::str::from_utf8(payload)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if let Some((sent, at)) = self.probe {
                if nonce == Some(sent) {
                    self.inner.probed(at.elapsed());
                    self.probe = None;
                    return true;
                }
            }
            return false;
        }
        let Some(class) = lock(&self.inner.desired).get(channel).cloned() else {
            return false;
        };
        let (head, body) = match memchr_newline(payload) {
            Some(i) => (&payload[..i], &payload[i + 1..]),
            None => (payload, &[][..]),
        };
        let Ok(head) = std::str::from_utf8(head) else {
            return false;
        };
        let mut words = head.split(' ');
        let (Some(kind), Some(origin)) = (words.next(), words.next()) else {
            return false;
        };
        if origin == self.inner.owner {
            return false;
        }
        match kind {
            "L" | "S" => {
                let Some(seq) = words.next().and_then(|s| s.parse::<u64>().ok()) else {
                    return false;
                };
                let key = (channel.to_owned(), origin.to_owned());
                let expected = self.last.get(&key).map(|l| l + u64::from(kind == "L"));
                if let Some(expected) = expected {
                    if seq > expected {
                        self.host.lagged(&class, seq - expected);
                    }
                }
                self.last.insert(key, seq);
                if kind == "L" {
                    self.host.deliver(&class, Bytes::copy_from_slice(body));
                }
            }
            "E" => {
                let roll = words
                    .next()
                    .and_then(|r| Field::new(FieldKind::Roll, r).ok());
                let token = words.next().and_then(parse_token);
                if let (Some(roll), Some(token)) = (roll, token) {
                    if self.host.evict(&class, &roll, token) {
                        debug!(%class, %roll, by = origin, "seat resumed on another node");
                    }
                }
            }
            _ => {}
        }
        false
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

async fn within(f: impl Future<Output = redis::RedisResult<()>>) -> bool {
    matches!(tokio::time::timeout(COMMAND_TIMEOUT, f).await, Ok(Ok(())))
}
