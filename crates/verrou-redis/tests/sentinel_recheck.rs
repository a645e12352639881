//! A failover the store's watcher did not hear (its connections to the sentinels were down
//! when the sentinels announced it): once it reconnects to them it asks where the master is,
//! and moves the store there, long before the sentinels demote the old master.
//!
//! The sentinels are reached through fault proxies, so that the watcher's connections can be
//! refused; the store's connection to the master is direct, and stays up.

mod sentinel_support;
#[path = "sentinel_support/topology.rs"]
mod topology;
#[path = "sentinel_support/watch.rs"]
mod watch;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use sentinel_support::{connect, info_field, redis_cli};
use topology::{replica_port, sentinel_ports};
use verrou_core::conformance::FaultInjector;
use verrou_core::LockStore;
use verrou_testkit::{FaultProxy, RedisSentinelSet};
use watch::{seconds, Grants, Switches};

/// Takes a new key every 20 ms until `until` says stop.
async fn take_until(store: &impl LockStore, round: &str, mut until: impl FnMut() -> bool) {
    let mut turn = 0u32;
    while !until() {
        turn += 1;
        // Failures are fine: only what the servers granted counts.
        let _ = store
            .save(
                &format!("recheck-{round}-{turn}"),
                "owner",
                Some(Duration::from_secs(5)),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_missed_by_the_watcher_is_followed_once_it_reaches_the_sentinels() {
    let mut set = RedisSentinelSet::start().expect("a private Redis Sentinel deployment");
    let proxies: Vec<FaultProxy> = sentinel_ports(&set)
        .into_iter()
        .map(|port| {
            FaultProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).expect("a fault proxy")
        })
        .collect();
    let mut url = String::from("redis-sentinel://");
    for (index, proxy) in proxies.iter().enumerate() {
        let separator = if index == 0 { "" } else { "&node=" };
        url.push_str(&format!("{separator}127.0.0.1:{}", proxy.port()));
        if index == 0 {
            url.push_str("?sentinelServiceName=verrou");
        }
    }
    let store = connect(&url, |_| {}).await;
    let old = set.master_port().expect("the sentinels name a master");
    let new = replica_port(&set);
    let (old_grants, new_grants) = (Grants::watch(old), Grants::watch(new));
    // The test hears the sentinels directly.
    let switches = Switches::watch(&set);

    // The watcher goes deaf, and the sentinels fail over.
    proxies.iter().for_each(FaultInjector::refuse);
    set.failover().expect("SENTINEL FAILOVER");
    let switched_at = tokio::task::block_in_place(|| switches.first(Duration::from_secs(30)));
    let switched = tokio::task::block_in_place(|| set.wait_for_new_master(old))
        .expect("the sentinels fail over");
    let deaf = Instant::now();
    take_until(&store, "deaf", || {
        deaf.elapsed() > Duration::from_millis(1500)
    })
    .await;
    assert!(
        old_grants.times().iter().any(|at| *at > seconds(switched_at)),
        "the old master granted nothing after the switch: the watcher was not deaf, the test proves nothing"
    );

    proxies.iter().for_each(FaultInjector::heal);
    let healed = Instant::now();
    let healed_at = SystemTime::now();
    take_until(&store, "healed", || {
        assert!(
            healed.elapsed() < Duration::from_secs(5),
            "the store did not reach the new master within 5 s of the sentinels being reachable"
        );
        new_grants.times().iter().any(|at| *at > seconds(healed_at))
    })
    .await;
    let moved = healed.elapsed();
    let old_role = info_field(&redis_cli(old, &["INFO", "replication"]), "role");
    println!(
        "every sentinel had switched {:.0} ms after SENTINEL FAILOVER; the store, deaf to them meanwhile, reached the new master {:.0} ms after they were reachable again (old master's role then: {old_role:?})",
        switched.as_secs_f64() * 1000.0,
        moved.as_secs_f64() * 1000.0
    );
    assert_eq!(
        old_role.as_deref(),
        Some("master"),
        "the sentinels had demoted the old master already: the test proves nothing"
    );
    let last_old = old_grants.times().into_iter().fold(0.0, f64::max);
    assert!(
        last_old < seconds(healed_at) + moved.as_secs_f64() + 0.1,
        "the old master granted after the store had moved"
    );
}
