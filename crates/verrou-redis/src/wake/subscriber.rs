//! The subscriber: one connection per store that hears releases and wakes local waiters.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fred::bytes_utils::Str;
use fred::clients::{Client, WithOptions};
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use fred::prelude::Options;
use fred::types::Builder;
use fred::types::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::registry::Registry;
use crate::slots::{self, Slot};

/// How long a key stays subscribed after its last waiter left. A key waited on again soon
/// (a lock handed around between processes) keeps its subscription instead of paying a
/// subscribe round trip, and a wake-up, per wait.
const LINGER: Duration = Duration::from_secs(5);

/// How often subscriptions left idle for [`LINGER`] are looked for.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// Messages that may queue between the connection and the task before the oldest are
/// dropped (then the waiters of every free key are woken, since a release may have been
/// among them).
const MESSAGE_BUFFER: usize = 1024;

/// The handle on the subscriber task; the task stops, and closes its connection, when the
/// handle is dropped.
#[derive(Debug)]
pub(crate) struct Subscriber {
    new_keys: UnboundedSender<Arc<str>>,
}

impl Subscriber {
    /// Starts a subscriber on a new connection configured like `template` (server,
    /// credentials, TLS, timeouts; reconnecting forever), waking the waiters of `registry`
    /// when releases other than those of store `id` are heard. Its commands use `options`.
    /// The connection is made in the background, and remade whenever it is lost. Whether a
    /// key is free is asked on `template` itself, one of the store's connections, with
    /// `options`.
    pub(crate) fn start(
        template: &Client,
        options: &Options,
        id: Str,
        registry: Arc<Registry>,
    ) -> Result<Self, FredError> {
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
        let (new_keys, requests) = mpsc::unbounded_channel();
        let task = Task {
            locks: template.with_options(options),
            client,
            options: Options {
                timeout: options.timeout,
                // Not connected: fail now; everything is subscribed on (re)connection.
                fail_fast: true,
                ..Options::default()
            },
            id,
            registry,
            subscribed: HashSet::new(),
            warned: false,
        };
        tokio::spawn(task.run(requests));
        Ok(Self { new_keys })
    }

    /// Subscribes to the releases of `key`, which has just started to be watched.
    pub(crate) fn subscribe(&self, key: Arc<str>) {
        // Only fails if the task is gone; waiters then poll.
        let _ = self.new_keys.send(key);
    }
}

/// The subscriber task's state.
struct Task {
    client: Client,
    /// A connection of the store, with the store's options, to ask whether keys are free.
    locks: WithOptions<Client>,
    options: Options,
    /// The store's id: releases carrying it are the store's own.
    id: Str,
    registry: Arc<Registry>,
    /// The keys subscribed to on the current connection.
    subscribed: HashSet<Arc<str>>,
    /// Whether a failed subscription was reported at warning level already.
    warned: bool,
}

