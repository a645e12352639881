//! The store conformance suite, its semaphore and read-write lock groups and its fault groups
//! (locks and shares), through Redis Sentinel
//! (`redis-sentinel://`, a private master, replica and three sentinels); and the suite again
//! with replica acknowledgement (`min_replicas: 1`), which must keep every promise.
//!
//! For the fault group, the store's connections to the master go through a fault proxy: the
//! sentinels announce the master's real address, so the store's clients resolve that address
//! (127.0.0.1 and the master's port) to the proxy's, through fred's `Resolve` hook. Their
//! connections to the sentinels, and the failover watcher's, are direct: the faults are
//! between the store and its data, as the fault group means.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use verrou_core::LockStore;
use verrou_redis::{RedisConfig, RedisStore};
use verrou_testkit::RedisSentinelSet;

/// This test process's private Sentinel deployment, started at the first call (about two
/// seconds) and stopped when the process ends. Nothing here fails it over.
fn sentinels() -> &'static RedisSentinelSet {
    static SET: OnceLock<RedisSentinelSet> = OnceLock::new();
    SET.get_or_init(|| {
        RedisSentinelSet::start()
            .expect("a private Redis Sentinel deployment (redis-server must be installed)")
    })
}

/// A store through the sentinels with `configure` applied: stores made for one case behave
/// like separate processes.
async fn connect(configure: impl FnOnce(&mut RedisConfig)) -> RedisStore {
    let mut config = RedisConfig::new(sentinels().url());
    configure(&mut config);
    RedisStore::connect(config)
        .await
        .expect("the store connects through the sentinels")
}

async fn new_store() -> Arc<dyn LockStore> {
    Arc::new(connect(|_| {}).await)
}

verrou_core::conformance_tests!(new_store);
verrou_core::semaphore_tests!(new_store);
verrou_core::rw_lock_tests!(new_store);

mod acknowledged {
    use super::*;

    /// A store whose takes and extensions wait for the replica.
    async fn new_store() -> Arc<dyn LockStore> {
        Arc::new(connect(|config| config.min_replicas = 1).await)
    }

    verrou_core::conformance_tests!(new_store);
    verrou_core::semaphore_tests!(new_store);
    verrou_core::rw_lock_tests!(new_store);
}

mod faults {
    use std::net::{Ipv4Addr, SocketAddr};

    use async_trait::async_trait;
    use verrou_core::conformance::FaultyStore;
    use verrou_redis::fred::bytes_utils::Str;
    use verrou_redis::fred::error::Error as FredError;
    use verrou_redis::fred::prelude::ClientLike;
    use verrou_redis::fred::types::Resolve;
    use verrou_testkit::FaultProxy;

    use super::*;

    /// Short, so that the cases that wait for a timeout stay short.
    const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

    /// Resolves the master's address to its proxy's, and every other one (the sentinels) to
    /// itself.
    struct MasterThroughProxy {
        master: u16,
        proxy: u16,
    }

    #[async_trait]
    impl Resolve for MasterThroughProxy {
        async fn resolve(&self, _host: Str, port: u16) -> Result<Vec<SocketAddr>, FredError> {
            let port = if port == self.master {
                self.proxy
            } else {
                port
            };
            Ok(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))])
        }
    }

    /// A store whose connection to the master goes through a new fault proxy, and a direct
    /// one.
    async fn new_faulty_store() -> FaultyStore {
        let set = sentinels();
        let master = set.master_port().expect("the sentinels name a master");
        let proxy = FaultProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, master)))
            .expect("a fault proxy");
        let mut config = RedisConfig::new(set.url());
        config.command_timeout = COMMAND_TIMEOUT;
        config.connect_timeout = COMMAND_TIMEOUT;
        // Unconnected, with the hook: the store connects it, through the proxy.
        let pool = config
            .builder()
            .expect("a valid configuration")
            .build_pool(1)
            .expect("a pool");
        pool.set_resolver(Arc::new(MasterThroughProxy {
            master,
            proxy: proxy.port(),
        }))
        .await;
        FaultyStore {
            store: Arc::new(RedisStore::from_pool(pool, config.options()).expect("valid options")),
            direct: Arc::new(
                connect(|config| {
                    config.command_timeout = COMMAND_TIMEOUT;
                    config.connect_timeout = COMMAND_TIMEOUT;
                })
                .await,
            ),
            faults: Arc::new(proxy),
            command_timeout: COMMAND_TIMEOUT,
        }
    }

    // Every case but refused connections: the proxy is reached through a resolver hook on
    // the pool, and when refused connections end a client's connection task, the store
    // replaces the client with fred's `clone_new`, which does not carry the hook, so the
    // replacement reaches the master directly and the fault no longer applies. (On the
    // single server and on the cluster the case runs; a store's own resolver being dropped on
    // replacement is documented in the crate README.)
    verrou_core::fault_tests!(@cases new_faulty_store;
        blackholed_operations_fail_within_the_command_timeout,
        cut_connections_are_reestablished,
        dropped_acquire_on_the_wire_is_given_back,
        futures_dropped_at_any_point_leave_no_orphan,
        a_grant_arriving_after_its_ttl_is_not_acquired,
        slow_network_keeps_every_promise,
        contenders_under_faults_keep_a_clean_history,
    );
    verrou_core::share_fault_tests!(new_faulty_store);
}
