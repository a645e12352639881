//! What the benchmarks run against: each store, with a bare-client baseline doing the same
//! round trips.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use verrou::postgres::deadpool_postgres::{self, Pool};
use verrou::postgres::{PostgresConfig, PostgresStore};
use verrou::redis::fred::prelude::{ClientLike, KeysInterface, LuaInterface};
use verrou::redis::fred::types::{Expiration, SetOptions};
use verrou::redis::fred::util::sha1_hash;
use verrou::redis::{fred, RedisConfig, RedisStore};
use verrou::{LockStore, MemoryStore};
use verrou_testkit::{
    env_url, PostgresServer, RedisCluster, RedisServer, POSTGRES_URL_VAR, REDIS_URL_VAR,
};

use crate::cpu;
use crate::node::NodeRival;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The lock TTL every benchmark uses.
pub(crate) const TTL: Duration = Duration::from_secs(30);

/// The bare client taking and releasing a lock with the same round trips as the store.
#[async_trait]
pub(crate) trait Baseline: Send + Sync {
    /// Takes `key` for `owner` if free; whether it was taken.
    async fn take(&self, key: &str, owner: &str) -> bool;
    /// Frees `key` if `owner` holds it; whether it was freed.
    async fn release(&self, key: &str, owner: &str) -> bool;

    /// Clears what earlier runs left on the server, for the store's side and the baseline's
    /// alike, before a run: otherwise a cleanup the server does at a moment of its own
    /// lands in the middle of one side's run. The provided one does nothing.
    async fn settle(&self) {}

    /// The CPU time the server reports having used so far, where it does (the provided
    /// one: nowhere).
    async fn server_time(&self) -> Option<Duration> {
        None
    }
}

type StoreFuture = Pin<Box<dyn Future<Output = Arc<dyn LockStore>> + Send>>;

/// A store under test and its baseline.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    new_store: Box<dyn Fn() -> StoreFuture + Send + Sync>,
    pub(crate) baseline: Arc<dyn Baseline>,
    /// The Node.js library on the same server, where the cycle benchmark measures it too.
    pub(crate) node: Option<NodeRival>,
    /// The private server, kept running while the backend lives.
    _server: Option<KeptServer>,
}

impl Backend {
    /// A store instance, as one process would have (memory: a handle on the shared map).
    pub(crate) async fn new_store(&self) -> Arc<dyn LockStore> {
        (self.new_store)().await
    }

    /// The memory store, against a `tokio::sync::Mutex<HashMap>`.
    pub(crate) fn memory() -> Self {
        let store = MemoryStore::new();
        Self {
            name: "memory",
            new_store: Box::new(move || {
                let store: Arc<dyn LockStore> = Arc::new(store.clone());
                Box::pin(async move { store })
            }),
            baseline: Arc::new(MutexMap::default()),
            node: None,
            _server: None,
        }
    }

    /// The Redis store, against fred doing `SET NX PX` and `EVALSHA` of an owner-checked
    /// delete, on one connection each (the store's default); and, `with_node`, against
    /// @verrou/core on Node.js (see [`NodeRival`]).
    pub(crate) async fn redis(with_node: bool) -> Result<Self, BoxError> {
        Self::redis_with("redis", false, with_node).await
    }

    /// The Redis store with fencing tokens (its take a script), against the same baseline:
    /// the ratio is what the tokens cost.
    pub(crate) async fn redis_fenced() -> Result<Self, BoxError> {
        Self::redis_with("redis, fencing tokens", true, false).await
    }

    async fn redis_with(
        name: &'static str,
        fencing_tokens: bool,
        with_node: bool,
    ) -> Result<Self, BoxError> {
        let (url, server) = server_url(REDIS_URL_VAR, || {
            RedisServer::start().map(|server| (server.url(), Box::new(server) as KeptServer))
        })?;
        let baseline = FredBaseline::connect(&url).await?;
        let node = if with_node {
            NodeRival::on(&url).await
        } else {
            None
        };
        let new_store = move || {
            let mut config = RedisConfig::new(url.clone());
            config.fencing_tokens = fencing_tokens;
            async move { RedisStore::connect(config).await }
        };
        Ok(Self {
            node,
            ..Self::served(name, new_store, Arc::new(baseline), server)
        })
    }

    /// The Redis store on a private Redis Cluster (three masters, three replicas; the
    /// benchmark's keys spread over the slots), against fred doing the same as for
    /// [`redis`](Self::redis), on the same cluster.
    pub(crate) async fn redis_cluster() -> Result<Self, BoxError> {
        let cluster = RedisCluster::start()?;
        let url = cluster.url();
        let baseline = FredBaseline::connect(&url).await?;
        let new_store = move || {
            let config = RedisConfig::new(url.clone());
            async move { RedisStore::connect(config).await }
        };
        Ok(Self::served(
            "redis-cluster",
            new_store,
            Arc::new(baseline),
            Some(Box::new(cluster)),
        ))
    }

