//! A private Redis Sentinel deployment: a master, its replica and three sentinels.

use std::io;
use std::time::{Duration, Instant};

use crate::process;
use crate::redis::{replication, start_redis, Redis, Replication};
use crate::resp::{self, Reply};
use crate::server::Supervisor;

/// The name the sentinels know the master by.
const MASTER_NAME: &str = "verrou";

/// How many sentinels there are.
const SENTINELS: usize = 3;

/// How long the deployment may take to settle: replicas to sync, sentinels to find each
/// other, a failover.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A private Redis Sentinel deployment on 127.0.0.1: a master, one replica, and three
/// sentinels monitoring them as `verrou` (quorum 2, the master is down after 1 s without an
/// answer, failover timeout 3 s), on free ports, without persistence, each in a temporary
/// directory. Dropping it stops them all and removes their directories; so does the end of
/// the test process, even if the value is never dropped.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let mut set = verrou_testkit::RedisSentinelSet::start()?;
/// let url = set.url(); // for verrou-redis (fred)
/// let old = set.kill_master()?;
/// let took = set.wait_for_new_master(old)?;
/// assert_ne!(set.master_port()?, old);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisSentinelSet {
    /// The data servers: the first master, then its replica. Failovers change their roles,
    /// not this order.
    servers: Vec<Supervisor<Redis>>,
    sentinels: Vec<Supervisor<Redis>>,
    /// When [`failover`](Self::failover) or [`kill_master`](Self::kill_master) was last
    /// called.
    last_fault: Option<Instant>,
}

impl RedisSentinelSet {
    /// Starts the master, its replica and the sentinels, and waits until the replica is in
    /// sync and every sentinel knows the master, the replica and the other sentinels (the
    /// sentinels announce themselves every 2 s, so this takes about that long).
    ///
    /// Fails if `redis-server` is missing, a server does not start, or the deployment does
    /// not settle within 30 s.
    pub fn start() -> io::Result<RedisSentinelSet> {
        let master = start_redis(Redis::Server, "")?;
        let replica = start_redis(
            Redis::Server,
            &format!("replicaof 127.0.0.1 {}\n", master.port()),
        )?;
        process::wait_for("the replica to sync", SETTLE_TIMEOUT, || {
            Ok(
                (replication(replica.port())? == Replication::Replica { in_sync: true })
                    .then_some(()),
            )
        })?;
        let config = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 3000\n",
            master.port()
        );
        let sentinels = (0..SENTINELS)
            .map(|_| start_redis(Redis::Sentinel, &config))
            .collect::<io::Result<Vec<_>>>()?;
        let set = RedisSentinelSet {
            servers: vec![master, replica],
            sentinels,
            last_fault: None,
        };
        process::wait_for("the sentinels to settle", SETTLE_TIMEOUT, || {
            Ok(set.sentinels_settled()?.then_some(()))
        })?;
        Ok(set)
    }

    /// The name the sentinels know the master by (`verrou`).
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// The URL to connect to, naming every sentinel and the master's name:
    /// `redis-sentinel://127.0.0.1:S1?sentinelServiceName=verrou&node=127.0.0.1:S2&node=...`
    /// (fred's form, which verrou-redis passes on).
    pub fn url(&self) -> String {
        let mut url = String::from("redis-sentinel://");
        for (i, sentinel) in self.sentinels.iter().enumerate() {
            if i == 0 {
                url.push_str(&format!(
                    "127.0.0.1:{}?sentinelServiceName={MASTER_NAME}",
                    sentinel.port()
                ));
            } else {
                url.push_str(&format!("&node=127.0.0.1:{}", sentinel.port()));
            }
        }
        url
    }

    /// The port of the master, as the first sentinel says
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    pub fn master_port(&self) -> io::Result<u16> {
        master_port_from(self.sentinels[0].port())
    }

    /// Makes the sentinels fail over now, without waiting for the master to fail
    /// (`SENTINEL FAILOVER`): the replica becomes the master, the master its replica. See
    /// [`wait_for_new_master`](Self::wait_for_new_master).
    pub fn failover(&mut self) -> io::Result<()> {
        resp::call_ok(
            self.sentinels[0].port(),
            &["SENTINEL", "FAILOVER", MASTER_NAME],
        )?;
        self.last_fault = Some(Instant::now());
        Ok(())
    }

    /// Kills the master outright (`SIGKILL`, as
    /// [`RedisServer::kill`](crate::RedisServer::kill) does) and returns its port. The
    /// sentinels promote the replica once the master has not answered for 1 s; see
    /// [`wait_for_new_master`](Self::wait_for_new_master).
    pub fn kill_master(&mut self) -> io::Result<u16> {
        let port = self.master_port()?;
        let master = self
            .servers
            .iter_mut()
            .find(|server| server.port() == port && server.is_running())
            .ok_or_else(|| io::Error::other(format!("the master, on {port}, is not running")))?;
        master.kill("KILL");
        self.last_fault = Some(Instant::now());
        Ok(port)
    }

    /// Waits until every sentinel names a master other than the one on `old_port`, the same
    /// one, and that server says it is a master; returns how long that took since the last
    /// [`failover`](Self::failover) or [`kill_master`](Self::kill_master) (since this call
    /// if neither).
    pub fn wait_for_new_master(&self, old_port: u16) -> io::Result<Duration> {
        let since = self.last_fault.unwrap_or_else(Instant::now);
        process::wait_for("the sentinels' failover", SETTLE_TIMEOUT, || {
            let ports = self
                .sentinels
                .iter()
                .map(|sentinel| master_port_from(sentinel.port()))
                .collect::<io::Result<Vec<_>>>()?;
            let new = ports[0];
            let done = new != old_port
                && ports.iter().all(|&port| port == new)
                && replication(new)? == Replication::Master;
            Ok(done.then_some(()))
        })?;
        Ok(since.elapsed())
    }

    /// Whether every sentinel sees the master up, the replica in sync, and the other
    /// sentinels.
    fn sentinels_settled(&self) -> io::Result<bool> {
        for sentinel in &self.sentinels {
            let port = sentinel.port();
            let master = fields(resp::call(port, &["SENTINEL", "MASTER", MASTER_NAME])?)?;
            let others = (SENTINELS - 1).to_string();
            if field(&master, "flags") != Some("master")
                || field(&master, "num-other-sentinels") != Some(others.as_str())
            {
                return Ok(false);
            }
            let mut replicas = resp::call(port, &["SENTINEL", "REPLICAS", MASTER_NAME])?.array()?;
            if replicas.len() != 1 {
                return Ok(false);
            }
            let replica = fields(replicas.remove(0))?;
            if field(&replica, "flags") != Some("slave")
                || field(&replica, "master-link-status") != Some("ok")
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The master's port, as the sentinel on `port` says.
fn master_port_from(port: u16) -> io::Result<u16> {
    let address =
        resp::call(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?.array()?;
    let port = match address.into_iter().nth(1) {
        Some(port) => port.text()?,
        None => String::new(),
    };
    port.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a sentinel names no master port but {port:?}"),
        )
    })
}

/// The strings of a flat `[name, value, name, value, ...]` array reply.
fn fields(reply: Reply) -> io::Result<Vec<String>> {
    reply.array()?.into_iter().map(Reply::text).collect()
}

/// The value after `name` in a flat `[name, value, ...]` list.
fn field<'a>(fields: &'a [String], name: &str) -> Option<&'a str> {
    fields
        .chunks(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair.get(1))
        .map(String::as_str)
}
