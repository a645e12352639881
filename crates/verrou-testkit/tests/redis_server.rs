//! A private Redis server answers, stops (or is killed) and comes back on the same port.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use verrou_testkit::RedisServer;

/// Sends PING over a fresh connection and returns the reply.
fn ping(port: u16) -> io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[test]
fn starts_stops_and_restarts_on_the_same_port() {
    let mut server = RedisServer::start().unwrap();
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(ping(port).unwrap(), "+PONG\r\n");

    server.stop();
    let refused = ping(port).unwrap_err();
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    server.stop(); // idempotent

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(ping(port).unwrap(), "+PONG\r\n");

    // Restarting a running server works too.
    server.restart().unwrap();
    assert_eq!(ping(port).unwrap(), "+PONG\r\n");

    drop(server);
    let refused = ping(port).unwrap_err();
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
}

#[test]
fn servers_get_ports_of_their_own() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    assert_ne!(a.port(), b.port());
    assert_eq!(ping(a.port()).unwrap(), "+PONG\r\n");
    assert_eq!(ping(b.port()).unwrap(), "+PONG\r\n");
}

#[test]
fn killed_server_refuses_connections_then_restarts_empty() {
    let mut server = RedisServer::start().unwrap();
    let port = server.port();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"SET kept 1\r\n").unwrap();
    let mut reply = [0_u8; 5];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+OK\r\n");

    server.kill();
    let refused = ping(port).unwrap_err();
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    // The open connection is gone too.
    let mut rest = Vec::new();
    assert!(matches!(stream.read_to_end(&mut rest), Ok(0) | Err(_)));
    server.kill(); // idempotent

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(ping(port).unwrap(), "+PONG\r\n");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"EXISTS kept\r\n").unwrap();
    let mut reply = [0_u8; 4];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b":0\r\n", "nothing is persisted");
}
