//! Every store operation is one statement: the server's statement log shows exactly one
//! execution naming the key per call, through a lock as through the store itself.

mod common;

use std::time::{Duration, Instant};

use common::{private_server_logging_every_statement, statements_naming, unique};
use verrou_core::{Acquisition, LockFactory, LockStore, Place};
use verrou_postgres::{PostgresConfig, PostgresStore};
use verrou_testkit::PostgresServer;

/// The statements a private server logged, from byte `from` on, naming `key`.
struct Log<'a> {
    server: &'a PostgresServer,
    from: usize,
    key: &'a str,
}

impl Log<'_> {
    /// Waits until the log shows `expected` statements naming the key, then a moment more,
    /// and checks that no more came: one per call so far, the last `operation`.
    async fn statements(&self, expected: usize, operation: &str) {
        let logged = || statements_naming(&self.server.log_contents(), self.from, self.key);
        let deadline = Instant::now() + Duration::from_secs(10);
        while logged() < expected {
            assert!(
                Instant::now() < deadline,
                "{operation}: fewer statements logged than calls"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(logged(), expected, "{operation}: more than one statement");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_is_one_statement() {
    let server = private_server_logging_every_statement().await;
    let url = server.url();
    let store = PostgresStore::connect(PostgresConfig::new(&url))
        .await
        .expect("store");
    let factory = LockFactory::new(store.clone());
    // Statements are prepared on first use: warm the pool on another key.
    let warm = factory.create_lock(unique("warm")).expect("valid key");
    assert!(warm.acquire_immediately().await.expect("acquire"));
    warm.release().await.expect("release");
    let from = server.log_contents().len();

    let key = unique("one-statement");
    let lock = factory.create_lock(&key).expect("valid key");
    let log = Log {
        server: &server,
        from,
        key: &key,
    };
    assert!(lock.acquire_immediately().await.expect("acquire"));
    log.statements(1, "acquire_immediately").await;
    assert!(lock.is_locked().await.expect("is_locked"));
    log.statements(2, "is_locked").await;
    lock.extend().await.expect("extend");
    log.statements(3, "extend").await;
    lock.release().await.expect("release");
    log.statements(4, "release").await;

    let holder = store.save(&key, "holder", None).await.expect("take");
    assert!(matches!(holder, Acquisition::Granted(_)));
    log.statements(5, "save").await;
    let place = Place {
        waiter: "waiter",
        lease: Duration::from_secs(60),
    };
    let waiting = store.save_in_line(&key, "waiter-owner", None, place);
    assert_eq!(waiting.await.expect("take in line"), Acquisition::Busy);
    log.statements(6, "save_in_line").await;
    store.leave_line(&key, "waiter").await.expect("leave");
    log.statements(7, "leave_line").await;
    lock.force_release().await.expect("force release");
    log.statements(8, "force_release").await;
}
