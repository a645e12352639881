//! A private PostgreSQL primary and standby start within seconds; rows reach the standby;
//! once the primary crashed and the standby is promoted, the multi-host URL finds it.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use verrou_testkit::PostgresStandbyPair;

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The port of the server `client` is connected to.
async fn server_port(client: &Client) -> i32 {
    client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0)
}

/// The port of a `postgres://postgres@127.0.0.1:PORT/postgres` URL.
fn port_of(url: &str) -> i32 {
    let rest = url.split_once("127.0.0.1:").unwrap().1;
    rest.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn standby_replicates_then_takes_over_behind_the_multi_host_url() {
    let started = Instant::now();
    let mut pair = PostgresStandbyPair::start().unwrap();
    let took = started.elapsed();
    println!("PostgreSQL primary and streaming standby started in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let (primary_port, standby_port) = (port_of(&pair.primary_url()), port_of(&pair.standby_url()));
    assert_eq!(
        pair.multi_host_url(),
        format!(
            "postgres://postgres@127.0.0.1:{primary_port},127.0.0.1:{standby_port}/postgres\
             ?target_session_attrs=read-write"
        )
    );

    let primary = connect(&pair.primary_url()).await;
    primary
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    let standby = connect(&pair.standby_url()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while standby
        .query("SELECT n FROM kept", &[])
        .await
        .map_or(0, |rows| rows.len())
        != 1
    {
        assert!(
            Instant::now() < deadline,
            "the row never reached the standby"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = standby
        .batch_execute("INSERT INTO kept VALUES (2)")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{refused:?}"
    );
    let writable = connect(&pair.multi_host_url()).await;
    assert_eq!(server_port(&writable).await, primary_port);

    pair.crash_primary();
    let took = pair.promote_standby().unwrap();
    println!("standby promoted in {took:?}");
    standby
        .batch_execute("INSERT INTO kept VALUES (2)")
        .await
        .unwrap();
    let writable = connect(&pair.multi_host_url()).await;
    assert_eq!(server_port(&writable).await, standby_port);
    writable
        .batch_execute("INSERT INTO kept VALUES (3)")
        .await
        .unwrap();
    let count: i64 = writable
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
}
