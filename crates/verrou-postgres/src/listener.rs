//! The listener: one connection per store, outside the pool, that `LISTEN`s on the store's
//! channel (see `channel.rs`) and reports every hand-over it hears, each to one of the
//! store's own waiters, to the [`Waiters`](verrou_core::Waiters) board it belongs to (the
//! locks', or a family's: see [`Boards`]).
//!
//! It is the [`ReleaseFeed`] of every board: a newly watched key is checked at once, and
//! woken if it is free, or, for a lock, the waiter it is reserved for is (a release before
//! the waiter's watch began would otherwise go unheard). It runs as a background task from
//! the store's creation until its last clone is dropped; if the Tokio runtime it runs on
//! shuts down first, the next waiter starts it again on its own. It looks again at every key
//! waited for ([`Boards::waited_for`]) each [`RECHECK_EVERY`], the same way: a release that
//! started before the first waiter's place was committed reads the line without it (see the
//! README's limits) and announces nothing, so announcements alone can miss a turn.
//! When its connection fails it says so once and reconnects with a growing pause (up to
//! [`MAX_PAUSE`]); back on line it `LISTEN`s again and wakes the waited-for keys released
//! meanwhile. A connection that goes silent (a network partition) is found by a ping every
//! [`PING_EVERY`]. Lock operations never depend on it: while it is down, waiters poll at
//! their retry delay.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use deadpool_postgres::tokio_postgres::types::ToSql;
use deadpool_postgres::tokio_postgres::{AsyncMessage, Client, Statement};
use futures_util::StreamExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;
use verrou_core::{Backoff, Boards, BoxError, Family, ReleaseFeed, WatchedKey, RECHECK_EVERY};

use crate::channel::{parse_payload, StoreId};
use crate::connector::{Connect, Messages};
use crate::family::{family_name, family_of};
use crate::sql::{Statements, SESSION_SETUP};

/// The first pause before reconnecting; it doubles after each failure.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between reconnection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// How often the connection is checked when nothing else travels on it.
const PING_EVERY: Duration = Duration::from_secs(15);

/// A board's [`ReleaseFeed`]: passes newly watched keys of its family to the listener, to
/// be checked. Every hand-over to the store's waiters is heard anyway, and the board ignores
/// keys it does not watch, so there is nothing to do when a key is no longer watched.
struct Feed {
    /// The listener, while the store lives.
    listener: Weak<Shared>,
    family: Option<Family>,
}

impl ReleaseFeed for Feed {
    /// Queues `key` of this feed's board for the listener to check whether it is free.
    fn subscribe(&self, key: &str) {
        let Some(listener) = self.listener.upgrade() else {
            return;
        };
        let running = listener.running();
        if let Some(running) = &*running {
            // Refused only if the task ended: the next waiter's revive starts another.
            let _ = running.subscriptions.send((self.family, Arc::from(key)));
        }
    }

    /// Nothing to do: hand-overs of keys the board does not watch are ignored there.
    fn unsubscribe(&self, _key: &str) {}

    /// Starts the listener again on this runtime if its task ended with the runtime it ran
    /// on; it then checks every watched key, as after a reconnection.
    fn revive(&self) {
        if let Some(listener) = self.listener.upgrade() {
            listener.run();
        }
    }
}

/// The listener of a store; stopped when dropped.
pub(crate) struct Listener {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Listener")
            .field("running", &self.shared.running().is_some())
            .finish_non_exhaustive()
    }
}

/// What the listener's task is started from, and the task while it runs. The feeds reach it
/// through a weak reference: the task it starts holds the boards, not this.
struct Shared {
    setup: Setup,
    boards: Arc<Boards>,
    running: Mutex<Option<Running>>,
}

/// The listener's task, and where newly watched keys are sent to it.
struct Running {
    /// Closed once the task has ended: it ends only with its runtime (or the store).
    subscriptions: UnboundedSender<WatchedKey>,
    _task: AbortOnDropHandle<()>,
}

