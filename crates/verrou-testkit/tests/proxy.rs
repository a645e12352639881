//! The fault proxy forwards, delays, holds back, cuts and refuses as told, in front of an
//! echo server of this file's own (and once in front of a real Redis).
//!
//! Timings are asserted only from below, except for generous bounds (seconds) where the
//! point is that something happens at all: the machine may be slow and busy.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use verrou_core::conformance::FaultInjector;
use verrou_testkit::{FaultProxy, RedisServer};

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(5);

/// Starts a server on 127.0.0.1 that echoes what each connection sends, forever.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buffer = [0_u8; 8192];
                loop {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buffer[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A proxy in front of a fresh echo server.
fn proxy() -> FaultProxy {
    FaultProxy::start(echo_server()).unwrap()
}

/// A connection to `proxy`, waiting at most [`PATIENCE`] for any read.
fn connect(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends `message` and reads it back; returns how long that took.
fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Duration {
    let start = Instant::now();
    stream.write_all(message).unwrap();
    let mut echo = vec![0; message.len()];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(echo, message);
    start.elapsed()
}

/// Whether a read on `stream` gets nothing within `wait` (the connection is still open).
fn silent_for(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0_u8; 1];
    let silent = matches!(
        stream.read(&mut byte),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
    );
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    silent
}

/// Asserts that `stream` was closed by the other side: a read sees the end of the stream
/// or a reset, well within [`PATIENCE`].
fn assert_closed(stream: &mut TcpStream) {
    let start = Instant::now();
    let mut byte = [0_u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ) => {}
        other => panic!(
            "expected the connection closed, got {other:?} after {:?}",
            start.elapsed()
        ),
    }
}

#[test]
fn passes_everything_through() {
    let proxy = proxy();
    assert_eq!(proxy.addr().ip().to_string(), "127.0.0.1");
    assert_eq!(proxy.addr().port(), proxy.port());
    let mut stream = connect(&proxy);
    for message in [&b"hello"[..], b"x", b"PING\r\n"] {
        round_trip(&mut stream, message);
    }

    // More than every buffer on the way holds, written and read at the same time.
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = stream.try_clone().unwrap();
    let sent = big.clone();
    let sending = thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut echo = vec![0; big.len()];
    stream.read_exact(&mut echo).unwrap();
    sending.join().unwrap();
    assert!(echo == big, "the echo differs from what was sent");

    // A second connection at the same time.
    let mut other = connect(&proxy);
    round_trip(&mut other, b"other");
    round_trip(&mut stream, b"first");
}

#[test]
fn delays_what_goes_to_the_server() {
    let proxy = proxy();
    let mut stream = connect(&proxy);
    round_trip(&mut stream, b"warm");
    proxy.set_latency(Duration::from_millis(200), Duration::ZERO);
    let took = round_trip(&mut stream, b"slow");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // New connections are delayed too.
    let mut fresh = connect(&proxy);
    let took = round_trip(&mut fresh, b"slow");
    assert!(took >= Duration::from_millis(200), "{took:?}");
}

#[test]
fn delays_what_comes_back() {
    let proxy = proxy();
    let mut stream = connect(&proxy);
    proxy.set_latency(Duration::ZERO, Duration::from_millis(200));
    let took = round_trip(&mut stream, b"slow");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    proxy.set_latency(Duration::from_millis(150), Duration::from_millis(150));
    let took = round_trip(&mut stream, b"both ways");
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

#[test]
fn a_latency_change_applies_to_later_chunks_in_order() {
    let proxy = proxy();
    let mut stream = connect(&proxy);
    let start = Instant::now();
    proxy.set_latency(Duration::from_millis(300), Duration::ZERO);
    stream.write_all(b"a").unwrap();
    // Let the proxy read "a" while the latency is 300 ms.
    thread::sleep(Duration::from_millis(100));
    proxy.set_latency(Duration::ZERO, Duration::ZERO);
    stream.write_all(b"b").unwrap();
    // "b" is due at once, but must not overtake "a".
    let mut echo = [0_u8; 2];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ab");
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn heal_delivers_delayed_chunks_at_once() {
    let proxy = proxy();
    let mut stream = connect(&proxy);
    let start = Instant::now();
    proxy.set_latency(Duration::from_secs(30), Duration::ZERO);
    stream.write_all(b"late").unwrap();
    assert!(silent_for(&mut stream, Duration::from_millis(200)));
    proxy.heal();
    let mut echo = [0_u8; 4];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"late");
    assert!(start.elapsed() < Duration::from_secs(10));
    let took = round_trip(&mut stream, b"fast again");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn blackhole_holds_everything_back_until_healed() {
    let proxy = proxy();
    let mut open = connect(&proxy);
    round_trip(&mut open, b"before");

    proxy.blackhole();
    open.write_all(b"held").unwrap();
    assert!(silent_for(&mut open, Duration::from_millis(300)));
    // New connections are accepted, but get nowhere either.
    let mut fresh = connect(&proxy);
    fresh.write_all(b"waiting").unwrap();
    assert!(silent_for(&mut fresh, Duration::from_millis(300)));
    open.write_all(b" and more").unwrap();
    assert!(silent_for(&mut open, Duration::from_millis(100)));

    proxy.heal();
    let mut echo = [0_u8; 13];
    open.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"held and more");
    let mut echo = [0_u8; 7];
    fresh.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"waiting");
    round_trip(&mut open, b"after");
    round_trip(&mut fresh, b"after");
}

#[test]
fn blackhole_also_holds_back_answers() {
    let proxy = proxy();
    let mut stream = connect(&proxy);
    // The request reaches the server; the answer is read while the hole opens.
    proxy.set_latency(Duration::ZERO, Duration::from_millis(200));
    stream.write_all(b"answer").unwrap();
    thread::sleep(Duration::from_millis(50));
    proxy.blackhole();
    assert!(silent_for(&mut stream, Duration::from_millis(400)));
    proxy.heal();
    let mut echo = [0_u8; 6];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"answer");
}

