//! verrou and the Node.js library it mirrors, `@verrou/core` (`tests/node/worker.mjs`, run
//! by `node` as its users run it), on one key of one Redis or PostgreSQL store: they exclude
//! each other; a Node.js process, which does not queue in verrou's waiting line, is locked
//! out by a hand-over to a waiter that died no longer than the hand-over window; and a lock
//! one of them takes and serializes is released by the other.
//!
//! The first test to need it installs the Node.js packages from the committed lock file
//! (`npm ci` in `tests/node`); it needs `node` and `npm` (`scripts/test.sh` installs them).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use support::{
    a_lock_moves_between_processes, first_hold_after_release, held_gate, most_at_once,
    tagged_holds, unique_key, Store,
};

/// How often the Node.js workers ask again for a busy key, in milliseconds.
const NODE_RETRY_MS: &str = "10";

/// The directory of the Node.js worker and its packages.
fn node_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Installs the Node.js packages (`npm ci`) unless those of the lock file are installed
/// already; once per test process.
fn install_node_packages() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let directory = node_directory();
        let modified = |path: &Path| std::fs::metadata(path).and_then(|file| file.modified());
        let installed = modified(&directory.join("node_modules/.package-lock.json"));
        let wanted = modified(&directory.join("package-lock.json")).expect("the lock file");
        if installed.is_ok_and(|installed| installed >= wanted) {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&directory)
            .status()
            .unwrap_or_else(|error| {
                panic!("cannot run npm ({error}): these tests need Node.js and npm (scripts/test.sh installs them)")
            });
        assert!(status.success(), "`npm ci` in {} failed: {status}", directory.display());
    });
}

/// A Node.js worker on `store`'s server doing `task` (see `tests/node/worker.mjs`), its output
/// piped.
fn node_worker(store: Store, task: &[&str]) -> Command {
    install_node_packages();
    let (name, url) = match store {
        Store::Redis | Store::RedisFenced => ("redis", verrou_testkit::redis_url()),
        Store::Postgres => ("postgres", verrou_testkit::postgres_url()),
    };
    let mut command = Command::new("node");
    command
        .arg("worker.mjs")
        .args([name, &url])
        .args(task)
        .current_dir(node_directory())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A Node.js worker that takes `key` `turns` times, holding it `hold_ms` each time, asking
/// every [`NODE_RETRY_MS`].
fn node_contender(store: Store, key: &str, turns: u32, hold_ms: u64) -> Child {
    let (turns, hold_ms) = (turns.to_string(), hold_ms.to_string());
    node_worker(store, &["contend", key, &turns, &hold_ms, NODE_RETRY_MS])
        .spawn()
        .expect("node starts")
}

/// A Node.js process holds the key for a second and a half; two Rust processes and another
/// Node.js process start meanwhile, and take the key eight times each, holding it 5 ms: no two
/// holds overlap (by the wall clock, inside each hold), and every process gets all its turns.
/// So the Rust processes wait for a Node.js holder, and the Node.js process for the Rust
/// holders (it does not queue: it takes its turns when their line is empty).
async fn node_and_rust_processes_exclude_each_other(store: Store) {
    let key = unique_key("node");
    // The store creates its table (PostgreSQL) before the Node.js workers use it.
    drop(store.factory().await);
    let mut first = node_contender(store, &key, 1, 1500);
    let stderr = first.stderr.take().expect("piped");
    let took = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr).lines().next().and_then(Result::ok)
    });
    assert_eq!(took.await.unwrap().as_deref(), Some("took"));
    let mut workers = vec![first];
    workers.extend((0..2).map(|_| store.worker(&["contend", &key, "8", "5"]).spawn().unwrap()));
    workers.push(node_contender(store, &key, 8, 5));
    let all = tokio::task::spawn_blocking(move || tagged_holds(workers))
        .await
        .unwrap();
    let turns: Vec<usize> = (0..4)
        .map(|worker| all.iter().filter(|(of, _)| *of == worker).count())
        .collect();
    assert_eq!(turns, [1, 8, 8, 8], "turns of Node.js, Rust, Rust, Node.js");
    assert_eq!(
        most_at_once(all.iter().map(|(_, hold)| hold)),
        1,
        "a Rust and a Node.js process held the key at once: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_node_and_rust_processes_exclude_each_other() {
    node_and_rust_processes_exclude_each_other(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fenced_node_and_rust_processes_exclude_each_other() {
    node_and_rust_processes_exclude_each_other(Store::RedisFenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_node_and_rust_processes_exclude_each_other() {
    node_and_rust_processes_exclude_each_other(Store::Postgres).await;
}

/// A Rust process waits in the key's line (retry delay an hour: its place lasts two hours)
/// and is killed; a Node.js process asks for the key every [`NODE_RETRY_MS`]. The release
/// hands the key to the dead waiter, reserving it for the hand-over window: the Node.js
/// process gets it after that window, not after the dead waiter's place lapses.
async fn node_is_locked_out_no_longer_than_a_hand_over_window(store: Store) {
    let key = unique_key("node-window");
    let gate = held_gate(store, &key).await;
    let mut victim = store.worker(&["queue", &key, "1", "0"]).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    victim.kill().unwrap();
    victim.wait().unwrap();
    let node = node_contender(store, &key, 1, 0);
    // Node.js is up and asking.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waited = first_hold_after_release(gate, node).await;
    println!("{store:?}: the Node.js process held the key {waited:?} after the release");
    assert!(
        waited >= verrou::HANDOVER_WINDOW.saturating_sub(Duration::from_millis(5)),
        "the Node.js process got the key {waited:?} after the release: within the window \
         reserved for the waiter in line"
    );
    let bound = verrou::HANDOVER_WINDOW + Duration::from_millis(400);
    assert!(
        waited < bound,
        "the Node.js process waited {waited:?} after the release (bound {bound:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_node_is_locked_out_no_longer_than_a_hand_over_window() {
    node_is_locked_out_no_longer_than_a_hand_over_window(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_node_is_locked_out_no_longer_than_a_hand_over_window() {
    node_is_locked_out_no_longer_than_a_hand_over_window(Store::Postgres).await;
}

/// A lock taken by @verrou/core, serialized with `JSON.stringify(lock.serialize())`, is
/// released by verrou in another process; and the other way round.
async fn a_lock_moves_between_node_and_rust(store: Store) {
    let node = |task: &[&str]| node_worker(store, task);
    let rust = |task: &[&str]| store.worker(task);
    a_lock_moves_between_processes(
        store,
        |key| node(&["hand", key, "30000"]),
        |serialized| rust(&["release", serialized]),
    )
    .await;
    a_lock_moves_between_processes(
        store,
        |key| rust(&["hand", key, "30s"]),
        |serialized| node(&["release", serialized]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_lock_moves_between_node_and_rust() {
    a_lock_moves_between_node_and_rust(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lock_moves_between_node_and_rust() {
    a_lock_moves_between_node_and_rust(Store::Postgres).await;
}
