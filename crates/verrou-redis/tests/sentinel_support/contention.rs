//! Contenders in several "processes" (one store each) on a few keys, with a history of
//! their holds.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use verrou_core::conformance::History;
use verrou_core::{LockFactory, Retry};
use verrou_redis::RedisConfig;

use crate::sentinel_support::connect;

/// Contenders in several "processes" (one store each), two tasks per store, taking and
/// releasing a few keys, each hold recorded in a [`History`] with the time it was granted.
pub(crate) struct Contention {
    pub(crate) history: Arc<History>,
    /// When each grant was reported, by this machine's clock.
    pub(crate) grants: Arc<Mutex<Vec<SystemTime>>>,
    /// Calls that failed.
    pub(crate) errors: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Contention {
    /// Starts `stores` stores on `url` (`configure` applied) contending for `keys`.
    pub(crate) async fn start(
        url: &str,
        stores: usize,
        keys: &[String],
        configure: impl Fn(&mut RedisConfig),
    ) -> Self {
        let history = Arc::new(History::new());
        let grants = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for store in 0..stores {
            let factory = LockFactory::new(connect(url, &configure).await)
                .with_retry(Retry::new().delay(20).timeout("300ms"))
                .expect("a valid retry policy");
            for worker in 0..2 {
                let (factory, keys) = (factory.clone(), keys.to_vec());
                let (history, grants) = (Arc::clone(&history), Arc::clone(&grants));
                let (errors, stop) = (Arc::clone(&errors), Arc::clone(&stop));
                let name = format!("store-{store}/{worker}");
                tasks.push(tokio::spawn(async move {
                    let mut turn = store + worker;
                    while !stop.load(Ordering::SeqCst) {
                        turn += 1;
                        let key = &keys[turn % keys.len()];
                        // Short: a release the old master took after the replica was
                        // promoted is lost, and the key stays held until its TTL.
                        let lock = factory.create_lock_with_ttl(key, "1s").expect("a lock");
                        match lock.acquire().await {
                            Ok(true) => {
                                let hold = history.granted(&lock, name.as_str());
                                grants
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .push(SystemTime::now());
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                history.released(hold);
                                // A grant lost with the old master is no longer ours.
                                let _ = lock.release().await;
                            }
                            Ok(false) => {}
                            Err(_) => {
                                errors.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }));
            }
        }
        Self {
            history,
            grants,
            errors,
            stop,
            tasks,
        }
    }

    /// The grants reported at or after `since`.
    pub(crate) fn grants_since(&self, since: SystemTime) -> Vec<SystemTime> {
        self.grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .filter(|at| *at >= since)
            .collect()
    }

    /// Stops the contenders and waits for them.
    pub(crate) async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks.drain(..) {
            task.await.expect("a contender panicked");
        }
    }
}
