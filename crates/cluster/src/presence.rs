//! The lease: every third of it this node renews the seats it holds and its own key (its open
//! connections, for a cluster-wide `CLIENTS`); a seat another node took while this one was
//! away (paused past its lease, cut off) is given up here.

use std::sync::Arc;

use attendance_server::cluster::ClusterHost;
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use crate::{Inner, keys, ms};

/// How often the node's connection count is refreshed (how stale another node's `CLIENTS`
/// may be).
const COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Renews until shutdown.
pub(crate) async fn renew_loop(inner: &Arc<Inner>, host: &ClusterHost) {
    let mut tick = tokio::time::interval(inner.lease / 3);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut count = tokio::time::interval(COUNT_EVERY);
    count.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let reconciling = tokio::select! {
            () = host.shutdown_token().cancelled() => return,
            _ = tick.tick() => false,
            () = inner.reconcile.notified() => true,
            _ = count.tick() => {
                if !inner.is_down() {
                    announce(inner, host).await;
                }
                continue;
            }
        };
        if inner.is_down() {
            continue;
        }
        if round(inner, host).await && reconciling {
            info!("cluster: seats reconciled after Redis came back");
            host.degraded(None);
        }
    }
}

/// One renewal of every seat here and of the node's key. Whether it got through.
async fn round(inner: &Inner, host: &ClusterHost) -> bool {
    let seats = host.lease_seats();
    let lost = match inner.renew(&seats).await {
        Ok(lost) => lost,
        Err(_) => return false,
    };
    for s in lost {
        warn!(student = %s.id, "seat lost: another node holds it now (this node's lease ran out); giving it up");
        host.evict(&s.id.class, &s.id.roll, s.token);
    }
    announce(inner, host).await
}

/// Sets the node's key (its open connections, for `CLIENTS`), renewing its lease.
async fn announce(inner: &Inner, host: &ClusterHost) -> bool {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(format!("{}{}", keys::NODE, inner.owner))
        .arg(host.open_connections())
        .arg("PX")
        .arg(ms(inner.lease))
        .ignore()
        .cmd("SADD")
        .arg(keys::NODES)
        .arg(&inner.owner)
        .ignore();
    let mut c = inner.conn.clone();
    inner.within(pipe.query_async::<()>(&mut c)).await.is_ok()
}

/// This node leaves the cluster (a clean shutdown): its key goes at once.
/// The seats it still has (those its students dropped at the shutdown, kept for a resume on
/// another node) are renewed once more, so their tokens carry the time served until now and the
/// grace from now.
pub(crate) async fn leave(inner: &Inner, host: &ClusterHost) {
    if inner.is_down() {
        return;
    }
    let seats = host.lease_seats();
    if !seats.is_empty() {
        let _ = inner.renew(&seats).await;
    }
    let mut pipe = redis::pipe();
    pipe.cmd("DEL")
        .arg(format!("{}{}", keys::NODE, inner.owner))
        .ignore()
        .cmd("SREM")
        .arg(keys::NODES)
        .arg(&inner.owner)
        .ignore();
    let mut c = inner.conn.clone();
    let _ = inner.within(pipe.query_async::<()>(&mut c)).await;
}
