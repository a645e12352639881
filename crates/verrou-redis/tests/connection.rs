//! Connecting, failing and recovering: bad URLs, unreachable servers, a server that dies
//! under the store (and under a guarded lock) and comes back.

mod support;

use std::error::Error as _;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::{connect, raw_client, unique_key};
use verrou_core::{Acquisition, Error, LockFactory, LockStore, OwnerCheck};
use verrou_redis::fred::prelude::{ClientLike, Value};
use verrou_redis::fred::types::{ClusterHash, CustomCommand};
use verrou_redis::{ConnectError, RedisConfig, RedisStore};
use verrou_testkit::RedisServer;

const SHORT: Duration = Duration::from_millis(500);
/// Time allowed beyond a timeout for the error to come back.
const SLACK: Duration = Duration::from_millis(1500);

fn assert_storage_error<T: std::fmt::Debug>(result: verrou_core::Result<T>, what: &str) {
    match result {
        Err(Error::Storage { .. }) => {}
        other => panic!("{what}: expected Error::Storage, got {other:?}"),
    }
}

/// The `ConnectError` behind a failed `connect`.
fn connect_error(error: &Error) -> &ConnectError {
    assert!(matches!(error, Error::Storage { .. }), "{error:?}");
    error
        .source()
        .and_then(|source| source.downcast_ref::<ConnectError>())
        .unwrap_or_else(|| panic!("the source of {error:?} is a ConnectError"))
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn bad_urls_fail_at_construction_naming_the_problem_not_the_password() {
    let cases = [
        ("redis://user:s3cret@localhost:70000", "invalid port"),
        ("s3cret@localhost:6379", "no scheme"),
        ("http://user:s3cret@localhost", "unsupported scheme `http`"),
        ("redis://:s3cret@", "host"),
    ];
    for (url, problem) in cases {
        let error = RedisStore::connect(RedisConfig::new(url))
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::InvalidConfig(_)), "{url}: {error:?}");
        assert!(message.contains(problem), "{url}: {message}");
        assert!(!message.contains("s3cret"), "{url}: {message}");
    }
}

