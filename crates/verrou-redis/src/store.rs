//! [`RedisStore`]: the [`LockStore`] on a fred client or pool.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use fred::bytes_utils::Str;
use fred::clients::{Client, Pool, WithOptions};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, KeysInterface};
use fred::prelude::Options;
use fred::types::{ClientState, Value};
use verrou_core::{
    Acquisition, Boards, Error, Family, Grant, LockStore, OwnerCheck, Place, Result, Share,
};

use crate::config::{RedisConfig, RedisOptions};
use crate::connection::Connection;
use crate::error::ConnectError;
use crate::feed::Feed;
use crate::gate::LOCK;
use crate::replicas::{self, Acknowledgement};
use crate::resend;
use crate::scripts::{
    LuaScript, DELETE_IF_OWNER, EXTEND_IF_OWNER, FORCE_DELETE, LEAVE_LINE, RESERVED, TAKE,
};
use crate::sentinel::{self, Sentinel};
use crate::slots::{self, Slot};
use crate::supervise::Supervisor;

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
/// Every operation is one round trip: a take is `SET key owner NX PX ttl GET`, as cheap as the
/// bare command (on Redis before 7, which refuses `NX` with `GET`, the take script below,
/// without a token); a Lua script compares the owner on the server to release or extend, and
/// forces a release; `GET` checks. With
/// [`fencing_tokens`](RedisOptions::fencing_tokens) on, a take is a Lua script that runs
/// `SET NX PX` and, when it took the key, issues the grant's fencing token from the counter
/// of the key's hash slot (`verrou:fence:{N}`): `max(counter, now) + 1`, `now` the server's
/// time in microseconds, so tokens keep growing even when a restart or failover lost the
/// counter (the crate's README states the guarantee exactly).
///
/// Names starting with `verrou:` are the store's own; a lock whose Redis key would start
/// so is [`Error::InvalidKey`].
///
/// Waiters of every process wait in one line per key, kept on the server beside the lock
/// (`verrou:line:{N}:KEY` and `verrou:deadline:{N}:KEY`, sorted sets that expire with their
/// last place): a waiter's take succeeds only if nobody waits ahead of it, and a release
/// hands the key over to the front waiter — reserves the key for it for the hand-over window,
/// so that no take from outside the line gets it, and publishes its id (`SPUBLISH`, in the
/// same script) on the key's release channel `verrou:released:{N}:KEY`, a sharded channel in
/// the key's hash slot. The
/// store it waits in hears it on a subscriber connection each store opens at its first wait,
/// and that waiter alone asks again at once (see [`verrou_core::waiting`]).
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
/// Semaphores and read-write locks keep their holders in sorted sets of the key's hash slot
/// (`verrou:permits:{N}:KEY`, `verrou:readers:{N}:KEY`, `verrou:writer:{N}:KEY`; owners
/// scored by expiry), apart from the lock key, with a line and a release channel per family,
/// and take their fencing tokens from the slot's counter: the same guarantees as locks, each
/// operation one script (the crate's README gives the layout).
///
/// Build it with [`connect`](Self::connect) from a [`RedisConfig`], or wrap a fred client
/// or pool you already have with [`from_client`](Self::from_client) or
/// [`from_pool`](Self::from_pool).
pub struct RedisStore {
    connection: Arc<Connection>,
    /// Replaces the clients whose connection task ends with an error. Started by `connect`;
    /// for a client or pool given by the caller, at construction within a Tokio runtime, or
    /// else at the first operation.
    supervisor: OnceLock<Supervisor>,
    key_prefix: String,
    command_options: Options,
    /// The boards of this store's waiters, fed by its subscriber (see [`crate::feed`]).
    boards: Arc<Boards>,
    /// On Redis Sentinel: the failover watcher (see [`crate::sentinel`]), started with the
    /// store within a Tokio runtime, else at its first operation.
    sentinel: OnceLock<Option<Sentinel>>,
    /// Replica acknowledgement of takes and extensions, if asked for (see
    /// [`crate::replicas`]).
    acknowledgement: Option<Acknowledgement>,
    /// Whether plain locks' grants carry fencing tokens.
    fencing_tokens: bool,
    /// Set once the server refused `SET NX GET` (Redis before 7): plain takes then run the
    /// take script.
    set_get_refused: AtomicBool,
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
                    Arc::new(connection),
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
        let store = Self::new(Arc::new(connection), OnceLock::new(), options);
        if tokio::runtime::Handle::try_current().is_ok() {
            store.supervisor();
        }
        store
    }

    fn new(
        connection: Arc<Connection>,
        supervisor: OnceLock<Supervisor>,
        options: RedisOptions,
    ) -> Self {
        slots::prepare();
        let command_options = Options {
            timeout: Some(options.command_timeout),
            // A command arriving twice is harmless (see the type's documentation), and one
            // redirected by Redis Cluster needs an attempt for each redirection.
            max_attempts: Some(COMMAND_ATTEMPTS),
            max_redirections: Some(COMMAND_REDIRECTIONS),
            ..Options::default()
        };
        let boards = Feed::boards(
            Arc::clone(&connection),
            command_options.clone(),
            Str::from(new_id()),
            &options.key_prefix,
        );
        let store = Self {
            connection,
            supervisor,
            key_prefix: options.key_prefix,
            command_options,
            boards,
            sentinel: OnceLock::new(),
            acknowledgement: Acknowledgement::new(options.min_replicas, options.replica_timeout),
            fencing_tokens: options.fencing_tokens,
            set_get_refused: AtomicBool::new(false),
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
    pub(crate) fn redis_key<'k>(&self, key: &'k str) -> Cow<'k, str> {
        if self.key_prefix.is_empty() {
            Cow::Borrowed(key)
        } else {
            Cow::Owned(format!("{}{key}", self.key_prefix))
        }
    }

    /// The clients to send one operation through, watched by the supervisor (started at
    /// the first operation).
    fn connection(&self) -> &Connection {
        self.supervisor();
        &self.connection
    }

    /// Sends `command` (given the client, with the store's options) through the next
    /// client, and again while Redis Cluster refuses it without running it (see
    /// [`crate::resend`]), within the command timeout.
    pub(crate) async fn send<R, F, Fut>(&self, command: F) -> std::result::Result<R, FredError>
    where
        F: Fn(WithOptions<Client>) -> Fut,
        Fut: Future<Output = std::result::Result<R, FredError>>,
    {
        // On Redis Sentinel: nothing is sent while the store moves to a new master, and a
        // READONLY answer makes it reconnect.
        let sentinel = self.sentinel();
        let options = sentinel::ready(sentinel, &self.command_options).await?;
        let result = resend::while_refused(self.connection(), &options, command).await;
        sentinel::check(sentinel, &result);
        result
    }

    /// Takes `key` from outside its line without a fencing token: one `SET key owner NX PX
    /// ttl GET` (`NX GET` without TTL). A key reserved for a waiter (see
    /// [`crate::scripts`]) is busy like a held one. A key the owner holds already (a take
    /// re-sent by the client, or a second acquire) goes through the take script, which
    /// starts its TTL again as a renewal must.
    async fn set_if_free(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Acquisition> {
        let ttl_millis = ttl.map(millis).transpose()?;
        let redis_key = self.redis_key(key);
        let redis_key: &str = &redis_key;
        let slot = Slot::of(redis_key);
        let acknowledgement = self.acknowledgement.as_ref();
        let answered = self
            .send(|client| async move {
                replicas::set_if_absent(
                    acknowledgement,
                    &client,
                    slot,
                    (redis_key, owner),
                    ttl_millis,
                )
                .await
            })
            .await;
        let held: Option<Str> = match answered {
            // A key of another type, set by something else, is simply not free.
            Err(error) if is_wrong_type(&error) => return Ok(Acquisition::Busy),
            // Redis before 7 refuses `NX` with `GET` (a syntax error: nothing was run). The
            // take script does the same, a little dearer, on every version.
            Err(error) if is_syntax_error(&error) => {
                if !self.set_get_refused.swap(true, Ordering::Relaxed) {
                    tracing::info!(%error, "this Redis server refuses SET NX GET (it is older than Redis 7): plain takes run the take script");
                }
                return self.take(key, owner, ttl, None).await;
            }
            answered => answered
                .map_err(Error::storage)?
                .require("take", Option::is_none)?,
        };
        match held {
            None => Ok(Acquisition::Granted(Grant::new())),
            Some(held) if held == owner => self.take(key, owner, ttl, None).await,
            Some(_) => Ok(Acquisition::Busy),
        }
    }

    /// Runs the take script on `key`, in its line with `place` if given.
    async fn take(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Option<Place<'_>>,
    ) -> Result<Acquisition> {
        // The take script reads TTL 0 as "none"; a real TTL is at least 1 ms.
        let ttl = ttl.map(millis).transpose()?.unwrap_or(0);
        let place = place
            .map(|place| Ok::<_, Error>((place.waiter, millis(place.lease)?)))
            .transpose()?;
        let key = self.redis_key(key);
        let key: &str = &key;
        let slot = Slot::of(key);
        let [line, deadlines] = slot.line_keys(key);
        // The slot's counter only for a take that issues a token: the script reads it then
        // alone.
        let counter = self.fencing_tokens.then(|| slot.counter_key());
        let named = [
            key,
            &line,
            &deadlines,
            counter.as_deref().unwrap_or_default(),
        ];
        let (keys, fencing) = match &counter {
            Some(_) => (&named[..], "fenced"),
            None => (&named[..3], ""),
        };
        let acknowledgement = self.acknowledgement.as_ref();
        let taken: Option<(u64, i64)> = self
            .send(|client| async move {
                replicas::run(acknowledgement, &TAKE, &client, slot, keys, |args| {
                    args.extend([
                        Value::from(owner),
                        Value::Integer(ttl),
                        Value::from_static_str(fencing),
                    ]);
                    if let Some((waiter, lease)) = place {
                        args.extend([Value::from(waiter), Value::Integer(lease)]);
                    }
                })
                .await
            })
            .await
            .map_err(Error::storage)?
            .require("take", Option::is_some)?;
        // Token 0: none issued (fencing tokens are off).
        let grant = |token| match token {
            0 => Grant::new(),
            token => Grant::with_fencing_token(token),
        };
        Ok(match taken {
            Some((token, 0)) => Acquisition::Granted(grant(token)),
            Some((token, _renewed)) => Acquisition::Renewed(grant(token)),
            None => Acquisition::Busy,
        })
    }

    /// Runs `script`, one that may hand `key` over to the front waiter of its line, on the
    /// lock key and its line, with `leading` as its first argument: see
    /// [`hand_over_at`](Self::hand_over_at).
    async fn hand_over(
        &self,
        script: &LuaScript,
        key: &str,
        leading: Option<&str>,
        trailing: Option<&'static str>,
    ) -> Result<i64> {
        let redis_key = self.redis_key(key);
        let redis_key: &str = &redis_key;
        let slot = Slot::of(redis_key);
        let [line, deadlines] = slot.line_keys(redis_key);
        let keys = [redis_key, &line, &deadlines];
        self.hand_over_at(script, slot, &keys, leading, trailing)
            .await
    }

    /// Runs `script`, one that may hand a key over to the front waiter of its line, on
    /// `keys` (all in `slot`: the key's, then its line's, then the script's others), with
    /// `leading` as its first argument and `trailing` as its last. The script publishes the
    /// waiter it hands the key to, and the feed of whichever store that waiter waits in
    /// (this one too) wakes it. Returns the script's count (1: deleted, or removed), which
    /// a hand-over implies.
    pub(crate) async fn hand_over_at(
        &self,
        script: &LuaScript,
        slot: Slot,
        keys: &[&str],
        leading: Option<&str>,
        trailing: Option<&'static str>,
    ) -> Result<i64> {
        let reply: Value = self
            .send(|client| async move {
                script
                    .run(&client, slot, keys, |args| {
                        args.extend(leading.map(Value::from));
                        args.extend(trailing.map(Value::from_static_str));
                    })
                    .await
            })
            .await
            .map_err(Error::storage)?;
        Ok(match reply {
            Value::Integer(count) => count,
            _handed => 1,
        })
    }

    /// Replica acknowledgement of takes and extensions, if asked for.
    pub(crate) fn acknowledgement(&self) -> Option<&Acknowledgement> {
        self.acknowledgement.as_ref()
    }
}

