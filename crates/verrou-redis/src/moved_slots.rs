//! Noticing, on Redis Cluster, that a slot has moved to another node while keys are watched.
//!
//! When a slot leaves a node, Redis drops that node's subscriptions to the slot's channels,
//! telling the subscriber with a `sunsubscribe` that fred 10.1 does not pass on: the feed
//! would never know. So while keys are watched, a small task asks the cluster for its slots
//! (`CLUSTER SLOTS` on a connection of the store, every [`CHECK_PERIOD`]) and compares their
//! owners with what the subscriber client routes by; when they differ, it refreshes the
//! subscriber's view (`sync_cluster`, which reconnects that client's view of the cluster) and
//! tells the feed, which subscribes to every watched key again. (Refreshing the subscriber's
//! view every time instead would cost a new connection each time: fred 10.1's
//! `sync_cluster` reopens it whenever the connections are healthy.)

use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::prelude::Options;
use fred::types::cluster::{ClusterRouting, SlotRange};
use fred::types::Value;
use tokio::sync::mpsc::{self, Receiver};
use verrou_core::Boards;

use crate::connection::Connection;

/// How often the slots are looked at while keys are watched.
const CHECK_PERIOD: Duration = Duration::from_secs(1);

/// Starts looking for slots that moved on behalf of `subscriber`, whose store's `boards`
/// say what is watched, asking on `connection` with `options`. The receiver hears `()`
/// each time the subscriber's view was refreshed after a move; the task ends with the
/// boards, or when the receiver is dropped. Off a cluster nothing is started, and the
/// receiver is closed.
pub(crate) fn watch(
    subscriber: Client,
    connection: Arc<Connection>,
    options: Options,
    boards: Weak<Boards>,
) -> Receiver<()> {
    let (moved, heard) = mpsc::channel(1);
    if !subscriber.is_clustered() {
        return heard;
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(CHECK_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(boards) = boards.upgrade() else {
                return;
            };
            let watching = !boards.watched().is_empty();
            drop(boards);
            if watching && moved_since(&subscriber, &connection, &options).await {
                let refreshed = tokio::time::timeout(CHECK_PERIOD, subscriber.sync_cluster());
                if matches!(refreshed.await, Ok(Ok(()))) && moved.send(()).await.is_err() {
                    return;
                }
            }
        }
    });
    heard
}

/// Whether the cluster's slots have other owners now than the `subscriber` routes by.
async fn moved_since(subscriber: &Client, connection: &Connection, options: &Options) -> bool {
    let Some(known) = subscriber.cached_cluster_state() else {
        return false;
    };
    let client = connection.with_options(options);
    let asked = client.cluster_slots::<Value>();
    let Ok(Ok(slots)) = tokio::time::timeout(CHECK_PERIOD, asked).await else {
        return false;
    };
    // Hosts may be named differently (an address, a name): the owners' node ids count.
    let owners = |routing: &ClusterRouting| -> Vec<(u16, u16, String)> {
        routing
            .slots()
            .iter()
            .map(|SlotRange { start, end, id, .. }| (*start, *end, id.to_string()))
            .collect()
    };
    ClusterRouting::from_cluster_slots(slots, "")
        .is_ok_and(|current| owners(&current) != owners(&known))
}
