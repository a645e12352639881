//! The contract between a [`Lock`](crate::Lock) and the place its state lives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::waiting::Boards;
use crate::Result;

/// What [`LockStore::save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acquisition {
    /// The key was free or expired; it now belongs to the caller.
    Granted(Grant),
    /// The caller's owner already held the key, and the take started its TTL again. This is
    /// what a take re-sent by the client library (its first answer lost on a dropped
    /// connection) gets, so that the re-sent take says what the first one did. The lock
    /// adopts it if it did not know it held the key, and stays not reentrant otherwise.
    /// Stores whose client never re-sends may answer [`Busy`](Self::Busy) instead.
    Renewed(Grant),
    /// Someone holds the key and their lock has not expired.
    Busy,
}

/// What a store says about a fresh grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grant {
    /// The fencing token of this grant: strictly greater than every token the store issued
    /// before for the same key (across owners, releases, expiries and takeovers).
    pub fencing_token: Option<u64>,
}

impl Grant {
    /// A grant without fencing token, for stores that cannot issue one.
    pub fn new() -> Self {
        Self::default()
    }

    /// A grant with its fencing token.
    pub fn with_fencing_token(fencing_token: u64) -> Self {
        Self {
            fencing_token: Some(fencing_token),
        }
    }
}

/// What an owner-checked operation ([`LockStore::delete`], [`LockStore::extend`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnerCheck {
    /// The caller held the unexpired lock and the operation was applied.
    Applied,
    /// The caller does not hold the lock (free, expired, or someone else's): nothing changed.
    NotOwner,
}

/// A hold that several owners may have on one key at once: a semaphore's permit, or a
/// read-write lock's read or write side. (A plain lock is the key alone, through
/// [`LockStore::save`] and the other lock methods.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Share {
    /// One of the key's permits. A take succeeds only while fewer than `limit` permits are
    /// held (the limit the taker gives: holders that disagree on it never push the count
    /// past the largest limit among them, and a taker with a smaller limit waits until the
    /// count is below its own).
    Permit {
        /// How many permits may be held at once (at least 1).
        limit: u32,
    },
    /// A reader: shares the key with other readers, never with a writer.
    Read,
    /// The writer: has the key alone (no reader, no other writer).
    Write,
}

/// What a key names, for the operations that concern it whole: semaphores and read-write
/// locks are kept apart from plain locks (and from each other) even under the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// A semaphore's permits.
    Semaphore,
    /// A read-write lock's readers and writer.
    RwLock,
}

impl Share {
    /// The family of keys this share is a hold on.
    pub fn family(self) -> Family {
        match self {
            Share::Permit { .. } => Family::Semaphore,
            Share::Read | Share::Write => Family::RwLock,
        }
    }
}

/// A waiter's place in the waiting line of a key, as a take that waits carries it (see
/// [`waiting`](crate::waiting)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    /// Who waits: the lock's public waiter id, the same for every take of one lock. Not its
    /// owner token, which is a secret.
    pub waiter: &'a str,
    /// How long the store keeps the place if the waiter does not ask again
    /// ([`lease_for`](crate::waiting::lease_for) its retry delay). Positive, at most
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub lease: Duration,
}

