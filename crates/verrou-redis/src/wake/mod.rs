//! Wake-on-release: waiters of a [`RedisStore`](crate::RedisStore) return as soon as a
//! release of their key is published, instead of sleeping out their retry delay.
//!
//! Release and force release publish on the freed key's release channel (see
//! [`crate::slots`]) in the same script. Each store subscribes, on one connection of its own
//! opened at the first wait, to the channels of the keys its waiters watch. Polling at the
//! retry delay stays the safety net: for locks that expire without release, for peers that
//! do not publish (the Node.js library), and for anything missed while the subscriber is
//! down.

mod registry;
mod subscriber;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fred::bytes_utils::Str;
use fred::clients::Client;
use fred::prelude::Options;
use fred::types::Value;

use registry::Registry;
use subscriber::Subscriber;

/// The wake-on-release machinery of one store.
#[derive(Debug)]
pub(crate) struct Wakeups {
    /// What this store's releases publish: the subscriber ignores them, since the store
    /// wakes its own waiters directly.
    id: Str,
    registry: Arc<Registry>,
    /// Started at the first wait; `None` if it could not be built (waiters then poll).
    subscriber: OnceLock<Option<Subscriber>>,
}

impl Wakeups {
    /// Wake-ups for a new store, with a new random id.
    pub(crate) fn new() -> Self {
        Self {
            id: Str::from(new_id()),
            registry: Arc::default(),
            subscriber: OnceLock::new(),
        }
    }

    /// The store's id, the message of its releases.
    pub(crate) fn id(&self) -> Value {
        Value::String(self.id.clone())
    }

    /// This store released `key` (the Redis key): wakes its waiters of the key now (the
    /// subscriber ignores the store's own releases).
    pub(crate) fn released(&self, key: &str) {
        self.registry.wake_waiting(key);
    }

    /// A take of `key` (the Redis key) is about to be sent.
    pub(crate) fn before_take(&self, key: &str) {
        self.registry.mark_take(key);
    }

    /// Whether a release of `key` that reached `listeners` subscribers may wake waiters
    /// other than the releaser: those of another store (this store's own subscription, if
    /// it watches the key, is one of the listeners), or those of this store.
    pub(crate) fn others_wait(&self, key: &str, listeners: i64) -> bool {
        let (watched, waiters) = self.registry.interest(key);
        listeners > i64::from(watched) || waiters > 0
    }

    /// Waits until a release of `key` (the Redis key) is heard, or the key is found free
    /// when its subscription starts or is renewed, or at most `max_wait`. The
    /// subscriber is started on a connection configured like `template`, with `options` on
    /// its commands, if this is the store's first wait.
    pub(crate) async fn wait(
        &self,
        key: &str,
        max_wait: Duration,
        template: &Client,
        options: &Options,
    ) {
        let (watch, new) = self.registry.watch(key);
        if new {
            let subscriber = self
                .subscriber
                .get_or_init(|| self.start_subscriber(template, options));
            if let Some(subscriber) = subscriber {
                subscriber.subscribe(Arc::clone(watch.key()));
            }
        }
        watch.wait(max_wait).await;
    }

    /// A subscriber for this store, or `None` (logged) if it cannot be built.
    fn start_subscriber(&self, template: &Client, options: &Options) -> Option<Subscriber> {
        let started = Subscriber::start(
            template,
            options,
            self.id.clone(),
            Arc::clone(&self.registry),
        );
        if let Err(error) = &started {
            tracing::warn!(%error, "cannot start the lock release subscriber; waiters will poll");
        }
        started.ok()
    }
}

/// 64 random bits (the OS-seeded keys of std's `RandomState`) and the process id, in hex.
fn new_id() -> String {
    static STORES: AtomicU64 = AtomicU64::new(0);
    let random = RandomState::new().hash_one(STORES.fetch_add(1, Ordering::Relaxed));
    format!("{random:016x}-{:x}", std::process::id())
}
