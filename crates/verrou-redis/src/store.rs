//! [`RedisStore`]: the [`LockStore`] on a fred client or pool.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::{Client, Pool, WithOptions};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, KeysInterface};
use fred::prelude::Options;
use fred::types::{ClientState, Value};
use verrou_core::{Acquisition, Error, Grant, LockStore, OwnerCheck, Result};

use crate::config::{RedisConfig, RedisOptions};
use crate::error::ConnectError;
use crate::replicas::{self, Acknowledgement};
use crate::resend;
use crate::scripts::{DELETE_IF_OWNER, EXTEND_IF_OWNER, FORCE_DELETE, TAKE};
use crate::sentinel::{self, Sentinel};
use crate::slots::{self, Slot};
use crate::supervise::{Seat, Supervisor};
use crate::wake::Wakeups;

/// How many times fred may write one command: once, and again after a connection dropped
/// under it or after a Redis Cluster redirection (`MOVED`, `ASK`).
const COMMAND_ATTEMPTS: u32 = 3;

/// How many Redis Cluster redirections one command may follow. Below [`COMMAND_ATTEMPTS`],
/// so that a command redirected again and again still has an attempt left for its last
/// `ASK`: fred 10.1 ends its connection task when it has to follow an `ASK` with no attempt
/// left (the [`Supervisor`] then replaces the client, but the commands sent through it
/// meanwhile time out).
const COMMAND_REDIRECTIONS: u32 = 2;

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
/// A command is written again when its connection drops before the answer (once the
/// connection is back, if the call still waits) and when Redis Cluster redirects it, at
/// most 3 times in all. Every operation stays right when its command arrives twice: a take
/// that finds the key held by its own owner starts the TTL again and answers
/// [`Acquisition::Renewed`]; extending twice extends; a release that arrives after its
/// first sending released answers "not the owner" (see `delete`).
///
/// The store watches the connection tasks of its clients and replaces a client whose task
/// ends with an error (fred does not start it again): see [`from_client`](Self::from_client)
/// for the clients you give.
///
/// On Redis Sentinel (`redis-sentinel://`, or a sentinel client of your own) the store
/// follows a failover as soon as a sentinel announces it: it sends nothing more to the old
/// master, and a command answered `READONLY` makes it reconnect. With
/// [`min_replicas`](RedisOptions::min_replicas), a take or an extension is followed by
/// `WAIT` in the same round trip, and one too few replicas acknowledged fails with
/// [`Error::Storage`] (source: [`NotReplicated`](crate::NotReplicated)). The crate's README
/// says what each can and cannot do.
///
/// Build it with [`connect`](Self::connect) from a [`RedisConfig`], or wrap a fred client
/// or pool you already have with [`from_client`](Self::from_client) or
/// [`from_pool`](Self::from_pool).
pub struct RedisStore {
    connection: Connection,
    /// Replaces the clients whose connection task ends with an error. Started by `connect`;
    /// for a client or pool given by the caller, at construction within a Tokio runtime, or
    /// else at the first operation.
    supervisor: OnceLock<Supervisor>,
    key_prefix: String,
    command_options: Options,
    wakeups: Wakeups,
    /// On Redis Sentinel: the failover watcher (see [`crate::sentinel`]), started with the
    /// store within a Tokio runtime, else at its first operation.
    sentinel: OnceLock<Option<Sentinel>>,
    /// Replica acknowledgement of takes and extensions, if asked for (see
    /// [`crate::replicas`]).
    acknowledgement: Option<Acknowledgement>,
}

/// The fred clients the store sends commands through, one per seat (see
/// [`crate::supervise`]).
struct Connection {
    seats: Vec<Arc<Seat>>,
    /// Where the round robin over the seats is.
    next: AtomicUsize,
    /// Whether the store built the clients ([`RedisStore::connect`]): then it closes them
    /// when dropped. Otherwise it closes only the replacements it made.
    owned: bool,
}

impl Connection {
    /// The store's own clients, or the caller's.
    fn new(clients: &[Client], owned: bool) -> Self {
        Self {
            seats: clients.iter().cloned().map(Seat::new).collect(),
            next: AtomicUsize::new(0),
            owned,
        }
    }

