//! The servers a connection string names, and how a new connection picks one: each server
//! in turn, each given the connect timeout for the whole of it, starting with the server
//! that gave the last connection.
//!
//! `tokio-postgres` tries the hosts of a multi-host string in turn too, but its
//! `connect_timeout` bounds only each TCP connect: a server that accepts the connection and
//! then never answers (a hung old primary, after a failover) holds the attempt until the
//! caller gives up, and the hosts after it are never tried. Here each host gets the timeout
//! for everything (TCP, startup, authentication, and the check that it takes writes when
//! `target_session_attrs=read-write`), like libpq's `connect_timeout`. With several hosts
//! that timeout is at most the command timeout divided by their number: a lock operation
//! that has to open a connection can then get past a host that does not answer, within its
//! own timeout.
//!
//! Starting with the host that answered last means that after a failover only the first
//! new connection pays for an old primary that does not answer, and that a store stays on
//! the server that works instead of going back to the first host as soon as that one
//! answers again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::tokio_postgres::config::Host;
use deadpool_postgres::tokio_postgres::tls::MakeTlsConnect;
use deadpool_postgres::tokio_postgres::{Client, Config, Connection, Error, Socket};

/// The hosts of one connection string, and where the next connection starts.
#[derive(Debug, Clone)]
pub(crate) struct Hosts {
    /// One configuration per host, in the order of the connection string (the given
    /// configuration itself when it names one host, none, or host lists the driver would
    /// refuse: then the driver reports them).
    each: Arc<[Config]>,
    /// The index of the host the next connection tries first: the last one that gave a
    /// connection, or the one after the last one that failed.
    first: Arc<AtomicUsize>,
    /// The longest one host may take.
    per_host: Duration,
}