#[tokio::test]
async fn tls_urls_need_the_tls_feature() {
    let result = RedisStore::connect(RedisConfig::new(format!(
        "rediss://127.0.0.1:{}",
        closed_port()
    )))
    .await;
    match result {
        Err(Error::InvalidConfig(message)) if !cfg!(feature = "tls") => {
            assert!(message.contains("`tls` cargo feature"), "{message}");
        }
        // With TLS built in, the URL is fine and the closed port is the problem.
        Err(error) if cfg!(feature = "tls") => {
            connect_error(&error);
        }
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test]
async fn invalid_values_are_rejected() {
    let mut zero_pool = RedisConfig::default();
    zero_pool.pool_size = 0;
    let mut zero_timeout = RedisConfig::default();
    zero_timeout.command_timeout = Duration::ZERO;
    for (config, field) in [(zero_pool, "pool_size"), (zero_timeout, "command_timeout")] {
        let error = RedisStore::connect(config).await.unwrap_err();
        assert!(
            matches!(&error, Error::InvalidConfig(message) if message.contains(field)),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn connect_to_a_closed_port_fails_with_a_storage_error_naming_the_server() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let error = RedisStore::connect(RedisConfig::new(&url))
        .await
        .unwrap_err();
    assert!(started.elapsed() < SLACK, "took {:?}", started.elapsed());
    assert_eq!(connect_error(&error).server(), url);
    assert!(
        error.source().and_then(|s| s.source()).is_some(),
        "fred's error is kept"
    );
}

#[tokio::test]
async fn connect_to_a_silent_server_gives_up_after_the_connect_timeout() {
    // Accepts TCP connections (the kernel does) but never answers AUTH.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://:s3cret@{}", silent.local_addr().unwrap());
    let mut config = RedisConfig::new(url);
    config.connect_timeout = SHORT;

    let started = Instant::now();
    let error = RedisStore::connect(config).await.unwrap_err();
    assert!(
        started.elapsed() < SHORT + SLACK,
        "took {:?}",
        started.elapsed()
    );
    assert!(connect_error(&error).server().starts_with("redis://***@"));
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain = format!("{chain}: {cause}");
        source = cause.source();
    }
    assert!(!chain.contains("s3cret"), "{chain}");
}

/// Every operation, against a store whose server is down: each must fail with a storage
/// error within the command timeout.
async fn every_operation_fails_in_time(store: &RedisStore, key: &str) {
    let operations: [(
        &str,
        std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>>,
    ); 5] = [
        (
            "save",
            Box::pin(async { store.save(key, "owner-2", Some(SHORT)).await.map(drop) }),
        ),
        (
            "delete",
            Box::pin(async { store.delete(key, "owner-1").await.map(drop) }),
        ),
        (
            "extend",
            Box::pin(async { store.extend(key, "owner-1", SHORT).await.map(drop) }),
        ),
        (
            "exists",
            Box::pin(async { store.exists(key).await.map(drop) }),
        ),
        ("force_delete", Box::pin(store.force_delete(key))),
    ];
    for (name, operation) in operations {
        let started = Instant::now();
        assert_storage_error(operation.await, name);
        assert!(
            started.elapsed() < SHORT + SLACK,
            "{name} took {:?} against a stopped server",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_gives_storage_errors_in_time_and_the_store_recovers() {
    let mut server = RedisServer::start().expect("a private redis-server");
    let store = connect(&server.url(), |config| config.command_timeout = SHORT).await;
    let key = unique_key("outage");
    assert!(matches!(
        store
            .save(&key, "owner-1", Some(Duration::from_secs(30)))
            .await
            .unwrap(),
        Acquisition::Granted(_)
    ));

    server.stop();
    every_operation_fails_in_time(&store, &key).await;
    // Still failing, not hanging, after the reconnection attempts have backed off.
    tokio::time::sleep(Duration::from_secs(2)).await;
    every_operation_fails_in_time(&store, &key).await;

    server.restart().expect("the server restarts on its port");
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        match store
            .save(&key, "owner-2", Some(Duration::from_secs(30)))
            .await
        {
            Ok(outcome) => break outcome,
            Err(error) if Instant::now() < deadline => {
                assert!(matches!(error, Error::Storage { .. }), "{error:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the store did not recover within 10 s: {error:?}"),
        }
    };
    // The restarted server is empty (no persistence), so the key is free again.
    assert!(matches!(outcome, Acquisition::Granted(_)));
    // Scripts work although the new server's script cache is empty.
    assert_eq!(
        store.extend(&key, "owner-2", SHORT).await.unwrap(),
        OwnerCheck::Applied
    );
    assert_eq!(
        store.delete(&key, "owner-2").await.unwrap(),
        OwnerCheck::Applied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_during_a_short_outage_waits_for_the_reconnection() {
    let mut server = RedisServer::start().expect("a private redis-server");
    let store = connect(&server.url(), |config| {
        config.command_timeout = Duration::from_secs(10);
    })
    .await;
    let key = unique_key("short-outage");
    assert!(!store.exists(&key).await.unwrap());

    server.stop();
    // Let the client see its connection close, so the call waits for the reconnection
    // instead of being written to the dead socket.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        server.restart().expect("the server restarts on its port");
        server
    });
    let started = Instant::now();
    let outcome = store
        .save(&key, "owner-1", Some(Duration::from_secs(30)))
        .await;
    let _server = restart.await.unwrap();
    assert!(
        matches!(outcome, Ok(Acquisition::Granted(_))),
        "{outcome:?} after {:?}",
        started.elapsed()
    );
}

/// How many clients the server at `url` has, not counting the one asking.
async fn other_clients(url: &str) -> usize {
    let raw = raw_client(url).await;
    let list: Value = raw
        .custom(
            CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
            vec!["LIST"],
        )
        .await
        .unwrap();
    let list = list.as_string().unwrap_or_default();
    let _ = raw.quit().await;
    list.lines().count() - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_connected_store_closes_its_connections() {
    let server = RedisServer::start().expect("a private redis-server");
    let url = server.url();
    let store = connect(&url, |config| config.pool_size = 3).await;
    assert_eq!(other_clients(&url).await, 3);

    drop(store);
    let deadline = Instant::now() + Duration::from_secs(5);
    while other_clients(&url).await > 0 {
        assert!(
            Instant::now() < deadline,
            "connections left open after drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The TTL of the guarded lock in the loss test.
const GUARDED_TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_fires_the_loss_signal_before_the_ttl_runs_out_there() {
    let mut server = RedisServer::start().expect("a private redis-server");
    let store = connect(&server.url(), |config| {
        config.command_timeout = Duration::from_secs(5);
    })
    .await;
    let lock = LockFactory::new(store)
        .create_lock_with_ttl(unique_key("loss-on-kill"), GUARDED_TTL)
        .unwrap();

    // The server starts the TTL when it runs the take, which is after this instant: the
    // key cannot be free for someone else there before `requested + GUARDED_TTL`.
    let requested = Instant::now();
    let mut guard = lock
        .acquire_guard_immediately()
        .await
        .unwrap()
        .expect("a free key");
    let acquired = requested.elapsed();
    guard.auto_extend();
    let loss = guard.loss();

    // The guarded work runs a moment, then the server is killed (before the first renewal,
    // due a third of the TTL after the acquisition).
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop();
    let killed = requested.elapsed();

    tokio::time::timeout(GUARDED_TTL * 3, loss.lost())
        .await
        .expect("the loss signal fires once the lock's time is up");
    let fired = requested.elapsed();
    assert!(
        fired < GUARDED_TTL,
        "the loss signal fired {fired:?} after the take was sent (granted after {acquired:?}, \
         server killed at {killed:?}); by then the TTL of {GUARDED_TTL:?} may have run out on the \
         server, and another holder may have the key"
    );
}

/// A store belongs to the Tokio runtime it connected on, where fred runs its connections:
/// once that runtime has shut down, its calls on another runtime fail at once with
/// `Error::Storage`; none waits for its timeout, none panics, and neither does dropping it.
#[test]
fn a_store_whose_runtime_shut_down_fails_its_calls_at_once() {
    let runtime = || tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let key = unique_key("runtime");
    let first = runtime();
    let store = first.block_on(connect(&verrou_testkit::redis_url(), |_| {}));
    drop(first);
    runtime().block_on(async {
        let started = Instant::now();
        assert_storage_error(store.save(&key, "owner", None).await, "take");
        assert_storage_error(store.exists(&key).await, "exists");
        assert!(started.elapsed() < SHORT, "{:?}", started.elapsed());
        drop(store);
    });
}
