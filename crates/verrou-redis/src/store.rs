//! [`RedisStore`]: the [`LockStore`] on a fred client or pool.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::{Client, Pool, WithOptions};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, KeysInterface};
use fred::prelude::Options;
use fred::types::Value;
use verrou_core::{Acquisition, Error, Grant, LockStore, OwnerCheck, Result};

use crate::config::{RedisConfig, RedisOptions, DEFAULT_COMMAND_TIMEOUT};
use crate::error::ConnectError;
use crate::scripts::{DELETE_IF_OWNER, EXTEND_IF_OWNER, FORCE_DELETE, TAKE};
use crate::slots::{self, Slot};
use crate::wake::Wakeups;

/// Locks in Redis, laid out as the Node.js library lays them out: the lock is the string key
/// `key_prefix + name`, its value the owner token, its expiry the server's PX TTL.
///
/// Every operation is one round trip: a Lua script that runs `SET key owner NX PX ttl` and,
/// when it took the key, issues the grant's fencing token from the counter of the key's
/// hash slot (`verrou:fence:{N}`): `max(counter, now) + 1`, `now` the server's time in
/// microseconds, so tokens keep growing even when a restart or failover lost the counter
/// (the crate's README states the guarantee exactly); a Lua script that compares the owner
/// on the server to release or extend; `DEL` to force a release; `EXISTS` to check.
///
/// Names starting with `verrou:` are the store's own; a lock whose Redis key would start
/// so is [`Error::InvalidKey`].
///
/// Releasing and force-releasing publish the freed key (`SPUBLISH`, in the same script) on
/// its release channel `verrou:released:{N}:KEY`, a sharded channel in the key's hash slot.
/// Waiting acquirers of every store hear it on a subscriber connection each store opens at
/// its first wait, and ask again at once instead of sleeping out their retry delay.
///
/// Build it with [`connect`](Self::connect) from a [`RedisConfig`], or wrap a fred client
/// or pool you already have with [`from_client`](Self::from_client) or
/// [`from_pool`](Self::from_pool).
pub struct RedisStore {
    connection: Connection,
    key_prefix: String,
    command_options: Options,
    wakeups: Wakeups,
}

/// The fred handle the store sends commands through.
enum Connection {
    /// The caller's client; the caller manages its lifetime.
    Client(Client),
    /// The caller's pool; the caller manages its lifetime.
    Pool(Pool),
    /// A pool built by [`RedisStore::connect`], closed when the store is dropped.
    Owned(Pool),
}

impl Connection {
    fn client(&self) -> &Client {
        match self {
            Connection::Client(client) => client,
            Connection::Pool(pool) | Connection::Owned(pool) => pool.next_connected(),
        }
    }
}

impl RedisStore {
    /// Connects to the server `config` names and waits until every pooled connection is up.
    ///
    /// Fails with [`Error::InvalidConfig`] if the configuration is not acceptable (the
    /// message names the problem and never shows the password), and with
    /// [`Error::Storage`] (source: [`ConnectError`]) if the server cannot be reached within
    /// [`RedisConfig::connect_timeout`].
    ///
    /// Once connected, a lost connection is re-established in the background; calls made
    /// meanwhile wait for it at most [`RedisConfig::command_timeout`].
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let pool = config
            .builder()?
            .build_pool(config.pool_size)
            .map_err(|error| Error::InvalidConfig(error.details().to_owned()))?;
        let failure = match tokio::time::timeout(config.connect_timeout, pool.init()).await {
            Ok(Ok(_connection_task)) => {
                return Ok(Self::new(Connection::Owned(pool), config.options()))
            }
            Ok(Err(error)) => error,
            Err(_elapsed) => FredError::new(
                ErrorKind::Timeout,
                format!("no connection within {:?}", config.connect_timeout),
            ),
        };
        // Stop the connections that did come up, without waiting on those that did not.
        close_in_background(pool);
        Err(Error::storage(ConnectError::new(
            config.redacted_url(),
            failure,
        )))
    }

    /// A store on `client`, which you connect (for example with `init`) and close.
    ///
    /// The store applies its own [`command_timeout`](RedisOptions::command_timeout) to its
    /// commands. Give the client a reconnect policy (as [`RedisConfig::builder`] does), or it
    /// will not come back after losing its connection.
    pub fn from_client(client: Client, options: RedisOptions) -> Self {
        Self::new(Connection::Client(client), options)
    }

    /// A store on `pool`, which you connect (for example with `init`) and close. Each
    /// operation goes to the next connected client of the pool.
    ///
    /// The store applies its own [`command_timeout`](RedisOptions::command_timeout) to its
    /// commands. Give the pool a reconnect policy (as [`RedisConfig::builder`] does), or it
    /// will not come back after losing its connections.
    pub fn from_pool(pool: Pool, options: RedisOptions) -> Self {
        Self::new(Connection::Pool(pool), options)
    }

    fn new(connection: Connection, options: RedisOptions) -> Self {
        slots::prepare();
        let timeout = if options.command_timeout.is_zero() {
            DEFAULT_COMMAND_TIMEOUT
        } else {
            options.command_timeout
        };
        Self {
            connection,
            key_prefix: options.key_prefix,
            command_options: Options {
                timeout: Some(timeout),
                // A command whose connection dropped after it was written may have been
                // applied; resending it would turn a taken lock into "busy" or a release
                // into "not owner". Report the failure instead.
                max_attempts: Some(1),
                ..Options::default()
            },
            wakeups: Wakeups::new(),
        }
    }

    /// The Redis key of lock `key`.
    fn redis_key<'k>(&self, key: &'k str) -> Cow<'k, str> {
        if self.key_prefix.is_empty() {
            Cow::Borrowed(key)
        } else {
            Cow::Owned(format!("{}{key}", self.key_prefix))
        }
    }

    /// A client for one operation, with the store's timeout and retry options.
    fn client(&self) -> WithOptions<Client> {
        self.connection.client().with_options(&self.command_options)
    }
}

