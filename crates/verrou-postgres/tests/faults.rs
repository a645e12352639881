//! The fault group of the conformance suite against a real PostgreSQL, with the store under
//! test behind a fault proxy (`VERROU_POSTGRES_URL`, or a private cluster).

use std::sync::Arc;
use std::time::Duration;

use verrou_core::conformance::FaultyStore;
use verrou_postgres::{PostgresConfig, PostgresStore};
use verrou_testkit::FaultProxy;

/// Short, so that the cases that wait for a timeout stay short.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

async fn connect(url: String) -> PostgresStore {
    let mut config = PostgresConfig::new(url);
    config.table = "verrou_faults".into();
    config.command_timeout = COMMAND_TIMEOUT;
    config.connect_timeout = COMMAND_TIMEOUT;
    config.pool_timeout = Some(COMMAND_TIMEOUT);
    PostgresStore::connect(config)
        .await
        .expect("a PostgreSQL store on the test server")
}

/// A store behind a new fault proxy, and a direct one on the same server and table.
async fn new_faulty_store() -> FaultyStore {
    let url = verrou_testkit::postgres_url();
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
