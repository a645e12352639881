//! A single Redis server killed (`kill -9`) and restarted empty while contenders in several
//! "processes" (one store each) take and release locks: the one documented case where mutual
//! exclusion breaks (a lock held across the restart is gone, so it can be granted again), but
//! fencing tokens must still increase, and every store must recover by itself.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{connect, unique_key};
use verrou_core::conformance::History;
use verrou_core::{LockFactory, Retry};
use verrou_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_may_regrant_but_tokens_still_increase() {
    let mut server = RedisServer::start().expect("a private redis-server");
    let history = Arc::new(History::new());
    let keys = [unique_key("restart-a"), unique_key("restart-b")];
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut contenders = Vec::new();
    for index in 0..4 {
        let store = connect(&server.url(), |config| {
            config.command_timeout = Duration::from_secs(1);
            config.connect_timeout = Duration::from_secs(1);
        })
        .await;
        let factory = LockFactory::new(store)
            .with_retry(Retry::new().delay(20).timeout("1s"))
            .expect("a valid retry policy");
        let keys = keys.clone();
        let history = Arc::clone(&history);
        contenders.push(tokio::spawn(async move {
            let mut grants = 0u32;
            while Instant::now() < stop_at {
                let key = &keys[index % keys.len()];
                let lock = factory.create_lock_with_ttl(key, "30s").expect("a lock");
                if let Ok(true) = lock.acquire().await {
                    let hold = history.granted(&lock, format!("store-{index}"));
                    // Holds longer than the outage, so that some span the restart.
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    history.released(hold);
                    let _ = lock.release().await;
                    grants += 1;
                }
            }
            grants
        }));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.kill();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().expect("the server restarts on its port");
    println!("server down for {:?}", killed_at.elapsed());
    for contender in contenders {
        let grants = contender.await.expect("a contender");
        assert!(grants > 0, "a store never got a lock");
    }
    let verdict = history.verdict();
    println!(
        "{} holds; {} re-grants of a lock lost in the restart (documented); {} token regressions",
        verdict.holds,
        verdict.overlaps.len(),
        verdict.token_regressions.len()
    );
    assert!(
        verdict.token_regressions.is_empty(),
        "fencing tokens went back across the restart: {:?}",
        verdict.token_regressions
    );
    // Every overlap must involve a hold that spanned the kill: outside the restart, mutual
    // exclusion holds.
    for (earlier, later) in &verdict.overlaps {
        assert!(
            earlier.granted_at <= killed_at && later.granted_at >= killed_at,
            "an overlap that the restart does not explain: {earlier:?} / {later:?}"
        );
    }
}
