//! Locks in PostgreSQL: two stores with separate connection pools (as two processes would
//! have) take turns on one lock, then one hands a held lock over to the other.
//!
//! Run it with `cargo run -p verrou --features postgres --example postgres`, with the server
//! in `VERROU_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`). The
//! store creates its table (`verrou`) if it is missing.

use std::time::Duration;

use verrou::postgres::{PostgresConfig, PostgresStore};
use verrou::{Retry, Verrou};

#[tokio::main]
async fn main() -> verrou::Result<()> {
    let url = std::env::var("VERROU_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut services = Vec::new();
    for _ in 0..2 {
        let store = PostgresStore::connect(PostgresConfig::new(url.clone())).await?;
        let verrou = Verrou::builder()
            .store("postgres", store)
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
                    let lock = verrou.create_lock_with_ttl("example:nightly-report", "5s")?;
                    lock.run(|| async {
                        println!("service {service} writes the report (turn {turn})");
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
    let lock = services[0].create_lock_with_ttl("example:handover", "30s")?;
    assert!(lock.acquire_immediately().await?);
    let handed_over = services[1].restore_lock(lock.serialize().to_string())?;
    handed_over.release().await?;
    println!(
        "handed over and released: locked = {}",
        lock.is_locked().await?
    );
    Ok(())
}