/// A new store id: 64 random bits (the OS-seeded keys of std's `RandomState`) and the
/// process id, in hex (never a `:`, which ends the id in a catch-up wake-up's message).
fn new_id() -> String {
    static STORES: AtomicU64 = AtomicU64::new(0);
    let random = RandomState::new().hash_one(STORES.fetch_add(1, Ordering::Relaxed));
    format!("{random:016x}-{:x}", std::process::id())
}

/// `ttl` in whole milliseconds, rounded up so that a sub-millisecond TTL still expires.
///
/// A TTL follows core's rule, the same for every store: positive and at most
/// [`MAX_DURATION`](verrou_core::MAX_DURATION), else [`Error::InvalidDuration`]. Core checks
/// it before it calls the store; checking again here guards direct calls. The longest TTL
/// is about 3.2 × 10^11 ms, which `PX` and `PEXPIRE` accept, and an `i64` holds.
pub(crate) fn millis(ttl: Duration) -> Result<i64> {
    // At most MAX_DURATION in milliseconds: far below i64::MAX.
    Ok(i64::try_from(verrou_core::ttl_millis(ttl)?).unwrap_or(i64::MAX))
}

/// Whether `error` is Redis refusing a command on a key of another type.
fn is_wrong_type(error: &FredError) -> bool {
    error.details().starts_with("WRONGTYPE")
}

