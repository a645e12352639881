//! [`PostgresStore`]: the [`LockStore`] on a PostgreSQL table.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::tokio_postgres::types::{FromSql, ToSql};
use deadpool_postgres::Pool;
use verrou_core::{
    Acquisition, Boards, Error, Family, Grant, LockStore, OwnerCheck, Place, Result, Share,
};

use crate::channel::StoreId;
use crate::config::{redact_password, PostgresConfig, PostgresOptions};
use crate::connector::{connector, Connect};
use crate::error::setup_failed;
use crate::hosts::Hosts;
use crate::identifier::TableName;
use crate::key::check_key;
use crate::listener::{Listener, Setup};
use crate::pool::{build_pool, driver_config, pool_failure};
use crate::run::Runner;
use crate::schema::{ensure_table, key_column_length};
use crate::sql::{ttl_millis, Statements, RESERVATION_MARK};
use crate::sweep::{self, Schedule};
use crate::tls::{make_tls, SslMode};
use crate::unanswered::Canceller;

mod shares;

/// What the store calls itself in messages ([`LockStore::name`]).
pub(crate) const NAME: &str = "the PostgreSQL store";

/// A [`LockStore`] keeping locks in a PostgreSQL table, one row per held key.
///
/// Every operation is one prepared statement (cached per connection) that decides expiry
/// with the database server's clock, and no statement fails when callers contend for a key.
/// Grants carry fencing tokens from a sequence beside the table (`<table>_fencing_seq`).
/// Each operation is bounded by the command timeout. Keys are at most
/// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, and at most `n` characters when the table's key
/// column is `varchar(n)` (read when the store starts).
///
/// Waiters of every process wait in one line per key, kept in a table beside the lock
/// table (`<table>_waiters`): they are served in arrival order, and a release hands the key
/// to the waiter at the front, reserving it for that waiter for the hand-over window (a
/// plain take never reads the line: it finds a reserved key busy). A store built with
/// [`connect`](Self::connect) also keeps one connection outside the pool that `LISTEN`s for
/// hand-overs, so a waiting `acquire` gets the lock as soon as it is handed to it instead of
/// at its next retry.
///
/// Cloning is cheap and shares the pool and the listener.
#[derive(Clone)]
pub struct PostgresStore {
    runner: Runner,
    table: TableName,
    /// How many characters the table's key column holds, when it is declared with a length.
    key_max_chars: Option<usize>,
    statements: Arc<Statements>,
    sweeps: Arc<Schedule>,
    /// This store's name in the lines, and the channel of its hand-overs.
    id: StoreId,
    listening: Option<Arc<Listening>>,
}

/// The waiters of this store, and the listener that reports hand-overs to them (stopped
/// when the last clone of the store is dropped).
#[derive(Debug)]
struct Listening {
    boards: Arc<Boards>,
    _listener: Listener,
}

