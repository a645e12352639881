//! Statements that went unanswered (they timed out, or their caller stopped waiting), and
//! the order they keep statements of their key in.
//!
//! A statement that timed out may still run: the server does not look at the client while
//! it works (a take waiting for a row lock, a commit waiting for a standby), and may commit
//! it later. A statement sent afterwards on another connection — the release that gives
//! back the take nobody heard the answer of — would then reach the server first, find
//! nothing, and the take would commit a lock nobody owns. So the connection of a statement
//! that went unanswered is kept, neither closed nor given back to the pool: the server is
//! asked to cancel the statement, and an empty query sent behind it answers once the server
//! has ended it. Until then the statements of the same key wait, within their own timeout,
//! for up to one more command timeout (a server that does not answer at all, hung or cut
//! off, holds the key up no longer than that).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use deadpool_postgres::tokio_postgres::NoTls;
use deadpool_postgres::Object;
use tokio_util::sync::CancellationToken;

use crate::tls::MakeTls;

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

/// The keys with statements that went unanswered and may still run on the server: each
/// with the token cancelled once they have all ended, and the number of the last one.
#[derive(Debug)]
pub(crate) struct Unanswered {
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

impl Unanswered {
    /// None yet; statements that go unanswered are cancelled with `canceller`, and the
    /// statements of their key wait up to `patience` for them to end.
    pub(crate) fn new(canceller: Canceller, patience: Duration) -> Self {
        Self {
            canceller,
            patience,
            count: AtomicUsize::new(0),
            keys: Mutex::default(),
            last: AtomicU64::new(0),
        }
    }

    /// The token of `key`'s statements that may still run, if any.
    pub(crate) fn of(&self, key: &str) -> Option<CancellationToken> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().get(key).map(|(_, ended)| ended.clone())
    }

    /// Keeps `connection`, whose last statement (of `key`) was not answered, until the server
    /// has ended that statement, then closes it; `key`'s statements wait until then, and
    /// until the key's statements that went unanswered before it have ended too. Without a
    /// Tokio runtime here (it is shutting down), the connection is closed at once.
    pub(crate) fn wait_for_end(self: &Arc<Self>, key: Option<&str>, connection: Object) {
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
            unanswered: Arc::clone(self),
            key: key.map(str::to_owned),
            number,
            ended,
        };
        runtime.spawn(async move {
            ending.unanswered.ended(&connection).await;
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
    unanswered: Arc<Unanswered>,
    key: Option<String>,
    number: u64,
    ended: CancellationToken,
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            let mut keys = self.unanswered.lock();
            // Unless a later statement of the key went unanswered since, and waits in turn.
            if keys.get(key).is_some_and(|(last, _)| *last == self.number) {
                keys.remove(key);
            }
            self.unanswered.count.store(keys.len(), Ordering::Release);
        }
        self.ended.cancel();
    }
}
