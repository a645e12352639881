//! Semaphores and read-write locks of one shard: the holders of each key, and its line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::hash_map::RawEntryMut;
use hashbrown::{DefaultHashBuilder, HashMap};
use verrou_core::Share;

use crate::expiry::{Deadline, ExpiryQueue};
use crate::line::{Hashed, Lines};
use crate::shard::{Taken, Waiting};
use crate::tokens::Tokens;

/// The keys of one family (semaphores, or read-write locks) in one shard.
#[derive(Debug)]
pub(crate) struct Shares {
    holds: HashMap<Arc<str>, Vec<Holder>, DefaultHashBuilder>,
    lines: Lines,
    /// When holders expire, so that keys left to expire do not pile up.
    expiry: ExpiryQueue<Arc<str>>,
}

/// One holder of a key: a permit, a reader or the writer.
#[derive(Debug)]
struct Holder {
    owner: Box<str>,
    share: Share,
    expires_at: Option<Instant>,
}

/// A take of a share, as the store received it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) owner: &'a str,
    pub(crate) ttl: Option<Duration>,
    pub(crate) share: Share,
    pub(crate) waiting: Option<Waiting<'a>>,
}

/// The waiter a key was handed over to, to wake (`None`: nobody).
pub(crate) type Handed = Option<Arc<str>>;

impl Shares {
    /// No key, hashing with `hasher`.
    pub(crate) fn new(hasher: &DefaultHashBuilder) -> Self {
        Self {
            holds: HashMap::with_hasher(hasher.clone()),
            lines: Lines::new(hasher),
            expiry: ExpiryQueue::default(),
        }
    }

    /// Drops the holders whose deadline is at or before `now` (and keys left without any).
    pub(crate) fn drop_expired(&mut self, now: Instant) {
        while let Some(deadline) = self.expiry.pop_due(now) {
            if let Some(holders) = self.holds.get_mut(&deadline.key) {
                holders.retain(|holder| holder.is_live(now));
                if holders.is_empty() {
                    self.holds.remove(&deadline.key);
                }
            }
        }
    }

    /// Takes what `request` asks of `key` if there is room and no live waiter is ahead of
    /// it: its fencing token, drawn from `tokens` while the shard is held. When busy, keeps
    /// the waiter's place; when busy only because of the line and the key is free for the
    /// front, hands it over to the front unless it was handed it already (see
    /// [`Lines::hand_over_unless_handed`]), for `window`.
    pub(crate) fn take(
        &mut self,
        key: Hashed<'_>,
        request: Request<'_>,
        now: Instant,
        tokens: &mut Tokens,
        window: Duration,
    ) -> Taken {
        let waiter = request.waiting.map(|waiting| waiting.waiter);
        if let Some(holder) = self.holder_mut(key, request.owner, request.share, now) {
            // A take by a holder (a take re-sent, a second acquire) renews its hold, whatever
            // the room and the line: never a second hold one release would leave behind.
            holder.expires_at = request.ttl.map(|ttl| now.checked_add(ttl).unwrap_or(now));
            if let Some(at) = holder.expires_at {
                self.expire_at(Arc::from(key.key), at);
            }
            if let Some(waiter) = waiter {
                self.lines.remove(key, waiter);
            }
            return Taken::Renewed(tokens.issue());
        }
        let line_lets = self.lines.lets(key, waiter, now);
        let room = self.has_room(key, request.share);
        if line_lets && room {
            let expires_at = request.ttl.map(|ttl| now.checked_add(ttl).unwrap_or(now));
            let holder = Holder {
                owner: request.owner.into(),
                share: request.share,
                expires_at,
            };
            let (stored, holders) = self
                .holds
                .raw_entry_mut()
                .from_key_hashed_nocheck(key.hash, key.key)
                .or_insert_with(|| (Arc::from(key.key), Vec::new()));
            holders.push(holder);
            if let Some(at) = expires_at {
                let stored = Arc::clone(stored);
                self.expire_at(stored, at);
            }
            if let Some(waiter) = waiter {
                self.lines.remove(key, waiter);
            }
            return Taken::Granted(tokens.issue());
        }
        // A permit that fits the taker fits the front (or it asks once in vain); a reader or
        // writer at the front fits a key nobody holds.
        let free_for_front = match request.share {
            Share::Permit { .. } => room,
            _ => self.is_free(key.key),
        };
        let handed = (!line_lets && free_for_front)
            .then(|| self.lines.hand_over_unless_handed(key, now, window))
            .flatten();
        if let Some(waiting) = request.waiting {
            self.lines.keep(key, waiting.waiter, waiting.deadline(now));
        }
        Taken::Busy { handed }
    }