    /// The Redis store with replica acknowledgement (`min_replicas: 1`: each take and
    /// extension followed by `WAIT 1`, in the same round trip), on a private master with one
    /// replica, against the same fred baseline on that master (no `WAIT`): the ratio is the
    /// cost of waiting for the replica.
    pub(crate) async fn redis_replicated() -> Result<Self, BoxError> {
        let master = RedisServer::start()?;
        let replica = RedisServer::start()?;
        let url = master.url();
        replicate(&url, &replica.url(), master.port()).await?;
        let baseline = FredBaseline::connect(&url).await?;
        let new_store = move || {
            let mut config = RedisConfig::new(url.clone());
            config.min_replicas = 1;
            async move { RedisStore::connect(config).await }
        };
        let servers: KeptServer = Box::new((master, replica));
        Ok(Self::served(
            "redis, min_replicas 1",
            new_store,
            Arc::new(baseline),
            Some(servers),
        ))
    }

    /// The PostgreSQL store, against tokio-postgres running a take and a release statement,
    /// prepared, on a pool of the store's default size.
    pub(crate) async fn postgres() -> Result<Self, BoxError> {
        let (url, server) = server_url(POSTGRES_URL_VAR, || {
            PostgresServer::start().map(|server| (server.url(), Box::new(server) as KeptServer))
        })?;
        let baseline = PostgresBaseline::connect(&url).await?;
        let new_store = move || {
            let config = PostgresConfig::new(url.clone());
            async move { PostgresStore::connect(config).await }
        };
        Ok(Self::served(
            "postgres",
            new_store,
            Arc::new(baseline),
            server,
        ))
    }

    /// A backend whose stores `connect` makes, on a server that lives as long as it does.
    fn served<S, F, Fut>(
        name: &'static str,
        connect: F,
        baseline: Arc<dyn Baseline>,
        server: Option<KeptServer>,
    ) -> Self
    where
        S: LockStore,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = verrou::Result<S>> + Send + 'static,
    {
        Self {
            name,
            new_store: Box::new(move || {
                let connecting = connect();
                Box::pin(async move {
                    let store: Arc<dyn LockStore> =
                        Arc::new(connecting.await.expect("the store connects"));
                    store
                })
            }),
            baseline,
            node: None,
            _server: server,
        }
    }
}

/// A private server kept running for as long as a backend uses it.
type KeptServer = Box<dyn Send + Sync>;

/// The server named by `var`, or a private one from `start`.
fn server_url(
    var: &str,
    start: impl FnOnce() -> std::io::Result<(String, KeptServer)>,
) -> std::io::Result<(String, Option<KeptServer>)> {
    match env_url(var) {
        Some(url) => Ok((url, None)),
        None => start().map(|(url, server)| (url, Some(server))),
    }
}

/// Makes the server at `replica_url` a replica of the master at `master_url` (on
/// `master_port`), and waits until it acknowledges writes (`WAIT` answers 1 three times in a
/// row: a replica that has just synced is sent nothing until its first acknowledgement).
async fn replicate(master_url: &str, replica_url: &str, master_port: u16) -> Result<(), BoxError> {
    let client = |url: &str| -> Result<fred::clients::Client, BoxError> {
        Ok(
            fred::types::Builder::from_config(fred::types::config::Config::from_url(url)?)
                .build()?,
        )
    };
    let (master, replica) = (client(master_url)?, client(replica_url)?);
    master.init().await?;
    replica.init().await?;
    let command = |name| {
        fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::FirstKey, false)
    };
    let _: String = replica
        .custom(
            command("REPLICAOF"),
            vec!["127.0.0.1".to_owned(), master_port.to_string()],
        )
        .await?;
    let mut in_a_row = 0;
    for _ in 0..1000 {
        let _: () = master
            .set("bench:replication-probe", "x", None, None, false)
            .await?;
        let acknowledged: i64 = master.custom(command("WAIT"), vec![1, 50]).await?;
        in_a_row = if acknowledged == 1 { in_a_row + 1 } else { 0 };
        if in_a_row == 3 {
            return Ok(());
        }
    }
    Err("the replica never acknowledged".into())
}

/// The Redis baseline: what a user would write with fred alone.
struct FredBaseline {
    client: fred::clients::Client,
    release_sha: String,
}

const RELEASE_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

impl FredBaseline {
    async fn connect(url: &str) -> Result<Self, BoxError> {
        let client = fred::types::Builder::from_config(fred::types::config::Config::from_url(url)?)
            .build()?;
        client.init().await?;
        // On a cluster, every master needs it: the keys spread over their slots.
        if client.is_clustered() {
            client.script_load_cluster::<(), _>(RELEASE_SCRIPT).await?;
        } else {
            client.script_load::<(), _>(RELEASE_SCRIPT).await?;
        }
        let release_sha = sha1_hash(RELEASE_SCRIPT);
        Ok(Self {
            client,
            release_sha,
        })
    }
}

