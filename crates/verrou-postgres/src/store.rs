//! [`PostgresStore`]: the [`LockStore`] on a PostgreSQL table.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::tokio_postgres::types::{FromSql, ToSql};
use deadpool_postgres::tokio_postgres::{NoTls, Statement};
use deadpool_postgres::{
    Client, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use verrou_core::{Acquisition, BoxError, Error, Grant, LockStore, OwnerCheck, Result};

use crate::config::{redact_password, PostgresConfig, PostgresOptions};
use crate::error::setup_failed;
use crate::identifier::TableName;
use crate::sql::{ttl_millis, Statements, CREATION_LOCK, OBJECTS_EXIST};
use crate::sweep::{self, Schedule};

/// A [`LockStore`] keeping locks in a PostgreSQL table, one row per held key.
///
/// Every operation is one prepared statement (cached per connection) that decides expiry
/// with the database server's clock, and no statement fails when callers contend for a key.
/// Grants carry fencing tokens from a sequence beside the table (`<table>_fencing_seq`).
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    table: TableName,
    statements: Arc<Statements>,
    sweeps: Arc<Schedule>,
}

impl PostgresStore {
    /// Builds a pool from `config` and a store on it. Fails with
    /// [`Error::InvalidConfig`] for a bad table name, URL or pool size, and with
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
        &self.pool
    }

    async fn open(
        pool: Pool,
        table: TableName,
        options: PostgresOptions,
        server: &str,
    ) -> Result<Self> {
        let mut client = pool.get().await.map_err(|error| {
            setup_failed(format!("could not reach {server}"), pool_failure(error))
        })?;
        let (quoted, sequence) = (table.quoted(), table.sequence_quoted());
        let (table_exists, sequence_exists): (bool, bool) = client
            .query_one(OBJECTS_EXIST, &[&quoted, &sequence])
            .await
            .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .map_err(|error| setup_failed(format!("could not look up table {quoted}"), error))?;
        let statements = Statements::new(&table);
        if !(table_exists && sequence_exists) {
            if !options.create_table {
                let missing = if table_exists {
                    format!("the fencing-token sequence {sequence} (CREATE SEQUENCE {sequence})")
                } else {
                    format!("table {quoted}")
                };
                return Err(Error::InvalidConfig(format!(
                    "{missing} does not exist and create_table is off"
                )));
            }
            create_table(&mut client, &table, &statements.create_table)
                .await
                .map_err(|error| setup_failed(format!("could not create table {quoted}"), error))?;
        }
        Ok(Self {
            pool,
            table,
            statements: Arc::new(statements),
            sweeps: Arc::new(Schedule::new(options.sweep_interval)),
        })
    }

    /// A pooled connection with `sql` prepared on it (once per connection, then cached).
    async fn prepare(&self, sql: &str) -> Result<(Client, Statement)> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|error| Error::storage(pool_failure(error)))?;
        let statement = client.prepare_cached(sql).await.map_err(Error::storage)?;
        Ok((client, statement))
    }

    /// Runs a statement; returns the number of rows it affected.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let (client, statement) = self.prepare(sql).await?;
        client
            .execute(&statement, params)
            .await
            .map_err(Error::storage)
    }

    /// Runs a statement returning at most one row of one value.
    async fn query_value<T>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<T>>
    where
        T: for<'row> FromSql<'row>,
    {
        let (client, statement) = self.prepare(sql).await?;
        let row = client
            .query_opt(&statement, params)
            .await
            .map_err(Error::storage)?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(Error::storage)
    }
}

/// The cause to report for a pool failure. A connection failure keeps only the driver's
/// error: deadpool's wrapper repeats it both in its message and as its source, which error
/// reporters would print twice.
fn pool_failure(error: PoolError) -> BoxError {
    match error {
        PoolError::Backend(error) => error.into(),
        other => other.into(),
    }
}

/// Creates the table and its sequence, serialized between processes: `CREATE ... IF NOT
/// EXISTS` alone races on the catalog (two sessions creating the same name at once, one of
/// them fails with a unique violation on `pg_type`), so creators queue on an advisory lock
/// held until their transaction ends, and each one after the first finds them there.
async fn create_table(
    client: &mut Client,
    table: &TableName,
    create: &str,
) -> Result<(), deadpool_postgres::tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let lock_name = format!("verrou create table {}", table.quoted());
    transaction.execute(CREATION_LOCK, &[&lock_name]).await?;
    transaction.batch_execute(create).await?;
    transaction.commit().await
}

/// A pool of plain (no TLS) connections as `config` describes.
fn build_pool(config: &PostgresConfig) -> Result<Pool> {
    if config.pool_size == 0 {
        return Err(Error::InvalidConfig(
            "pool_size must be at least 1".to_owned(),
        ));
    }
    let mut pg_config: deadpool_postgres::tokio_postgres::Config =
        config.url.parse().map_err(|error| {
            Error::InvalidConfig(format!(
                "invalid PostgreSQL url {}: {error}",
                redact_password(&config.url)
            ))
        })?;
    pg_config.connect_timeout(config.connect_timeout);
    let manager = Manager::from_config(
        pg_config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(config.connect_timeout))
        .wait_timeout(config.pool_timeout)
        .build()
        .map_err(|error| Error::InvalidConfig(format!("could not build the pool: {error}")))
}

#[async_trait]
impl LockStore for PostgresStore {
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        let ttl = ttl.map(ttl_millis);
        let token: Option<i64> = self
            .query_value(&self.statements.save, &[&key, &owner, &ttl])
            .await?;
        sweep::start_if_due(&self.sweeps, &self.pool, &self.statements);
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
        self.execute(&self.statements.force_delete, &[&key])
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
            .execute(&self.statements.extend, &[&key, &owner, &ttl])
            .await?;
        Ok(owner_check(extended == 1))
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
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}