    /// After a grant of `share`: the front waiter to hand `key` over to when `share` leaves
    /// room for more (a permit under its limit, a reader), so that waiters that can share
    /// follow each other in.
    pub(crate) fn hand_over_after_grant(
        &mut self,
        key: Hashed<'_>,
        share: Share,
        now: Instant,
        window: Duration,
    ) -> Handed {
        let room_left = match share {
            Share::Permit { .. } => self.has_room(key, share),
            Share::Read => true,
            Share::Write | _ => false,
        };
        room_left
            .then(|| self.lines.hand_over(key, now, window))
            .flatten()
    }

    /// Gives back `owner`'s `share` of `key` if it holds it unexpired: `None` if not; else
    /// who the key was handed over to, if that made room.
    pub(crate) fn remove(
        &mut self,
        key: Hashed<'_>,
        owner: &str,
        share: Share,
        now: Instant,
        window: Duration,
    ) -> Option<Handed> {
        let holders = self.holders_mut(key, now)?;
        let index = holders
            .iter()
            .position(|holder| &*holder.owner == owner && same_side(holder.share, share))?;
        holders.swap_remove(index);
        Some(self.hand_over_if_free(key, now, window))
    }

    /// Deletes every holder of `key`, and hands it over.
    pub(crate) fn clear(&mut self, key: Hashed<'_>, now: Instant, window: Duration) -> Handed {
        if let RawEntryMut::Occupied(occupied) = self
            .holds
            .raw_entry_mut()
            .from_key_hashed_nocheck(key.hash, key.key)
        {
            occupied.remove();
        }
        self.lines.hand_over(key, now, window)
    }

    /// Makes `owner`'s `share` of `key` expire `ttl` from `now` if it holds it unexpired.
    pub(crate) fn extend(
        &mut self,
        key: Hashed<'_>,
        owner: &str,
        share: Share,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let Some(holder) = self.holder_mut(key, owner, share, now) else {
            return false;
        };
        let at = now.checked_add(ttl).unwrap_or(now);
        holder.expires_at = Some(at);
        self.expire_at(Arc::from(key.key), at);
        true
    }

    /// How many unexpired holders of `share` `key` has (permits, readers, or the writer).
    pub(crate) fn count(&mut self, key: Hashed<'_>, share: Share, now: Instant) -> u32 {
        self.holders_mut(key, now).map_or(0, |holders| {
            let count = holders
                .iter()
                .filter(|holder| same_side(holder.share, share))
                .count();
            u32::try_from(count).unwrap_or(u32::MAX)
        })
    }

    /// Whether nobody holds `key`.
    fn is_free(&self, key: &str) -> bool {
        !self.holds.contains_key(key)
    }

    /// Removes `waiter`'s place; if it was at the front, hands the key over to the next
    /// waiter when nobody holds it.
    pub(crate) fn leave(
        &mut self,
        key: Hashed<'_>,
        waiter: &str,
        now: Instant,
        window: Duration,
    ) -> Handed {
        if self.lines.remove(key, waiter) {
            self.hand_over_if_free(key, now, window)
        } else {
            None
        }
    }

    /// When the first unexpired holder of `key` that expires does (`None`: nobody holds it,
    /// or no holder expires).
    pub(crate) fn next_expiry(&mut self, key: Hashed<'_>, now: Instant) -> Option<Instant> {
        self.holders_mut(key, now)?
            .iter()
            .filter_map(|holder| holder.expires_at)
            .min()
    }

