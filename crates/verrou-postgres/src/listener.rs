//! The listener: one connection per store, outside the pool, that `LISTEN`s on the table's
//! channel, holds the advisory locks of the keys this store's waiters wait for, and wakes
//! them when it hears a release (see `watch.rs` for the bookkeeping).
//!
//! It runs as a background task from the store's creation until its last clone is dropped.
//! When its connection fails it says so once, marks every key for registration, and
//! reconnects with a growing pause (up to [`MAX_PAUSE`]); back on line it `LISTEN`s again,
//! registers the keys again and wakes the waiters of keys released meanwhile. A connection
//! that goes silent (a network partition) is found by a ping every [`PING_EVERY`]. Lock
//! operations never depend on it: while it is down, waiters poll at their retry delay.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::tokio_postgres::types::ToSql;
use deadpool_postgres::tokio_postgres::{AsyncMessage, Client, Row, Statement, ToStatement};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use verrou_core::BoxError;

use crate::announce::parse_payload;
use crate::connector::{Connect, Messages};
use crate::sql::Statements;
use crate::watch::Watches;

/// The first pause before reconnecting; it doubles after each failure.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between reconnection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// How often keys whose registration was refused are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How often the connection is checked when nothing else travels on it.
const PING_EVERY: Duration = Duration::from_secs(15);

/// The running listener of a store; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Listener {
    _task: Background<()>,
}

/// What the listener needs to do its work.
pub(crate) struct Setup {
    /// Opens its connection.
    pub(crate) connect: Connect,
    /// The keys to register and the waiters to wake.
    pub(crate) watches: Arc<Watches>,
    /// `listen`, `register`, `probe` and `unregister`.
    pub(crate) statements: Arc<Statements>,
    /// The bound on each statement it runs.
    pub(crate) timeout: Duration,
}

impl Listener {
    /// Starts listening in the background, on the current Tokio runtime.
    pub(crate) fn start(setup: Setup) -> Self {
        Self {
            _task: Background(tokio::spawn(supervise(setup))),
        }
    }
}

/// A task aborted when dropped.
#[derive(Debug)]
struct Background<T>(JoinHandle<T>);

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects, serves, and reconnects, for ever.
async fn supervise(setup: Setup) {
    let mut pause = FIRST_PAUSE;
    let mut down = false;
    loop {
        let why = match (setup.connect)().await {
            Ok((client, messages)) => {
                if down {
                    tracing::info!("verrou: PostgreSQL listener connected again");
                }
                down = false;
                pause = FIRST_PAUSE;
                serve(&setup, &client, messages).await
            }
            Err(error) => error,
        };
        if down {
            tracing::debug!(error = %why, "verrou: PostgreSQL listener still not connected");
        } else {
            tracing::warn!(
                error = %why,
                "verrou: PostgreSQL listener not connected; waiters poll at their retry delay \
                 until it is"
            );
        }
        down = true;
        setup.watches.disconnected();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Listens on one connection until it fails; returns why.
async fn serve(setup: &Setup, client: &Client, messages: Messages) -> BoxError {
    let mut delivering = Background(tokio::spawn(deliver(messages, Arc::clone(&setup.watches))));
    let session = match Session::start(setup, client).await {
        Ok(session) => session,
        Err(error) => return error,
    };
    let mut tick = tokio::time::interval(RETRY_EVERY);
    let mut last_ping = Instant::now();
    loop {
        if let Err(error) = session.sync().await {
            return error;
        }
        tokio::select! {
            () = setup.watches.work() => {}
            _ = tick.tick() => {
                setup.watches.retry_refused();
                if last_ping.elapsed() >= PING_EVERY {
                    if let Err(error) = session.ping().await {
                        return error;
                    }
                    last_ping = Instant::now();
                }
            }
            ended = &mut delivering.0 => {
                return ended.unwrap_or_else(|error| error.into());
            }
        }
    }
}

/// Wakes the waiters of every key announced on the connection, until it ends.
async fn deliver(mut messages: Messages, watches: Arc<Watches>) -> BoxError {
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(notification)) => {
                if let Some(id) = parse_payload(notification.payload()) {
                    watches.released(id);
                }
            }
            Ok(_) => {}
            Err(error) => return error.into(),
        }
    }
    "the server closed the connection".into()
}

/// The listener's statements on its connection, each within the command timeout.
struct Session<'a> {
    setup: &'a Setup,
    client: &'a Client,
    register: Statement,
    probe: Statement,
    unregister: Statement,
}

impl<'a> Session<'a> {
    /// Subscribes to the table's channel and prepares the statements.
    async fn start(setup: &'a Setup, client: &'a Client) -> Result<Self, BoxError> {
        let statements = &setup.statements;
        within(setup.timeout, client.batch_execute(&statements.listen)).await?;
        let prepare = |sql| within(setup.timeout, client.prepare(sql));
        Ok(Self {
            setup,
            client,
            register: prepare(&statements.register).await?,
            probe: prepare(&statements.probe).await?,
            unregister: prepare(&statements.unregister).await?,
        })
    }

    /// Gives back the advisory locks no longer needed, then takes those of newly watched
    /// keys and wakes the waiters of those already free.
    async fn sync(&self) -> Result<(), BoxError> {
        let watches = &self.setup.watches;
        let unlocks = watches.take_unlocks();
        if !unlocks.is_empty() {
            self.query(&self.unregister, &[&unlocks]).await?;
        }
        let wanted = watches.take_wanted();
        if wanted.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = wanted.iter().map(|key| key.id).collect();
        let outcomes = self
            .query(&self.register, &[&ids])
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<(i64, bool)>, BoxError>>()?;
        watches.registered(&outcomes);
        let (ids, keys): (Vec<i64>, Vec<&str>) = wanted
            .iter()
            .filter(|key| outcomes.contains(&(key.id, true)))
            .map(|key| (key.id, key.key.as_str()))
            .unzip();
        if ids.is_empty() {
            return Ok(());
        }
        for row in self.query(&self.probe, &[&ids, &keys]).await? {
            watches.released(row.try_get(0)?);
        }
        Ok(())
    }

    /// Checks that the server still answers.
    async fn ping(&self) -> Result<(), BoxError> {
        within(self.setup.timeout, self.client.batch_execute("SELECT 1")).await
    }

    async fn query<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, BoxError>
    where
        T: ToStatement + ?Sized,
    {
        within(self.setup.timeout, self.client.query(statement, params)).await
    }
}

/// Runs `request`, failing if it fails or takes longer than `timeout`.
async fn within<T, E>(
    timeout: Duration,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BoxError>
where
    E: Into<BoxError>,
{
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(Into::into)
}
