//! Running one statement on a pooled connection, within the command timeout, after every
//! statement of the same key that went unanswered here (see [`crate::unanswered`]).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::tokio_postgres::types::ToSql;
use deadpool_postgres::tokio_postgres::Row;
use deadpool_postgres::{Object, Pool};
use tokio::time::{timeout_at, Instant};
use verrou_core::{Error, Result};

use crate::pool::pool_failure;
use crate::unanswered::{Canceller, Unanswered};

/// Runs statements on a pool, each within `timeout` from asking for a connection to the
/// answer, in order per key. Statements are prepared once per connection, then cached.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pool: Pool,
    timeout: Duration,
    unanswered: Arc<Unanswered>,
}

impl Runner {
    /// A runner on `pool` bounding every statement by `timeout`, cancelling those that time
    /// out with `canceller`.
    pub(crate) fn new(pool: Pool, timeout: Duration, canceller: Canceller) -> Self {
        Self {
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
        let deadline = Instant::now() + self.timeout;
        let timed_out = || {
            Error::storage(format!(
                "PostgreSQL did not answer within the command timeout ({:?})",
                self.timeout
            ))
        };
        if let Some(ended) = key.and_then(|key| self.unanswered.of(key)) {
            timeout_at(deadline, ended.cancelled())
                .await
                .map_err(|_| timed_out())?;
        }
        let connection = timeout_at(deadline, self.pool.get())
            .await
            .map_err(|_| timed_out())?
            .map_err(|error| Error::storage(pool_failure(error)))?;
        let prepared = timeout_at(deadline, connection.prepare_cached(sql)).await;
        let Ok(statement) = prepared else {
            // Not run yet, but not to be reused while it may still be preparing it.
            drop(Object::take(connection));
            return Err(timed_out());
        };
        let statement = statement.map_err(Error::storage)?;
        let mut sent = Sent {
            unanswered: &self.unanswered,
            key,
            connection: Some(connection),
        };
        let answer = timeout_at(deadline, sent.connection().query_opt(&statement, params)).await;
        match answer {
            Ok(answer) => {
                sent.answered();
                answer.map_err(Error::storage)
            }
            Err(_) => Err(timed_out()),
        }
    }
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