    /// The client for the next command: the next connected one, round robin (the next one
    /// if none is connected).
    fn client(&self) -> Client {
        let count = self.seats.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| self.seats[(first + offset) % count].client())
            .find(ClientLike::is_connected)
            .unwrap_or_else(|| self.seats[first % count].client())
    }

    /// Tells the clients the store should close to quit, on a task of the current Tokio
    /// runtime if there is one (without one, the runtime that ran the connections is gone,
    /// and them with it).
    fn close_in_background(&self) {
        let closing: Vec<Client> = self
            .seats
            .iter()
            .filter(|seat| self.owned || seat.is_replaced())
            .map(|seat| seat.client())
            .collect();
        if closing.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for client in closing {
                    // Nothing to do if it fails: the connection is unusable either way.
                    let _ = client.quit().await;
                }
            });
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
    /// meanwhile wait for it at most [`RedisConfig::command_timeout`]. A client whose
    /// connection task ends with an error is replaced.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let pool = config
            .builder()?
            .build_pool(config.pool_size)
            .map_err(|error| Error::InvalidConfig(error.details().to_owned()))?;
        let connection = Connection::new(pool.clients(), true);
        let supervisor = Supervisor::new();
        let connecting = supervisor.init(&connection.seats);
        let failure = match tokio::time::timeout(config.connect_timeout, connecting).await {
            Ok(Ok(())) => {
                return Ok(Self::new(
                    connection,
                    OnceLock::from(supervisor),
                    config.options(),
                ))
            }
            Ok(Err(error)) => error,
            Err(_elapsed) => FredError::new(
                ErrorKind::Timeout,
                format!("no connection within {:?}", config.connect_timeout),
            ),
        };
        // Stop the connections that did come up, without waiting on those that did not.
        connection.close_in_background();
        Err(Error::storage(ConnectError::new(
            config.redacted_url(),
            failure,
        )))
    }

    /// A store on `client`, which you close (`quit`) when you are done with it.
    ///
    /// **Give it unconnected**, and the store connects it (at once within a Tokio runtime,
    /// else at its first operation) and watches its connection task: fred 10.1 ends that
    /// task for good after some errors (an `ASK` redirection of Redis Cluster with no write
    /// attempt left, for one), and the store then goes on with a new client configured like
    /// it (fred's `clone_new`: same configuration, connection and performance settings and
    /// reconnect policy; not a resolver or event handlers you set on it), which it closes
    /// when dropped; yours stays dead. A client you connected yourself (`init`, `connect`) is
    /// used as it is, and its connection task stays yours: fred hands the task's handle only
    /// to whoever starts it, and starting a second task while one runs is not safe in fred
    /// 10.1, so the store can neither watch it nor replace the client. Do not hand over a
    /// client whose `connect` is still in progress.
    ///
    /// The store applies its own [`command_timeout`](RedisOptions::command_timeout) and
    /// attempts to its commands. Give the client a reconnect policy (as
    /// [`RedisConfig::builder`] does), or it will not come back after losing its connection.
    ///
    /// Fails with [`Error::InvalidConfig`] if the options are not acceptable
    /// ([`RedisOptions::validate`]).
    pub fn from_client(client: Client, options: RedisOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self::given(Connection::new(&[client], false), options))
    }

    /// A store on `pool`, which you close (`quit`) when you are done with it. Each operation
    /// goes to the next connected client of the pool.
    ///
    /// Give it unconnected, and the store connects each client and replaces those whose
    /// connection task dies, as [`from_client`](Self::from_client) says; clients you
    /// connected yourself are used as they are.
    ///
    /// The store applies its own [`command_timeout`](RedisOptions::command_timeout) and
    /// attempts to its commands. Give the pool a reconnect policy (as
    /// [`RedisConfig::builder`] does), or it will not come back after losing its connections.
    ///
    /// Fails with [`Error::InvalidConfig`] if the options are not acceptable
    /// ([`RedisOptions::validate`]).
    pub fn from_pool(pool: Pool, options: RedisOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self::given(Connection::new(pool.clients(), false), options))
    }

    /// A store on a connection the caller gave; supervised from now on within a Tokio
    /// runtime, else from the first operation.
    fn given(connection: Connection, options: RedisOptions) -> Self {
        let store = Self::new(connection, OnceLock::new(), options);
        if tokio::runtime::Handle::try_current().is_ok() {
            store.supervisor();
        }
        store
    }

    fn new(
        connection: Connection,
        supervisor: OnceLock<Supervisor>,
        options: RedisOptions,
    ) -> Self {
        slots::prepare();
        let timeout = options.command_timeout;
        let store = Self {
            connection,
            supervisor,
            key_prefix: options.key_prefix,
            command_options: Options {
                timeout: Some(timeout),
                // A command arriving twice is harmless (see the type's documentation), and
                // one redirected by Redis Cluster needs an attempt for each redirection.
                max_attempts: Some(COMMAND_ATTEMPTS),
                max_redirections: Some(COMMAND_REDIRECTIONS),
                ..Options::default()
            },
            wakeups: Wakeups::new(),
            sentinel: OnceLock::new(),
            acknowledgement: Acknowledgement::new(options.min_replicas, options.replica_timeout),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            store.sentinel();
        }
        store
    }

    /// The failover watcher, if the store reaches Redis through sentinels; started if it is
    /// not yet (needs a Tokio runtime then).
    fn sentinel(&self) -> Option<&Sentinel> {
        self.sentinel
            .get_or_init(|| Sentinel::start(&self.connection.seats))
            .as_ref()
    }

    /// The supervisor of the clients, started (with the tasks of the clients the caller gave
    /// unconnected) if it is not yet. Needs a Tokio runtime then.
    fn supervisor(&self) -> &Supervisor {
        self.supervisor.get_or_init(|| {
            let supervisor = Supervisor::new();
            for seat in &self.connection.seats {
                if seat.client().state() == ClientState::Disconnected {
                    supervisor.connect(seat);
                }
            }
            supervisor
        })
    }

    /// The Redis key of lock `key`.
    fn redis_key<'k>(&self, key: &'k str) -> Cow<'k, str> {
        if self.key_prefix.is_empty() {
            Cow::Borrowed(key)
        } else {
            Cow::Owned(format!("{}{key}", self.key_prefix))
        }
    }

    /// The client for one operation (use it with the store's `command_options`).
    fn client(&self) -> Client {
        self.supervisor();
        self.connection.client()
    }

    /// Sends `command` (given the client, with the store's options) through the next
    /// client, and again while Redis Cluster refuses it without running it (see
    /// [`crate::resend`]), within the command timeout.
    async fn send<R, F, Fut>(&self, command: F) -> std::result::Result<R, FredError>
    where
        F: Fn(WithOptions<Client>) -> Fut,
        Fut: Future<Output = std::result::Result<R, FredError>>,
    {
        // On Redis Sentinel: nothing is sent while the store moves to a new master, and a
        // READONLY answer makes it reconnect.
        let sentinel = self.sentinel();
        let options = sentinel::ready(sentinel, &self.command_options).await?;
        let result = resend::while_refused(&self.client(), &options, command).await;
        sentinel::check(sentinel, &result);
        result
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
        let key: &str = &key;
        let slot = Slot::of(key);
        self.wakeups.before_take(key);
        let counter = slot.counter_key();
        let keys = [key, counter.as_str()];
        let acknowledgement = self.acknowledgement.as_ref();
        let taken: Option<(u64, i64)> = self
            .send(|client| async move {
                replicas::run(acknowledgement, &TAKE, &client, slot, &keys, |args| {
                    args.extend([Value::from(owner), Value::Integer(ttl)]);
                })
                .await
            })
            .await
            .map_err(Error::storage)?
            .require("take", Option::is_some)?;
        Ok(match taken {
            Some((token, 0)) => Acquisition::Granted(Grant::with_fencing_token(token)),
            Some((token, _renewed)) => Acquisition::Renewed(Grant::with_fencing_token(token)),
            None => Acquisition::Busy,
        })
    }

    /// Releases `key` if `owner` holds it.
    ///
    /// When the connection drops after the release was written, it is written again once the
    /// connection is back (if the call still waits), and the second one finds the key no
    /// longer the owner's if the first one was applied: so a release reported
    /// [`NotOwner`](OwnerCheck::NotOwner) (`Error::NotOwned` for the lock) after a dropped
    /// connection may have released. Either way the key is no longer the owner's.
    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        let key = self.redis_key(key);
        let key: &str = &key;
        let slot = Slot::of(key);
        let channel = slot.release_channel(key);
        let channel = channel.as_str();
        let reply: i64 = self
            .send(|client| async move {
                DELETE_IF_OWNER
                    .run(&client, slot, &[key], |args| {
                        args.extend([Value::from(owner), Value::from(channel), self.wakeups.id()]);
                    })
                    .await
            })
            .await
            .map_err(Error::storage)?;
        if reply > 0 {
            self.wakeups.released(key);
        }
        Ok(match reply {
            ..=0 => OwnerCheck::NotOwner,
            // Tell the releasing factory when waiters elsewhere heard of it, so that it lets
            // them have the key rather than take it straight back.
            applied if self.wakeups.others_wait(key, applied - 1) => OwnerCheck::AppliedWithWaiters,
            _ => OwnerCheck::Applied,
        })
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        let key = self.redis_key(key);
        let key: &str = &key;
        let slot = Slot::of(key);
        let channel = slot.release_channel(key);
        let channel = channel.as_str();
        let deleted: i64 = self
            .send(|client| async move {
                FORCE_DELETE
                    .run(&client, slot, &[key], |args| {
                        args.extend([Value::from(channel), self.wakeups.id()]);
                    })
                    .await
            })
            .await
            .map_err(Error::storage)?;
        if deleted > 0 {
            self.wakeups.released(key);
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let key = self.redis_key(key);
        let key: &str = &key;
        let count: i64 = self
            .send(|client| async move { client.exists(key).await })
            .await
            .map_err(Error::storage)?;
        Ok(count > 0)
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        let ttl = millis(ttl)?;
        let key = self.redis_key(key);
        let key: &str = &key;
        let slot = Slot::of(key);
        let acknowledgement = self.acknowledgement.as_ref();
        let applied = self
            .send(|client| async move {
                replicas::run(
                    acknowledgement,
                    &EXTEND_IF_OWNER,
                    &client,
                    slot,
                    &[key],
                    |args| {
                        args.extend([Value::from(owner), Value::Integer(ttl)]);
                    },
                )
                .await
            })
            .await
            .map_err(Error::storage)?
            .require("extension", |applied| *applied == 1)?;
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
                &self.client(),
                &self.command_options,
            )
            .await;
    }
}

impl Drop for RedisStore {
    /// Closes the connections [`connect`](Self::connect) opened, and the clients the store
    /// made to replace dead ones (fred keeps them, and reconnects them, until told to quit).
    /// Connections the caller gave are left alone.
    fn drop(&mut self) {
        self.connection.close_in_background();
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
