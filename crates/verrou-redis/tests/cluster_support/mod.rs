//! Helpers shared by the Redis Cluster test files. This module: stores on a cluster;
//! `shared.rs`: the test process's private cluster; `contention.rs`: contenders on a few
//! keys, with a history of their holds.

use std::time::Duration;

use verrou_redis::{RedisConfig, RedisStore};

/// A store on the cluster at `url`, with `command_timeout`, as a separate process would
/// have.
pub(crate) async fn connect(url: &str, command_timeout: Duration) -> RedisStore {
    let mut config = RedisConfig::new(url);
    config.command_timeout = command_timeout;
    config.connect_timeout = command_timeout;
    RedisStore::connect(config)
        .await
        .expect("the store connects to the cluster")
}
