//! Replica acknowledgement: a take or an extension that is reported done only once enough
//! replicas have it, so that a failover to one of them keeps it.
//!
//! Redis replicates asynchronously: a grant the master answered may not have reached any
//! replica when the master fails, and the replica promoted in its place does not have it. With
//! [`RedisOptions::min_replicas`](crate::RedisOptions::min_replicas) set, the take and extend
//! scripts are followed, in the same pipeline (one round trip, on the connection that ran the
//! script, to the node of the key's hash slot), by `WAIT min_replicas timeout`: the master
//! answers once that many replicas acknowledged everything the connection wrote, or when the
//! timeout runs out, with the number that did. A script cannot run `WAIT` itself.
//!
//! A grant or extension that fewer replicas acknowledged is not reported as done: the call
//! fails with [`Error::Storage`] whose source is a [`NotReplicated`] saying how many did. The
//! master did apply it: core gives a grant back (owner-checked) as it does after any failed
//! take, and an unacknowledged extension leaves the lock held until its earlier expiry.

use std::time::Duration;

use fred::clients::{Client, Pipeline, WithOptions};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::{CustomCommand, Expiration, FromValue, SetOptions, Value};
use verrou_core::Error;

use crate::scripts::LuaScript;
use crate::slots::Slot;

/// How many replicas must acknowledge a take or an extension, and for how long the master
/// waits for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acknowledgement {
    replicas: usize,
    timeout: Duration,
}

impl Acknowledgement {
    /// `min_replicas` replicas within `timeout` (checked above zero by
    /// [`RedisOptions::validate`](crate::RedisOptions::validate)); `None` when `min_replicas`
    /// is 0 (nothing to wait for).
    pub(crate) fn new(min_replicas: usize, timeout: Duration) -> Option<Self> {
        (min_replicas > 0).then_some(Self {
            replicas: min_replicas,
            timeout,
        })
    }

    /// The arguments of `WAIT`: the replicas, and the timeout in whole milliseconds, rounded
    /// up (`WAIT` with 0 would wait forever).
    fn wait_arguments(&self) -> Vec<Value> {
        let millis = self.timeout.as_nanos().div_ceil(1_000_000).max(1);
        vec![
            Value::Integer(i64::try_from(self.replicas).unwrap_or(i64::MAX)),
            Value::Integer(i64::try_from(millis).unwrap_or(i64::MAX)),
        ]
    }
}

/// A take or an extension that the master applied, but that fewer replicas than required
/// acknowledged within the replica timeout (`WAIT`): a failover now could lose it, so it is
/// not reported as done. The source of the [`Error::Storage`] the call fails with.
///
/// The master did apply it: a grant is given back (released, owner-checked) by the lock as
/// after any failed take, and a lock whose extension was not acknowledged stays held until its
/// earlier expiry. That the replicas did not keep up usually means one is down or lagging:
/// the store is degraded.
///
/// ```
/// use std::error::Error as _;
/// use verrou_redis::NotReplicated;
///
/// fn replicas_behind(error: &verrou_core::Error) -> Option<(usize, usize)> {
///     let cause = error.source()?.downcast_ref::<NotReplicated>()?;
///     Some((cause.acknowledged(), cause.required()))
/// }
/// # let _ = replicas_behind;
/// ```
#[derive(Debug, thiserror::Error)]
#[error(
    "the Redis master applied the {operation}, but {acknowledged} of the {required} replicas required acknowledged it within {timeout:?}; a failover could lose it, so it is not reported as done"
)]
pub struct NotReplicated {
    operation: &'static str,
    acknowledged: usize,
    required: usize,
    timeout: Duration,
    /// Why `WAIT` itself failed, if it did (then no replica counted).
    #[source]
    cause: Option<FredError>,
}

impl NotReplicated {
    /// How many replicas acknowledged within the timeout.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged
    }

    /// How many were required ([`RedisOptions::min_replicas`](crate::RedisOptions::min_replicas)).
    pub fn required(&self) -> usize {
        self.required
    }
}

/// A script's reply, with what `WAIT` answered when it followed the script.
pub(crate) struct Acknowledged<R> {
    reply: R,
    wait: Option<(Acknowledgement, Result<i64, FredError>)>,
}

impl<R> Acknowledged<R> {
    /// The reply, unless it says the master wrote (`applied`) and fewer replicas than
    /// required acknowledged: then [`Error::Storage`] with a [`NotReplicated`] naming the
    /// `operation`.
    pub(crate) fn require(
        self,
        operation: &'static str,
        applied: impl FnOnce(&R) -> bool,
    ) -> Result<R, Error> {
        let Some((acknowledgement, outcome)) = self.wait else {
            return Ok(self.reply);
        };
        if !applied(&self.reply) {
            return Ok(self.reply);
        }
        let (acknowledged, cause) = match outcome {
            Ok(count) => (usize::try_from(count).unwrap_or(0), None),
            Err(error) => (0, Some(error)),
        };
        if acknowledged >= acknowledgement.replicas {
            return Ok(self.reply);
        }
        Err(Error::storage(NotReplicated {
            operation,
            acknowledged,
            required: acknowledgement.replicas,
            timeout: acknowledgement.timeout,
            cause,
        }))
    }
}