#[async_trait]
impl Baseline for FredBaseline {
    async fn take(&self, key: &str, owner: &str) -> bool {
        let millis = i64::try_from(TTL.as_millis()).expect("TTL fits");
        let reply: Option<String> = self
            .client
            .set(
                key,
                owner,
                Some(Expiration::PX(millis)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .expect("Redis answers");
        reply.is_some()
    }

    async fn release(&self, key: &str, owner: &str) -> bool {
        let deleted: i64 = self
            .client
            .evalsha(&self.release_sha, key, owner)
            .await
            .expect("Redis answers");
        deleted == 1
    }

    /// A single server's (on a cluster, `INFO` would answer for one node of several).
    async fn server_time(&self) -> Option<Duration> {
        if self.client.is_clustered() {
            return None;
        }
        let info = fred::types::CustomCommand::new_static(
            "INFO",
            fred::types::ClusterHash::FirstKey,
            false,
        );
        let info: String = self.client.custom(info, vec!["cpu"]).await.ok()?;
        cpu::redis_server_time(&info)
    }
}

/// The PostgreSQL baseline: a hand-written take (insert, or update an expired row) and an
/// owner-checked delete, prepared once per connection.
struct PostgresBaseline {
    pool: Pool,
}

const BASELINE_TABLE: &str = "CREATE TABLE IF NOT EXISTS verrou_bench_baseline \
    (key text PRIMARY KEY, owner text NOT NULL, expiration bigint)";
const BASELINE_TAKE: &str = "INSERT INTO verrou_bench_baseline AS held (key, owner, expiration) \
    VALUES ($1, $2, (extract(epoch from now()) * 1000)::bigint + $3) \
    ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expiration = excluded.expiration \
    WHERE held.expiration <= (extract(epoch from now()) * 1000)::bigint RETURNING 1";
const BASELINE_RELEASE: &str = "DELETE FROM verrou_bench_baseline WHERE key = $1 AND owner = $2";

impl PostgresBaseline {
    async fn connect(url: &str) -> Result<Self, BoxError> {
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url.to_owned());
        // The planner settings the store's connections open with: without them the
        // baseline's cached delete reads the whole (just vacuumed, then growing) table.
        config.options = Some("-c enable_seqscan=off -c jit=off".to_owned());
        config.pool = Some(deadpool_postgres::PoolConfig::new(10));
        let pool = config.create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            deadpool_postgres::tokio_postgres::NoTls,
        )?;
        pool.get().await?.batch_execute(BASELINE_TABLE).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Baseline for PostgresBaseline {
    async fn take(&self, key: &str, owner: &str) -> bool {
        let client = self.pool.get().await.expect("a connection");
        let statement = client
            .prepare_cached(BASELINE_TAKE)
            .await
            .expect("statement prepares");
        let ttl = i64::try_from(TTL.as_millis()).expect("TTL fits");
        let rows = client
            .query(&statement, &[&key, &owner, &ttl])
            .await
            .expect("PostgreSQL answers");
        !rows.is_empty()
    }

    /// Vacuums the baseline's table and the store's (the default `verrou`): every cycle
    /// leaves a dead row and a dead index entry behind, which slow the next lookups of the
    /// same keys until autovacuum comes by, whenever that is (measured: the baseline's
    /// release read 5 to 20 buffers a call from one run to the next).
    async fn settle(&self) {
        self.pool
            .get()
            .await
            .expect("a connection")
            .batch_execute("VACUUM verrou_bench_baseline, verrou")
            .await
            .expect("the tables can be vacuumed");
    }

    async fn release(&self, key: &str, owner: &str) -> bool {
        let client = self.pool.get().await.expect("a connection");
        let statement = client
            .prepare_cached(BASELINE_RELEASE)
            .await
            .expect("statement prepares");
        client
            .execute(&statement, &[&key, &owner])
            .await
            .expect("PostgreSQL answers")
            == 1
    }
}

/// The memory baseline: a map behind a Tokio mutex, no expiry, no tokens.
#[derive(Default)]
struct MutexMap {
    map: tokio::sync::Mutex<HashMap<String, String>>,
}

#[async_trait]
impl Baseline for MutexMap {
    async fn take(&self, key: &str, owner: &str) -> bool {
        let mut map = self.map.lock().await;
        if map.contains_key(key) {
            return false;
        }
        map.insert(key.to_owned(), owner.to_owned());
        true
    }

    async fn release(&self, key: &str, owner: &str) -> bool {
        let mut map = self.map.lock().await;
        if map.get(key).is_some_and(|held| held == owner) {
            map.remove(key);
            true
        } else {
            false
        }
    }
}
