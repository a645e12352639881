//! Semaphores and read-write locks on [`RedisStore`]: the share methods of its
//! [`LockStore`](verrou_core::LockStore) implementation, each one script of
//! [`crate::share_scripts`] (the layout is described there and in [`crate::slots`]).

use std::time::Duration;

use fred::types::Value;
use verrou_core::{Acquisition, Error, Family, Grant, OwnerCheck, Place, Result, Share};

use crate::gate::Gate;
use crate::replicas;
use crate::scripts::LEAVE_LINE;
use crate::share_scripts::{
    SHARE_COUNT, SHARE_EXTEND, SHARE_FORCE_DELETE, SHARE_RELEASE, SHARE_TAKE,
};
use crate::slots::Slot;
use crate::store::{millis, owner_check, RedisStore};

/// The limit of readers: more than a sorted set can hold (2^32 - 1 members), so none.
const NO_LIMIT: i64 = 1 << 32;

/// The Redis names one share of a key uses.
struct Names {
    /// The share key's Redis key.
    redis_key: String,
    slot: Slot,
    /// The set of the share's holders.
    holders: String,
    /// The family's line of the key: arrivals and deadlines.
    line: [String; 2],
}

impl Names {
    /// The names of `share` of `redis_key`.
    fn new(redis_key: String, share: Share) -> Self {
        let slot = Slot::of(&redis_key);
        Self {
            holders: slot.holders_key(share, &redis_key),
            line: slot.family_line_keys(Some(share.family()), &redis_key),
            slot,
            redis_key,
        }
    }
}

/// The limit a take of `share` counts against, and the set that must be empty for it (the
/// writer for a reader, the readers for the writer), per [`crate::share_scripts`]' table.
fn room_rule(share: Share, slot: Slot, redis_key: &str) -> (i64, Option<String>) {
    match share {
        Share::Permit { limit } => (i64::from(limit), None),
        Share::Read => (NO_LIMIT, Some(slot.holders_key(Share::Write, redis_key))),
        Share::Write | _ => (1, Some(slot.holders_key(Share::Read, redis_key))),
    }
}

/// The holder sets of every share of `family`.
fn family_shares(family: Family) -> &'static [Share] {
    match family {
        Family::RwLock => &[Share::Read, Share::Write],
        Family::Semaphore | _ => &[Share::Permit { limit: 1 }],
    }
}

