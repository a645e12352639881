//! A server that is down or does not answer: every operation fails with a storage error
//! within the command timeout, also when the pool has to open a new connection and the
//! connect timeout is longer, and the same store works again once the server is back.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{private_server, unique};
use verrou_core::conformance::FaultInjector;
use verrou_core::{Error, LockStore, Result};
use verrou_postgres::{PostgresConfig, PostgresStore};
use verrou_testkit::FaultProxy;

/// The command timeout of the stores here.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Longer than the command timeout: opening a connection must not stretch an operation.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How late past the command timeout an operation may fail (scheduling, a loaded machine).
const SLACK: Duration = Duration::from_millis(500);

/// How long the store may take to work again once the server is back.
const RECOVERY: Duration = Duration::from_secs(5);

/// A store on `url` with the timeouts above and two pooled connections.
async fn store_on(url: String) -> PostgresStore {
    PostgresStore::connect({
        let mut config = PostgresConfig::new(url);
        config.table = unique("outage");
        config.pool_size = 2;
        config.connect_timeout = CONNECT_TIMEOUT;
        config.command_timeout = COMMAND_TIMEOUT;
        config.sweep_interval = None;
        config
    })
    .await
    .expect("store")
}

/// The name of every store operation, for [`operation`].
const OPERATIONS: [&str; 5] = ["save", "delete", "force_delete", "exists", "extend"];

/// Runs the store operation called `name` on `key`.
async fn operation(store: &PostgresStore, name: &str, key: &str) -> Result<()> {
    let ttl = Duration::from_secs(30);
    match name {
        "save" => store.save(key, "me", Some(ttl)).await.map(drop),
        "delete" => store.delete(key, "me").await.map(drop),
        "force_delete" => store.force_delete(key).await,
        "exists" => store.exists(key).await.map(drop),
        "extend" => store.extend(key, "me", ttl).await.map(drop),
        other => unreachable!("no operation {other}"),
    }
}

/// Every operation, twice (the second round finds no usable pooled connection and has to
/// open new ones), fails with [`Error::Storage`] within the command timeout and the slack.
async fn every_operation_fails_in_time(store: &PostgresStore, key: &str, outage: &str) {
    for round in 1..=2 {
        for name in OPERATIONS {
            let started = Instant::now();
            let outcome = operation(store, name, key).await;
            let took = started.elapsed();
            assert!(
                matches!(outcome, Err(Error::Storage { .. })),
                "{outage}, round {round}: {name} gave {outcome:?}"
            );
            assert!(
                took <= COMMAND_TIMEOUT + SLACK,
                "{outage}, round {round}: {name} failed after {took:?}"
            );
        }
    }
}

/// Every operation of the same store succeeds again within [`RECOVERY`].
async fn every_operation_recovers(store: &PostgresStore, key: &str, outage: &str) {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let mut failures = Vec::new();
        for name in OPERATIONS {
            if let Err(error) = operation(store, name, key).await {
                failures.push(format!("{name}: {error:?}"));
            }
        }
        if failures.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {outage}, the store still fails:\n{}",
            failures.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stopped server refuses connections: every operation fails at once, whether it finds a
/// pooled connection (now closed) or opens one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_fails_every_operation_in_time_then_the_same_store_recovers() {
    let mut server = private_server();
    let store = store_on(server.url()).await;
    let key = unique("key");
    every_operation_recovers(&store, &key, "the start").await;

    server.stop();
    every_operation_fails_in_time(&store, &key, "server stopped").await;

    server.restart().expect("the server restarts");
    every_operation_recovers(&store, &key, "a restart").await;
}

/// A server that accepts connections and never answers (here a listener that nobody
/// serves, on the server's port): new connections hang in the handshake, and the command
/// timeout bounds every operation though the connect timeout is far longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_every_operation_in_time_then_the_same_store_recovers() {
    let mut server = private_server();
    let store = store_on(server.url()).await;
    let key = unique("key");
    every_operation_recovers(&store, &key, "the start").await;

    server.stop();
    let silent = TcpListener::bind(("127.0.0.1", server.port())).expect("the server's port");
    every_operation_fails_in_time(&store, &key, "a silent server").await;

    drop(silent);
    server.restart().expect("the server restarts");
    every_operation_recovers(&store, &key, "a restart").await;
}

/// A network black hole between the store and its server: pooled connections get no
/// answer, new ones connect but never finish their handshake. Every operation fails in
/// time, and once the network heals the same store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_connection_fails_every_operation_in_time_then_the_same_store_recovers() {
    let server = private_server();
    let (proxy, url) = FaultProxy::in_front_of(&server.url()).expect("a proxy");
    let store = store_on(url).await;
    let key = unique("key");
    every_operation_recovers(&store, &key, "the start").await;

    proxy.blackhole();
    every_operation_fails_in_time(&store, &key, "a black hole").await;

    proxy.heal();
    every_operation_recovers(&store, &key, "healing").await;
}
