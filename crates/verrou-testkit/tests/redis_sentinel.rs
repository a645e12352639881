//! Private Redis sentinels find their master and replica within seconds, and name a new
//! master after a failover, asked for or forced by the master's death.

mod common;

use std::time::{Duration, Instant};

use common::redis_cli;
use verrou_testkit::RedisSentinelSet;

#[test]
fn sentinels_fail_over_when_asked_and_when_the_master_dies() {
    let started = Instant::now();
    let mut set = RedisSentinelSet::start().unwrap();
    let took = started.elapsed();
    println!("Redis master, replica and 3 sentinels started in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    let url = set.url();
    assert_eq!(set.master_name(), "verrou");
    assert!(
        url.starts_with("redis-sentinel://127.0.0.1:")
            && url.contains("?sentinelServiceName=verrou&node=127.0.0.1:"),
        "{url}"
    );
    let first = set.master_port().unwrap();
    assert!(redis_cli(first, &["INFO", "replication"]).contains("connected_slaves:1"));
    assert_eq!(redis_cli(first, &["SET", "kept", "1"]), "OK");

    set.failover().unwrap();
    let took = set.wait_for_new_master(first).unwrap();
    println!("sentinels failed over (SENTINEL FAILOVER) in {took:?}");
    let second = set.master_port().unwrap();
    assert_ne!(second, first);
    assert!(redis_cli(second, &["INFO", "replication"]).contains("role:master"));
    assert_eq!(redis_cli(second, &["GET", "kept"]), "1");

    assert_eq!(set.kill_master().unwrap(), second);
    let took = set.wait_for_new_master(second).unwrap();
    println!("sentinels failed over (master killed) in {took:?}");
    assert_eq!(set.master_port().unwrap(), first, "the only server left");
    assert_eq!(redis_cli(first, &["SET", "kept", "2"]), "OK");
}
