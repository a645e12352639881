//! Helpers shared by the test files; each file uses a subset of them.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;
use verrou_core::{Acquisition, Error, Lock, LockFactory, Retry};
use verrou_postgres::tokio_postgres::{AsyncMessage, Client, NoTls, Transaction};
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

/// The message of an `InvalidConfig` error, or a panic naming what came instead.
pub(crate) fn invalid_config<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::InvalidConfig(message)) => message,
        other => panic!("expected Error::InvalidConfig, got {other:?}"),
    }
}

/// An error and all its sources, one per line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}\n{cause}");
        source = cause.source();
    }
    text
}

/// A PostgreSQL server of the test's own, to stop, restart or read the log of.
pub(crate) fn private_server() -> PostgresServer {
    PostgresServer::start().expect("a private PostgreSQL server (see verrou-testkit)")
}

/// The configuration of a store on the shared test server, on `table`.
pub(crate) fn config(table: &str) -> PostgresConfig {
    let mut config = PostgresConfig::new(verrou_testkit::postgres_url());
    config.table = table.to_owned();
    config
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

/// A private server that logs every statement, for the tests that read what a store sends.
pub(crate) async fn private_server_logging_every_statement() -> PostgresServer {
    let server = private_server();
    let admin = client(&server.url()).await;
    for setting in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        admin
            .batch_execute(setting)
            .await
            .expect("log every statement");
    }
    server
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

/// How many statements a server log (of `log_every_statement`) shows from byte `from` on
/// with parameters naming `key`.
pub(crate) fn statements_naming(log: &str, from: usize, key: &str) -> usize {
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("parameters:") && line.contains(key))
        .count()
}

/// The `WARNING` lines of a server log.
pub(crate) fn warning_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("WARNING:"))
        .collect()
}

/// The port in a `postgres://postgres@127.0.0.1:PORT/postgres` URL (the testkit's).
pub(crate) fn port_of(url: &str) -> u16 {
    let (_, rest) = url.rsplit_once("127.0.0.1:").expect("a testkit URL");
    rest.split('/')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a port")
}

/// The fencing token of a grant, or a panic saying what came instead.
pub(crate) fn token(acquisition: Acquisition) -> u64 {
    match acquisition {
        Acquisition::Granted(grant) => grant.fencing_token.expect("the store issues tokens"),
        other => panic!("the key should be free, got {other:?}"),
    }
}

/// Without a wake-up, the waiters of a [`patient`] factory would wait this long.
pub(crate) const RETRY_DELAY: &str = "1h";

/// A factory whose waiters retry only every hour: a waiter that gets its lock soon was
/// woken.
pub(crate) fn patient(store: PostgresStore) -> LockFactory {
    LockFactory::new(store)
        .with_retry(Retry::new().delay(RETRY_DELAY))
        .expect("valid retry options")
}

/// Starts `waiter.acquire()`, and returns once it has asked the store, failed and is
/// waiting.
pub(crate) async fn start_waiting(waiter: Lock) -> JoinHandle<(bool, Instant)> {
    let task = tokio::spawn(async move {
        let acquired = waiter.acquire().await.expect("acquire");
        (acquired, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "the waiter got a held lock");
    task
}

/// How long after `released_at` the waiter got the lock.
pub(crate) async fn acquired_after(
    task: JoinHandle<(bool, Instant)>,
    released_at: Instant,
) -> Duration {
    let (acquired, at) = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the waiter was not woken")
        .expect("waiter task");
    assert!(acquired);
    at.saturating_duration_since(released_at)
}

/// A row of a key that a test locks behind a store's back.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Row {
    /// The key's lock row, in the lock table.
    Lock,
    /// The key's semaphore row, in the shares table.
    Semaphore,
}

/// A transaction of `admin` that has `row` of `key` (of the store on `table`) locked until
/// it ends.
pub(crate) async fn row_locked<'admin>(
    admin: &'admin mut Client,
    table: &str,
    row: Row,
    key: &str,
) -> Transaction<'admin> {
    let lock_row = match row {
        Row::Lock => format!("SELECT 1 FROM \"{table}\" WHERE \"key\" = $1 FOR UPDATE"),
        Row::Semaphore => format!(
            "SELECT 1 FROM \"{table}_shares\" WHERE \"family\" = 'semaphore' \
             AND \"key\" = $1 FOR UPDATE"
        ),
    };
    let transaction = admin.transaction().await.expect("a transaction");
    transaction
        .execute(&lock_row, &[&key])
        .await
        .expect("the row locked");
    transaction
}

