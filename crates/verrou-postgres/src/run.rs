//! Running one statement on a pooled connection, within the command timeout, after every
//! statement of the same key that went unanswered here (it timed out, or its caller stopped
//! waiting) has ended on the server.
//!
//! A statement that timed out may still run: the server does not look at the client while
//! it works (a take waiting for a row lock, a commit waiting for a standby), and may commit
//! it later. A statement sent afterwards on another connection — the release that gives
//! back the take nobody heard the answer of — would then reach the server first, find
//! nothing, and the take would commit a lock nobody owns. So the connection of a statement
//! that went unanswered is kept, neither closed nor given back to the pool: the server is asked to cancel the statement, and an
//! empty query sent behind it answers once the server has ended it. Until then the
//! statements of the same key wait, within their own timeout, for up to one more command
//! timeout (a server that does not answer at all, hung or cut off, holds the key up no
//! longer than that).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use deadpool_postgres::tokio_postgres::types::ToSql;
use deadpool_postgres::tokio_postgres::{NoTls, Row};
use deadpool_postgres::{Object, Pool};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use verrou_core::{Error, Result};

use crate::pool::pool_failure;
use crate::tls::MakeTls;

/// Runs statements on a pool, each within `timeout` from asking for a connection to the
/// answer, in order per key. Statements are prepared once per connection, then cached.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pool: Pool,
    timeout: Duration,
    unfinished: Arc<Unfinished>,
}

/// How the server is asked to cancel a statement: over a connection of its own, with the
/// pool's TLS (`None`: without, for a pool the store did not make).
#[derive(Clone)]
pub(crate) struct Canceller(pub(crate) Option<Arc<MakeTls>>);

impl std::fmt::Debug for Canceller {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.0.is_some() {
            "with the pool's TLS"
        } else {
            "without TLS"
        };
        formatter.debug_tuple("Canceller").field(&how).finish()
    }
}

/// The keys with statements that went unanswered and may still run on the server: each with the
/// token cancelled once they have all ended, and the number of the last one.
#[derive(Debug)]
struct Unfinished {
    /// How the statements that went unanswered are cancelled.
    canceller: Canceller,
    /// How long the statements of a key wait for one that went unanswered to end.
    patience: Duration,
    /// How many keys there are, read without the mutex, so that statements pay nothing
    /// while every statement was answered.
    count: AtomicUsize,
    keys: Mutex<HashMap<String, (u64, CancellationToken)>>,
    /// The number of the last statement that went unanswered.
    last: AtomicU64,
}

impl Runner {
    /// A runner on `pool` bounding every statement by `timeout`, cancelling those that time
    /// out with `canceller`.
    pub(crate) fn new(pool: Pool, timeout: Duration, canceller: Canceller) -> Self {
        Self {
            pool,
            timeout,
            unfinished: Arc::new(Unfinished {
                canceller,
                patience: timeout,
                count: AtomicUsize::new(0),
                keys: Mutex::default(),
                last: AtomicU64::new(0),
            }),
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
    /// Fails with [`Error::Storage`] if a statement of the same key that went unanswered has not
    /// ended on the server in time, no connection comes, the server fails the statement, or
    /// the answer does not come within the timeout. One timer covers the whole operation.
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
        if let Some(ended) = key.and_then(|key| self.unfinished.of(key)) {
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
            unfinished: &self.unfinished,
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
/// until the server has ended the statement (see [`Unfinished::wait_for_end`]), whether the
/// statement timed out or the caller stopped waiting for it (its future dropped).
struct Sent<'a> {
    unfinished: &'a Arc<Unfinished>,
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
            self.unfinished.wait_for_end(self.key, connection);
        }
    }
}

impl Unfinished {
    /// The token of `key`'s statements that may still run, if any.
    fn of(&self, key: &str) -> Option<CancellationToken> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().get(key).map(|(_, ended)| ended.clone())
    }

    /// Keeps `connection`, whose last statement (of `key`) was not answered, until the server
    /// has ended that statement, then closes it; `key`'s statements wait until then, and
    /// until the key's statements that went unanswered before it have ended too. Without a
    /// Tokio runtime here (it is shutting down), the connection is closed at once.
    fn wait_for_end(self: &Arc<Self>, key: Option<&str>, connection: Object) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(Object::take(connection));
            return;
        };
        let number = self.last.fetch_add(1, Ordering::Relaxed) + 1;
        let ended = CancellationToken::new();
        let before = key.and_then(|key| {
            let mut keys = self.lock();
            let before = keys.insert(key.to_owned(), (number, ended.clone()));
            self.count.store(keys.len(), Ordering::Release);
            before.map(|(_, before)| before)
        });
        let ending = Ending {
            unfinished: Arc::clone(self),
            key: key.map(str::to_owned),
            number,
            ended,
        };
        runtime.spawn(async move {
            ending.unfinished.ended(&connection).await;
            drop(Object::take(connection));
            if let Some(before) = before {
                before.cancelled().await;
            }
            drop(ending);
        });
    }

    /// Waits until the server has ended the last statement sent on `connection`, asking it
    /// to cancel the statement meanwhile, for up to the patience.
    async fn ended(&self, connection: &Object) {
        let cancel = connection.cancel_token();
        let cancelling = async {
            let cancelled = match &self.canceller.0 {
                Some(tls) => cancel.cancel_query(MakeTls::clone(tls)).await,
                None => cancel.cancel_query(NoTls).await,
            };
            if let Err(error) = cancelled {
                tracing::debug!(%error, "verrou: could not ask PostgreSQL to cancel a statement that went unanswered; waiting for its end");
            }
        };
        // Answered after the statement before it (the connection runs one at a time).
        let answered = connection.batch_execute("");
        tokio::pin!(answered);
        let _ = tokio::time::timeout(self.patience, async {
            tokio::select! {
                _ = &mut answered => return,
                () = cancelling => {}
            }
            let _ = answered.await;
        })
        .await;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u64, CancellationToken)>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The end of a statement that went unanswered, told when dropped (also if the task waiting
/// for it is dropped with its runtime): the key's statements stop waiting for it.
struct Ending {
    unfinished: Arc<Unfinished>,
    key: Option<String>,
    number: u64,
    ended: CancellationToken,
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            let mut keys = self.unfinished.lock();
            // Unless a later statement of the key went unanswered since, and waits in turn.
            if keys.get(key).is_some_and(|(last, _)| *last == self.number) {
                keys.remove(key);
            }
            self.unfinished.count.store(keys.len(), Ordering::Release);
        }
        self.ended.cancel();
    }
}
