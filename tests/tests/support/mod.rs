//! What the end-to-end tests share: the stores, the worker processes, and the holds they
//! print.
// Each test file uses some of it.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use verrou::{Lock, LockFactory, LockStore};

const WORKER: &str = env!("CARGO_BIN_EXE_verrou-e2e-worker");

/// A store the workers use, on the servers of `verrou_testkit`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Store {
    Redis,
    /// Redis with fencing tokens on.
    RedisFenced,
    Postgres,
}

impl Store {
    /// Its name on the worker's command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Store::Redis => "redis",
            Store::RedisFenced => "redis-fenced",
            Store::Postgres => "postgres",
        }
    }

    /// Whether its locks carry fencing tokens.
    pub(crate) fn fenced(self) -> bool {
        !matches!(self, Store::Redis)
    }

    /// The Rust worker (`src/bin/worker.rs`) on this store, its output piped.
    pub(crate) fn worker(self, args: &[&str]) -> Command {
        let mut command = Command::new(WORKER);
        command
            .args(["--store", self.name()])
            .args(args)
            .env("VERROU_REDIS_URL", verrou_testkit::redis_url())
            .env("VERROU_POSTGRES_URL", verrou_testkit::postgres_url())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// A factory of this process on this store.
    pub(crate) async fn factory(self) -> LockFactory {
        let store: std::sync::Arc<dyn LockStore> = match self {
            Store::Redis | Store::RedisFenced => {
                let mut config = verrou::redis::RedisConfig::new(verrou_testkit::redis_url());
                config.fencing_tokens = self.fenced();
                std::sync::Arc::new(verrou::redis::RedisStore::connect(config).await.unwrap())
            }
            Store::Postgres => std::sync::Arc::new(
                verrou::postgres::PostgresStore::connect(verrou::postgres::PostgresConfig::new(
                    verrou_testkit::postgres_url(),
                ))
                .await
                .unwrap(),
            ),
        };
        LockFactory::from_shared(store)
    }
}

/// A key no other test or run uses.
pub(crate) fn unique_key(name: &str) -> String {
    format!("e2e:{name}:{}:{}", std::process::id(), epoch_nanos())
}

/// The wall clock in nanoseconds since the epoch, as the workers print it.
pub(crate) fn epoch_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The output of a worker that ended well (it fails the test otherwise).
pub(crate) fn finish(child: Child) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(status.success(), "worker failed ({status}): {stderr}");
    String::from_utf8(stdout).unwrap()
}

/// A hold seen by one process: wall-clock start and end, and its fencing token.
#[derive(Debug)]
pub(crate) struct Hold {
    pub(crate) started: u128,
    pub(crate) ended: u128,
    pub(crate) token: u64,
}

/// The holds a worker printed.
pub(crate) fn holds(output: &str) -> Vec<Hold> {
    output
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[0], "held", "{line}");
            Hold {
                started: fields[1].parse().unwrap(),
                ended: fields[2].parse().unwrap(),
                token: fields[3].parse().unwrap(),
            }
        })
        .collect()
}

/// The holds of all `workers`, each with its worker's index, in the order they started.
pub(crate) fn tagged_holds(workers: Vec<Child>) -> Vec<(usize, Hold)> {
    let mut all: Vec<(usize, Hold)> = workers
        .into_iter()
        .enumerate()
        .flat_map(|(worker, child)| {
            holds(&finish(child))
                .into_iter()
                .map(move |hold| (worker, hold))
        })
        .collect();
    all.sort_by_key(|(_, hold)| hold.started);
    all
}

/// The most holds that overlap in time.
pub(crate) fn most_at_once<'a>(holds: impl IntoIterator<Item = &'a Hold>) -> usize {
    let mut events: Vec<(u128, i32)> = holds
        .into_iter()
        .flat_map(|hold| [(hold.started, 1), (hold.ended, -1)])
        .collect();
    // An end before a start at the same instant: touching holds do not overlap.
    events.sort();
    let (mut inside, mut most) = (0i32, 0i32);
    for (_, change) in events {
        inside += change;
        most = most.max(inside);
    }
    usize::try_from(most).unwrap_or_default()
}

/// A lock this process holds on `key` of `store`: a gate for workers to line up behind.
pub(crate) async fn held_gate(store: Store, key: &str) -> Lock {
    let gate = store.factory().await.create_lock(key).unwrap();
    assert!(gate.acquire_immediately().await.unwrap());
    gate
}

/// Releases `gate`, then waits for `worker` to end: how long after the release its first
/// hold started.
pub(crate) async fn first_hold_after_release(gate: Lock, worker: Child) -> Duration {
    let released = epoch_nanos();
    gate.release().await.unwrap();
    let held = tokio::task::spawn_blocking(move || holds(&finish(worker)))
        .await
        .unwrap();
    Duration::from_nanos(u64::try_from(held[0].started.saturating_sub(released)).unwrap())
}

/// A lock one process takes and serializes is restored and released by another, whose
/// output must be `released`; the key is free afterwards. The handing process is started by
/// `hand` (given the key), the releasing one by `release` (given the serialized lock).
pub(crate) async fn a_lock_moves_between_processes(
    store: Store,
    hand: impl FnOnce(&str) -> Command,
    release: impl FnOnce(&str) -> Command,
) {
    let key = unique_key("handover");
    let factory = store.factory().await;
    let observer = factory.create_lock(&key).unwrap();
    let serialized = finish(hand(&key).spawn().unwrap());
    assert!(
        observer.is_locked().await.unwrap(),
        "the first process left the lock held: {serialized}"
    );
    let released = finish(release(serialized.trim()).spawn().unwrap());
    assert_eq!(released.trim(), "released");
    assert!(
        !observer.is_locked().await.unwrap(),
        "the second process released it"
    );
}
