//! Helpers shared by the Redis store's test files.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use verrou_redis::fred::prelude::{Builder, Client, ClientLike, Config};
use verrou_redis::{RedisConfig, RedisStore};

/// A key no other test (or test run sharing the server) uses.
pub(crate) fn unique_key(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "verrou-redis-test:{name}:{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A plain fred client on `url`, to look at what the store wrote.
pub(crate) async fn raw_client(url: &str) -> Client {
    let config = Config::from_url(url).expect("a valid Redis URL");
    let client = Builder::from_config(config).build().expect("a fred client");
    client.init().await.expect("the raw client connects");
    client
}

/// A store on `url`, with `configure` applied to the default configuration.
pub(crate) async fn connect(url: &str, configure: impl FnOnce(&mut RedisConfig)) -> RedisStore {
    let mut config = RedisConfig::new(url);
    configure(&mut config);
    RedisStore::connect(config)
        .await
        .expect("the store connects to the test server")
}
