//! Where the servers of a private Sentinel deployment are.

use verrou_testkit::RedisSentinelSet;

use crate::sentinel_support::redis_cli;

/// The ports of the sentinels of `set`, as its URL names them.
pub(crate) fn sentinel_ports(set: &RedisSentinelSet) -> Vec<u16> {
    let url = set.url();
    url.split(['?', '&'])
        .filter_map(|part| part.rsplit(':').next()?.parse().ok())
        .collect()
}

/// The port of the replica, as the first sentinel knows it.
pub(crate) fn replica_port(set: &RedisSentinelSet) -> u16 {
    let sentinel = sentinel_ports(set)[0];
    let replicas = redis_cli(sentinel, &["SENTINEL", "REPLICAS", set.master_name()]);
    let fields: Vec<&str> = replicas.lines().collect();
    fields
        .windows(2)
        .find(|pair| pair[0] == "port")
        .and_then(|pair| pair[1].parse().ok())
        .expect("the sentinels know a replica")
}