impl Task {
    /// Subscribes watched keys, wakes their waiters when releases are heard, renews the
    /// subscriptions after every (re)connection and drops those of keys left idle, until the
    /// store is dropped.
    async fn run(mut self, mut new_keys: UnboundedReceiver<Arc<str>>) {
        // Listen before connecting, so that neither the first connection nor a message is
        // missed.
        let mut messages = self.client.message_rx();
        let mut connections = self.client.reconnect_rx();
        let _connection = self.client.connect();
        let mut sweep = tokio::time::interval(SWEEP_PERIOD);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                key = new_keys.recv() => match key {
                    Some(key) => self.subscribe_new(key).await,
                    None => break,
                },
                message = messages.recv() => match message {
                    Ok(message) => self.heard(&message),
                    Err(RecvError::Lagged(_)) => self.wake_if_free(self.registry.keys()).await,
                    Err(RecvError::Closed) => break,
                },
                connected = connections.recv() => match connected {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.resubscribe().await,
                    Err(RecvError::Closed) => break,
                },
                _ = sweep.tick() => self.unsubscribe_idle().await,
            }
        }
        // Nothing to do if it fails: the connection is unusable either way.
        let _ = self.client.quit().await;
    }

    /// Wakes the waiters of the key a release `message` is about, unless the release was
    /// the store's own.
    fn heard(&self, message: &Message) {
        if message.value.as_bytes() == Some(self.id.as_bytes()) {
            return;
        }
        if let Some(key) = slots::released_key(&message.channel) {
            self.registry.wake(key);
        }
    }

    /// Subscribes to a newly watched key, unless that is done already (the connection came
    /// up after it was watched) or it is no longer watched. Once the server confirms, a
    /// release is heard; one that came between the waiter's last take and the subscription
    /// was not, so its waiters are woken if the key is free.
    async fn subscribe_new(&mut self, key: Arc<str>) {
        if !self.subscribed.contains(&key)
            && self.registry.watches(&key)
            && self.subscribe(key.clone()).await
        {
            self.wake_if_free([key]).await;
        }
    }

    /// Subscribes to `key`'s release channel; whether the server confirmed.
    async fn subscribe(&mut self, key: Arc<str>) -> bool {
        let channel = Slot::of(&key).release_channel(&key);
        match self
            .client
            .with_options(&self.options)
            .ssubscribe(channel)
            .await
        {
            Ok(()) => self.subscribed.insert(key),
            Err(error) => {
                self.report(&error);
                false
            }
        }
    }

    /// After a (re)connection: subscribes to every watched key again, then wakes the
    /// waiters of those that are free, since releases may have gone unheard while the
    /// connection was down.
    async fn resubscribe(&mut self) {
        self.subscribed.clear();
        let keys = self.registry.keys();
        for key in &keys {
            self.subscribe(Arc::clone(key)).await;
        }
        self.wake_if_free(keys).await;
    }

    /// Wakes the waiters of those of `keys` that are free: a release (or an expiry) may have
    /// gone unheard, and they must ask again rather than sleep through it. Waiters of a key
    /// still held sleep on: waking them would only cost them an attempt. Asked after the
    /// subscription, so that a release is either heard or seen here. A key whose state
    /// cannot be read (the server is unreachable) counts as free.
    async fn wake_if_free(&self, keys: impl IntoIterator<Item = Arc<str>>) {
        for key in keys {
            let held: Result<i64, FredError> = self.locks.exists(key.as_ref()).await;
            if !matches!(held, Ok(1..)) {
                self.registry.wake(&key);
            }
        }
    }

    /// Unsubscribes from the keys nobody has waited on for a while.
    async fn unsubscribe_idle(&mut self) {
        let channels: Vec<String> = self
            .registry
            .take_idle(LINGER)
            .into_iter()
            .filter(|key| self.subscribed.remove(key))
            .map(|key| Slot::of(&key).release_channel(&key))
            .collect();
        if channels.is_empty() {
            return;
        }
        // SUNSUBSCRIBE accepts channels of several hash slots only on a single server.
        let groups = if self.client.is_clustered() {
            channels.into_iter().map(|channel| vec![channel]).collect()
        } else {
            vec![channels]
        };
        for group in groups {
            // On failure the connection is down, and the next one starts without them.
            let _ = self
                .client
                .with_options(&self.options)
                .sunsubscribe(group)
                .await;
        }
    }

    /// A subscription failed: not connected (it is renewed on connection), or refused (a
    /// server before Redis 7, an ACL without the channel): waiters poll.
    fn report(&mut self, error: &FredError) {
        if self.client.is_connected() && !self.warned {
            self.warned = true;
            tracing::warn!(%error, "cannot subscribe to lock release channels (needs Redis 7 and, with ACLs, `&verrou:released:*`); waiters will poll");
        } else {
            tracing::debug!(%error, "subscription to a lock release channel failed");
        }
    }
}