impl PostgresStore {
    /// Builds a pool from `config` and a store on it, with a listener unless
    /// [`listen`](PostgresConfig::listen) is off. Fails with [`Error::InvalidConfig`] when
    /// [`PostgresConfig::validate`] does, or when the TLS the URL asks for can not be set up
    /// (see [`PostgresConfig::ssl_root_cert`]), and with [`Error::Storage`] when the server
    /// can not be reached (refused, TLS handshake or authentication failed) or the table can
    /// not be created.
    ///
    /// A URL may name several hosts (a primary and its standbys, see
    /// [`PostgresConfig::url`]); new connections, the listener's too, go to the one that
    /// takes writes. All of them use the TLS the URL's `sslmode` asks for.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        config.validate()?;
        let options = config.options();
        let table = TableName::parse(&options.table)?;
        let (pg_config, mode) = driver_config(&config)?;
        let root_cert = config.ssl_root_cert.as_deref();
        let tls = Arc::new(make_tls(mode, root_cert)?);
        if mode == SslMode::Require && root_cert.is_none() {
            tracing::warn!(
                "verrou: sslmode=require encrypts the connections to PostgreSQL but does not \
                 check the server's certificate; use verify-full (or set ssl_root_cert)"
            );
        }
        let hosts = Hosts::new(&pg_config, config.connect_timeout, config.command_timeout);
        let pool = build_pool(&config, pg_config, &hosts, Arc::clone(&tls))?;
        let canceller = Canceller(Some(Arc::clone(&tls)));
        let listen = config.listen.then(|| connector(&hosts, tls));
        let server = format!(
            "PostgreSQL at {} ({})",
            redact_password(&config.url),
            mode.describe(root_cert.is_some())
        );
        Self::open(pool, table, options, &server, listen, canceller).await
    }

    /// A store on a pool you already have. Checks the options
    /// ([`PostgresOptions::validate`]), checks that the server answers, and creates the
    /// table, its fencing-token sequence and its waiting line unless
    /// [`create_table`](PostgresOptions::create_table) is off, in which case they must
    /// exist.
    ///
    /// This store has no listener: its waiters keep their places in line and poll at their
    /// retry delay (its releases still wake the waiters of stores that listen). For wake-ups, and TLS as the
    /// URL's `sslmode` says, use [`connect`](Self::connect).
    ///
    /// The pool's connections are used as they come. Those of [`connect`](Self::connect)
    /// turn sequential scans and JIT off when they open, so that after a vacuum the
    /// statements keep finding their rows through the index instead of reading the whole
    /// table; give yours the same (deadpool-postgres's `Config::options`, or the URL's
    /// `options=-c enable_seqscan=off -c jit=off`) for the same speed under churn.
    pub async fn from_pool(pool: Pool, options: PostgresOptions) -> Result<Self> {
        options.validate()?;
        let table = TableName::parse(&options.table)?;
        Self::open(
            pool,
            table,
            options,
            "PostgreSQL through the given pool",
            None,
            Canceller(None),
        )
        .await
    }

    /// The pool the store runs its statements on.
    pub fn pool(&self) -> &Pool {
        self.runner.pool()
    }

    async fn open(
        pool: Pool,
        table: TableName,
        options: PostgresOptions,
        server: &str,
        listen: Option<Connect>,
        canceller: Canceller,
    ) -> Result<Self> {
        let mut client = pool.get().await.map_err(|error| {
            setup_failed(format!("could not reach {server}"), pool_failure(error))
        })?;
        let statements = Arc::new(Statements::new(&table));
        let id = StoreId::new();
        let setup = async {
            ensure_table(&mut client, &table, &statements, options.create_table).await?;
            key_column_length(&client, &table).await
        };
        let key_max_chars = tokio::time::timeout(options.command_timeout, setup)
            .await
            .map_err(|_| {
                Error::storage(format!(
                    "{server} did not set up table {} within the command timeout ({:?})",
                    table.quoted(),
                    options.command_timeout
                ))
            })??;
        let listening = listen.map(|connect| {
            let (listener, boards) = Listener::start(Setup {
                connect,
                id: id.clone(),
                statements: Arc::clone(&statements),
                timeout: options.command_timeout,
            });
            Arc::new(Listening {
                boards,
                _listener: listener,
            })
        });
        Ok(Self {
            runner: Runner::new(pool, options.command_timeout, canceller),
            table,
            key_max_chars,
            statements,
            sweeps: Arc::new(Schedule::new(options.sweep_interval)),
            id,
            listening,
        })
    }

    /// Runs a statement of `key` returning at most one row, and reads the row's first value.
    async fn query_value<T>(
        &self,
        key: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<T>>
    where
        T: for<'row> FromSql<'row>,
    {
        let row = self.runner.query_opt(Some(key), sql, params).await?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(Error::storage)
    }
}

#[async_trait]
impl LockStore for PostgresStore {
    /// Refuses keys longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, or than the key
    /// column's declared length in characters (`varchar(n)`).
    fn validate_key(&self, key: &str) -> Result<()> {
        check_key(key, &self.table, self.key_max_chars)
    }

    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        self.take(key, owner, ttl, None).await
    }

    async fn save_in_line(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Place<'_>,
    ) -> Result<Acquisition> {
        self.take(key, owner, ttl, Some(place)).await
    }

    async fn leave_line(&self, key: &str, waiter: &str) -> Result<()> {
        let waiter = self.id.in_line(waiter);
        let handed: Option<Option<String>> = self
            .query_value(key, &self.statements.leave_line, &[&key, &waiter])
            .await?;
        self.handed_over(None, key, handed.flatten());
        Ok(())
    }

    /// An owner starting with U+0001 holds nothing here (a take for one is refused): not
    /// owned, without a round trip.
    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        if is_reservation(owner) {
            return Ok(OwnerCheck::NotOwner);
        }
        let released: Option<Option<String>> = self
            .query_value(key, &self.statements.delete, &[&key, &owner])
            .await?;
        let mine = released.is_some();
        self.handed_over(None, key, released.flatten());
        Ok(owner_check(mine))
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        let released: Option<Option<String>> = self
            .query_value(key, &self.statements.force_delete, &[&key])
            .await?;
        self.handed_over(None, key, released.flatten());
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let held = self
            .query_value(key, &self.statements.exists, &[&key])
            .await?;
        Ok(held == Some(true))
    }

    /// An owner starting with U+0001 holds nothing here, as for [`delete`](Self::delete).
    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        if is_reservation(owner) {
            return Ok(OwnerCheck::NotOwner);
        }
        let ttl = ttl_millis(ttl)?;
        let extended = self
            .query_value(key, &self.statements.extend, &[&key, &owner, &ttl])
            .await?;
        Ok(owner_check(extended == Some(true)))
    }

    /// The boards of the listener's hand-overs; `None` without a listener (waiters poll).
    fn boards(&self) -> Option<&Boards> {
        self.listening
            .as_deref()
            .map(|listening| &*listening.boards)
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
        self.extend_share_by(key, owner, ttl, share).await
    }

    async fn force_delete_shares(&self, key: &str, family: Family) -> Result<()> {
        self.clear_shares(key, family).await
    }

    async fn count_shares(&self, key: &str, share: Share) -> Result<u32> {
        self.count_holders(key, share).await
    }

    async fn leave_share_line(&self, key: &str, family: Family, waiter: &str) -> Result<()> {
        self.leave_family_line(key, family, waiter).await
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn issues_fencing_tokens(&self) -> bool {
        true
    }
}

