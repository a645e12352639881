//! [`PostgresStore`]: the [`LockStore`] on a PostgreSQL table.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::tokio_postgres::{types::ToSql, NoTls, Row};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use verrou_core::{Acquisition, Error, Grant, LockStore, OwnerCheck, Result};

use crate::config::{redact_password, PostgresConfig, PostgresOptions};
use crate::error::setup_failed;
use crate::identifier::TableName;
use crate::sql::{ttl_millis, Statements, CREATION_LOCK, TABLE_EXISTS};
use crate::sweep::{self, Schedule};

/// A [`LockStore`] keeping locks in a PostgreSQL table, one row per held key.
///
/// Every operation is one prepared statement (cached per connection) that decides expiry
/// with the database server's clock, and no statement fails when callers contend for a key.
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
    /// that the server answers and creates the table unless
    /// [`create_table`](PostgresOptions::create_table) is off, in which case the table must
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
        let mut client = pool
            .get()
            .await
            .map_err(|error| setup_failed(format!("could not reach {server}"), error))?;
        let quoted = table.quoted();
        let exists: bool = client
            .query_one(TABLE_EXISTS, &[&quoted])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|error| setup_failed(format!("could not look up table {quoted}"), error))?;
        let statements = Statements::new(&table);
        if !exists {
            if !options.create_table {
                return Err(Error::InvalidConfig(format!(
                    "table {quoted} does not exist and create_table is off"
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

    /// Runs a cached statement; returns the number of rows it affected.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let client = self.pool.get().await.map_err(Error::storage)?;
        let statement = client.prepare_cached(sql).await.map_err(Error::storage)?;
        client
            .execute(&statement, params)
            .await
            .map_err(Error::storage)
    }

    /// Runs a cached statement returning at most one row of one boolean.
    async fn query_flag(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<bool>> {
        let client = self.pool.get().await.map_err(Error::storage)?;
        let statement = client.prepare_cached(sql).await.map_err(Error::storage)?;
        let row: Option<Row> = client
            .query_opt(&statement, params)
            .await
            .map_err(Error::storage)?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(Error::storage)
    }
}

/// Creates the table, serialized between processes: `CREATE TABLE IF NOT EXISTS` alone
/// races on the catalog (two sessions creating the same name at once, one of them fails
/// with a unique violation on `pg_type`), so creators queue on an advisory lock held until
/// their transaction ends, and each one after the first finds the table there.
async fn create_table(
    client: &mut deadpool_postgres::Client,
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
        let taken = self
            .execute(&self.statements.save, &[&key, &owner, &ttl])
            .await?;
        sweep::start_if_due(&self.sweeps, &self.pool, &self.statements);
        Ok(if taken == 1 {
            Acquisition::Granted(Grant::new())
        } else {
            Acquisition::Busy
        })
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        let released = self
            .query_flag(&self.statements.delete, &[&key, &owner])
            .await?;
        Ok(owner_check(released == Some(true)))
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.execute(&self.statements.force_delete, &[&key])
            .await
            .map(drop)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let held = self.query_flag(&self.statements.exists, &[&key]).await?;
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
