//! The store's [`ReleaseFeed`]: one subscriber connection per store, opened at the first
//! wait (on the runtime the store was made on), that hears the hand-overs of the keys its
//! waiters watch (`SSUBSCRIBE` to their release channels, see [`crate::slots`]) and reports
//! them to the store's [`Waiters`](verrou_core::Waiters) boards (one for locks, one per
//! family of shares: [`Boards`]), which decide what is watched and for how long. Every
//! [`RECHECK_EVERY`] it looks again at the keys waited for (see [`Task::recheck`]); polling
//! at the retry delay stays the safety net for anything missed while the server does not
//! answer.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use fred::bytes_utils::Str;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::Options;
use fred::types::{Builder, Message, Value};
use futures_util::future::join_all;
use tokio::runtime::Handle;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::{MissedTickBehavior, Sleep};
use verrou_core::{Backoff, Boards, Family, ReleaseFeed, WatchedKey, RECHECK_EVERY};

use crate::connection::Connection;
use crate::gate::Gate;
use crate::moved_slots;
use crate::scripts::NEXT_TAKER;
use crate::slots::{self, Slot};

/// Messages that may queue between the connection and the task before the oldest are
/// dropped (then the waiters of every free watched key are woken, since a hand-over may
/// have been among them).
const MESSAGE_BUFFER: usize = 1024;

/// The pause before subscriptions that failed (the connection was not ready or went down, or
/// the server refused them) are made again; it doubles after each try that fails too, up to
/// [`LONGEST_RESUBSCRIBE_PAUSE`].
const FIRST_RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause before subscriptions that failed are made again.
const LONGEST_RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(5);

/// A key to start (`true`) or stop hearing, for the subscriber task.
type Change = (WatchedKey, bool);

/// The way to a store's subscriber task, which the first subscription starts, shared by the
/// feeds of its boards.
struct Subscriber {
    changes: UnboundedSender<Change>,
    /// The Tokio runtime the store was made on, where its connections run: the task runs
    /// there too, so that it lives as long as they do, whatever runtime the first waiter
    /// is on (one that shuts down sooner would take the task with it). Without one, the
    /// first waiter's.
    home: Option<Handle>,
    /// The task until it is started; `None` once started, or if it could not be built
    /// (waiters then poll).
    unstarted: Mutex<Option<(Task, UnboundedReceiver<Change>)>>,
}

/// The feed of one board of a store.
pub(crate) struct Feed {
    /// The board's family (`None`: plain locks).
    family: Option<Family>,
    subscriber: Arc<Subscriber>,
}

impl Feed {
    /// The boards of a store on `connection` (commands with `options`) whose releases carry
    /// `id` and whose Redis keys start with `key_prefix`, fed by a subscriber of its own.
    pub(crate) fn boards(
        connection: Arc<Connection>,
        options: Options,
        id: Str,
        key_prefix: &str,
    ) -> Arc<Boards> {
        let client = subscriber_like(&connection.client());
        if let Err(error) = &client {
            tracing::warn!(%error, "cannot build the lock release subscriber; waiters will poll");
        }
        let key_prefix = Arc::from(key_prefix);
        let (changes, receiver) = mpsc::unbounded_channel();
        Arc::new_cyclic(|boards| {
            let task = client.ok().map(|client| Task {
                client,
                own: Options {
                    timeout: options.timeout,
                    // Not connected: fail now; everything is subscribed again on connection.
                    fail_fast: true,
                    ..Options::default()
                },
                connection,
                options,
                id,
                key_prefix,
                boards: Weak::clone(boards),
                warned: false,
            });
            let subscriber = Arc::new(Subscriber {
                changes,
                home: Handle::try_current().ok(),
                unstarted: Mutex::new(task.map(|task| (task, receiver))),
            });
            Boards::new(|family| Feed {
                family,
                subscriber: Arc::clone(&subscriber),
            })
        })
    }
}

impl Subscriber {
    /// Hands `change` to the subscriber task, starting it if this is the first one.
    fn send(&self, change: Change) {
        let start = self
            .unstarted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((task, receiver)) = start {
            match &self.home {
                Some(home) => home.spawn(task.run(receiver)),
                None => tokio::spawn(task.run(receiver)),
            };
        }
        // Only fails if the task is gone or was never built; waiters then poll.
        let _ = self.changes.send(change);
    }
}

