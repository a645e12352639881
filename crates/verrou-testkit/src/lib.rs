//! Private throwaway Redis and PostgreSQL servers for verrou's tests and benchmarks, and a
//! proxy that injects network faults between a client and its server.
//!
//! * [`RedisServer`], [`PostgresServer`]: private servers to start, stop, crash, restart;
//! * [`RedisCluster`], [`RedisSentinelSet`], [`PostgresStandbyPair`]: private topologies
//!   of several servers, to fail over, and (for the cluster) to move hash slots in;
//! * [`redis_url`], [`postgres_url`]: the servers shared by a test process;
//! * [`FaultProxy`]: latency, black holes, cut and refused connections, in front of any
//!   server on 127.0.0.1.
//!
//! Most tests only need a URL:
//!
//! ```no_run
//! let redis = verrou_testkit::redis_url(); // VERROU_REDIS_URL, or a private server
//! let postgres = verrou_testkit::postgres_url(); // VERROU_POSTGRES_URL, or a private cluster
//! ```
//!
//! Those are shared by all the tests of one process (one test binary) and stopped when the
//! process exits. A test that stops, restarts or inspects its server starts its own:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let mut server = verrou_testkit::PostgresServer::start()?;
//! let url = server.url();
//! // ... connect to `url` ...
//! server.stop(); // clients now get "connection refused"
//! server.restart()?; // same port, same data
//! server.crash(); // no shutdown checkpoint: the next start recovers
//! server.restart()?; // committed transactions are all there
//! assert!(!server.log_contents().contains("ERROR:"));
//! # Ok(())
//! # }
//! ```
//!
//! To test what a client does when the network fails, put a [`FaultProxy`] between it and
//! its server; it implements the conformance suite's
//! [`FaultInjector`](verrou_core::conformance::FaultInjector):
//!
//! ```no_run
//! use std::time::Duration;
//! use verrou_core::conformance::FaultInjector;
//! # fn main() -> std::io::Result<()> {
//! let (proxy, url) = verrou_testkit::FaultProxy::in_front_of(&verrou_testkit::redis_url())?;
//! // ... connect to `url` ...
//! proxy.set_latency(Duration::from_millis(200), Duration::ZERO); // slow requests
//! proxy.blackhole(); // nothing gets through, nothing is lost
//! proxy.cut(); // every connection closed
//! proxy.refuse(); // new connections closed at once
//! proxy.heal(); // all is well again
//! # Ok(())
//! # }
//! ```
//!
//! To test what a client does when its server fails over, or when a Redis Cluster moves a
//! hash slot, start a topology; each takes a few seconds:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use verrou_testkit::{PostgresStandbyPair, RedisCluster, RedisSentinelSet};
//! // Three masters, three replicas; url() is redis-cluster://...
//! let mut cluster = RedisCluster::start()?;
//! cluster.kill_master(0)?;
//! let took = cluster.wait_for_failover()?;
//!
//! // A master, a replica, three sentinels; url() is redis-sentinel://...
//! let mut sentinels = RedisSentinelSet::start()?;
//! let old = sentinels.kill_master()?;
//! let took = sentinels.wait_for_new_master(old)?;
//!
//! // A primary and its streaming standby; multi_host_url() names both.
//! let mut pair = PostgresStandbyPair::start()?;
//! pair.crash_primary();
//! let took = pair.promote_standby()?;
//! # Ok(())
//! # }
//! ```
//!
//! Servers listen on 127.0.0.1 only, on ports nothing else uses, and keep their files in a
//! temporary directory. They are stopped, and their directories removed, when dropped or
//! when the test process ends, however it ends (a watchdog process notices).
//!
//! The binary `verrou-test-servers COMMAND ARGS...` runs a command with one private server of
//! each kind, named by `VERROU_REDIS_URL` and `VERROU_POSTGRES_URL`; `./scripts/test.sh`
//! runs `cargo test` that way.
//!
//! Needs `redis-server` and the PostgreSQL server programs (`postgres`, `initdb`, and
//! `pg_basebackup` for a standby; found on `PATH` or in `/usr/lib/postgresql/*/bin`) unless
//! the environment names servers to use. Unix only.

mod postgres;
mod postgres_standby;
mod process;
mod proxy;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod resp;
mod server;

pub use postgres::{postgres_url, PostgresServer};
pub use postgres_standby::PostgresStandbyPair;
pub use proxy::FaultProxy;
pub use redis::{redis_url, RedisServer};
pub use redis_cluster::{hash_slot, ClusterNode, ClusterRole, RedisCluster, SlotMigration};
pub use redis_sentinel::RedisSentinelSet;

/// The environment variable naming a Redis server to use instead of a private one.
pub const REDIS_URL_VAR: &str = "VERROU_REDIS_URL";

/// The environment variable naming a Redis 6 `redis-server` program, for the tests of
/// servers older than Redis 7 (`./scripts/with-servers.sh` installs one and sets it).
pub const REDIS6_SERVER_VAR: &str = "VERROU_REDIS6_SERVER";

/// The environment variable naming a PostgreSQL server to use instead of a private one.
pub const POSTGRES_URL_VAR: &str = "VERROU_POSTGRES_URL";

/// The value of the environment variable `var`, unless it is unset or empty.
pub fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|url| !url.is_empty())
}

/// The URL in the environment variable `var`, else that of this process's private server of
/// kind `what`, started by `start` on the first call and kept in `shared` until the process
/// exits.
///
/// # Panics
///
/// If `var` is not set and no server can be started, with a message that says why and how
/// to get one.
fn shared_server_url<S>(
    shared: &'static std::sync::OnceLock<Result<S, String>>,
    var: &str,
    what: &str,
    start: impl FnOnce() -> std::io::Result<S>,
    url: impl FnOnce(&S) -> String,
) -> String {
    if let Some(url) = env_url(var) {
        return url;
    }
    match shared.get_or_init(|| start().map_err(|error| error.to_string())) {
        Ok(server) => url(server),
        Err(message) => panic!(
            "no {what} server for this test: {message}\n\
             (set {var} to use a server of your own)"
        ),
    }
}
