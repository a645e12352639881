//! A waiter on Redis Cluster whose key's slot moves to another master while it waits: the
//! store notices the move and subscribes again on the new node, without opening a
//! connection each time it looks. It has a private cluster of its own, so that the
//! connections it counts are its own.

mod cluster_support;
#[path = "cluster_support/shared.rs"]
mod shared;

use std::time::{Duration, Instant};

use cluster_support::{blocking, connect, hold_and_wait, other_master};
use shared::cluster;
use verrou_core::LockFactory;
use verrou_redis::fred::prelude::{Builder, Client, ClientLike, Config};
use verrou_redis::fred::types::{ClusterHash, CustomCommand};
use verrou_testkit::{hash_slot, RedisCluster};

/// Short, so that a call that is stuck shows at once.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A plain client of each running node of `cluster`.
async fn node_clients(cluster: &RedisCluster) -> Vec<Client> {
    let mut clients = Vec::new();
    for node in cluster.nodes().expect("the cluster answers") {
        if node.running {
            let url = format!("redis://127.0.0.1:{}", node.port);
            let client = Builder::from_config(Config::from_url(&url).expect("a node's URL"))
                .build()
                .expect("a client");
            client.init().await.expect("the node answers");
            clients.push(client);
        }
    }
    clients
}

/// How many connections the nodes of `clients` have accepted so far, all together.
async fn connections_accepted(clients: &[Client]) -> u64 {
    let mut total = 0;
    for client in clients {
        let info: String = client
            .custom(
                CustomCommand::new_static("INFO", ClusterHash::Random, false),
                vec!["stats"],
            )
            .await
            .expect("INFO stats");
        total += info
            .lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .and_then(|count| count.trim().parse::<u64>().ok())
            .expect("total_connections_received");
    }
    total
}

/// A waiter whose key's slot moves to another master while it waits still hears the
/// release there: Redis drops the old node's subscriptions to the slot's channels (and
/// fred 10.1 swallows the `sunsubscribe` it sends), so the store looks for slots that moved
/// while it watches keys, and subscribes again on the new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_hears_the_release_after_its_keys_slot_moved() {
    let cluster = cluster();
    let url = cluster.url();
    let holders = LockFactory::new(connect(&url, COMMAND_TIMEOUT).await);
    let waiters = LockFactory::new(connect(&url, COMMAND_TIMEOUT).await);
    let key = "verrou-moved-wake";
    let source = cluster
        .master_of_slot(hash_slot(key))
        .expect("the cluster answers");
    // Without a wake-up, the next attempt is an hour away.
    let (holder, waiting) = hold_and_wait(&holders, &waiters, key, "1h", "30s").await;
    // Looking at the slots every second while the key is watched opens no connection.
    let nodes = node_clients(cluster).await;
    let accepted = connections_accepted(&nodes).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let opened = connections_accepted(&nodes).await - accepted;
    assert!(opened <= 1, "{opened} connections opened in 3 s of waiting");
    let (slot, target) = (hash_slot(key), other_master(cluster, source));
    blocking(move || cluster.migrate_slot(slot, target))
        .await
        .expect("the slot moved");
    // Time for the waiting store to see the move and subscribe on the new node.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let released = Instant::now();
    holder.release().await.unwrap();
    let (acquired, at, waiter) = waiting.await.unwrap();
    let woke = at.saturating_duration_since(released);
    assert!(acquired);
    assert!(
        woke < Duration::from_secs(2),
        "woke {woke:?} after the release"
    );
    waiter.release().await.unwrap();
}
