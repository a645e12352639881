//! The store's [`ReleaseFeed`]: one subscriber connection per store, opened at the first
//! wait, that hears the hand-overs of the keys its waiters watch and reports them to the
//! store's [`Waiters`] board.
//!
//! The board decides which keys are watched and for how long; the feed only subscribes
//! (`SSUBSCRIBE` to the key's release channel, see [`crate::slots`]) and unsubscribes when
//! told, subscribes again to every watched key after each (re)connection, and after a
//! subscription wakes the waiter that may take the key if it is free (a hand-over may have
//! come before it). Polling at the retry delay stays the safety net: for locks that expire without
//! release, for peers that do not publish (the Node.js library), and for anything missed
//! while the subscriber is down.

use std::sync::{Arc, OnceLock, Weak};

use fred::bytes_utils::Str;
use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::Options;
use fred::types::{Builder, Message};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use verrou_core::{ReleaseFeed, Waiters};

use crate::connection::Connection;
use crate::scripts::NEXT_TAKER;
use crate::slots::{self, Slot};

/// Messages that may queue between the connection and the task before the oldest are
/// dropped (then the waiters of every free watched key are woken, since a hand-over may
/// have been among them).
const MESSAGE_BUFFER: usize = 1024;

/// A change of the watched keys, for the subscriber task.
enum Change {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
}

/// The feed of one store: what its subscriber task needs, and the task once started.
pub(crate) struct Feed {
    setup: Setup,
    /// Started at the first subscription; `None` if it could not be (waiters then poll).
    task: OnceLock<Option<UnboundedSender<Change>>>,
}

/// What the subscriber task is made of.
#[derive(Clone)]
struct Setup {
    /// The store's connection: the template of the subscriber's, and where it asks whether
    /// keys are free.
    connection: Arc<Connection>,
    /// The store's command options.
    options: Options,
    /// The store's id: hand-overs it published are its own.
    id: Str,
    /// Put before lock keys to make Redis keys.
    key_prefix: Arc<str>,
    /// The board to report to; gone with the store.
    board: Weak<Waiters>,
}

impl Feed {
    /// The board of a store on `connection` (commands with `options`) whose releases carry
    /// `id` and whose Redis keys start with `key_prefix`, fed by a subscriber of its own.
    pub(crate) fn board(
        connection: Arc<Connection>,
        options: Options,
        id: Str,
        key_prefix: &str,
    ) -> Arc<Waiters> {
        let key_prefix = Arc::from(key_prefix);
        Arc::new_cyclic(|board| {
            Waiters::new(Feed {
                setup: Setup {
                    connection,
                    options,
                    id,
                    key_prefix,
                    board: Weak::clone(board),
                },
                task: OnceLock::new(),
            })
        })
    }

    /// Hands `change` to the subscriber task, starting it if this is the first one.
    fn send(&self, change: Change) {
        let task = self.task.get_or_init(|| {
            let started = self.setup.clone().start();
            if let Err(error) = &started {
                tracing::warn!(%error, "cannot start the lock release subscriber; waiters will poll");
            }
            started.ok()
        });
        if let Some(task) = task {
            // Only fails if the task is gone; waiters then poll.
            let _ = task.send(change);
        }
    }
}

impl ReleaseFeed for Feed {
    fn subscribe(&self, key: &str) {
        self.send(Change::Subscribe(Arc::from(key)));
    }

    fn unsubscribe(&self, key: &str) {
        self.send(Change::Unsubscribe(Arc::from(key)));
    }
}

impl Setup {
    /// Starts the subscriber task on a new connection configured like the store's (server,
    /// credentials, TLS, timeouts; reconnecting forever), made in the background and remade
    /// whenever it is lost. Needs a Tokio runtime.
    fn start(self) -> Result<UnboundedSender<Change>, FredError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|error| FredError::new(fred::error::ErrorKind::Unknown, error.to_string()))?;
        let template = self.connection.client();
        let mut builder = Builder::from_config(template.client_config());
        builder
            .set_connection_config(template.connection_config().clone())
            .set_performance_config(template.perf_config())
            // Forever, whatever the template's policy: waiters rely on it coming back.
            .set_policy(crate::config::reconnect_policy())
            // Keep trying when the server is down at first, too.
            .with_config(|config| config.fail_fast = false)
            .with_performance_config(|performance| {
                performance.broadcast_channel_capacity =
                    performance.broadcast_channel_capacity.max(MESSAGE_BUFFER);
            });
        let client = builder.build()?;
        let (changes, receiver) = mpsc::unbounded_channel();
        let task = Task {
            setup: self,
            client,
            warned: false,
        };
        runtime.spawn(task.run(receiver));
        Ok(changes)
    }
}

/// The subscriber task.
struct Task {
    setup: Setup,
    client: Client,
    /// Whether a refused subscription was reported at warning level already.
    warned: bool,
}