/// Runs `script` on `keys` (all in `slot`) with the arguments `args` pushes, through `client`,
/// as [`LuaScript::run`] does; with an `acknowledgement`, `WAIT` goes in the same pipeline
/// right after each sending of the script, to the same node.
pub(crate) async fn run<R: FromValue>(
    acknowledgement: Option<&Acknowledgement>,
    script: &LuaScript,
    client: &WithOptions<Client>,
    slot: Slot,
    keys: &[&str],
    args: impl Fn(&mut Vec<Value>),
) -> Result<Acknowledged<R>, FredError> {
    let Some(acknowledgement) = acknowledgement else {
        let reply = script.run(client, slot, keys, args).await?;
        return Ok(Acknowledged { reply, wait: None });
    };
    let (reply, outcome) = script
        .run_with(slot, keys, args, |command, arguments| {
            then_wait(client, acknowledgement, slot, async |queue| {
                queue.custom(command, arguments).await
            })
        })
        .await?;
    Ok(Acknowledged {
        reply,
        wait: Some((*acknowledgement, outcome)),
    })
}

/// Sends `SET key owner NX [PX ttl_millis] GET` (`key` in `slot`) through `client`; with an
/// `acknowledgement`, `WAIT` goes in the same pipeline right after it, to the same node.
///
/// It goes out as fred's own `SET`, not as a custom command: fred flushes the socket after
/// each custom command and script, but feeds its own commands to it with whatever is queued
/// behind them, so that the takes of many tasks share one write (one system call fewer per
/// take under load).
pub(crate) async fn set_if_absent<R: FromValue>(
    acknowledgement: Option<&Acknowledgement>,
    client: &WithOptions<Client>,
    slot: Slot,
    (key, owner): (&str, &str),
    ttl_millis: Option<i64>,
) -> Result<Acknowledged<R>, FredError> {
    let Some(acknowledgement) = acknowledgement else {
        let reply = set_get(client, key, owner, ttl_millis).await?;
        return Ok(Acknowledged { reply, wait: None });
    };
    let (reply, outcome) = then_wait(client, acknowledgement, slot, async |queue| {
        set_get(queue, key, owner, ttl_millis).await
    })
    .await?;
    Ok(Acknowledged {
        reply,
        wait: Some((*acknowledgement, outcome)),
    })
}

/// `SET key owner NX [PX ttl_millis] GET` through `client` (a connection or a pipeline).
async fn set_get<R: FromValue>(
    client: &(impl KeysInterface + Sync),
    key: &str,
    owner: &str,
    ttl_millis: Option<i64>,
) -> Result<R, FredError> {
    let expiration = ttl_millis.map(Expiration::PX);
    client
        .set(key, owner, expiration, Some(SetOptions::NX), true)
        .await
}

/// Queues a write (`EVALSHA`, `EVAL`, or `SET`, on one key of `slot`) with `queue`, then
/// `WAIT`, in one pipeline to the node of `slot`, with `client`'s options on both. Fails
/// with the write's error; otherwise returns its reply and what `WAIT` answered.
async fn then_wait<R: FromValue>(
    client: &WithOptions<Client>,
    acknowledgement: &Acknowledgement,
    slot: Slot,
    queue: impl AsyncFnOnce(&WithOptions<Pipeline<Client>>) -> Result<(), FredError>,
) -> Result<(R, Result<i64, FredError>), FredError> {
    let pipeline = client.pipeline();
    let queued = pipeline.with_options(client.options());
    queue(&queued).await?;
    let wait = CustomCommand::new_static("WAIT", slot.hash(), false);
    let () = queued
        .custom(wait, acknowledgement.wait_arguments())
        .await?;
    let mut replies = pipeline.try_all::<Value>().await.into_iter();
    let missing = || FredError::new(ErrorKind::Protocol, "the pipeline lost a reply");
    let reply = replies
        .next()
        .unwrap_or_else(|| Err(missing()))?
        .convert()?;
    let acknowledged = replies
        .next()
        .unwrap_or_else(|| Err(missing()))
        .and_then(|count| count.convert());
    Ok((reply, acknowledged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeouts_are_whole_milliseconds_rounded_up() {
        let ack = |micros| Acknowledgement::new(2, Duration::from_micros(micros));
        let arguments = |ack: Option<Acknowledgement>| ack.expect("on").wait_arguments();
        assert_eq!(arguments(ack(1)), [Value::Integer(2), Value::Integer(1)]);
        assert_eq!(
            arguments(ack(1_500)),
            [Value::Integer(2), Value::Integer(2)]
        );
        assert_eq!(Acknowledgement::new(0, Duration::from_millis(500)), None);
    }

    #[test]
    fn a_write_short_of_replicas_is_not_reported_done() {
        let ack = Acknowledgement::new(2, Duration::from_millis(50));
        let answered = |count: i64| Acknowledged {
            reply: Some(7u64),
            wait: Some((ack.expect("on"), Ok(count))),
        };
        assert_eq!(
            answered(2).require("take", Option::is_some).unwrap(),
            Some(7)
        );
        let short = answered(1).require("take", Option::is_some).unwrap_err();
        let cause = std::error::Error::source(&short)
            .and_then(|source| source.downcast_ref::<NotReplicated>())
            .expect("a NotReplicated source");
        assert_eq!((cause.acknowledged(), cause.required()), (1, 2));
        assert!(cause.to_string().contains("1 of the 2 replicas"), "{cause}");
        // Nothing written (busy, not the owner): nothing to acknowledge.
        let busy = Acknowledged {
            reply: None::<u64>,
            wait: Some((ack.expect("on"), Ok(0))),
        };
        assert_eq!(busy.require("take", Option::is_some).unwrap(), None);
    }
}
