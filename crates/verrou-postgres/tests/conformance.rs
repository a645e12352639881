//! The store conformance suite against a real PostgreSQL (`VERROU_POSTGRES_URL`, or a
//! private cluster started for this test process).

use std::sync::Arc;

use verrou_core::LockStore;
use verrou_postgres::{PostgresConfig, PostgresStore};

/// A new store, with its own pool, on the shared conformance table. Every case runs on its
/// own runtime, so every case gets pools of its own.
async fn new_store() -> Arc<dyn LockStore> {
    let mut config = PostgresConfig::new(verrou_testkit::postgres_url());
    config.table = "verrou_conformance".into();
    Arc::new(
        PostgresStore::connect(config)
            .await
            .expect("a PostgreSQL store on the test server"),
    )
}

verrou_core::conformance_tests!(new_store);
verrou_core::line_tests!(new_store);
verrou_core::semaphore_tests!(new_store);
verrou_core::rw_lock_tests!(new_store);
