//! Helpers shared by the test files; each file uses a subset of them.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use verrou_postgres::tokio_postgres::{Client, NoTls};
use verrou_postgres::{PostgresConfig, PostgresStore};
use verrou_testkit::PostgresServer;

/// A name no other test (in this process or another) uses: a valid identifier, usable as a
/// table, schema or key.
pub(crate) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PostgreSQL server of the test's own, to stop, restart or read the log of.
pub(crate) fn private_server() -> PostgresServer {
    PostgresServer::start().expect("a private PostgreSQL server (see verrou-testkit)")
}

/// The configuration of a store on the shared test server, on `table`.
pub(crate) fn config(table: &str) -> PostgresConfig {
    PostgresConfig {
        table: table.to_owned(),
        ..PostgresConfig::new(verrou_testkit::postgres_url())
    }
}

/// A store on the shared test server, on `table`.
pub(crate) async fn store(table: &str) -> PostgresStore {
    PostgresStore::connect(config(table))
        .await
        .expect("a store on the test server")
}

/// A plain connection to `url`, for setting up and inspecting tables behind a store's back.
pub(crate) async fn client(url: &str) -> Client {
    let (client, connection) = verrou_postgres::tokio_postgres::connect(url, NoTls)
        .await
        .expect("a direct connection to the test server");
    tokio::spawn(connection);
    client
}

/// The server's clock, in epoch milliseconds.
pub(crate) async fn server_now_ms(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT floor(extract(epoch from clock_timestamp()) * 1000)::bigint",
            &[],
        )
        .await
        .expect("the server's time")
        .get(0)
}

/// The `ERROR` lines of a server log, with the statements that caused them.
pub(crate) fn error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("ERROR:") || line.contains("STATEMENT:"))
        .collect()
}

/// The `WARNING` lines of a server log (for example giving back an advisory lock that is
/// not held).
pub(crate) fn warning_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("WARNING:"))
        .collect()
}
