//! Several processes share one Redis or PostgreSQL store: they exclude each other, their
//! fencing tokens grow in the order they held the lock, a lock serialized in one process is
//! released in another, a crashed holder's lock expires for the others, waiting processes
//! are served in turn, a crashed waiter does not hold up the line, and semaphores and
//! read-write locks hold across processes.

mod support;

use std::process::Child;

use verrou::Ttl;

use support::{
    a_lock_moves_between_processes, finish, first_hold_after_release, held_gate, holds,
    most_at_once, tagged_holds, unique_key, Hold, Store,
};

fn processes_take_turns_with_growing_tokens(store: Store) {
    let key = unique_key("turns");
    let workers: Vec<Child> = (0..4)
        .map(|_| store.worker(&["contend", &key, "15", "2"]).spawn().unwrap())
        .collect();
    let mut all: Vec<Hold> = workers
        .into_iter()
        .flat_map(|worker| holds(&finish(worker)))
        .collect();
    assert_eq!(all.len(), 60);
    all.sort_by_key(|hold| hold.started);
    for pair in all.windows(2) {
        assert!(
            pair[0].ended <= pair[1].started,
            "two processes held the lock at once: {pair:?}"
        );
        assert!(
            pair[0].token < pair[1].token,
            "fencing token did not grow: {pair:?}"
        );
    }
}

#[test]
fn redis_processes_take_turns_with_growing_tokens() {
    processes_take_turns_with_growing_tokens(Store::RedisFenced);
}

#[test]
fn postgres_processes_take_turns_with_growing_tokens() {
    processes_take_turns_with_growing_tokens(Store::Postgres);
}

async fn lock_handed_to_another_process_is_released_there(store: Store) {
    a_lock_moves_between_processes(
        store,
        |key| store.worker(&["hand", key, "30s"]),
        |serialized| store.worker(&["release", serialized]),
    )
    .await;
}

#[tokio::test]
async fn redis_lock_handed_to_another_process_is_released_there() {
    lock_handed_to_another_process_is_released_there(Store::Redis).await;
}

#[tokio::test]
async fn postgres_lock_handed_to_another_process_is_released_there() {
    lock_handed_to_another_process_is_released_there(Store::Postgres).await;
}

async fn a_killed_holders_lock_expires(store: Store) {
    let key = unique_key("crash");
    let mut holder = store.worker(&["hold-forever", &key, "1s"]).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "acquired");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let factory = store.factory().await;
    let next = factory.create_lock_with_ttl(&key, Ttl::Never).unwrap();
    assert!(
        !next.acquire_immediately().await.unwrap(),
        "the dead holder's lock lives until its TTL"
    );
    let retry = verrou::Retry::new().delay(20).timeout("10s");
    assert!(
        next.acquire_with(retry).await.unwrap(),
        "the lock expired and was taken"
    );
    next.release().await.unwrap();
}

#[tokio::test]
async fn redis_killed_holders_lock_expires() {
    a_killed_holders_lock_expires(Store::Redis).await;
}

#[tokio::test]
async fn postgres_killed_holders_lock_expires() {
    a_killed_holders_lock_expires(Store::Postgres).await;
}