/// Where locks live. One method, one atomic store operation, one round trip.
///
/// Implementations must make each method atomic on the store's side (a Lua script, a single
/// SQL statement, one critical section) and decide expiry with the store's own clock. The
/// conformance suite ([`conformance`](crate::conformance), feature `test-suite`) checks every
/// rule below; run it against your store.
///
/// Keys reach the store already validated (non-empty, no NUL character, at most
/// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, and accepted by [`validate_key`](Self::validate_key)).
/// TTLs are positive and at most [`MAX_DURATION`](crate::MAX_DURATION).
#[async_trait]
pub trait LockStore: Send + Sync + 'static {
    /// Checks a key against this store's own rules (a shorter length limit, names reserved
    /// for the store's internal state), without a round trip; a key it refuses is
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) naming the rule. Called when a lock is
    /// created or restored, before any store operation. The provided implementation accepts
    /// every key.
    fn validate_key(&self, key: &str) -> Result<()> {
        let _ = key;
        Ok(())
    }

    /// Takes `key` for `owner` if it is free or expired, for `ttl` (`None`: until released).
    ///
    /// A store that keeps waiting lines never lets a take from outside the line overtake the
    /// waiter a release handed the key to (for the hand-over window); it may check the whole
    /// line (then no take from outside gets a key anyone waits for), or only reserve the key
    /// for the waiter it hands it to (then a key freed without a release — its holder's TTL
    /// ran out, or the waiter never came — goes to whoever asks first). If `owner` already
    /// holds the key, it answers [`Acquisition::Renewed`] whatever the line.
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition>;

    /// Like [`save`](Self::save), for a waiter: takes only if no live waiter is ahead of
    /// `place` in the key's line; when busy, keeps `place` in the line (at the back if it
    /// was not there, where it was otherwise) for `place.lease` from now; when granted,
    /// removes it. One atomic operation.
    ///
    /// The provided implementation is [`save`](Self::save): a store without lines, whose
    /// waiters are served in no particular order.
    async fn save_in_line(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Place<'_>,
    ) -> Result<Acquisition> {
        let _ = place;
        self.save(key, owner, ttl).await
    }

    /// Removes `waiter`'s place from the line of `key` (a waiter that gave up, or whose
    /// `acquire` was dropped). Removing a place that is not there succeeds. The provided
    /// implementation does nothing.
    async fn leave_line(&self, key: &str, waiter: &str) -> Result<()> {
        let _ = (key, waiter);
        Ok(())
    }

    /// Deletes `key` if `owner` holds it and it has not expired. A store that keeps lines
    /// hands the key over to the front waiter of its line, if any: it cuts that waiter's
    /// lease to [`HANDOVER_WINDOW`](crate::waiting::HANDOVER_WINDOW) and wakes it by name
    /// (see [`Waiters::wake`](crate::Waiters::wake)), in the same atomic operation.
    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck>;

    /// Deletes `key` whoever holds it, handing it over like [`delete`](Self::delete).
    /// Deleting a free key succeeds.
    async fn force_delete(&self, key: &str) -> Result<()>;

    /// Whether someone holds `key` and their lock has not expired. A key a release reserved
    /// for the waiter it handed it to (see [`save`](Self::save)) is held by nobody yet.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Makes `key` expire `ttl` from now if `owner` holds it and it has not expired.
    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck>;

    /// Takes a `share` of `key` (a semaphore permit, a read or the write side of a
    /// read-write lock) for `owner`, for `ttl`, if the share is free: fewer than `limit`
    /// permits held; no writer (to read); nobody at all (to write). Like
    /// [`save_in_line`](Self::save_in_line) with a `place`, like [`save`](Self::save) without:
    /// a take never overtakes a live waiter of the key's line (readers and writers share
    /// one line, so a waiting writer holds back new readers). A granted permit or read that
    /// leaves room for the new front waiter of the line hands the key over to it too. Each
    /// grant has a fencing token, from one sequence per key for all its shares.
    ///
    /// The provided implementation refuses: [`Error::Unsupported`](crate::Error::Unsupported).
    async fn save_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        share: Share,
        place: Option<Place<'_>>,
    ) -> Result<Acquisition> {
        let _ = (key, owner, ttl, place);
        Err(crate::Error::unsupported(self.name(), share.family()))
    }

    /// Gives back `owner`'s `share` of `key` if it holds it unexpired, and hands the key
    /// over to the line's front waiter when that frees room for it (like
    /// [`delete`](Self::delete)).
    async fn delete_share(&self, key: &str, owner: &str, share: Share) -> Result<OwnerCheck> {
        let _ = (key, owner);
        Err(crate::Error::unsupported(self.name(), share.family()))
    }

    /// Makes `owner`'s `share` of `key` expire `ttl` from now if it holds it unexpired.
    async fn extend_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        share: Share,
    ) -> Result<OwnerCheck> {
        let _ = (key, owner, ttl);
        Err(crate::Error::unsupported(self.name(), share.family()))
    }

    /// Deletes every share of `key` in `family` (all permits; all readers and the writer),
    /// and hands the key over to the line's front waiter.
    async fn force_delete_shares(&self, key: &str, family: Family) -> Result<()> {
        let _ = key;
        Err(crate::Error::unsupported(self.name(), family))
    }

    /// How many unexpired holders of `share` `key` has: permits; readers; the writer (0
    /// or 1).
    async fn count_shares(&self, key: &str, share: Share) -> Result<u32> {
        let _ = key;
        Err(crate::Error::unsupported(self.name(), share.family()))
    }

    /// Removes `waiter`'s place from the line of `key` in `family`, like
    /// [`leave_line`](Self::leave_line). The provided implementation does nothing.
    async fn leave_share_line(&self, key: &str, family: Family, waiter: &str) -> Result<()> {
        let _ = (key, family, waiter);
        Ok(())
    }

    /// A short name for the store's kind in messages (`memory`, `redis`, `postgres`).
    fn name(&self) -> &'static str {
        "this store"
    }

    /// The boards on which this store reports the releases it hears (of locks, and of each
    /// family of shares), so that waiters wake when their key is handed to them instead of
    /// at their next retry delay. The provided implementation has none: waiters poll.
    fn boards(&self) -> Option<&Boards> {
        None
    }

    /// Whether the grants of plain locks carry fencing tokens ([`Grant::fencing_token`]).
    /// The conformance suite holds a store to what it says here. The provided
    /// implementation says no.
    fn issues_fencing_tokens(&self) -> bool {
        false
    }

    /// The plain take and release of a store that answers without I/O (in this process's
    /// memory), which a lock then calls instead of [`save`](Self::save) and
    /// [`delete`](Self::delete). The provided implementation has none.
    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        None
    }
}

