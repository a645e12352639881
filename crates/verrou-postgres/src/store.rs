//! [`PostgresStore`]: the [`LockStore`] on a PostgreSQL table.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::tokio_postgres::types::{FromSql, ToSql};
use deadpool_postgres::Pool;
use verrou_core::{Acquisition, Error, Grant, LockStore, OwnerCheck, Result};

use crate::config::{redact_password, PostgresConfig, PostgresOptions};
use crate::error::setup_failed;
use crate::identifier::TableName;
use crate::pool::{build_pool, pool_failure};
use crate::run::Runner;
use crate::schema::ensure_table;
use crate::sql::{ttl_millis, Statements};
use crate::sweep::{self, Schedule};

/// A [`LockStore`] keeping locks in a PostgreSQL table, one row per held key.
///
/// Every operation is one prepared statement (cached per connection) that decides expiry
/// with the database server's clock, and no statement fails when callers contend for a key.
/// Grants carry fencing tokens from a sequence beside the table (`<table>_fencing_seq`).
/// Each operation is bounded by the command timeout. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    runner: Runner,
    table: TableName,
    statements: Arc<Statements>,
    sweeps: Arc<Schedule>,
}

impl PostgresStore {
    /// Builds a pool from `config` and a store on it. Fails with
    /// [`Error::InvalidConfig`] for a bad table name, URL, pool size or command timeout, and
    /// with
    /// [`Error::Storage`] when the server can not be reached or the table can not be
    /// created.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let options = config.options();
        let table = TableName::parse(&options.table)?;
        let server = redact_password(&config.url);
        let pool = build_pool(&config)?;
        Self::open(pool, table, options, &format!("PostgreSQL at {server}")).await
    }

    /// A store on a pool you already have (for example one with a TLS connector). Checks
    /// that the server answers and creates the table and its fencing-token sequence unless
    /// [`create_table`](PostgresOptions::create_table) is off, in which case both must
    /// exist.
    pub async fn from_pool(pool: Pool, options: PostgresOptions) -> Result<Self> {
        let table = TableName::parse(&options.table)?;
        Self::open(pool, table, options, "PostgreSQL through the given pool").await
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
    ) -> Result<Self> {
        if options.command_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "command_timeout must be positive".to_owned(),
            ));
        }
        let mut client = pool.get().await.map_err(|error| {
            setup_failed(format!("could not reach {server}"), pool_failure(error))
        })?;
        let statements = Statements::new(&table);
        let creation = ensure_table(&mut client, &table, &statements, options.create_table);
        tokio::time::timeout(options.command_timeout, creation)
            .await
            .map_err(|_| {
                Error::storage(format!(
                    "{server} did not set up table {} within the command timeout ({:?})",
                    table.quoted(),
                    options.command_timeout
                ))
            })??;
        Ok(Self {
            runner: Runner::new(pool, options.command_timeout),
            table,
            statements: Arc::new(statements),
            sweeps: Arc::new(Schedule::new(options.sweep_interval)),
        })
    }

    /// Runs a statement returning at most one row, and reads the row's first value.
    async fn query_value<T>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<T>>
    where
        T: for<'row> FromSql<'row>,
    {
        let row = self.runner.query_opt(sql, params).await?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(Error::storage)
    }
}

#[async_trait]
impl LockStore for PostgresStore {
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        let ttl = ttl.map(ttl_millis);
        let token: Option<i64> = self
            .query_value(&self.statements.save, &[&key, &owner, &ttl])
            .await?;
        sweep::start_if_due(&self.sweeps, &self.runner, &self.statements);
        match token {
            Some(token) => {
                let token = u64::try_from(token).map_err(|_| {
                    Error::storage(format!(
                        "the fencing-token sequence {} returned {token}; it must count up from 1",
                        self.table.sequence_quoted()
                    ))
                })?;
                Ok(Acquisition::Granted(Grant::with_fencing_token(token)))
            }
            None => Ok(Acquisition::Busy),
        }
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        let released = self
            .query_value(&self.statements.delete, &[&key, &owner])
            .await?;
        Ok(owner_check(released == Some(true)))
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.runner
            .query_opt(&self.statements.force_delete, &[&key])
            .await
            .map(drop)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let held = self.query_value(&self.statements.exists, &[&key]).await?;
        Ok(held == Some(true))
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        let ttl = ttl_millis(ttl);
        let extended = self
            .query_value(&self.statements.extend, &[&key, &owner, &ttl])
            .await?;
        Ok(owner_check(extended == Some(true)))
    }
}

fn owner_check(applied: bool) -> OwnerCheck {
    if applied {
        OwnerCheck::Applied
    } else {
        OwnerCheck::NotOwner
    }
}

/// Shows the table and the pool's state; never the connection string.
impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.table.quoted())
            .field("pool", &self.runner.pool().status())
            .field("command_timeout", &self.runner.timeout())
            .finish_non_exhaustive()
    }
}
