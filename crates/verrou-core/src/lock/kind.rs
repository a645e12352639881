//! What a lock holds of its key, and which store operations that makes its own.

use std::time::{Duration, Instant};

use super::LockInner;
use crate::store::{Acquisition, ImmediateStore, OwnerCheck, Place, Share};
use crate::telemetry::Operation;
use crate::waiting::Waiters;
use crate::Result;

/// What a [`Lock`](crate::Lock) holds of its key: the key alone, or a share of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockKind {
    /// A plain lock: one holder at a time (the layout the Node.js library shares).
    Exclusive,
    /// A semaphore permit, or a read-write lock's read or write side.
    Shared(Share),
}

impl LockInner {
    /// Takes the key (in its line, with a place of `lease`, if given).
    pub(crate) async fn store_take(&self, lease: Option<Duration>) -> Result<Acquisition> {
        let (key, owner, ttl) = (self.key(), self.owner(), self.ttl.as_duration());
        let place = lease.map(|lease| Place {
            waiter: self.waiter(),
            lease,
        });
        match (self.kind, place) {
            (LockKind::Exclusive, Some(place)) => {
                self.store().save_in_line(key, owner, ttl, place).await
            }
            (LockKind::Exclusive, None) => self.store().save(key, owner, ttl).await,
            (LockKind::Shared(share), place) => {
                self.store().save_share(key, owner, ttl, share, place).await
            }
        }
    }

    /// Takes the key on `store` (this lock's, answering without I/O) at `now`.
    pub(crate) fn store_take_now(
        &self,
        store: &dyn ImmediateStore,
        now: Instant,
    ) -> Result<Acquisition> {
        let ttl = self.ttl.as_duration();
        self.telemetry()
            .store_call_now(Operation::Take, self.key(), || {
                store.save_now(self.key(), self.owner(), ttl, now)
            })
    }

    /// Gives the key back at once, owner-checked, if the lock is plain and its store
    /// answers without I/O; `None` otherwise (see [`store_release`](Self::store_release)).
    pub(crate) fn store_release_now(&self) -> Option<Result<OwnerCheck>> {
        let store = self.immediate()?;
        Some(
            self.telemetry()
                .store_call_now(Operation::Release, self.key(), || {
                    store.delete_now(self.key(), self.owner())
                }),
        )
    }

    /// The store's operations that answer without I/O, for a plain lock.
    pub(crate) fn immediate(&self) -> Option<&dyn ImmediateStore> {
        match self.kind {
            LockKind::Exclusive => self.store().immediate(),
            LockKind::Shared(_) => None,
        }
    }

    /// Gives the key back, owner-checked.
    pub(crate) async fn store_release(&self) -> Result<OwnerCheck> {
        match self.kind {
            LockKind::Exclusive => self.store().delete(self.key(), self.owner()).await,
            LockKind::Shared(share) => {
                self.store()
                    .delete_share(self.key(), self.owner(), share)
                    .await
            }
        }
    }

    /// Gives the key back whoever holds it (every share of it).
    pub(crate) async fn store_force_release(&self) -> Result<()> {
        match self.kind {
            LockKind::Exclusive => self.store().force_delete(self.key()).await,
            LockKind::Shared(share) => {
                self.store()
                    .force_delete_shares(self.key(), share.family())
                    .await
            }
        }
    }

    /// Makes the hold expire `ttl` from now, owner-checked.
    pub(crate) async fn store_extend(&self, ttl: Duration) -> Result<OwnerCheck> {
        match self.kind {
            LockKind::Exclusive => self.store().extend(self.key(), self.owner(), ttl).await,
            LockKind::Shared(share) => {
                self.store()
                    .extend_share(self.key(), self.owner(), ttl, share)
                    .await
            }
        }
    }

    /// How many hold what this lock would hold: 0 or 1 for a plain lock.
    pub(crate) async fn store_holders(&self) -> Result<u32> {
        match self.kind {
            LockKind::Exclusive => Ok(u32::from(self.store().exists(self.key()).await?)),
            LockKind::Shared(share) => self.store().count_shares(self.key(), share).await,
        }
    }

    /// Leaves the key's waiting line.
    pub(crate) async fn store_leave_line(&self) -> Result<()> {
        match self.kind {
            LockKind::Exclusive => self.store().leave_line(self.key(), self.waiter()).await,
            LockKind::Shared(share) => {
                self.store()
                    .leave_share_line(self.key(), share.family(), self.waiter())
                    .await
            }
        }
    }

    /// The board on which the store reports releases of this lock's key.
    pub(crate) fn store_waiters(&self) -> Option<&Waiters> {
        let family = match self.kind {
            LockKind::Exclusive => None,
            LockKind::Shared(share) => Some(share.family()),
        };
        Some(self.store().boards()?.of(family))
    }
}