impl Shared {
    /// The task while it runs; a panic elsewhere while this was locked left nothing
    /// half-done.
    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the listener's task on the current Tokio runtime, unless it runs.
    fn run(&self) {
        let mut running = self.running();
        if let Some(task) = &*running {
            if !task.subscriptions.is_closed() {
                return;
            }
            tracing::info!(
                "verrou: PostgreSQL listener started again: the Tokio runtime it ran on has \
                 shut down"
            );
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (subscriptions, subscribed) = unbounded_channel();
        let task = runtime.spawn(supervise(
            self.setup.clone(),
            Arc::clone(&self.boards),
            subscribed,
        ));
        *running = Some(Running {
            subscriptions,
            _task: AbortOnDropHandle::new(task),
        });
    }
}

/// What the listener needs to do its work.
#[derive(Clone)]
pub(crate) struct Setup {
    /// Opens its connection.
    pub(crate) connect: Connect,
    /// The store's id: the channel to `LISTEN` on, and which waiters in line are its own.
    pub(crate) id: StoreId,
    /// The probes.
    pub(crate) statements: Arc<Statements>,
    /// The bound on each statement it runs.
    pub(crate) timeout: Duration,
}

impl Listener {
    /// Starts listening in the background, on the current Tokio runtime, for the boards it
    /// returns, whose feed it is.
    pub(crate) fn start(setup: Setup) -> (Self, Arc<Boards>) {
        let shared = Arc::new_cyclic(|listener: &Weak<Shared>| Shared {
            setup,
            boards: Arc::new(Boards::new(|family| Feed {
                listener: listener.clone(),
                family,
            })),
            running: Mutex::new(None),
        });
        shared.run();
        let boards = Arc::clone(&shared.boards);
        (Self { shared }, boards)
    }
}

/// Connects, serves, and reconnects, for ever.
async fn supervise(
    setup: Setup,
    boards: Arc<Boards>,
    mut subscribed: UnboundedReceiver<WatchedKey>,
) {
    let mut backoff = Backoff::new(FIRST_PAUSE, MAX_PAUSE);
    let mut down = false;
    loop {
        let why = match (setup.connect)().await {
            Ok((client, messages)) => {
                if down {
                    tracing::info!("verrou: PostgreSQL listener connected again");
                }
                down = false;
                backoff.reset();
                let session = Session {
                    setup: &setup,
                    boards: &boards,
                    client: &client,
                };
                session.serve(messages, &mut subscribed).await
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
        tokio::time::sleep(backoff.next_pause()).await;
    }
}

/// The listener on one connection.
struct Session<'a> {
    /// The statements and their timeout.
    setup: &'a Setup,
    /// Where hand-overs and free keys are reported.
    boards: &'a Arc<Boards>,
    /// The connection.
    client: &'a Client,
}

impl Session<'_> {
    /// Listens until the connection fails; returns why.
    async fn serve(
        &self,
        messages: Messages,
        subscribed: &mut UnboundedReceiver<WatchedKey>,
    ) -> BoxError {
        let mut delivering = AbortOnDropHandle::new(tokio::spawn(deliver(
            messages,
            self.setup.id.clone(),
            Arc::clone(self.boards),
        )));
        let probes = match self.start().await {
            Ok(probes) => probes,
            Err(error) => return error,
        };
        // Every key watched now is checked once: those queued meanwhile among them.
        while subscribed.try_recv().is_ok() {}
        let mut keys = self.boards.watched();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let mut recheck = tokio::time::interval(RECHECK_EVERY);
        recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
        recheck.reset();
        loop {
            if !keys.is_empty() {
                if let Err(error) = self.wake_free(&probes, &keys).await {
                    return error;
                }
                keys.clear();
            }
            tokio::select! {
                // Never closed: the board, whose feed sends, lives as long as this task.
                _ = subscribed.recv_many(&mut keys, usize::MAX) => {}
                _ = recheck.tick() => keys = self.boards.watched(),
                _ = ping.tick() => {
                    if let Err(error) = within(self.setup.timeout, self.client.batch_execute("SELECT 1")).await {
                        return error;
                    }
                }
                ended = &mut delivering => {
                    return ended.unwrap_or_else(|error| error.into());
                }
            }
        }
    }

    /// Sets the session up as the pool's are ([`SESSION_SETUP`]: its probes find keys
    /// through the index too) and subscribes to the store's channel; returns the prepared
    /// probes.
    async fn start(&self) -> Result<Probes, BoxError> {
        let statements = &self.setup.statements;
        let listen = format!("{SESSION_SETUP}; LISTEN \"{}\"", self.setup.id.channel());
        within(self.setup.timeout, self.client.batch_execute(&listen)).await?;
        Ok(Probes {
            locks: within(self.setup.timeout, self.client.prepare(&statements.probe)).await?,
            shares: within(
                self.setup.timeout,
                self.client.prepare(&statements.shares.probe),
            )
            .await?,
        })
    }

    /// Wakes the waiters of those of `keys` that are free now and still waited for here
    /// ([`Boards::waited_for`]), one query per board: all of them, or the one a lock's key
    /// is reserved for, or the front of the line of a share someone holds (it asks whether
    /// its share fits; those behind it would ask in vain while it does not).
    async fn wake_free(&self, probes: &Probes, keys: &[WatchedKey]) -> Result<(), BoxError> {
        let keys = self.boards.waited_for(keys.iter().cloned());
        for family in Boards::FAMILIES {
            let of_board: Vec<&str> = keys
                .iter()
                .filter(|(of, _)| *of == family)
                .map(|(_, key)| &**key)
                .collect();
            if of_board.is_empty() {
                continue;
            }
            let rows = match family {
                None => {
                    within(
                        self.setup.timeout,
                        self.client.query(&probes.locks, &[&of_board]),
                    )
                    .await?
                }
                Some(family) => {
                    let family = family_name(family)?;
                    let params: [&(dyn ToSql + Sync); 2] = [&of_board, &family];
                    within(
                        self.setup.timeout,
                        self.client.query(&probes.shares, &params),
                    )
                    .await?
                }
            };
            for row in rows {
                let key: &str = row.try_get(0)?;
                let board = self.boards.of(family);
                match row.try_get::<_, Option<&str>>(1)? {
                    None => board.wake(key, None),
                    Some(in_line) => {
                        // Another store's waiter is woken by its own listener.
                        if let Some(waiter) = self.setup.id.own(in_line) {
                            board.wake(key, Some(waiter));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The prepared statements that find free keys: the locks', and the shares' (per family).
struct Probes {
    locks: Statement,
    shares: Statement,
}

/// Reports every hand-over to a waiter of store `id` announced on the connection to its
/// board, until the connection ends.
async fn deliver(mut messages: Messages, id: StoreId, boards: Arc<Boards>) -> BoxError {
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(notification)) => {
                let Some((line_key, in_line)) = parse_payload(notification.payload()) else {
                    continue;
                };
                if let Some(waiter) = id.own(in_line) {
                    let (family, key) = family_of(line_key);
                    boards.of(family).wake(key, Some(waiter));
                }
            }
            Ok(_) => {}
            Err(error) => return error.into(),
        }
    }
    "the server closed the connection".into()
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