/// `ttl` in whole milliseconds, rounded up so that a sub-millisecond TTL still expires.
///
/// A TTL follows core's rule, the same for every store: positive and at most
/// [`MAX_DURATION`](verrou_core::MAX_DURATION), else [`Error::InvalidDuration`]. Core checks
/// it before it calls the store; checking again here guards direct calls. The longest TTL
/// is about 3.2 × 10^11 ms, which `PX` and `PEXPIRE` accept, and an `i64` holds.
fn millis(ttl: Duration) -> Result<i64> {
    // At most MAX_DURATION in milliseconds: far below i64::MAX.
    Ok(i64::try_from(verrou_core::ttl_millis(ttl)?).unwrap_or(i64::MAX))
}

/// What the extend script's reply (1 applied, 0 not the owner) means.
fn owner_check(applied: i64) -> OwnerCheck {
    if applied == 1 {
        OwnerCheck::Applied
    } else {
        OwnerCheck::NotOwner
    }
}

#[async_trait]
impl LockStore for RedisStore {
    /// Refuses a lock whose Redis key (key prefix, then name) starts with `verrou:`, the
    /// namespace of the store's own fencing counters and release channels: a lock named like
    /// a counter would stop every take of the counter's hash slot, and releasing it would
    /// reset the counter.
    fn validate_key(&self, key: &str) -> Result<()> {
        if self.redis_key(key).starts_with(slots::NAMESPACE) {
            return Err(Error::invalid_key(
                key,
                format!(
                    "its Redis key (key prefix {:?}, then the name) starts with `{}`, which the Redis store reserves for its fencing counters and release channels",
                    self.key_prefix,
                    slots::NAMESPACE
                ),
            ));
        }
        Ok(())
    }

    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        // The take script reads TTL 0 as "none"; a real TTL is at least 1 ms.
        let ttl = ttl.map(millis).transpose()?.unwrap_or(0);
        let key = self.redis_key(key);
        let slot = Slot::of(&key);
        self.wakeups.before_take(&key);
        let token: Option<u64> = TAKE
            .run(&self.client(), slot, &[&key, &slot.counter_key()], |args| {
                args.extend([Value::from(owner), Value::Integer(ttl)])
            })
            .await
            .map_err(Error::storage)?;
        Ok(match token {
            Some(token) => Acquisition::Granted(Grant::with_fencing_token(token)),
            None => Acquisition::Busy,
        })
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        let key = self.redis_key(key);
        let slot = Slot::of(&key);
        let reply: i64 = DELETE_IF_OWNER
            .run(&self.client(), slot, &[&key], |args| {
                args.extend([
                    Value::from(owner),
                    Value::from(slot.release_channel(&key)),
                    self.wakeups.id(),
                ]);
            })
            .await
            .map_err(Error::storage)?;
        if reply > 0 {
            self.wakeups.released(&key);
        }
        Ok(match reply {
            ..=0 => OwnerCheck::NotOwner,
            // Tell the releasing factory when waiters elsewhere heard of it, so that it lets
            // them have the key rather than take it straight back.
            applied if self.wakeups.others_wait(&key, applied - 1) => {
                OwnerCheck::AppliedWithWaiters
            }
            _ => OwnerCheck::Applied,
        })
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        let key = self.redis_key(key);
        let slot = Slot::of(&key);
        let deleted: i64 = FORCE_DELETE
            .run(&self.client(), slot, &[&key], |args| {
                args.extend([Value::from(slot.release_channel(&key)), self.wakeups.id()]);
            })
            .await
            .map_err(Error::storage)?;
        if deleted > 0 {
            self.wakeups.released(&key);
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let count: i64 = self
            .client()
            .exists(self.redis_key(key).as_ref())
            .await
            .map_err(Error::storage)?;
        Ok(count > 0)
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        let ttl = millis(ttl)?;
        let key = self.redis_key(key);
        let applied = EXTEND_IF_OWNER
            .run(&self.client(), Slot::of(&key), &[&key], |args| {
                args.extend([Value::from(owner), Value::Integer(ttl)]);
            })
            .await
            .map_err(Error::storage)?;
        Ok(owner_check(applied))
    }

    /// Returns when a release or force release of `key` is published (by any store on the
    /// server), or after `max_wait`; and, when the store's subscription to the key's
    /// releases starts or is renewed after a lost connection, if the key is free then (a
    /// release may have gone unheard before). Nothing else ends it early: a held key is
    /// waited on for the whole `max_wait`. Never fails: without a working subscriber
    /// connection it simply sleeps `max_wait`.
    async fn wait_for_release(&self, key: &str, max_wait: Duration) {
        self.wakeups
            .wait(
                &self.redis_key(key),
                max_wait,
                self.connection.client(),
                &self.command_options,
            )
            .await;
    }
}

impl Drop for RedisStore {
    /// Closes the connections [`connect`](Self::connect) opened (fred keeps them, and
    /// reconnects them, until told to quit). Connections the caller gave are left alone.
    fn drop(&mut self) {
        if let Connection::Owned(pool) = &self.connection {
            close_in_background(pool.clone());
        }
    }
}

/// Tells `pool`'s clients to quit, on a task of the current Tokio runtime if there is one
/// (without one, the runtime that ran the connections is gone, and them with it).
fn close_in_background(pool: Pool) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            // Nothing to do if it fails: the connections are unusable either way.
            let _ = pool.quit().await;
        });
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_options.timeout)
            .finish_non_exhaustive()
    }
}