impl ReleaseFeed for Feed {
    fn subscribe(&self, key: &str) {
        self.subscriber.send(((self.family, Arc::from(key)), true));
    }

    fn unsubscribe(&self, key: &str) {
        self.subscriber.send(((self.family, Arc::from(key)), false));
    }
}

/// A new, unconnected client configured like `template` (server, credentials, TLS,
/// timeouts), reconnecting forever whatever the template's policy, since waiters rely on it
/// coming back.
fn subscriber_like(template: &Client) -> Result<Client, FredError> {
    let mut builder = Builder::from_config(template.client_config());
    builder
        .set_connection_config(template.connection_config().clone())
        .set_performance_config(template.perf_config())
        .set_policy(crate::config::reconnect_policy())
        // Keep trying when the server is down at first, too.
        .with_config(|config| config.fail_fast = false)
        .with_performance_config(|performance| {
            performance.broadcast_channel_capacity =
                performance.broadcast_channel_capacity.max(MESSAGE_BUFFER);
        });
    builder.build()
}

/// The subscriber task.
struct Task {
    /// The subscriber connection.
    client: Client,
    /// The options of its own commands.
    own: Options,
    /// The store's connection, where the task asks who may take a key.
    connection: Arc<Connection>,
    /// The store's command options.
    options: Options,
    /// The store's id, which names the wake-ups of its catch-ups (see
    /// [`NEXT_TAKER`]) so that it ignores them.
    id: Str,
    /// Put before lock keys to make Redis keys.
    key_prefix: Arc<str>,
    /// The boards to report to; gone with the store.
    boards: Weak<Boards>,
    /// Whether a refused subscription was reported at warning level already.
    warned: bool,
}

