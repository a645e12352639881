//! Sending again a command that Redis Cluster refused without running it.
//!
//! While a hash slot moves between masters, some commands on its keys cannot be served:
//!
//! - a script on several keys (the take: the lock key and the slot's fencing counter) is
//!   refused with `TRYAGAIN` while those keys are on different nodes, which lasts until the
//!   migration moves the last of them (usually until it ends);
//! - a command on a key already moved is answered `ASK`, and fred 10.1 does not follow
//!   `ASK`: it sends `ASKING` to the new node but the command again to the old one, which
//!   answers `ASK` again, until the command's redirections run out (`Too many
//!   redirections.`). Once the migration ends, the old node answers `MOVED`, which fred
//!   follows;
//! - while a master is failing over, nodes answer `CLUSTERDOWN`.
//!
//! None of these ran the command, and each clears up by itself, so the store sends the
//! command again after a pause (10 ms, doubling up to 200 ms) until it is served or the
//! operation has taken its command timeout; then the last refusal is the error. Every
//! operation of the store is safe to receive twice anyway (see
//! [`RedisStore`](crate::RedisStore)), since fred re-sends commands whose connection dropped.

use std::future::Future;
use std::time::{Duration, Instant};

use fred::clients::{Client, WithOptions};
use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::Options;
use verrou_core::Backoff;

use crate::connection::Connection;

/// The first pause before a refused command is sent again.
const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// The longest pause before a refused command is sent again.
const LONGEST_PAUSE: Duration = Duration::from_millis(200);

/// Runs `command` through the next client of `connection` with `options`, and again while
/// Redis Cluster refuses it without running it, for at most `options.timeout` in all (each
/// sending gets what is left of it). `command` gets the client with the options for one
/// sending.
pub(crate) async fn while_refused<R, F, Fut>(
    connection: &Connection,
    options: &Options,
    command: F,
) -> Result<R, FredError>
where
    F: Fn(WithOptions<Client>) -> Fut,
    Fut: Future<Output = Result<R, FredError>>,
{
    let started = Instant::now();
    let mut sending = options.clone();
    let mut backoff = Backoff::new(FIRST_PAUSE, LONGEST_PAUSE);
    loop {
        match command(connection.with_options(&sending)).await {
            Err(error) if refused(&error) => {
                let pause = backoff.next_pause();
                // Sent again only if, after the pause, at least as long is left for it.
                let Some(left) = options
                    .timeout
                    .and_then(|timeout| timeout.checked_sub(started.elapsed() + pause))
                    .filter(|left| *left >= pause)
                else {
                    return Err(error);
                };
                tracing::debug!(%error, ?pause, "Redis Cluster refused a command; sending it again");
                tokio::time::sleep(pause).await;
                sending.timeout = Some(left);
            }
            result => return result,
        }
    }
}

/// Whether `error` says the command was refused, not run: `TRYAGAIN`, `CLUSTERDOWN`, or a
/// redirection fred could not follow.
fn refused(error: &FredError) -> bool {
    *error.kind() == ErrorKind::Routing
        || ["TRYAGAIN", "CLUSTERDOWN"]
            .iter()
            .any(|prefix| error.details().starts_with(prefix))
}
