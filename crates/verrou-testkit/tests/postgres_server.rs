//! A private PostgreSQL cluster answers queries, logs failed statements, stops (or crashes)
//! and comes back on the same port with the same data.

use std::io;
use std::net::TcpStream;

use tokio_postgres::{Client, NoTls};
use verrou_testkit::PostgresServer;

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn serves_logs_stops_and_restarts_with_the_same_data() {
    let mut server = PostgresServer::start().unwrap();
    let port = server.port();
    assert_eq!(
        server.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );

    let client = connect(&server.url()).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let max: String = client
        .query_one("SHOW max_connections", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        max.parse::<u32>().unwrap() >= 200,
        "max_connections = {max}"
    );
    client
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        .await
        .unwrap();

    assert!(!server.log_contents().contains("ERROR:"));
    client
        .batch_execute("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    let log = server.log_contents();
    assert!(
        log.contains("ERROR:  relation \"no_such_table\" does not exist"),
        "{log}"
    );
    assert!(
        log.contains("STATEMENT:  SELECT * FROM no_such_table"),
        "{log}"
    );

    server.stop();
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    server.stop(); // idempotent

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    let client = connect(&server.url()).await;
    let kept: i32 = client
        .query_one("SELECT n FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 42);
    // The log survives restarts.
    assert!(server.log_contents().contains("no_such_table"));

    drop(server);
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
}

#[tokio::test]
async fn crash_then_restart_recovers_committed_rows() {
    let mut server = PostgresServer::start().unwrap();
    let port = server.port();
    let client = connect(&server.url()).await;
    client
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();

    // Right after the commit, before any background writer or checkpoint could help.
    server.crash();
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    server.crash(); // idempotent

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    let client = connect(&server.url()).await;
    let kept: i32 = client
        .query_one("SELECT n FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 7);
    // A crash, not a shutdown: the server had to recover.
    let log = server.log_contents();
    assert!(log.contains("received immediate shutdown request"), "{log}");
    assert!(
        log.contains("database system was not properly shut down; automatic recovery in progress"),
        "{log}"
    );
}