impl Task {
    /// Follows the changes of the watched keys and reports what it hears, subscribing again
    /// after every (re)connection, until the store's boards are dropped. A subscription
    /// that fails is made again after a pause (doubling up to
    /// [`LONGEST_RESUBSCRIBE_PAUSE`]) while its key is watched: fred reports a reconnection
    /// (to each node, on Redis Cluster) before it counts the client as connected, and
    /// refuses commands until then, so the subscriptions made at once may fail with no later
    /// reconnection to make them again; and a server that refused one (an ACL without the
    /// channel) may allow it once an operator fixes the rights.
    async fn run(mut self, mut changes: UnboundedReceiver<Change>) {
        // Listen before connecting, so that neither the first connection nor a message is
        // missed.
        let mut messages = self.client.message_rx();
        let mut connections = self.client.reconnect_rx();
        let _connection = self.client.connect();
        let mut failed = Failed::default();
        let clustered = self.client.is_clustered();
        let mut recheck = tokio::time::interval(RECHECK_EVERY);
        recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
        recheck.reset();
        let mut slots_moved = moved_slots::watch(
            self.client.clone(),
            Arc::clone(&self.connection),
            self.options.clone(),
            Weak::clone(&self.boards),
        );
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some((watched_key, true)) => {
                        let failures = self.subscribe_all(vec![watched_key]).await;
                        failed.add(failures);
                    }
                    Some((watched_key, false)) => {
                        // On failure the connection is down, and the next starts without it.
                        let channel = self.channel(&watched_key);
                        let _ = self.client.with_options(&self.own).sunsubscribe(channel).await;
                    }
                    None => break,
                },
                message = messages.recv() => match message {
                    Ok(message) => self.heard(&message),
                    Err(RecvError::Lagged(_)) => self.wake_if_free(self.watched()).await,
                    Err(RecvError::Closed) => break,
                },
                connected = connections.recv() => match connected {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        let failures = self.subscribe_all(self.watched()).await;
                        failed.start_over(failures);
                    }
                    Err(RecvError::Closed) => break,
                },
                Some(()) = slots_moved.recv(), if clustered => {
                    let failures = self.subscribe_all(self.watched()).await;
                    failed.start_over(failures);
                }
                _ = recheck.tick() => self.recheck().await,
                () = failed.due(), if failed.any() => {
                    let watched = self.watched();
                    let again = failed.take(|watched_key| watched.contains(watched_key));
                    let failures = self.subscribe_all(again).await;
                    failed.tried_again(failures);
                }
            }
        }
        // Nothing to do if it fails: the connection is unusable either way.
        let _ = self.client.quit().await;
    }

    /// Subscribes to the hand-overs of `watched_keys`, then looks for those missed before
    /// (see [`wake_if_free`](Self::wake_if_free)) on the keys subscribed. Returns the keys
    /// whose subscription failed.
    async fn subscribe_all(&mut self, watched_keys: Vec<WatchedKey>) -> Vec<WatchedKey> {
        let mut subscribed = Vec::with_capacity(watched_keys.len());
        let mut failed = Vec::new();
        for watched_key in watched_keys {
            if self.subscribe(&watched_key).await {
                subscribed.push(watched_key);
            } else {
                failed.push(watched_key);
            }
        }
        self.wake_if_free(subscribed).await;
        failed
    }

    /// Looks again at every key waited for, as after subscribing to it, for a turn nobody
    /// announced: a front that let its hand-over window pass, then left the line or was
    /// passed by a script that woke nobody (a late `LEAVE_LINE`, a read-write lock's writer
    /// front that lapsed before readers who could go), a catch-up that named a waiter of
    /// another store whose subscriber was down, or one the server did not answer.
    async fn recheck(&self) {
        let watched = self.watched();
        if !watched.is_empty() {
            self.wake_if_free(watched).await;
        }
    }

    /// Reports a hand-over `message` (`:WAITER`, or `STORE:WAITER` from a catch-up) to the
    /// board of its channel's family, unless this store's catch-up published it (it wakes
    /// all its waiters of the key itself). A message without a waiter wakes every waiter of
    /// the key.
    fn heard(&self, message: &Message) {
        let (Some(boards), Some(text)) = (self.boards.upgrade(), message.value.as_str()) else {
            return;
        };
        let (store, waiter) = text
            .split_once(':')
            .map_or((&*text, None), |(store, waiter)| (store, Some(waiter)));
        let released = slots::released_key(&message.channel)
            .and_then(|(family, key)| Some((family, key.strip_prefix(&*self.key_prefix)?)));
        if let Some((family, key)) = released.filter(|_| store != &*self.id) {
            boards.of(family).wake(key, waiter);
        }
    }

    /// The keys the boards watch now.
    fn watched(&self) -> Vec<WatchedKey> {
        self.boards
            .upgrade()
            .map(|boards| boards.watched())
            .unwrap_or_default()
    }

    /// The Redis key of lock `key`.
    fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// The release channel of a watched key.
    fn channel(&self, (family, key): &WatchedKey) -> String {
        let key = self.redis_key(key);
        Slot::of(&key).family_release_channel(*family, &key)
    }

    /// Subscribes to a key's hand-overs; whether the server confirmed.
    async fn subscribe(&mut self, watched_key: &WatchedKey) -> bool {
        let channel = self.channel(watched_key);
        let subscribed = self
            .client
            .with_options(&self.own)
            .ssubscribe(channel)
            .await;
        let Err(error) = subscribed else {
            return true;
        };
        if is_refusal(&error) && !self.warned {
            // A server before Redis 7, an ACL without the channel.
            self.warned = true;
            tracing::warn!(%error, "cannot subscribe to lock release channels (needs Redis 7 and, with ACLs, `&verrou:released:*`); waiters will poll");
        } else {
            tracing::debug!(%error, "subscription to a lock release channel failed; it is made again after a pause");
        }
        false
    }

    /// Wakes the waiter that may take each of `watched_keys` now, if it is free and still
    /// waited for here ([`Boards::waited_for`]), since a hand-over (or an expiry) may have
    /// gone unheard: the front waiter of its line (nobody here if it waits elsewhere), or
    /// every waiter here if nobody is in line, or if the front is behind lapsed places (then
    /// [`NEXT_TAKER`] wakes it wherever it waits). A key nobody holds is handed over to its
    /// front by [`NEXT_TAKER`] itself, as a refused take would: a front that is gone is
    /// passed a window later.
    /// Asked after the subscription, so that a release is either heard or seen here. The
    /// waiters of a key the server did not answer about are left to the next
    /// [`recheck`](Self::recheck): woken, they would ask it, and fail, at once.
    async fn wake_if_free(&self, watched_keys: impl IntoIterator<Item = WatchedKey>) {
        let Some(boards) = self.boards.upgrade() else {
            return;
        };
        let client = self.connection.with_options(&self.options);
        let asked = boards
            .waited_for(watched_keys)
            .into_iter()
            .map(|watched_key| self.next_taker(&client, watched_key));
        // All at once: a slow node delays the others' answers, and the messages heard
        // meanwhile, by one command timeout at most.
        for ((family, key), next) in join_all(asked).await {
            let board = boards.of(family);
            match next {
                Ok(None) => {}
                Ok(Some(waiter)) if !waiter.is_empty() => board.wake(&key, Some(&waiter)),
                Ok(Some(_)) => board.wake(&key, None),
                Err(error) => {
                    tracing::debug!(%error, "could not look at a watched key; looked at again within a second");
                }
            }
        }
    }

    /// What [`NEXT_TAKER`] says of `watched_key`, asked through `client`.
    async fn next_taker(
        &self,
        client: &impl ClientLike,
        watched_key: WatchedKey,
    ) -> (WatchedKey, Result<Option<String>, FredError>) {
        let (family, key) = &watched_key;
        let redis_key = self.redis_key(key);
        let gate = Gate::new(*family, &redis_key);
        let [line, deadlines] = gate.slot.family_line_keys(*family, &redis_key);
        let channel = self.channel(&watched_key);
        let also_held_by = gate.also_held_by.as_deref().unwrap_or(&gate.key);
        let keys = [gate.key.as_str(), &line, &deadlines, also_held_by];
        let next = NEXT_TAKER
            .run(client, gate.slot, &keys, |args| {
                args.extend([
                    Value::from(channel.as_str()),
                    Value::String(self.id.clone()),
                ]);
                args.extend(gate.argument.map(Value::from_static_str));
            })
            .await;
        (watched_key, next)
    }
}

