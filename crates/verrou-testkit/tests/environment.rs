//! What depends on the process's environment: `redis_url()` and `postgres_url()` take the
//! environment's URL first, else one private server per test process; a missing program
//! is reported with how to get it. The only test in this binary, as it changes the
//! environment.

use std::io::{Read, Write};
use std::net::TcpStream;

use tokio_postgres::NoTls;
use verrou_testkit::{postgres_url, redis_url, RedisServer, POSTGRES_URL_VAR, REDIS_URL_VAR};

/// The port of a `scheme://[user@]127.0.0.1:PORT[/path]` URL.
fn local_port(url: &str) -> u16 {
    let rest = url.split_once("127.0.0.1:").unwrap().1;
    rest.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn urls_and_programs_come_from_the_environment() {
    std::env::set_var(REDIS_URL_VAR, "redis://redis.example:6379");
    std::env::set_var(POSTGRES_URL_VAR, "postgres://u@postgres.example/db");
    assert_eq!(redis_url(), "redis://redis.example:6379");
    assert_eq!(postgres_url(), "postgres://u@postgres.example/db");

    // Empty counts as unset.
    std::env::set_var(REDIS_URL_VAR, "");
    std::env::remove_var(POSTGRES_URL_VAR);

    let redis = redis_url();
    assert!(redis.starts_with("redis://127.0.0.1:"), "{redis}");
    assert_eq!(redis_url(), redis, "one server per process");
    let mut stream = TcpStream::connect(("127.0.0.1", local_port(&redis))).unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");

    let postgres = postgres_url();
    assert!(
        postgres.starts_with("postgres://postgres@127.0.0.1:"),
        "{postgres}"
    );
    assert_eq!(postgres_url(), postgres, "one cluster per process");
    let (client, connection) = tokio_postgres::connect(&postgres, NoTls).await.unwrap();
    tokio::spawn(connection);
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    // Set again, the environment wins again.
    std::env::set_var(REDIS_URL_VAR, "redis://other.example:6379");
    assert_eq!(redis_url(), "redis://other.example:6379");

    // Without redis-server on PATH, the error says how to get a server.
    let path = std::env::var_os("PATH").unwrap();
    std::env::set_var("PATH", "/nonexistent");
    let missing = RedisServer::start().unwrap_err();
    std::env::set_var("PATH", path);
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    let message = missing.to_string();
    assert!(
        message.contains("apt-get install redis-server"),
        "{message}"
    );
    assert!(message.contains(REDIS_URL_VAR), "{message}");
}