impl Task {
    /// Follows the changes of the watched keys and reports what it hears, subscribing again
    /// after every (re)connection, until the store's board is dropped.
    async fn run(mut self, mut changes: UnboundedReceiver<Change>) {
        // Listen before connecting, so that neither the first connection nor a message is
        // missed.
        let mut messages = self.client.message_rx();
        let mut connections = self.client.reconnect_rx();
        let _connection = self.client.connect();
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(Change::Subscribe(key)) => {
                        if self.subscribe(&key).await {
                            self.wake_if_free([key]).await;
                        }
                    }
                    Some(Change::Unsubscribe(key)) => self.unsubscribe(&key).await,
                    None => break,
                },
                message = messages.recv() => match message {
                    Ok(message) => self.heard(&message),
                    Err(RecvError::Lagged(_)) => self.wake_if_free(self.watched()).await,
                    Err(RecvError::Closed) => break,
                },
                connected = connections.recv() => match connected {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.resubscribe().await,
                    Err(RecvError::Closed) => break,
                },
            }
        }
        // Nothing to do if it fails: the connection is unusable either way.
        let _ = self.client.quit().await;
    }

    /// Reports a hand-over `message` (`STORE:WAITER`) to the board, unless this store
    /// published it (it woke its waiter itself). A message without a waiter wakes every
    /// waiter of the key.
    fn heard(&self, message: &Message) {
        let (Some(board), Some(text)) = (self.setup.board.upgrade(), message.value.as_str()) else {
            return;
        };
        let (store, waiter) = text
            .split_once(':')
            .map_or((&*text, None), |(store, waiter)| (store, Some(waiter)));
        if store == &*self.setup.id {
            return;
        }
        let key = slots::released_key(&message.channel)
            .and_then(|key| key.strip_prefix(&*self.setup.key_prefix));
        if let Some(key) = key {
            board.wake(key, waiter);
        }
    }

    /// The keys the board watches now.
    fn watched(&self) -> Vec<Arc<str>> {
        self.setup
            .board
            .upgrade()
            .map(|board| board.watched())
            .unwrap_or_default()
    }

    /// The release channel of lock `key`.
    fn channel(&self, key: &str) -> String {
        let key = format!("{}{key}", self.setup.key_prefix);
        Slot::of(&key).release_channel(&key)
    }

    /// Subscribes to `key`'s hand-overs; whether the server confirmed. A subscription that
    /// fails is made again at the next (re)connection, if the key is still watched.
    async fn subscribe(&mut self, key: &str) -> bool {
        let subscribed = self
            .client
            .with_options(&self.fail_fast())
            .ssubscribe(self.channel(key))
            .await;
        match subscribed {
            Ok(()) => true,
            Err(error) if self.client.is_connected() && !self.warned => {
                // Refused: a server before Redis 7, an ACL without the channel.
                self.warned = true;
                tracing::warn!(%error, "cannot subscribe to lock release channels (needs Redis 7 and, with ACLs, `&verrou:released:*`); waiters will poll");
                false
            }
            Err(error) => {
                tracing::debug!(%error, "subscription to a lock release channel failed");
                false
            }
        }
    }

    /// Stops hearing `key`'s hand-overs. On failure the connection is down, and the next one
    /// starts without them.
    async fn unsubscribe(&self, key: &str) {
        let _ = self
            .client
            .with_options(&self.fail_fast())
            .sunsubscribe(self.channel(key))
            .await;
    }

    /// After a (re)connection: subscribes to every watched key again, then wakes the
    /// waiters of those that are free, since releases may have gone unheard meanwhile.
    async fn resubscribe(&mut self) {
        let keys = self.watched();
        for key in &keys {
            self.subscribe(key).await;
        }
        self.wake_if_free(keys).await;
    }

    /// Wakes the waiter that may take each of `keys` now, if it is free: a hand-over (or an
    /// expiry) may have gone unheard. That is the front waiter of its line (which wakes
    /// nobody here if it waits elsewhere), or every waiter here if nobody is in line.
    /// Waiters of a key still held sleep on: waking them would only cost them an attempt.
    /// Asked after the subscription, so that a release is either heard or seen here. A key
    /// whose state cannot be read (the server is unreachable) counts as free with nobody in
    /// line.
    async fn wake_if_free(&self, keys: impl IntoIterator<Item = Arc<str>>) {
        let Some(board) = self.setup.board.upgrade() else {
            return;
        };
        let client = self.setup.connection.client();
        let client = client.with_options(&self.setup.options);
        for key in keys {
            let redis_key = format!("{}{key}", self.setup.key_prefix);
            let slot = Slot::of(&redis_key);
            let [line, deadlines] = slot.line_keys(&redis_key);
            let next: Result<Option<String>, FredError> = NEXT_TAKER
                .run(&client, slot, &[&redis_key, &line, &deadlines], |_| {})
                .await;
            match next {
                Ok(None) => {}
                Ok(Some(waiter)) if !waiter.is_empty() => board.wake(&key, Some(&waiter)),
                Ok(Some(_)) | Err(_) => board.wake(&key, None),
            }
        }
    }

    /// Options for the subscriber's own commands: the store's timeout, and failing at once
    /// when not connected (everything is subscribed again on connection).
    fn fail_fast(&self) -> Options {
        Options {
            timeout: self.setup.options.timeout,
            fail_fast: true,
            ..Options::default()
        }
    }
}