/// Whether `error` is Redis refusing a command's arguments (`ERR syntax error`), which it
/// then did not run.
fn is_syntax_error(error: &FredError) -> bool {
    error.details().contains("syntax error")
}

/// What an owner-checked script's reply (1 applied, 0 not the owner) means.
pub(crate) fn owner_check(applied: i64) -> OwnerCheck {
    if applied == 1 {
        OwnerCheck::Applied
    } else {
        OwnerCheck::NotOwner
    }
}

#[async_trait]
impl LockStore for RedisStore {
    /// Refuses a lock whose Redis key (key prefix, then name) starts with `verrou:`, the
    /// namespace of the store's own fencing counters, waiting lines, release channels and
    /// share holders: a lock named like a counter would stop every take of the counter's hash
    /// slot, and releasing it would reset the counter.
    fn validate_key(&self, key: &str) -> Result<()> {
        if self.redis_key(key).starts_with(slots::NAMESPACE) {
            return Err(Error::invalid_key(
                key,
                format!(
                    "its Redis key (key prefix {:?}, then the name) starts with `{}`, which the Redis store reserves for its fencing counters, waiting lines, release channels and the holders of semaphores and read-write locks",
                    self.key_prefix,
                    slots::NAMESPACE
                ),
            ));
        }
        Ok(())
    }

