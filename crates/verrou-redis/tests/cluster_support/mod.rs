//! Helpers shared by the Redis Cluster test files. This module: stores on a cluster;
//! `shared.rs`: the test process's private cluster; `contention.rs`: contenders on a few
//! keys, with a history of their holds.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use verrou_core::{Lock, LockFactory, Retry};
use verrou_redis::{RedisConfig, RedisStore};
use verrou_testkit::RedisCluster;

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

/// A running master other than the one on `port`.
#[allow(dead_code)] // Not every test file that shares this module uses it.
pub(crate) fn other_master(cluster: &RedisCluster, port: u16) -> u16 {
    cluster
        .nodes()
        .expect("the cluster answers")
        .into_iter()
        .find(|node| node.running && node.is_master() && node.port != port)
        .expect("three masters")
        .port
}

/// Takes `key` with a lock of `holders`, and starts a lock of `waiters` waiting for it, asking
/// again only when woken or after `delay`, until `timeout`: the holder, and the waiter's
/// task (whether it got the lock, when, and the lock), once the waiter has had time to fail
/// its first attempt and subscribe.
#[allow(dead_code)] // Not every test file that shares this module uses it.
pub(crate) async fn hold_and_wait(
    holders: &LockFactory,
    waiters: &LockFactory,
    key: &str,
    delay: &'static str,
    timeout: &'static str,
) -> (Lock, JoinHandle<(bool, Instant, Lock)>) {
    let holder = holders.create_lock_with_ttl(key, "30s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    let waiter = waiters.create_lock_with_ttl(key, "30s").unwrap();
    let waiting = tokio::spawn(async move {
        let acquired = waiter
            .acquire_with(Retry::new().delay(delay).timeout(timeout))
            .await
            .unwrap();
        (acquired, Instant::now(), waiter)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    (holder, waiting)
}

/// Runs the blocking `step` (a testkit call) off the runtime's threads.
#[allow(dead_code)] // Not every test file that shares this module uses it.
pub(crate) async fn blocking<T: Send + 'static>(step: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(step)
        .await
        .expect("a testkit step")
}
