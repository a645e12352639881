//! What the Redis and PostgreSQL examples show with their own store: two services (as two
//! processes would be) take turns on one lock, then one hands a held lock to the other.

use std::error::Error as _;
use std::process::ExitCode;
use std::time::Duration;

use verrou::Verrou;

/// How the example ends: silently on success; on failure one line with the error, its
/// causes, and what to do (`store` is `redis` or `postgres`, `variable` the URL's variable).
pub(crate) fn exit(outcome: verrou::Result<()>, store: &str, variable: &str) -> ExitCode {
    let Err(error) = outcome else {
        return ExitCode::SUCCESS;
    };
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    eprintln!(
        "error: {message} (start a server, set {variable} to one, or run ./scripts/with-servers.sh cargo run -p verrou --features {store} --example {store})"
    );
    ExitCode::FAILURE
}

/// Runs the two services' turns, then the handover, printing what happens.
pub(crate) async fn take_turns_and_hand_over(services: [Verrou; 2]) -> verrou::Result<()> {
    let workers: Vec<_> = services
        .iter()
        .cloned()
        .enumerate()
        .map(|(service, verrou)| {
            tokio::spawn(async move {
                for turn in 1..=3 {
                    let lock = verrou.create_lock_with_ttl("example:nightly-report", "5s")?;
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