/// The holds of several workers, each tagged with its worker's index, in start order.
/// Four processes line up while the test holds the key, with an hour-long retry delay:
/// released, the key goes round them in turn (each release hands it to the front of the
/// store's line), ten times each, without any of them polling. Each holds it 20 ms: the line
/// is in arrival order, and a worker that has just released needs the next holder's hold
/// to print its turn and join again (with 2 ms, a worker descheduled on a busy machine came
/// back behind the next one, two runs in six).
async fn processes_queue_in_turn(store: Store) {
    let key = unique_key("queue");
    let gate = held_gate(store, &key).await;
    let workers: Vec<Child> = (0..4)
        .map(|_| store.worker(&["queue", &key, "10", "20"]).spawn().unwrap())
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    gate.release().await.unwrap();
    let all = tokio::task::spawn_blocking(move || tagged_holds(workers))
        .await
        .unwrap();
    assert_eq!(all.len(), 40, "every process got its ten turns");
    for pair in all.windows(2) {
        assert!(
            pair[0].1.ended <= pair[1].1.started,
            "two processes held the lock at once"
        );
        assert!(
            !store.fenced() || pair[0].1.token < pair[1].1.token,
            "fencing token did not grow"
        );
    }
    let order: Vec<usize> = all.iter().map(|(worker, _)| *worker).collect();
    for window in order.windows(4) {
        let distinct: std::collections::HashSet<_> = window.iter().collect();
        assert_eq!(distinct.len(), 4, "not in turn: {order:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_processes_queue_in_turn() {
    processes_queue_in_turn(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_processes_queue_in_turn() {
    processes_queue_in_turn(Store::Postgres).await;
}

/// A process killed while it waits at the front of the line (retry delay an hour) holds up
/// the one behind it by a hand-over window and a look again ([`verrou::RECHECK_EVERY`]) at
/// most: the release hands the key to the dead waiter, whose place ends with the window,
/// and the survivor's store then finds itself at the front.
async fn a_killed_waiter_does_not_hold_up_the_line(store: Store) {
    let key = unique_key("killed-waiter");
    let gate = held_gate(store, &key).await;
    let settle = std::time::Duration::from_millis(1500);
    let mut victim = store.worker(&["queue", &key, "1", "0"]).spawn().unwrap();
    tokio::time::sleep(settle).await;
    let survivor = store.worker(&["queue", &key, "1", "0"]).spawn().unwrap();
    tokio::time::sleep(settle).await;
    victim.kill().unwrap();
    victim.wait().unwrap();
    let waited = first_hold_after_release(gate, survivor).await;
    println!("{store:?}: the survivor held the key {waited:?} after the release");
    let bound = verrou::HANDOVER_WINDOW + verrou::RECHECK_EVERY * 3;
    assert!(
        waited < bound,
        "the survivor waited {waited:?} after the release (bound {bound:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_waiter_does_not_hold_up_the_line() {
    a_killed_waiter_does_not_hold_up_the_line(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_waiter_does_not_hold_up_the_line() {
    a_killed_waiter_does_not_hold_up_the_line(Store::Postgres).await;
}

/// Five processes cycle through a semaphore of two permits: never more than two inside
/// at once (by the wall clock, inside each hold), and two do get in together.
fn processes_share_a_semaphore(store: Store) {
    let key = unique_key("semaphore");
    let workers: Vec<Child> = (0..5)
        .map(|_| {
            store
                .worker(&["permit", &key, "2", "6", "20"])
                .spawn()
                .unwrap()
        })
        .collect();
    let all = tagged_holds(workers);
    assert_eq!(all.len(), 30);
    assert_eq!(most_at_once(all.iter().map(|(_, hold)| hold)), 2);
}

#[test]
fn redis_processes_share_a_semaphore() {
    processes_share_a_semaphore(Store::Redis);
}

#[test]
fn postgres_processes_share_a_semaphore() {
    processes_share_a_semaphore(Store::Postgres);
}

/// Three reader processes and two writer processes on one read-write lock: a write never
/// overlaps any other hold, and every process gets all its turns.
fn processes_share_a_rw_lock(store: Store) {
    let key = unique_key("rw");
    let sides = ["read", "read", "read", "write", "write"];
    let workers: Vec<Child> = sides
        .iter()
        .map(|side| {
            store
                .worker(&["rw", &key, side, "5", "10"])
                .spawn()
                .unwrap()
        })
        .collect();
    let all = tagged_holds(workers);
    assert_eq!(all.len(), 25);
    for (worker, write) in all.iter().filter(|(worker, _)| sides[*worker] == "write") {
        let overlapping = all
            .iter()
            .filter(|(other, hold)| {
                (other, hold.started) != (worker, write.started)
                    && hold.started < write.ended
                    && write.started < hold.ended
            })
            .count();
        assert_eq!(
            overlapping, 0,
            "a write overlapped {overlapping} other holds"
        );
    }
}

#[test]
fn redis_processes_share_a_rw_lock() {
    processes_share_a_rw_lock(Store::Redis);
}

#[test]
fn postgres_processes_share_a_rw_lock() {
    processes_share_a_rw_lock(Store::Postgres);
}
