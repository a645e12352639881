//! Running one statement on a pooled connection, within the command timeout, after every
//! statement of the same key that went unanswered here (see [`crate::unanswered`]).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::tokio_postgres::types::ToSql;
use deadpool_postgres::tokio_postgres::Row;
use deadpool_postgres::{Object, Pool, Timeouts};
use tokio::time::timeout;
use verrou_core::{Error, Result};

use crate::pool::pool_failure;
use crate::unanswered::{Canceller, Unanswered};

/// Runs statements on a pool, each within `timeout` from asking for a connection to the
/// answer, in order per key. Statements are prepared once per connection, then cached.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pool: Pool,
    /// The pool's own timeouts for getting a connection, less a wait the command timeout
    /// always cuts first (each is one more timer per statement).
    gets: Timeouts,
    timeout: Duration,
    unanswered: Arc<Unanswered>,
}

impl Runner {
    /// A runner on `pool` bounding every statement by `timeout`, cancelling those that time
    /// out with `canceller`.
    pub(crate) fn new(pool: Pool, timeout: Duration, canceller: Canceller) -> Self {
        Self {
            gets: connection_gets(&pool, timeout),
            pool,
            timeout,
            unanswered: Arc::new(Unanswered::new(canceller, timeout)),
        }
    }

    /// The pool statements run on.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The bound on every statement.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `sql` on `key` (`None`: a statement of no key in particular), which returns at
    /// most one row, and returns that row.
    ///
    /// Fails with [`Error::Storage`] if a statement of the same key that went unanswered
    /// has not ended on the server in time, no connection comes, the server fails the
    /// statement, or the answer does not come within the timeout. One timer covers the
    /// whole operation.
    pub(crate) async fn query_opt(
        &self,
        key: Option<&str>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        timeout(self.timeout, self.run(key, sql, params))
            .await
            .map_err(|_| {
                Error::storage(format!(
                    "PostgreSQL did not answer within the command timeout ({:?})",
                    self.timeout
                ))
            })?
    }

    /// [`Runner::query_opt`] without the timer. From the moment it has a connection, the
    /// statement counts as sent: if this future is dropped before the answer came
    /// (preparing is a statement too), the connection is kept until the server has ended it.
    async fn run(
        &self,
        key: Option<&str>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        if let Some(ended) = key.and_then(|key| self.unanswered.of(key)) {
            ended.cancelled().await;
        }
        let connection = self
            .pool
            .timeout_get(&self.gets)
            .await
            .map_err(|error| Error::storage(pool_failure(error)))?;
        let mut sent = Sent {
            unanswered: &self.unanswered,
            key,
            connection: Some(connection),
        };
        let answer = match sent.connection().prepare_cached(sql).await {
            Ok(statement) => sent.connection().query_opt(&statement, params).await,
            Err(error) => Err(error),
        };
        sent.answered();
        answer.map_err(Error::storage)
    }
}

/// The timeouts `pool` gets its connections with, without the wait for a free one unless it
/// is shorter than `timeout`.
fn connection_gets(pool: &Pool, timeout: Duration) -> Timeouts {
    let mut timeouts = pool.timeouts();
    timeouts.wait = timeouts.wait.filter(|wait| *wait < timeout);
    timeouts
}

/// A statement on its way on `connection`: unless its answer came, the connection is kept
/// until the server has ended the statement (see [`Unanswered::wait_for_end`]), whether the
/// statement timed out or the caller stopped waiting for it (its future dropped).
struct Sent<'a> {
    unanswered: &'a Arc<Unanswered>,
    key: Option<&'a str>,
    /// Until answered or dropped.
    connection: Option<Object>,
}

impl Sent<'_> {
    fn connection(&self) -> &Object {
        self.connection
            .as_ref()
            .expect("a statement's connection until it is answered")
    }

    /// The answer came: the connection goes back to the pool.
    fn answered(&mut self) {
        self.connection = None;
    }
}

impl Drop for Sent<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.unanswered.wait_for_end(self.key, connection);
        }
    }
}