    /// A take for an owner starting with `verrou:handover:` (what a key reserved for a
    /// waiter holds) is refused: waiter ids are not secret.
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        refuse_reservation(owner)?;
        if self.fencing_tokens || self.set_get_refused.load(Ordering::Relaxed) {
            self.take(key, owner, ttl, None).await
        } else {
            self.set_if_free(key, owner, ttl).await
        }
    }

    async fn save_in_line(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Place<'_>,
    ) -> Result<Acquisition> {
        refuse_reservation(owner)?;
        self.take(key, owner, ttl, Some(place)).await
    }

    async fn leave_line(&self, key: &str, waiter: &str) -> Result<()> {
        self.hand_over(&LEAVE_LINE, key, Some(waiter), Some(LOCK))
            .await?;
        Ok(())
    }

    /// Releases `key` if `owner` holds it.
    ///
    /// When the connection drops after the release was written, it is written again once the
    /// connection is back (if the call still waits), and the second one finds the key no
    /// longer the owner's if the first one was applied: so a release reported
    /// [`NotOwner`](OwnerCheck::NotOwner) (`Error::NotOwned` for the lock) after a dropped
    /// connection may have released. Either way the key is no longer the owner's.
    ///
    /// An owner starting with `verrou:handover:` holds nothing (a take for one is refused):
    /// not owned, without a round trip.
    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        if is_reservation(owner) {
            return Ok(OwnerCheck::NotOwner);
        }
        let applied = self
            .hand_over(&DELETE_IF_OWNER, key, Some(owner), None)
            .await?;
        Ok(owner_check(applied))
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.hand_over(&FORCE_DELETE, key, None, None).await?;
        Ok(())
    }

    /// Whether an owner holds `key`: a key reserved for a waiter while it is handed over is
    /// held by nobody yet; a key of another type (set by something else) counts as held.
    async fn exists(&self, key: &str) -> Result<bool> {
        let key = self.redis_key(key);
        let key: &str = &key;
        let value: std::result::Result<Option<Str>, FredError> = self
            .send(|client| async move { client.get(key).await })
            .await;
        match value {
            Ok(value) => Ok(value.is_some_and(|value| !is_reservation(&value))),
            Err(error) if is_wrong_type(&error) => Ok(true),
            Err(error) => Err(Error::storage(error)),
        }
    }

    /// An owner starting with `verrou:handover:` holds nothing, as for
    /// [`delete`](Self::delete).
    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        if is_reservation(owner) {
            return Ok(OwnerCheck::NotOwner);
        }
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

    fn boards(&self) -> Option<&Boards> {
        Some(&self.boards)
    }

    async fn save_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        share: Share,
        place: Option<Place<'_>>,
    ) -> Result<Acquisition> {
        self.take_share(key, owner, ttl, share, place).await
    }

    async fn delete_share(&self, key: &str, owner: &str, share: Share) -> Result<OwnerCheck> {
        self.release_share(key, owner, share).await
    }

    async fn extend_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        share: Share,
    ) -> Result<OwnerCheck> {
        self.extend_share_hold(key, owner, ttl, share).await
    }

    async fn force_delete_shares(&self, key: &str, family: Family) -> Result<()> {
        self.force_release_shares(key, family).await
    }

    async fn count_shares(&self, key: &str, share: Share) -> Result<u32> {
        self.count_share_holders(key, share).await
    }

    async fn leave_share_line(&self, key: &str, family: Family, waiter: &str) -> Result<()> {
        self.leave_family_line(key, family, waiter).await
    }

    fn name(&self) -> &'static str {
        "the Redis store"
    }

    fn issues_fencing_tokens(&self) -> bool {
        self.fencing_tokens
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

/// Whether `owner` is what a key reserved for a waiter holds: no owner token starts so.
fn is_reservation(owner: &str) -> bool {
    owner.starts_with(RESERVED)
}

/// Refuses a take for an owner that [`is_reservation`]: whoever knows a waiter's id (every
/// store hears them) would otherwise take the key reserved for it.
fn refuse_reservation(owner: &str) -> Result<()> {
    if is_reservation(owner) {
        return Err(Error::InvalidArgument(format!(
            "the Redis store refuses owner tokens starting with `{RESERVED}`, which mark keys \
             reserved for a waiter"
        )));
    }
    Ok(())
}
