//! A private PostgreSQL primary and its streaming standby.

use std::ffi::OsString;
use std::io;
use std::time::{Duration, Instant};

use crate::postgres::{query_value, start_postgres, SUPERUSER};
use crate::process;
use crate::PostgresServer;

/// How long the standby may take to stream from the primary, or to be promoted.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A private PostgreSQL primary and a hot standby that streams its WAL (asynchronous
/// replication), each a [`PostgresServer`] on 127.0.0.1 and a free port with the same
/// settings. The primary's defaults allow replication (`wal_level = replica`,
/// `max_wal_senders = 10`, and `initdb`'s trust rules for replication from 127.0.0.1); the
/// standby is a `pg_basebackup -R -X stream` of it. Dropping the pair stops both and removes
/// their directories; so does the end of the test process, even if it is never dropped.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let mut pair = verrou_testkit::PostgresStandbyPair::start()?;
/// let url = pair.multi_host_url(); // whichever server takes writes
/// // ... write on the primary, read on pair.standby_url() ...
/// pair.crash_primary();
/// let took = pair.promote_standby()?;
/// // ... clients of `url` now reach the former standby ...
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresStandbyPair {
    primary: PostgresServer,
    standby: PostgresServer,
}

impl PostgresStandbyPair {
    /// Starts the primary, makes the standby from a base backup of it, starts the standby
    /// and waits until the primary sees it streaming (`pg_stat_replication`).
    ///
    /// Fails if the PostgreSQL programs (`pg_basebackup` too) are missing, or a server does
    /// not start, or the standby does not stream within 30 s.
    pub fn start() -> io::Result<PostgresStandbyPair> {
        let primary = PostgresServer::start()?;
        let primary_port = primary.port().to_string();
        let server = start_postgres(|tools, dir| {
            let args: Vec<OsString> = vec![
                "--pgdata".into(),
                dir.join("data").into(),
                "--host=127.0.0.1".into(),
                format!("--port={primary_port}").into(),
                format!("--username={SUPERUSER}").into(),
                // standby.signal, and primary_conninfo in postgresql.auto.conf.
                "--write-recovery-conf".into(),
                "--wal-method=stream".into(),
                // No spread checkpoint to wait for.
                "--checkpoint=fast".into(),
                "--no-sync".into(),
            ];
            tools.run("pg_basebackup", &args, dir)
        })?;
        let pair = PostgresStandbyPair {
            primary,
            standby: PostgresServer { server },
        };
        let streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'";
        process::wait_for("the standby to stream", SETTLE_TIMEOUT, || {
            let count = query_value(pair.primary.port(), streaming)?;
            Ok((count.as_deref() == Some("1")).then_some(()))
        })?;
        Ok(pair)
    }

    /// The primary's URL: `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn primary_url(&self) -> String {
        self.primary.url()
    }

    /// The standby's URL: `postgres://postgres@127.0.0.1:PORT/postgres` (read-only until
    /// [`promote_standby`](Self::promote_standby)).
    pub fn standby_url(&self) -> String {
        self.standby.url()
    }

    /// A URL naming both servers, primary first, for a session that takes writes:
    /// `postgres://postgres@127.0.0.1:P1,127.0.0.1:P2/postgres?target_session_attrs=read-write`.
    /// A client (tokio-postgres, libpq) tries each in turn and keeps the first that is not
    /// read-only.
    pub fn multi_host_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{},127.0.0.1:{}/{SUPERUSER}\
             ?target_session_attrs=read-write",
            self.primary.port(),
            self.standby.port()
        )
    }

    /// Crashes the primary (an immediate shutdown, as
    /// [`PostgresServer::crash`] does) and waits until it has exited. What it committed and
    /// had not yet sent to the standby is lost to the standby.
    pub fn crash_primary(&mut self) {
        self.primary.crash();
    }

    /// Promotes the standby (`pg_promote()`, what `pg_ctl promote` does) and waits until it
    /// has left recovery and takes writes (`pg_is_in_recovery()` is false); returns how
    /// long that took.
    pub fn promote_standby(&mut self) -> io::Result<Duration> {
        let start = Instant::now();
        let port = self.standby.port();
        query_value(port, "SELECT pg_promote(wait => false)")?;
        process::wait_for("the standby's promotion", SETTLE_TIMEOUT, || {
            let in_recovery = query_value(port, "SELECT pg_is_in_recovery()")?;
            Ok((in_recovery.as_deref() == Some("f")).then_some(()))
        })?;
        Ok(start.elapsed())
    }
}
