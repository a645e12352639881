//! Wake-on-release: waiters of a [`RedisStore`](crate::RedisStore) return as soon as a
//! release of their key is published, instead of sleeping out their retry delay.
//!
//! Release and force release publish the freed key on its release channel (see
//! [`crate::slots`]) in the same script. Each store subscribes, on one connection of its own
//! opened at the first wait, to the channels of the keys its waiters watch. Polling at the
//! retry delay stays the safety net: for locks that expire without release, for peers that
//! do not publish (the Node.js library), and for anything missed while the subscriber is
//! down.

mod registry;
mod subscriber;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fred::clients::Client;
use fred::prelude::Options;

use registry::Registry;
use subscriber::Subscriber;

/// The wake-on-release machinery of one store.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    registry: Arc<Registry>,
    /// Started at the first wait; `None` if it could not be built (waiters then poll).
    subscriber: OnceLock<Option<Subscriber>>,
}

impl Wakeups {
    /// A take of `key` (the Redis key) is about to be sent.
    pub(crate) fn before_take(&self, key: &str) {
        self.registry.mark_take(key);
    }

    /// Waits until a release of `key` (the Redis key) is heard, or at most `max_wait`. The
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
            let subscriber = self.subscriber.get_or_init(|| {
                Subscriber::start(template, options, Arc::clone(&self.registry))
                    .inspect_err(|error| {
                        tracing::warn!(%error, "cannot start the lock release subscriber; waiters will poll");
                    })
                    .ok()
            });
            if let Some(subscriber) = subscriber {
                subscriber.subscribe(Arc::clone(watch.key()));
            }
        }
        watch.wait(max_wait).await;
    }
}
