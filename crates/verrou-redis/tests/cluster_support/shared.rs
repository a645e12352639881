//! The private Redis Cluster shared by the tests of one test process.

use std::sync::OnceLock;

use verrou_testkit::RedisCluster;

/// This test process's private cluster (three masters, three replicas), started at the first
/// call (about two seconds) and stopped when the process ends.
pub(crate) fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        RedisCluster::start().expect("a private Redis Cluster (redis-server must be installed)")
    })
}