impl Hosts {
    /// The hosts `config` names, each given `connect_timeout` to connect; when there are
    /// several, at most `command_timeout` divided by their number, so that one lock
    /// operation that opens a connection can try them all before its own timeout.
    pub(crate) fn new(
        config: &Config,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Self {
        let each: Vec<Config> = match host_count(config) {
            Some(count) if count > 1 => (0..count).map(|index| one_host(config, index)).collect(),
            _ => vec![config.clone()],
        };
        let count = u32::try_from(each.len()).unwrap_or(u32::MAX);
        let per_host = if count > 1 {
            connect_timeout.min(command_timeout / count)
        } else {
            connect_timeout
        };
        Self {
            each: each.into(),
            first: Arc::new(AtomicUsize::new(0)),
            per_host,
        }
    }

    /// The same hosts, sharing where the next connection starts, with sessions named
    /// `name` (in `pg_stat_activity`) unless the connection string names them.
    pub(crate) fn with_default_application_name(&self, name: &str) -> Self {
        let each = self
            .each
            .iter()
            .map(|config| {
                let mut config = config.clone();
                if config.get_application_name().is_none() {
                    config.application_name(name);
                }
                config
            })
            .collect();
        Self {
            each,
            first: Arc::clone(&self.first),
            per_host: self.per_host,
        }
    }

    /// How long trying every host may take: the bound to put on [`connect`](Self::connect).
    pub(crate) fn budget(&self) -> Duration {
        self.per_host
            .saturating_mul(u32::try_from(self.each.len()).unwrap_or(u32::MAX))
    }

    /// Connects to the first host that accepts, trying each in turn from the one that gave
    /// the last connection. Every host but the last tried is given the per-host timeout;
    /// the caller bounds the whole by [`budget`](Self::budget). A host that fails or times
    /// out sends the next connection to the host after it; a host that answers gets the next
    /// connection first. Fails with the last host's error.
    pub(crate) async fn connect<T>(
        &self,
        tls: &T,
    ) -> Result<(Client, Connection<Socket, T::Stream>), Error>
    where
        T: MakeTlsConnect<Socket> + Clone,
    {
        let count = self.each.len();
        let start = self.first.load(Ordering::SeqCst);
        for step in 0..count - 1 {
            let index = (start + step) % count;
            let attempt = self.each[index].connect(tls.clone());
            match tokio::time::timeout(self.per_host, attempt).await {
                Ok(Ok(connected)) => {
                    self.answered(index);
                    return Ok(connected);
                }
                Ok(Err(error)) => {
                    tracing::debug!(host = index, %error, "verrou: PostgreSQL host refused; trying the next");
                }
                Err(_) => {
                    tracing::debug!(host = index, timeout = ?self.per_host, "verrou: PostgreSQL host did not answer; trying the next");
                }
            }
            self.failed(index);
        }
        let index = (start + count - 1) % count;
        let connected = self.each[index].connect(tls.clone()).await;
        match connected {
            Ok(_) => self.answered(index),
            Err(_) => self.failed(index),
        }
        connected
    }

    /// Host `index` gave a connection: the next connection tries it first.
    fn answered(&self, index: usize) {
        self.first.store(index, Ordering::SeqCst);
    }

    /// Host `index` failed or did not answer in time: unless another connection has moved
    /// on meanwhile, the next one starts with the host after it.
    fn failed(&self, index: usize) {
        let next = (index + 1) % self.each.len();
        let _ = self
            .first
            .compare_exchange(index, next, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// How many hosts `config` names, if its lists agree the way the driver requires (as many
/// `host`s as `hostaddr`s when both are given; one port for all or one per host).
fn host_count(config: &Config) -> Option<usize> {
    let (hosts, addrs, ports) = (
        config.get_hosts().len(),
        config.get_hostaddrs().len(),
        config.get_ports().len(),
    );
    let count = hosts.max(addrs);
    let lists_agree = (hosts == 0 || hosts == count)
        && (addrs == 0 || addrs == count)
        && (ports <= 1 || ports == count);
    lists_agree.then_some(count)
}

/// `config` with only its host number `index` (its name, address and port).
fn one_host(config: &Config, index: usize) -> Config {
    let mut one = Config::new();
    if let Some(user) = config.get_user() {
        one.user(user);
    }
    if let Some(password) = config.get_password() {
        one.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        one.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        one.options(options);
    }
    if let Some(name) = config.get_application_name() {
        one.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        one.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        one.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        one.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        one.keepalives_retries(retries);
    }
    one.ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
    match config.get_hosts().get(index) {
        Some(Host::Tcp(host)) => {
            one.host(host);
        }
        #[cfg(unix)]
        Some(Host::Unix(path)) => {
            one.host_path(path);
        }
        None => {}
    }
    if let Some(addr) = config.get_hostaddrs().get(index) {
        one.hostaddr(*addr);
    }
    let ports = config.get_ports();
    if let Some(port) = ports.get(index).or_else(|| ports.first()) {
        one.port(*port);
    }
    one
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn parse(url: &str) -> Config {
        url.parse().expect("a valid connection string")
    }

    /// Every setting the driver reads from a connection string, none at its default.
    const SETTINGS: &str = "options=-c%20search_path%3Dlocks&application_name=app\
        &sslmode=disable&sslnegotiation=direct&connect_timeout=3&tcp_user_timeout=4\
        &keepalives=0&keepalives_idle=5&keepalives_interval=6&keepalives_retries=7\
        &target_session_attrs=read-write&channel_binding=disable&load_balance_hosts=random";

    #[test]
    fn each_host_keeps_every_other_setting() {
        let both = parse(&format!(
            "postgres://app:s3cret@db1:5433,db2:5434/locks?{SETTINGS}"
        ));
        let hosts = Hosts::new(&both, SECOND, Duration::from_secs(5));
        assert_eq!(hosts.each.len(), 2);
        for (index, host) in ["db1:5433", "db2:5434"].into_iter().enumerate() {
            let alone = parse(&format!("postgres://app:s3cret@{host}/locks?{SETTINGS}"));
            assert_eq!(hosts.each[index], alone, "host {index}");
        }
        assert_eq!(hosts.budget(), Duration::from_secs(2));
    }

    #[test]
    fn hosts_share_a_port_or_have_one_each() {
        let hosts = Hosts::new(
            &parse("host=a,b,c hostaddr=127.0.0.1,127.0.0.2,127.0.0.3 port=6000"),
            SECOND,
            SECOND,
        );
        assert_eq!(hosts.each.len(), 3);
        assert_eq!(
            hosts.each[2],
            parse("host=c hostaddr=127.0.0.3 port=6000"),
            "the one port serves every host"
        );
        let single = parse("postgres://app@db/locks");
        assert_eq!(&*Hosts::new(&single, SECOND, SECOND).each, [single]);
        let mismatched = parse("host=a,b port=1,2,3");
        assert_eq!(
            &*Hosts::new(&mismatched, SECOND, SECOND).each,
            [mismatched],
            "left to the driver, which reports it"
        );
    }

    #[test]
    fn several_hosts_share_the_command_timeout() {
        let (connect, command) = (Duration::from_secs(5), Duration::from_secs(6));
        let hosts = Hosts::new(&parse("host=a,b,c"), connect, command);
        assert_eq!(hosts.per_host, Duration::from_secs(2));
        assert_eq!(hosts.budget(), command);
        let short = Hosts::new(&parse("host=a,b"), Duration::from_secs(1), command);
        assert_eq!(short.per_host, Duration::from_secs(1));
        let single = Hosts::new(&parse("host=a"), connect, Duration::from_secs(1));
        assert_eq!(
            single.per_host, connect,
            "one host keeps its connect timeout"
        );
    }

    #[test]
    fn the_next_connection_starts_after_a_failed_host_and_at_an_answering_one() {
        let hosts = Hosts::new(&parse("host=a,b,c"), SECOND, SECOND);
        let first = || hosts.first.load(Ordering::SeqCst);
        hosts.failed(0);
        assert_eq!(first(), 1);
        hosts.failed(0);
        assert_eq!(first(), 1, "a late failure does not move it back");
        hosts.failed(1);
        hosts.failed(2);
        assert_eq!(first(), 0, "round and round");
        hosts.answered(2);
        assert_eq!(first(), 2);
        let renamed = hosts.with_default_application_name("listener");
        hosts.failed(2);
        assert_eq!(
            renamed.first.load(Ordering::SeqCst),
            0,
            "shared by the renamed copy"
        );
        assert_eq!(renamed.each[0].get_application_name(), Some("listener"));
    }
}
