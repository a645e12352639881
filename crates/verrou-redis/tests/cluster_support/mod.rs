//! Helpers shared by the Redis Cluster test files. This module: stores on a cluster;
//! `shared.rs`: the test process's private cluster; `contention.rs`: contenders on a few
//! keys, with a history of their holds.

use std::time::Duration;

use verrou_redis::{RedisConfig, RedisStore};

/// A store on the cluster at `url`, with `command_timeout`, as a separate process would
/// have.
pub(crate) async fn connect(url: &str, command_timeout: Duration) -> RedisStore {
    connect_with(url, command_timeout, false).await
}

/// Like [`connect`], with fencing tokens on: the take script then touches the key and its
/// slot's fencing counter, the path a slot migration makes hardest (`TRYAGAIN` while they
/// are on different nodes).
#[allow(dead_code)] // Not every test file that shares this module uses it.
pub(crate) async fn connect_fenced(url: &str, command_timeout: Duration) -> RedisStore {
    connect_with(url, command_timeout, true).await
}

async fn connect_with(url: &str, command_timeout: Duration, fencing_tokens: bool) -> RedisStore {
    let mut config = RedisConfig::new(url);
    config.fencing_tokens = fencing_tokens;
    config.command_timeout = command_timeout;
    config.connect_timeout = command_timeout;
    RedisStore::connect(config)
        .await
        .expect("the store connects to the cluster")
}
