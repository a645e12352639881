//! A Redis Cluster master killed while contenders run: its replica takes over, and the same
//! stores go on granting, with fencing tokens that never go back. It has a private cluster
//! of its own, since it kills one of its masters.

mod cluster_support;
#[path = "cluster_support/contention.rs"]
mod contention;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::connect;
use contention::{key_on, Contention, TimedStore};
use verrou_testkit::RedisCluster;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Scheduling slack on top of a command timeout on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Short, so that a lock its holder could not release while the master was down frees
/// itself soon.
const TTL: Duration = Duration::from_secs(2);

/// The bound on the time from the kill to the next grant of a key of the dead master.
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_recover_from_a_master_failover_with_tokens_that_never_go_back() {
    let mut cluster = RedisCluster::start().expect("a private Redis Cluster");
    let url = cluster.url();
    let doomed = cluster
        .nodes()
        .unwrap()
        .into_iter()
        .find(|node| node.running && node.is_master())
        .expect("a master")
        .port;
    let survivor = cluster
        .nodes()
        .unwrap()
        .into_iter()
        .find(|node| node.is_master() && node.port != doomed)
        .expect("another master")
        .port;
    let on_doomed = [
        key_on(&cluster, doomed, "verrou-failover-a"),
        key_on(&cluster, doomed, "verrou-failover-b"),
    ];
    let keys = [
        on_doomed[0].clone(),
        on_doomed[1].clone(),
        key_on(&cluster, survivor, "verrou-failover-c"),
    ];

    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(TimedStore::new(
            connect(&url, COMMAND_TIMEOUT).await,
        )));
    }
    let contention = Contention::start(&stores, 2, &keys, TTL);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!contention.grants().is_empty(), "no grants before the kill");

    // `kill_master(0)` kills the first running master in node order: `doomed`.
    let (killed_at, failover, cluster) = tokio::task::spawn_blocking(move || {
        let killed = cluster.kill_master(0).expect("the master is killed");
        assert_eq!(killed, doomed);
        let killed_at = Instant::now();
        let failover = cluster.wait_for_failover().expect("the replica takes over");
        (killed_at, failover, cluster)
    })
    .await
    .unwrap();
    let granted_again = loop {
        let first = contention
            .grants()
            .into_iter()
            .find(|(at, key)| *at > killed_at && on_doomed.contains(key));
        if let Some((at, _)) = first {
            break at - killed_at;
        }
        assert!(
            killed_at.elapsed() < RECOVERY_LIMIT,
            "no grant of the dead master's keys within {RECOVERY_LIMIT:?} of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Let them run on the new topology for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (history, grants) = contention.stop().await;
    drop(cluster);

    let holds = history.assert_clean();
    let longest = stores.iter().map(|store| store.longest()).max().unwrap();
    let failures: usize = stores.iter().map(|store| store.failures()).sum();
    println!(
        "failover: the cluster was settled {failover:?} after the kill; the first grant of \
         the dead master's keys came {granted_again:?} after it; {holds} holds, no overlap, \
         no token regression; longest store call {longest:?}, {failures} failed calls"
    );
    let after = grants.iter().filter(|(at, _)| *at > killed_at).count();
    assert!(after > 0);
    assert!(
        longest <= COMMAND_TIMEOUT + SLACK,
        "a store call took {longest:?}"
    );
}