    /// Hands `key` over to its front waiter, as a take refused only because of the line
    /// does, if the front surely fits (nobody holds the key) or, when a holder just
    /// `expired`, may fit (see [`may_let_front_in`](Self::may_let_front_in): it then asks
    /// once in vain at most), and was not handed it already: the waiter to wake.
    pub(crate) fn pass_to_front(
        &mut self,
        key: Hashed<'_>,
        expired: bool,
        now: Instant,
        window: Duration,
    ) -> Handed {
        let fits =
            self.holders_mut(key, now).is_none() || (expired && self.may_let_front_in(key, now));
        fits.then(|| self.lines.hand_over_unless_handed(key, now, window))
            .flatten()
    }

    /// Hands `key` over to its front waiter if nobody holds it, or if only permits or
    /// readers do (the front may share with them; if it cannot, it asks once in vain).
    fn hand_over_if_free(&mut self, key: Hashed<'_>, now: Instant, window: Duration) -> Handed {
        self.may_let_front_in(key, now)
            .then(|| self.lines.hand_over(key, now, window))
            .flatten()
    }

    /// Whether the front waiter of `key` may get in now, as far as the holders tell: unless
    /// a writer holds it (a permit or a reader at the front may fit beside the holders; if
    /// it does not, it asks once in vain).
    pub(crate) fn may_let_front_in(&mut self, key: Hashed<'_>, now: Instant) -> bool {
        !self
            .holders_mut(key, now)
            .is_some_and(|holders| holders.iter().any(|holder| holder.share == Share::Write))
    }

    /// Queues a holder's deadline, and rebuilds the queue when stale deadlines (of holders
    /// gone or extended) have piled up.
    fn expire_at(&mut self, key: Arc<str>, at: Instant) {
        self.expiry.push(Deadline {
            at,
            generation: 0,
            key,
        });
        let holds = &self.holds;
        self.expiry.compact_if_bloated(holds.len(), || {
            holds
                .iter()
                .flat_map(|(key, holders)| {
                    holders.iter().filter_map(|holder| {
                        holder.expires_at.map(|at| Deadline {
                            at,
                            generation: 0,
                            key: Arc::clone(key),
                        })
                    })
                })
                .collect()
        });
    }

    /// Whether `share` of `key` may be taken now, by its holders alone.
    fn has_room(&self, key: Hashed<'_>, share: Share) -> bool {
        let holders = self
            .holds
            .raw_entry()
            .from_key_hashed_nocheck(key.hash, key.key)
            .map_or(&[][..], |(_, holders)| holders.as_slice());
        match share {
            Share::Permit { limit } => holders.len() < usize::try_from(limit).unwrap_or(usize::MAX),
            Share::Read => holders.iter().all(|holder| holder.share != Share::Write),
            Share::Write | _ => holders.is_empty(),
        }
    }

    /// `owner`'s unexpired hold of `share`'s side of `key`, if it has one.
    fn holder_mut(
        &mut self,
        key: Hashed<'_>,
        owner: &str,
        share: Share,
        now: Instant,
    ) -> Option<&mut Holder> {
        self.holders_mut(key, now)?
            .iter_mut()
            .find(|holder| &*holder.owner == owner && same_side(holder.share, share))
    }

    /// The unexpired holders of `key`, if any (the key is removed when none is left).
    fn holders_mut(&mut self, key: Hashed<'_>, now: Instant) -> Option<&mut Vec<Holder>> {
        let RawEntryMut::Occupied(mut occupied) = self
            .holds
            .raw_entry_mut()
            .from_key_hashed_nocheck(key.hash, key.key)
        else {
            return None;
        };
        occupied.get_mut().retain(|holder| holder.is_live(now));
        if occupied.get().is_empty() {
            occupied.remove();
            return None;
        }
        Some(occupied.into_mut())
    }
}

impl Holder {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// Whether a holder of `held` answers to `asked` (a permit's limit does not matter).
fn same_side(held: Share, asked: Share) -> bool {
    matches!(
        (held, asked),
        (Share::Permit { .. }, Share::Permit { .. })
            | (Share::Read, Share::Read)
            | (Share::Write, Share::Write)
    )
}
