//! Locks in Redis: two stores with their own connections (as two processes would have) take
//! turns on one lock, each grant with a higher fencing token; then one service hands a held
//! lock over to the other.
//!
//! Run it with `cargo run -p verrou --features redis --example redis`, with the server in
//! `VERROU_REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::time::Duration;

use verrou::redis::{RedisConfig, RedisStore};
use verrou::{Retry, Verrou};

#[tokio::main]
async fn main() -> verrou::Result<()> {
    let url =
        std::env::var("VERROU_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let mut services = Vec::new();
    for _ in 0..2 {
        let mut config = RedisConfig::new(url.clone());
        config.key_prefix = "example:".into();
        let verrou = Verrou::builder()
            .store("redis", RedisStore::connect(config).await?)
            .retry(Retry::new().delay("20ms").timeout("10s"))
            .build()?;
        services.push(verrou);
    }

    let workers: Vec<_> = services
        .iter()
        .cloned()
        .enumerate()
        .map(|(service, verrou)| {
            tokio::spawn(async move {
                for turn in 1..=3 {
                    let lock = verrou.create_lock_with_ttl("nightly-report", "5s")?;
                    lock.run(|| async {
                        // Hand the token to the resource you write to, so that it can refuse
                        // a holder whose lock expired while it was paused.
                        let token = lock.fencing_token().unwrap_or_default();
                        println!(
                            "service {service} writes the report (turn {turn}, token {token})"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    })
                    .await?;
                    // Work outside the lock lets the other service take its turn.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                verrou::Result::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker task panicked")?;
    }

    // A held lock travels as JSON: service 0 takes it, service 1 releases it.
    let lock = services[0].create_lock_with_ttl("handover", "30s")?;
    assert!(lock.acquire_immediately().await?);
    let handed_over = services[1].restore_lock(lock.serialize().to_string())?;
    handed_over.release().await?;
    println!(
        "handed over and released: locked = {}",
        lock.is_locked().await?
    );
    Ok(())
}
