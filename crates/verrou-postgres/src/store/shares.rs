//! Semaphores and read-write locks: the store's share operations, each one statement of
//! [`ShareStatements`](crate::shares_sql::ShareStatements).

use std::time::Duration;

use deadpool_postgres::tokio_postgres::types::ToSql;
use verrou_core::{Acquisition, Error, Family, OwnerCheck, Place, Result, Share};

use super::{owner_check, PostgresStore};
use crate::family::{family_name, side_name};
use crate::sql::ttl_millis;
use crate::sweep;

impl PostgresStore {
    /// Takes `share` of `key`, in its family's line with `place`, and wakes the waiter the
    /// grant handed the key over to if it waits here.
    pub(super) async fn take_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        share: Share,
        place: Option<Place<'_>>,
    ) -> Result<Acquisition> {
        let family = family_name(share.family())?;
        let side = side_name(share)?;
        let ttl = ttl.map(ttl_millis).transpose()?;
        let limit = match share {
            Share::Permit { limit } => Some(i32::try_from(limit).unwrap_or(i32::MAX)),
            _ => None,
        };
        let waiter = place.map(|place| self.id.in_line(place.waiter));
        let lease = place.map(|place| ttl_millis(place.lease)).transpose()?;
        let params: [&(dyn ToSql + Sync); 8] =
            [&key, &family, &owner, &side, &ttl, &limit, &waiter, &lease];
        let row = self
            .runner
            .query_opt(Some(key), &self.statements.shares.take, &params)
            .await?;
        sweep::start_if_due(&self.sweeps, &self.runner, &self.statements);
        let Some(row) = row else {
            return Ok(Acquisition::Busy);
        };
        let token: i64 = row.try_get(0).map_err(Error::storage)?;
        let handed: Option<String> = row.try_get(1).map_err(Error::storage)?;
        self.handed_over(Some(share.family()), key, handed);
        self.granted(token)
    }

    /// Gives back `owner`'s `share` of `key`, and wakes the waiter the key was handed to.
    pub(super) async fn release_share(
        &self,
        key: &str,
        owner: &str,
        share: Share,
    ) -> Result<OwnerCheck> {
        let (family, side) = (family_name(share.family())?, side_name(share)?);
        let row = self
            .runner
            .query_opt(
                Some(key),
                &self.statements.shares.release,
                &[&key, &family, &owner, &side],
            )
            .await?;
        let (mine, handed) = match row {
            Some(row) => (
                row.try_get(0).map_err(Error::storage)?,
                row.try_get(1).map_err(Error::storage)?,
            ),
            None => (false, None),
        };
        self.handed_over(Some(share.family()), key, handed);
        Ok(owner_check(mine))
    }

    /// Makes `owner`'s `share` of `key` expire `ttl` from now.
    pub(super) async fn extend_share_by(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        share: Share,
    ) -> Result<OwnerCheck> {
        let (family, side) = (family_name(share.family())?, side_name(share)?);
        let ttl = ttl_millis(ttl)?;
        let extended: Option<bool> = self
            .query_value(
                key,
                &self.statements.shares.extend,
                &[&key, &family, &owner, &side, &ttl],
            )
            .await?;
        Ok(owner_check(extended == Some(true)))
    }

    /// Deletes every holder of `key` in `family`, and wakes the waiter it was handed to.
    pub(super) async fn clear_shares(&self, key: &str, family: Family) -> Result<()> {
        let name = family_name(family)?;
        let handed = self
            .query_value(key, &self.statements.shares.force_delete, &[&key, &name])
            .await?;
        self.handed_over(Some(family), key, handed);
        Ok(())
    }

    /// How many live holders of `share` `key` has.
    pub(super) async fn count_holders(&self, key: &str, share: Share) -> Result<u32> {
        let (family, side) = (family_name(share.family())?, side_name(share)?);
        let count: Option<i64> = self
            .query_value(key, &self.statements.shares.count, &[&key, &family, &side])
            .await?;
        Ok(count.map_or(0, |count| u32::try_from(count).unwrap_or(u32::MAX)))
    }

    /// Removes `waiter`'s place from the line of `key` in `family`, and wakes the waiter the
    /// key was handed to.
    pub(super) async fn leave_family_line(
        &self,
        key: &str,
        family: Family,
        waiter: &str,
    ) -> Result<()> {
        let name = family_name(family)?;
        let waiter = self.id.in_line(waiter);
        let handed = self
            .query_value(
                key,
                &self.statements.shares.leave_line,
                &[&key, &name, &waiter],
            )
            .await?;
        self.handed_over(Some(family), key, handed);
        Ok(())
    }
}
