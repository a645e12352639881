//! Running one statement on a pooled connection, within the command timeout.

use std::time::Duration;

use deadpool_postgres::tokio_postgres::types::ToSql;
use deadpool_postgres::tokio_postgres::Row;
use deadpool_postgres::{Object, Pool};
use verrou_core::{Error, Result};

use crate::pool::pool_failure;

/// Runs statements on a pool, each within `timeout` from asking for a connection to the
/// answer. Statements are prepared once per connection, then cached.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pool: Pool,
    timeout: Duration,
}

impl Runner {
    /// A runner on `pool` bounding every statement by `timeout`.
    pub(crate) fn new(pool: Pool, timeout: Duration) -> Self {
        Self { pool, timeout }
    }

    /// The pool statements run on.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The bound on every statement.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `sql`, which returns at most one row, and returns that row.
    ///
    /// Fails with [`Error::Storage`] if no connection comes, the server fails the
    /// statement, or the answer does not come within the timeout. A connection that timed
    /// out is closed rather than returned to the pool: it may still be waiting for the
    /// answer, or be cut off from the server. One timer covers the whole operation.
    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let mut leased: Option<Object> = None;
        let answer = tokio::time::timeout(self.timeout, async {
            let connection = self
                .pool
                .get()
                .await
                .map_err(|error| Error::storage(pool_failure(error)))?;
            let connection = leased.insert(connection);
            let statement = connection
                .prepare_cached(sql)
                .await
                .map_err(Error::storage)?;
            connection
                .query_opt(&statement, params)
                .await
                .map_err(Error::storage)
        })
        .await;
        answer.unwrap_or_else(|_elapsed| {
            if let Some(connection) = leased.take() {
                drop(Object::take(connection));
            }
            Err(Error::storage(format!(
                "PostgreSQL did not answer within the command timeout ({:?})",
                self.timeout
            )))
        })
    }
}