/// The watched keys whose subscription failed, and when to try them again: a pause after
/// the failure, doubling after each try that fails too, up to
/// [`LONGEST_RESUBSCRIBE_PAUSE`].
struct Failed {
    keys: Vec<WatchedKey>,
    backoff: Backoff,
    next_try: Pin<Box<Sleep>>,
}

impl Default for Failed {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            backoff: Backoff::new(FIRST_RESUBSCRIBE_PAUSE, LONGEST_RESUBSCRIBE_PAUSE),
            next_try: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl Failed {
    /// Whether any key waits to be tried again.
    fn any(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Adds `keys` that failed; unless a try is planned already, the first is a pause from
    /// now.
    fn add(&mut self, keys: Vec<WatchedKey>) {
        if keys.is_empty() {
            return;
        }
        if self.keys.is_empty() {
            self.backoff.reset();
            self.plan();
        }
        self.keys.extend(keys);
    }

    /// After subscribing every watched key again: `keys` failed, and nothing else waits.
    fn start_over(&mut self, keys: Vec<WatchedKey>) {
        self.keys.clear();
        self.add(keys);
    }

    /// When the next try is due (pending until then).
    async fn due(&mut self) {
        self.next_try.as_mut().await;
    }

    /// The keys to try now: those `still_watched` keeps.
    fn take(&mut self, still_watched: impl Fn(&WatchedKey) -> bool) -> Vec<WatchedKey> {
        let mut keys = std::mem::take(&mut self.keys);
        keys.retain(still_watched);
        keys
    }

    /// After a try: `keys` failed again, tried after a pause twice as long.
    fn tried_again(&mut self, keys: Vec<WatchedKey>) {
        self.keys = keys;
        if !self.keys.is_empty() {
            self.plan();
        }
    }

    /// Plans the next try a pause from now.
    fn plan(&mut self) {
        let pause = self.backoff.next_pause();
        self.next_try
            .as_mut()
            .reset(tokio::time::Instant::now() + pause);
    }
}

/// Whether `error` is the server's answer refusing a subscription (`ERR unknown command`,
/// `NOPERM`), rather than a connection not ready, lost or slow.
fn is_refusal(error: &FredError) -> bool {
    *error.kind() == ErrorKind::Unknown
        && ["ERR", "NOPERM"]
            .iter()
            .any(|prefix| error.details().starts_with(prefix))
}
