//! Four workers contend for one lock on the in-process memory store; the output shows them
//! taking turns, never two at once.
//!
//! Run it with `cargo run --example quickstart`.

use std::time::{Duration, Instant};

use verrou::{MemoryStore, Retry, Verrou};

#[tokio::main]
async fn main() -> verrou::Result<()> {
    let verrou = Verrou::builder()
        .store("memory", MemoryStore::new())
        .retry(Retry::new().delay("10ms").timeout("10s"))
        .build()?;
    let started = Instant::now();

    let workers: Vec<_> = (1..=4)
        .map(|worker| {
            let verrou = verrou.clone();
            tokio::spawn(async move {
                for turn in 1..=2 {
                    let lock = verrou.create_lock_with_ttl("card:4242", "5s")?;
                    let outcome = lock
                        .run(|| async {
                            println!(
                                "{:>5} ms  worker {worker} holds the lock (turn {turn})",
                                started.elapsed().as_millis()
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            println!(
                                "{:>5} ms  worker {worker} releases it",
                                started.elapsed().as_millis()
                            );
                        })
                        .await?;
                    if outcome.is_none() {
                        println!("worker {worker} gave up waiting");
                    }
                    // Work outside the lock lets the others take their turn.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                verrou::Result::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker task panicked")?;
    }

    // A lock can leave this process: serialize it, restore it elsewhere, release it there.
    let lock = verrou.create_lock("report:2026-11")?;
    assert!(lock.acquire_immediately().await?);
    let handed_over = verrou.restore_lock(lock.serialize().to_string())?;
    handed_over.release().await?;
    println!(
        "report lock handed over and released: locked = {}",
        lock.is_locked().await?
    );
    Ok(())
}
