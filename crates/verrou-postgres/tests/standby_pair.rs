//! The store conformance suite through a multi-host connection string naming a primary and
//! its streaming standby (`target_session_attrs=read-write`): everything works as with one
//! server, every connection (the listener's too) on the primary. One private pair serves the
//! whole file.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use common::{acquired_after, patient, port_of, start_waiting, unique};
use verrou_core::{Acquisition, LockStore, OwnerCheck};
use verrou_postgres::{PostgresConfig, PostgresStore};
use verrou_testkit::PostgresStandbyPair;

/// The pair of this test process, started by the first test that needs it.
fn pair() -> &'static PostgresStandbyPair {
    static PAIR: OnceLock<PostgresStandbyPair> = OnceLock::new();
    PAIR.get_or_init(|| {
        PostgresStandbyPair::start().expect("a private PostgreSQL primary and standby")
    })
}

/// A new store, with its own pool, on the shared conformance table, through the pair's
/// multi-host URL.
async fn new_store() -> Arc<dyn LockStore> {
    let mut config = PostgresConfig::new(pair().multi_host_url());
    config.table = "verrou_conformance".into();
    Arc::new(
        PostgresStore::connect(config)
            .await
            .expect("a PostgreSQL store through the multi-host URL"),
    )
}

verrou_core::conformance_tests!(new_store);

/// Named first, the read-only standby is skipped by every connection: the pool's and the
/// listener's both reach the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_named_first_is_skipped() {
    let pair = pair();
    let (primary, standby) = (port_of(&pair.primary_url()), port_of(&pair.standby_url()));
    let mut config = PostgresConfig::new(format!(
        "postgres://postgres@127.0.0.1:{standby},127.0.0.1:{primary}/postgres\
         ?target_session_attrs=read-write"
    ));
    config.table = unique("standby_first");
    let waiters = PostgresStore::connect(config.clone())
        .await
        .expect("a store past the standby");
    let releaser = PostgresStore::connect(config)
        .await
        .expect("a store past the standby");
    let port: i32 = waiters
        .pool()
        .get()
        .await
        .expect("a pooled connection")
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("the server's port")
        .get(0);
    assert_eq!(port, i32::from(primary), "the pool is on the primary");

    // The waiter's place is in the line where the release runs, and its listener hears the
    // hand-over: both on the primary.
    let key = unique("key");
    let taken = releaser.save(&key, "holder", None).await.expect("save");
    assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
    let waiting = start_waiting(patient(waiters).create_lock(key.as_str()).expect("a key")).await;
    assert_eq!(
        releaser.delete(&key, "holder").await.expect("delete"),
        OwnerCheck::Applied
    );
    acquired_after(waiting, Instant::now()).await;
}