/// How long after its release a held lock (or share) of a fresh key in `table`, made by
/// `create`, went to a waiter whose take the release waited for: a transaction holds the
/// key's `row` while the waiter's take (the first of the key's line) and then the release
/// queue for it, so the release reads the line as it was before
/// the waiter's place was committed. The waiter's store already watched the key (an earlier
/// waiter gave up), so joining brings no fresh look at the key either.
pub(crate) async fn missed_first_waiter(
    table: &str,
    row: Row,
    create: impl Fn(&LockFactory, &str) -> Result<Lock, Error>,
) -> Duration {
    let key = unique("key");
    let holder = create(&LockFactory::new(store(table).await), &key).expect("key");
    assert!(holder.acquire().await.expect("acquire"));
    let waiters = patient(store(table).await);
    let early = create(&waiters, &key).expect("key");
    let gave_up = early.acquire_with(Retry::new().timeout("200ms")).await;
    assert!(!gave_up.expect("acquire"), "the key is held");

    let mut admin = client(&verrou_testkit::postgres_url()).await;
    let transaction = row_locked(&mut admin, table, row, &key).await;
    let waiting = start_waiting(create(&waiters, &key).expect("key")).await;
    let releasing = tokio::spawn(async move { holder.release().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    transaction.commit().await.expect("commit");
    releasing
        .await
        .expect("release task")
        .expect("the release applies");
    acquired_after(waiting, Instant::now()).await
}

/// The places in the waiting line of `key` in `table`'s line, front first: each waiter's id
/// (its name in the line without its store's id, see [`names_in_line`]) and how many
/// milliseconds its place has left on the server's clock.
pub(crate) async fn places(client: &Client, table: &str, key: &str) -> Vec<(String, i64)> {
    names_in_line(client, table, key)
        .await
        .into_iter()
        .map(|(name, left)| (waiter_id(&name).to_owned(), left))
        .collect()
}

/// The waiter id in a waiter's name in a line, `<store id>.<waiter id>`.
pub(crate) fn waiter_id(name: &str) -> &str {
    name.split_once('.').expect("<store id>.<waiter id>").1
}

/// The places in the waiting line of `key` in `table`'s line, front first: each waiter's
/// name in the line (`<store id>.<waiter id>`) and how many milliseconds its place has left
/// on the server's clock.
pub(crate) async fn names_in_line(client: &Client, table: &str, key: &str) -> Vec<(String, i64)> {
    client
        .query(
            &format!(
                "SELECT waiter, deadline - floor(extract(epoch from clock_timestamp()) * 1000)::bigint \
                 FROM \"{table}_waiters\" WHERE key = $1 ORDER BY arrival, waiter"
            ),
            &[&key],
        )
        .await
        .expect("the line's rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// A connection that `LISTEN`s on a channel, and the payloads it heard.
pub(crate) struct Heard {
    _client: Client,
    /// The payloads, in the order they came.
    pub(crate) payloads: UnboundedReceiver<String>,
}

impl Heard {
    /// The payloads heard within `wait`.
    pub(crate) async fn within(&mut self, wait: Duration) -> Vec<String> {
        let mut heard = Vec::new();
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some(payload)) = tokio::time::timeout_at(until, self.payloads.recv()).await {
            heard.push(payload);
        }
        heard
    }
}

/// A connection to `url` that `LISTEN`s on `channel`.
pub(crate) async fn listen(url: &str, channel: &str) -> Heard {
    let (client, mut connection) = verrou_postgres::tokio_postgres::connect(url, NoTls)
        .await
        .expect("a direct connection to the test server");
    let (sender, payloads) = unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
            if let AsyncMessage::Notification(notification) = message {
                let _ = sender.send(notification.payload().to_owned());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .expect("LISTEN");
    Heard {
        _client: client,
        payloads,
    }
}