impl RedisStore {
    /// Takes `share` of `key` (see [`SHARE_TAKE`]), in its family's line with `place` if
    /// given; wakes the waiter a grant that leaves room hands the key over to.
    pub(crate) async fn take_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        share: Share,
        place: Option<Place<'_>>,
    ) -> Result<Acquisition> {
        // The script reads TTL 0 as "none"; a real TTL is at least 1 ms.
        let ttl = ttl.map(millis).transpose()?.unwrap_or(0);
        let place = place
            .map(|place| Ok::<_, Error>((place.waiter, millis(place.lease)?)))
            .transpose()?;
        let names = Names::new(self.redis_key(key).into_owned(), share);
        let (limit, excluding) = room_rule(share, names.slot, &names.redis_key);
        let counter = names.slot.counter_key();
        let [line, deadlines] = &names.line;
        let mut keys = vec![names.holders.as_str(), line, deadlines, &counter];
        keys.extend(excluding.as_deref());
        let (slot, keys) = (names.slot, keys.as_slice());
        let acknowledgement = self.acknowledgement();
        let taken: Option<(u64, i64)> = self
            .send(|client| async move {
                replicas::run(acknowledgement, &SHARE_TAKE, &client, slot, keys, |args| {
                    args.extend([
                        Value::from(owner),
                        Value::Integer(ttl),
                        Value::Integer(limit),
                    ]);
                    if let Some((waiter, lease)) = place {
                        args.extend([Value::from(waiter), Value::Integer(lease)]);
                    }
                })
                .await
            })
            .await
            .map_err(Error::storage)?
            .require("take", Option::is_some)?;
        let Some((token, renewed)) = taken else {
            return Ok(Acquisition::Busy);
        };
        let grant = Grant::with_fencing_token(token);
        Ok(if renewed == 0 {
            Acquisition::Granted(grant)
        } else {
            Acquisition::Renewed(grant)
        })
    }

    /// Gives back `owner`'s `share` of `key` (see [`SHARE_RELEASE`]).
    pub(crate) async fn release_share(
        &self,
        key: &str,
        owner: &str,
        share: Share,
    ) -> Result<OwnerCheck> {
        let names = Names::new(self.redis_key(key).into_owned(), share);
        let [line, deadlines] = &names.line;
        let keys = [names.holders.as_str(), line, deadlines];
        let applied = self
            .hand_over_at(&SHARE_RELEASE, names.slot, &keys, Some(owner), None)
            .await?;
        Ok(owner_check(applied))
    }

    /// Makes `owner`'s `share` of `key` expire `ttl` from now (see [`SHARE_EXTEND`]).
    pub(crate) async fn extend_share_hold(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        share: Share,
    ) -> Result<OwnerCheck> {
        let ttl = millis(ttl)?;
        let names = Names::new(self.redis_key(key).into_owned(), share);
        let (slot, holders) = (names.slot, names.holders.as_str());
        let acknowledgement = self.acknowledgement();
        let applied = self
            .send(|client| async move {
                replicas::run(
                    acknowledgement,
                    &SHARE_EXTEND,
                    &client,
                    slot,
                    &[holders],
                    |args| {
                        args.extend([Value::from(owner), Value::Integer(ttl)]);
                    },
                )
                .await
            })
            .await
            .map_err(Error::storage)?
            .require("extension", |applied| *applied == 1)?;
        Ok(owner_check(applied))
    }

    /// Deletes every holder of `key` in `family` (see [`SHARE_FORCE_DELETE`]).
    pub(crate) async fn force_release_shares(&self, key: &str, family: Family) -> Result<()> {
        let redis_key = self.redis_key(key).into_owned();
        let slot = Slot::of(&redis_key);
        let sets: Vec<String> = family_shares(family)
            .iter()
            .map(|share| slot.holders_key(*share, &redis_key))
            .collect();
        let [line, deadlines] = slot.family_line_keys(Some(family), &redis_key);
        let mut keys = vec![sets[0].as_str(), &line, &deadlines];
        keys.extend(sets[1..].iter().map(String::as_str));
        self.hand_over_at(&SHARE_FORCE_DELETE, slot, &keys, None, None)
            .await?;
        Ok(())
    }

    /// How many unexpired holders of `share` `key` has (see [`SHARE_COUNT`]).
    pub(crate) async fn count_share_holders(&self, key: &str, share: Share) -> Result<u32> {
        let names = Names::new(self.redis_key(key).into_owned(), share);
        let (slot, holders) = (names.slot, names.holders.as_str());
        let count: i64 = self
            .send(|client| async move { SHARE_COUNT.run(&client, slot, &[holders], |_| {}).await })
            .await
            .map_err(Error::storage)?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Removes `waiter`'s place from the line of `key` in `family` ([`LEAVE_LINE`] on the
    /// family's line, with its [`Gate`]).
    pub(crate) async fn leave_family_line(
        &self,
        key: &str,
        family: Family,
        waiter: &str,
    ) -> Result<()> {
        let redis_key = self.redis_key(key).into_owned();
        let gate = Gate::new(Some(family), &redis_key);
        let [line, deadlines] = gate.slot.family_line_keys(Some(family), &redis_key);
        let keys = [gate.key.as_str(), &line, &deadlines];
        self.hand_over_at(&LEAVE_LINE, gate.slot, &keys, Some(waiter), gate.argument)
            .await?;
        Ok(())
    }
}
