//! The fault group of the conformance suite against a real Redis server, with the store
//! under test behind a fault proxy (`VERROU_REDIS_URL`, or a private throwaway server).

use std::sync::Arc;
use std::time::Duration;

use verrou_core::conformance::FaultyStore;
use verrou_redis::{RedisConfig, RedisStore};
use verrou_testkit::FaultProxy;

/// Short, so that the cases that wait for a timeout stay short.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

async fn connect(url: String) -> RedisStore {
    let mut config = RedisConfig::new(url);
    config.command_timeout = COMMAND_TIMEOUT;
    config.connect_timeout = COMMAND_TIMEOUT;
    RedisStore::connect(config)
        .await
        .expect("the store connects to the test server")
}

/// A store behind a new fault proxy, and a direct one on the same server.
async fn new_faulty_store() -> FaultyStore {
    let url = verrou_testkit::redis_url();
    let (proxy, proxied_url) = FaultProxy::in_front_of(&url).expect("a fault proxy");
    FaultyStore {
        store: Arc::new(connect(proxied_url).await),
        direct: Arc::new(connect(url).await),
        faults: Arc::new(proxy),
        command_timeout: COMMAND_TIMEOUT,
    }
}

verrou_core::fault_tests!(new_faulty_store);
verrou_core::share_fault_tests!(new_faulty_store);
