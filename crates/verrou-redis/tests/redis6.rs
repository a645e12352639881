//! The store on a Redis 6 server, which refuses `SET NX GET` and has no sharded pub/sub:
//! plain takes run the take script instead, waiters poll, and the conformance suite holds
//! all the same. (The waiting-line group is not run here: three of its cases time a wake-up
//! that a server without sharded pub/sub cannot send.)

use std::sync::{Arc, OnceLock};

use verrou_core::LockStore;
use verrou_redis::{RedisConfig, RedisStore};
use verrou_testkit::RedisServer;

/// The private Redis 6 server of this test process.
fn redis6_url() -> String {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER
        .get_or_init(|| RedisServer::start_redis6().expect("a private Redis 6 server"))
        .url()
}

/// A new store, with its own connection, on the Redis 6 server.
async fn new_store() -> Arc<dyn LockStore> {
    Arc::new(
        RedisStore::connect(RedisConfig::new(redis6_url()))
            .await
            .expect("the store connects to the Redis 6 server"),
    )
}

verrou_core::conformance_tests!(new_store);
