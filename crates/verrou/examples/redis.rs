//! Locks in Redis: two stores with their own connections (as two processes would have) take
//! turns on one lock, each grant with a higher fencing token; then one service hands a held
//! lock over to the other.
//!
//! Run it against private throwaway servers with
//! `./scripts/with-servers.sh cargo run -p verrou --features redis --example redis`, or against
//! your own with `cargo run -p verrou --features redis --example redis` and the server in
//! `VERROU_REDIS_URL` (default `redis://127.0.0.1:6379`).

#[path = "shared/two_services.rs"]
mod two_services;

use verrou::redis::{RedisConfig, RedisStore};
use verrou::{Retry, Verrou};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    two_services::exit(run().await, "redis", "VERROU_REDIS_URL")
}

async fn run() -> verrou::Result<()> {
    let url =
        std::env::var("VERROU_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let service = || async {
        let mut config = RedisConfig::new(url.clone());
        config.key_prefix = "example:".into();
        let store = RedisStore::connect(config).await?;
        Verrou::builder()
            .store("redis", store)
            .retry(Retry::new().delay("20ms").timeout("10s"))
            .build()
    };
    two_services::take_turns_and_hand_over([service().await?, service().await?]).await
}
