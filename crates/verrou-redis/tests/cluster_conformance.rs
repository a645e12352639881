//! The store conformance suite, its waiting-line, semaphore and read-write lock groups and its
//! fault groups (locks and shares), against a private Redis Cluster (three masters, three
//! replicas).
//!
//! For the fault group, every connection of the store under test goes through a fault
//! proxy: a cluster client learns the nodes' addresses from `CLUSTER SLOTS` (and from
//! `MOVED` and `ASK`), so a proxy in front of the seed node alone would see only the first
//! connection. The store's clients resolve each node's address to a proxy of its own,
//! through fred's `Resolve` hook; the injector applies each fault to all six proxies at
//! once. (The wake-on-release subscriber connects on its own, without the hook: faults do
//! not reach it, and lock operations never use it.)

mod cluster_support;
#[path = "cluster_support/shared.rs"]
mod shared;

use std::sync::Arc;
use std::time::Duration;

use cluster_support::connect;
use shared::cluster;
use verrou_core::LockStore;

/// The default command timeout, as for the single server's conformance suite.
const COMMAND_TIMEOUT: Duration = verrou_redis::DEFAULT_COMMAND_TIMEOUT;

/// A new store, with its own connections, on the cluster: stores made for one case behave
/// like separate processes.
async fn new_store() -> Arc<dyn LockStore> {
    Arc::new(connect(&cluster().url(), COMMAND_TIMEOUT).await)
}

verrou_core::conformance_tests!(new_store);
verrou_core::line_tests!(new_store);
verrou_core::semaphore_tests!(new_store);
verrou_core::rw_lock_tests!(new_store);

mod faults {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use verrou_core::conformance::{FaultInjector, FaultyStore};
    use verrou_redis::fred::bytes_utils::Str;
    use verrou_redis::fred::error::Error as FredError;
    use verrou_redis::fred::prelude::ClientLike;
    use verrou_redis::fred::types::Resolve;
    use verrou_redis::{RedisConfig, RedisStore};
    use verrou_testkit::FaultProxy;

    use super::cluster_support::connect;
    use super::shared::cluster;

    /// Short, so that the cases that wait for a timeout stay short.
    const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

    /// A fault proxy in front of every node of the cluster, faulted all at once.
    struct ClusterFaults {
        proxies: Vec<FaultProxy>,
    }

    impl ClusterFaults {
        /// Applies `fault` to every proxy.
        fn each(&self, fault: impl Fn(&FaultProxy)) {
            self.proxies.iter().for_each(fault);
        }
    }

    impl FaultInjector for ClusterFaults {
        fn heal(&self) {
            self.each(FaultInjector::heal);
        }

        fn set_latency(&self, to_server: Duration, to_client: Duration) {
            self.each(|proxy| proxy.set_latency(to_server, to_client));
        }

        fn blackhole(&self) {
            self.each(FaultInjector::blackhole);
        }

        fn cut(&self) {
            self.each(FaultInjector::cut);
        }

        fn refuse(&self) {
            self.each(FaultInjector::refuse);
        }
    }

    /// Resolves the address of each node (127.0.0.1 and its port) to that of its proxy.
    struct ThroughProxies {
        proxy_ports: HashMap<u16, u16>,
    }

    #[async_trait]
    impl Resolve for ThroughProxies {
        async fn resolve(&self, host: Str, port: u16) -> Result<Vec<SocketAddr>, FredError> {
            let proxy = self.proxy_ports.get(&port).ok_or_else(|| {
                FredError::new(
                    verrou_redis::fred::error::ErrorKind::IO,
                    format!("{host}:{port} is not a node of the test cluster"),
                )
            })?;
            Ok(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, *proxy))])
        }
    }

    /// A store whose every connection goes through a proxy of its node, and a direct one.
    async fn new_faulty_store() -> FaultyStore {
        let cluster = cluster();
        let url = cluster.url();
        let mut proxies = Vec::new();
        let mut proxy_ports = HashMap::new();
        for node in cluster.nodes().expect("the cluster answers") {
            let proxy = FaultProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, node.port)))
                .expect("a fault proxy");
            proxy_ports.insert(node.port, proxy.port());
            proxies.push(proxy);
        }
        let mut config = RedisConfig::new(&url);
        config.command_timeout = COMMAND_TIMEOUT;
        config.connect_timeout = COMMAND_TIMEOUT;
        // Unconnected, with the hook: the store connects it, through the proxies.
        let pool = config
            .builder()
            .expect("a valid configuration")
            .build_pool(1)
            .expect("a pool");
        pool.set_resolver(Arc::new(ThroughProxies { proxy_ports }))
            .await;
        let store = RedisStore::from_pool(pool.clone(), config.options()).expect("valid options");
        // Connected before any fault: a client whose first connection fails is replaced by
        // one without the hook.
        pool.wait_for_connect()
            .await
            .expect("the store connects through the proxies");
        FaultyStore {
            store: Arc::new(store),
            direct: Arc::new(connect(&url, COMMAND_TIMEOUT).await),
            faults: Arc::new(ClusterFaults { proxies }),
            command_timeout: COMMAND_TIMEOUT,
        }
    }

    verrou_core::fault_tests!(new_faulty_store);
    verrou_core::share_fault_tests!(new_faulty_store);
}