impl PostgresStore {
    /// A take, plain or (with `place`) in the key's line. An owner starting with U+0001 is
    /// [`Error::InvalidArgument`]: its row would read as a key reserved for a waiter (see
    /// [`RESERVATION_MARK`]), which that waiter could take. Owner tokens are hex, and no
    /// lock this library or the Node.js one serialized has such an owner.
    async fn take(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Option<Place<'_>>,
    ) -> Result<Acquisition> {
        if is_reservation(owner) {
            return Err(Error::InvalidArgument(format!(
                "{NAME} refuses owner tokens starting with U+0001, which mark keys reserved \
                 for a waiter"
            )));
        }
        let ttl = ttl.map(ttl_millis).transpose()?;
        let token: Option<i64> = match place {
            None => {
                self.query_value(key, &self.statements.save, &[&key, &owner, &ttl])
                    .await?
            }
            Some(place) => {
                let lease = ttl_millis(place.lease)?;
                let waiter = self.id.in_line(place.waiter);
                let params: [&(dyn ToSql + Sync); 5] = [&key, &owner, &ttl, &waiter, &lease];
                let row = self
                    .runner
                    .query_opt(Some(key), &self.statements.save_in_line, &params)
                    .await?
                    .ok_or_else(|| Error::storage("a take in line answered no row"))?;
                let token: Option<i64> = row.try_get(0).map_err(Error::storage)?;
                let handed: Option<String> = row.try_get(1).map_err(Error::storage)?;
                self.handed_over(None, key, handed);
                token
            }
        };
        sweep::start_if_due(&self.sweeps, &self.runner, &self.statements);
        token.map_or(Ok(Acquisition::Busy), |token| self.granted(token))
    }

    /// A grant with the fencing token the sequence gave.
    fn granted(&self, token: i64) -> Result<Acquisition> {
        let token = u64::try_from(token).map_err(|_| {
            Error::storage(format!(
                "the fencing-token sequence {} returned {token}; it must count up from 1",
                self.table.sequence_quoted()
            ))
        })?;
        Ok(Acquisition::Granted(Grant::with_fencing_token(token)))
    }

    /// Wakes the waiter named `in_line` at once if it waits here for `key` of `family`
    /// (`None`: a lock's): the key was handed to it (the listener hears it too, a moment
    /// later; a second wake costs nothing).
    fn handed_over(&self, family: Option<Family>, key: &str, in_line: Option<String>) {
        let Some(boards) = self.boards() else {
            return;
        };
        if let Some(waiter) = in_line.as_deref().and_then(|name| self.id.own(name)) {
            boards.of(family).wake(key, Some(waiter));
        }
    }
}

/// Whether `owner` starts like the owner of a row reserved for a waiter.
fn is_reservation(owner: &str) -> bool {
    owner.starts_with(RESERVATION_MARK)
}

/// What an owner-checked statement's answer means.
fn owner_check(applied: bool) -> OwnerCheck {
    if applied {
        OwnerCheck::Applied
    } else {
        OwnerCheck::NotOwner
    }
}

/// Shows the table, the pool's state and whether the store listens; never the connection
/// string.
impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.table.quoted())
            .field("id", &self.id)
            .field("pool", &self.runner.pool().status())
            .field("command_timeout", &self.runner.timeout())
            .field("listening", &self.listening.is_some())
            .finish_non_exhaustive()
    }
}