#[test]
fn cut_closes_open_connections_and_accepts_new_ones() {
    let proxy = proxy();
    let mut idle = connect(&proxy);
    round_trip(&mut idle, b"idle");
    let mut waiting = connect(&proxy);
    proxy.set_latency(Duration::from_secs(30), Duration::ZERO);
    waiting.write_all(b"in flight").unwrap();
    thread::sleep(Duration::from_millis(50));

    let start = Instant::now();
    proxy.cut();
    assert_closed(&mut idle);
    assert_closed(&mut waiting);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    let mut fresh = connect(&proxy);
    let took = round_trip(&mut fresh, b"new");
    assert!(
        took < Duration::from_secs(2),
        "the cut also ended the latency: {took:?}"
    );
}

#[test]
fn cut_during_a_blackhole_closes_the_held_connections() {
    let proxy = proxy();
    let mut open = connect(&proxy);
    round_trip(&mut open, b"open");
    proxy.blackhole();
    let mut fresh = connect(&proxy);
    proxy.cut();
    assert_closed(&mut open);
    assert_closed(&mut fresh);
    round_trip(&mut connect(&proxy), b"new");
}

#[test]
fn refuse_closes_open_and_new_connections_like_a_server_that_is_down() {
    let proxy = proxy();
    let mut open = connect(&proxy);
    round_trip(&mut open, b"open");

    proxy.refuse();
    assert_closed(&mut open);
    for _ in 0..3 {
        let mut refused = connect(&proxy);
        // The write may or may not fail, depending on when the close arrives.
        let _ = refused.write_all(b"hello?");
        assert_closed(&mut refused);
    }

    proxy.heal();
    round_trip(&mut connect(&proxy), b"welcome back");
}

#[test]
fn a_server_that_is_down_closes_the_client_connection() {
    // Nothing listens on this port once the listener is dropped.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = FaultProxy::start(addr).unwrap();
    assert_closed(&mut connect(&proxy));
}

#[test]
fn dropping_the_proxy_closes_everything_and_frees_its_port() {
    let proxy = proxy();
    let addr = proxy.addr();
    let mut open = connect(&proxy);
    round_trip(&mut open, b"open");
    let mut held = connect(&proxy);
    proxy.blackhole();
    held.write_all(b"held").unwrap();

    drop(proxy);
    assert_closed(&mut open);
    assert_closed(&mut held);
    let refused = TcpStream::connect(addr).unwrap_err();
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    TcpListener::bind(addr).unwrap();
}

#[test]
fn works_as_a_shared_fault_injector_across_runtimes() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<FaultProxy>();

    // Started inside a runtime that is then dropped: the proxy lives on.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let proxy = runtime.block_on(async { Arc::new(proxy()) });
    drop(runtime);
    let faults: Arc<dyn FaultInjector> = proxy.clone();
    let mut stream = connect(&proxy);
    round_trip(&mut stream, b"alive");
    faults.set_latency(Duration::from_millis(100), Duration::ZERO);
    assert!(round_trip(&mut stream, b"slow") >= Duration::from_millis(100));
    faults.heal();

    // Dropped from inside another runtime's task.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        tokio::spawn(async move {
            drop(faults);
            drop(proxy);
        })
        .await
        .unwrap();
    });
    assert_closed(&mut stream);
}

#[test]
fn in_front_of_a_redis_url() {
    let redis = RedisServer::start().unwrap();
    let (proxy, url) = FaultProxy::in_front_of(&redis.url()).unwrap();
    assert_eq!(url, format!("redis://127.0.0.1:{}", proxy.port()));
    assert_ne!(proxy.port(), redis.port());

    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");

    proxy.cut();
    assert_closed(&mut stream);
}

#[test]
fn in_front_of_rewrites_postgres_urls_and_rejects_others() {
    let (proxy, url) =
        FaultProxy::in_front_of("postgres://postgres@localhost:5432/postgres").unwrap();
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port())
    );
    for bad in [
        "redis://example.com:6379",
        "not a url",
        "mysql://127.0.0.1:3306",
    ] {
        let error = FaultProxy::in_front_of(bad).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{bad}: {error}");
    }
}
