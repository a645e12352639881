//! The store conformance suite, its waiting-line group and its semaphore and read-write lock
//! groups, against a real Redis server (`VERROU_REDIS_URL`, or a private throwaway server).

use std::sync::Arc;

use verrou_core::LockStore;
use verrou_redis::{RedisConfig, RedisStore};

/// A new store, with its own connection, on the test server: stores made for one case
/// behave like separate processes.
async fn new_store() -> Arc<dyn LockStore> {
    connect(RedisConfig::new(verrou_testkit::redis_url())).await
}

async fn connect(config: RedisConfig) -> Arc<dyn LockStore> {
    Arc::new(
        RedisStore::connect(config)
            .await
            .expect("the store connects to the test server"),
    )
}

verrou_core::conformance_tests!(new_store);
verrou_core::line_tests!(new_store);
verrou_core::semaphore_tests!(new_store);
verrou_core::rw_lock_tests!(new_store);

/// The same with fencing tokens on: plain takes run the take script.
mod fenced {
    use super::*;

    async fn new_store() -> Arc<dyn LockStore> {
        let mut config = RedisConfig::new(verrou_testkit::redis_url());
        config.fencing_tokens = true;
        connect(config).await
    }

    verrou_core::conformance_tests!(new_store);
    verrou_core::line_tests!(new_store);
}