/// The plain take and release of a store that answers at once, in this process, without
/// I/O: a lock calls them without the future (and its allocation) a round trip needs, and
/// nothing can be cut off half-way. Each does exactly what its twin on [`LockStore`] does.
pub trait ImmediateStore: Send + Sync {
    /// [`LockStore::save`], at once, with `now` (the caller's reading of the monotonic
    /// clock, just taken) as the store's clock: the TTL runs from `now`.
    fn save_now(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<Acquisition>;

    /// [`LockStore::delete`], at once.
    fn delete_now(&self, key: &str, owner: &str) -> Result<OwnerCheck>;
}

#[async_trait]
impl<S: LockStore + ?Sized> LockStore for Arc<S> {
    fn validate_key(&self, key: &str) -> Result<()> {
        (**self).validate_key(key)
    }

    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        (**self).save(key, owner, ttl).await
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        (**self).delete(key, owner).await
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        (**self).force_delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        (**self).exists(key).await
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        (**self).extend(key, owner, ttl).await
    }

    async fn save_in_line(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Place<'_>,
    ) -> Result<Acquisition> {
        (**self).save_in_line(key, owner, ttl, place).await
    }

    async fn leave_line(&self, key: &str, waiter: &str) -> Result<()> {
        (**self).leave_line(key, waiter).await
    }

    fn boards(&self) -> Option<&Boards> {
        (**self).boards()
    }

    async fn save_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        share: Share,
        place: Option<Place<'_>>,
    ) -> Result<Acquisition> {
        (**self).save_share(key, owner, ttl, share, place).await
    }

    async fn delete_share(&self, key: &str, owner: &str, share: Share) -> Result<OwnerCheck> {
        (**self).delete_share(key, owner, share).await
    }

    async fn extend_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        share: Share,
    ) -> Result<OwnerCheck> {
        (**self).extend_share(key, owner, ttl, share).await
    }

    async fn force_delete_shares(&self, key: &str, family: Family) -> Result<()> {
        (**self).force_delete_shares(key, family).await
    }

    async fn count_shares(&self, key: &str, share: Share) -> Result<u32> {
        (**self).count_shares(key, share).await
    }

    async fn leave_share_line(&self, key: &str, family: Family, waiter: &str) -> Result<()> {
        (**self).leave_share_line(key, family, waiter).await
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn issues_fencing_tokens(&self) -> bool {
        (**self).issues_fencing_tokens()
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        (**self).immediate()
    }
}
