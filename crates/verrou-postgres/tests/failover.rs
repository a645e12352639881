//! Failover to a streaming standby behind a multi-host URL
//! (`postgres://…@primary,standby/…?target_session_attrs=read-write`): the primary crashes
//! (an immediate stop), the standby is promoted, and the same stores, never rebuilt, reach
//! it by themselves.
//!
//! What a failover keeps depends on the replication. With synchronous replication
//! (`synchronous_standby_names` set on the primary) a grant reaches its holder only once the
//! standby has it: no lock is lost, and fencing tokens keep rising. With asynchronous
//! replication (PostgreSQL's default) the standby may lack the last grants: their holders
//! still believe they hold their locks while others take them on the new primary, and when
//! the standby also lacks the fencing sequence's last advance, their tokens are handed out
//! again. The tests measure both, and how long the stores take to grant again.
//!
//! Contenders run in several stores, each with its own pool and listener, as separate
//! processes would; they share one process only so that one history (one clock) judges
//! them all.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{acquired_after, client, patient, port_of, start_waiting, token, unique};
use tokio::task::JoinHandle;
use verrou_core::conformance::{FaultInjector, History};
use verrou_core::{Acquisition, Error, Lock, LockFactory, LockStore, OwnerCheck, Retry};
use verrou_postgres::tokio_postgres::Client;
use verrou_postgres::{PostgresConfig, PostgresStore, LISTENER_APPLICATION_NAME};
use verrou_testkit::{FaultProxy, PostgresStandbyPair};

/// The bound on every operation of the stores here.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// The bound on connecting to each host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long after the crash the stores must grant again (generous: loaded machines).
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

/// The TTL of the contenders' locks: far longer than any hold and any failover here, so
/// that a lock lost in the failover is lost, not expired.
const TTL: Duration = Duration::from_secs(10);

/// How many stores contend, and how many contenders each one has.
const STORES: usize = 4;
const CONTENDERS_PER_STORE: usize = 2;

/// How many keys they contend for.
const KEYS: usize = 3;

/// How long they contend before the crash, and after the first grant that follows it.
const BEFORE_THE_CRASH: Duration = Duration::from_millis(1500);
const AFTER_RECOVERY: Duration = Duration::from_millis(1500);

/// How long a contender pauses after a failed call before trying again.
const PAUSE: Duration = Duration::from_millis(20);

/// How often a lock's fencing sequence logs ahead (`SEQ_LOG_VALS` in PostgreSQL): one WAL
/// record covers this many values.
const SEQUENCE_LOGS_AHEAD: usize = 32;

/// A store on `url`, with the short timeouts above.
async fn store_on(url: &str, table: &str) -> PostgresStore {
    PostgresStore::connect({
        let mut config = PostgresConfig::new(url);
        config.table = table.to_owned();
        config.pool_size = 4;
        config.connect_timeout = CONNECT_TIMEOUT;
        config.command_timeout = COMMAND_TIMEOUT;
        config.sweep_interval = None;
        config
    })
    .await
    .expect("a store through the multi-host URL")
}

/// A started pair, or a panic saying why not.
fn start_pair() -> PostgresStandbyPair {
    PostgresStandbyPair::start().expect("a private PostgreSQL primary and streaming standby")
}

/// What [`fail_over`] did: when the crash started and ended, and how long the promotion
/// took.
struct Failover {
    crash_started: Instant,
    crashed: Instant,
    promotion: Duration,
}

/// Crashes the primary and promotes the standby at once, off the runtime's threads (both
/// wait for the servers).
async fn fail_over(mut pair: PostgresStandbyPair) -> (PostgresStandbyPair, Failover) {
    tokio::task::spawn_blocking(move || {
        let crash_started = Instant::now();
        pair.crash_primary();
        let crashed = Instant::now();
        let promotion = pair.promote_standby().expect("the standby is promoted");
        let failover = Failover {
            crash_started,
            crashed,
            promotion,
        };
        (pair, failover)
    })
    .await
    .expect("the failover task")
}

/// The first value of the first row of `sql` on `client`.
async fn value<T>(client: &Client, sql: &str) -> T
where
    T: for<'row> verrou_postgres::tokio_postgres::types::FromSql<'row>,
{
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .get(0)
}

/// Waits until `sql` on `client` returns `true`, for at most 10 s.
async fn wait_until(client: &Client, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !value::<bool>(client, sql).await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Makes replication synchronous: every commit on the primary then waits until the
/// standby has flushed it (`synchronous_commit` is `on`).
async fn replicate_synchronously(primary: &Client) {
    primary
        .batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        .await
        .expect("ALTER SYSTEM");
    primary
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    wait_until(
        primary,
        "SELECT coalesce(bool_and(sync_state = 'sync'), false) FROM pg_stat_replication",
        "synchronous replication",
    )
    .await;
}

/// Asserts how the standby replicates now (`async` or `sync`).
async fn assert_replication(primary: &Client, expected: &str) {
    let states: Vec<String> = primary
        .query("SELECT sync_state FROM pg_stat_replication", &[])
        .await
        .expect("pg_stat_replication")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(states, [expected], "replication");
}

/// Waits until the standby has replayed everything the primary has written so far.
async fn wait_for_the_standby(primary: &Client) {
    let position: String = value(primary, "SELECT pg_current_wal_lsn()::text").await;
    wait_until(
        primary,
        &format!(
            "SELECT coalesce(bool_and(replay_lsn >= '{position}'), false) \
             FROM pg_stat_replication"
        ),
        "the standby catching up",
    )
    .await;
}

/// Stops the standby from streaming (its `primary_conninfo` emptied): what the primary
/// commits from now on never reaches it, as with a standby far behind.
async fn stop_streaming(standby: &Client, primary: &Client) {
    standby
        .batch_execute("ALTER SYSTEM SET primary_conninfo = ''")
        .await
        .expect("ALTER SYSTEM on the standby");
    standby
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    wait_until(
        primary,
        "SELECT count(*) = 0 FROM pg_stat_replication",
        "the standby leaving",
    )
    .await;
}

/// Takes and releases `key` `count` times; returns the tokens.
async fn cycle(store: &PostgresStore, key: &str, count: usize) -> Vec<u64> {
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        tokens.push(token(store.save(key, "cycler", None).await.expect("save")));
        let released = store.delete(key, "cycler").await.expect("delete");
        assert_eq!(released, OwnerCheck::Applied);
    }
    tokens
}

/// How long after `since` `store` grants a fresh key; panics past [`RECOVERY_LIMIT`].
async fn granting_again(store: &PostgresStore, since: Instant) -> Duration {
    let key = unique("probe");
    loop {
        if let Ok(Acquisition::Granted(_)) = store.save(&key, "probe", None).await {
            store.delete(&key, "probe").await.expect("delete");
            return since.elapsed();
        }
        assert!(
            since.elapsed() < RECOVERY_LIMIT,
            "the store did not grant again within {RECOVERY_LIMIT:?}"
        );
        tokio::time::sleep(PAUSE).await;
    }
}

/// One grant a contender received: when it asked, when the grant came, and its token.
#[derive(Debug, Clone, Copy)]
struct Grant {
    asked: Instant,
    granted: Instant,
    token: u64,
}

/// What the contenders share.
#[derive(Default)]
struct Contention {
    history: History,
    grants: Mutex<Vec<Grant>>,
    /// Grants whose first release attempt found them gone (lost in the failover).
    lost: AtomicUsize,
    stop: AtomicBool,
}

/// One contender: until told to stop, takes the keys in turn, holds each a while (a short
/// moment mostly, sometimes long enough to straddle a failover), records the hold and
/// releases it, retrying the release until the store answers.
async fn contend(factory: LockFactory, name: String, keys: Arc<[String]>, shared: Arc<Contention>) {
    let mut round = 0usize;
    while !shared.stop.load(Ordering::SeqCst) {
        round += 1;
        let key = &keys[round % keys.len()];
        let lock = factory
            .create_lock_with_ttl(key.as_str(), TTL)
            .expect("a valid lock");
        let asked = Instant::now();
        match lock.acquire_with(Retry::new().timeout("1s")).await {
            Ok(true) => {
                let hold = shared.history.granted(&lock, name.as_str());
                let token = lock.fencing_token().expect("the store issues tokens");
                shared
                    .grants
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Grant {
                        asked,
                        granted: Instant::now(),
                        token,
                    });
                let held = if round % 8 == 0 { 300 } else { 1 };
                tokio::time::sleep(Duration::from_millis(held)).await;
                shared.history.released(hold);
                release(&lock, &name, &shared).await;
            }
            Ok(false) => {}
            Err(_) => tokio::time::sleep(PAUSE).await,
        }
    }
}

/// Releases `lock`, retrying while the store fails. A release that finds the lock gone at
/// its first answer counts as a lost grant (a later one may find it gone because an earlier
/// attempt went through after all).
async fn release(lock: &Lock, name: &str, shared: &Contention) {
    let started = Instant::now();
    let mut first = true;
    loop {
        match lock.release().await {
            Ok(()) => return,
            Err(Error::NotOwned { .. }) => {
                if first {
                    shared.lost.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            Err(_) => {
                assert!(
                    started.elapsed() < RECOVERY_LIMIT,
                    "{name} could not release within {RECOVERY_LIMIT:?}"
                );
                first = false;
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}

/// What contention through a failover showed.
#[derive(Debug)]
struct Outcome {
    promotion: Duration,
    /// From the crash to the first grant asked for after it.
    recovery: Duration,
    holds: usize,
    overlaps: usize,
    /// Per key: a later hold with a token not above an earlier one's.
    token_regressions: usize,
    lost: usize,
    /// Tokens granted by the old primary (received before the crash ended), and by the new
    /// one (asked for after the crash ended).
    before: Vec<u64>,
    after: Vec<u64>,
}

impl Outcome {
    /// Tokens of the new primary that are not above every token of the old one.
    fn tokens_not_above_the_old_ones(&self) -> usize {
        let highest = self.before.iter().copied().max().unwrap_or(0);
        self.after.iter().filter(|token| **token <= highest).count()
    }

    fn print(&self, replication: &str) {
        println!(
            "{replication} replication: standby promoted in {:.0} ms; first grant {:.0} ms \
             after the crash; {} holds, {} overlaps, {} token regressions, {} grants lost; \
             highest token before {:?}, lowest after {:?}, {} tokens after not above every \
             token before",
            self.promotion.as_secs_f64() * 1000.0,
            self.recovery.as_secs_f64() * 1000.0,
            self.holds,
            self.overlaps,
            self.token_regressions,
            self.lost,
            self.before.iter().max(),
            self.after.iter().min(),
            self.tokens_not_above_the_old_ones(),
        );
    }
}

/// Contenders in [`STORES`] stores fight over [`KEYS`] keys through `pair`'s multi-host URL;
/// the primary crashes and the standby is promoted while they do; they go on until a while
/// after the first grant that follows.
async fn contend_through_a_failover(pair: PostgresStandbyPair) -> Outcome {
    let url = pair.multi_host_url();
    let table = unique("failover");
    let keys: Arc<[String]> = (0..KEYS).map(|_| unique("key")).collect();
    let shared = Arc::new(Contention::default());
    let mut contenders: Vec<JoinHandle<()>> = Vec::new();
    for store in 0..STORES {
        let factory = LockFactory::new(store_on(&url, &table).await)
            .with_retry(Retry::new().delay(50))
            .expect("a retry policy");
        for contender in 0..CONTENDERS_PER_STORE {
            contenders.push(tokio::spawn(contend(
                factory.clone(),
                format!("store{store}-contender{contender}"),
                Arc::clone(&keys),
                Arc::clone(&shared),
            )));
        }
    }
    tokio::time::sleep(BEFORE_THE_CRASH).await;
    let (_pair, failover) = fail_over(pair).await;

    let recovered = loop {
        let first = shared
            .grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|grant| grant.asked > failover.crashed)
            .map(|grant| grant.granted)
            .min();
        if let Some(first) = first {
            break first;
        }
        assert!(
            failover.crash_started.elapsed() < RECOVERY_LIMIT,
            "no grant within {RECOVERY_LIMIT:?} of the crash"
        );
        tokio::time::sleep(PAUSE).await;
    };
    tokio::time::sleep(AFTER_RECOVERY).await;
    shared.stop.store(true, Ordering::SeqCst);
    for contender in contenders {
        contender.await.expect("a contender");
    }

    let verdict = shared.history.verdict();
    let grants = shared
        .grants
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let tokens = |keep: &dyn Fn(&Grant) -> bool| -> Vec<u64> {
        grants
            .iter()
            .filter(|grant| keep(grant))
            .map(|grant| grant.token)
            .collect()
    };
    let outcome = Outcome {
        promotion: failover.promotion,
        recovery: recovered.saturating_duration_since(failover.crash_started),
        holds: verdict.holds,
        overlaps: verdict.overlaps.len(),
        token_regressions: verdict.token_regressions.len(),
        lost: shared.lost.load(Ordering::SeqCst),
        before: tokens(&|grant| grant.granted < failover.crashed),
        after: tokens(&|grant| grant.asked > failover.crashed),
    };
    assert!(
        !outcome.before.is_empty() && !outcome.after.is_empty(),
        "grants on both sides of the failover, or the test proves nothing: {outcome:?}"
    );
    assert!(
        outcome.recovery < RECOVERY_LIMIT,
        "first grant {:?} after the crash",
        outcome.recovery
    );
    outcome
}

/// Synchronous replication: a failover loses no grant. No two holds overlap, no token goes
/// back on a key, and every token of the new primary is above every token of the old one,
/// including those granted right before the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_replication_a_failover_loses_no_lock_and_no_token() {
    let pair = start_pair();
    let primary = client(&pair.primary_url()).await;
    replicate_synchronously(&primary).await;
    let outcome = contend_through_a_failover(pair).await;
    outcome.print("synchronous");
    assert_eq!(outcome.overlaps, 0, "{outcome:?}");
    assert_eq!(outcome.token_regressions, 0, "{outcome:?}");
    assert_eq!(outcome.lost, 0, "{outcome:?}");
    assert_eq!(outcome.tokens_not_above_the_old_ones(), 0, "{outcome:?}");
}

/// Asynchronous replication (the default): the stores recover as fast. What the standby
/// had not received when the primary crashed is lost, so overlaps and tokens handed out
/// again are possible; on one machine the standby is rarely more than a commit behind, so
/// they are rare. Both are counted and printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_asynchronous_replication_the_stores_recover_and_the_losses_are_counted() {
    let pair = start_pair();
    let primary = client(&pair.primary_url()).await;
    assert_replication(&primary, "async").await;
    let outcome = contend_through_a_failover(pair).await;
    outcome.print("asynchronous");
}

/// The hole of asynchronous replication, made wide: the standby stops streaming, the
/// primary grants on (more grants than the sequence logs ahead), then crashes. The new
/// primary grants again a lock whose holder still believes it holds it, and hands out again
/// fencing tokens that holders of the old primary received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lagging_asynchronous_standby_a_failover_loses_locks_and_repeats_tokens() {
    let pair = start_pair();
    let (primary, standby) = (
        client(&pair.primary_url()).await,
        client(&pair.standby_url()).await,
    );
    let table = unique("lagging");
    let store = store_on(&pair.multi_host_url(), &table).await;
    let (cycled, held) = (unique("cycled"), unique("held"));
    let mut issued = cycle(&store, &cycled, 10).await;
    wait_for_the_standby(&primary).await;

    stop_streaming(&standby, &primary).await;
    issued.extend(cycle(&store, &cycled, 3 * SEQUENCE_LOGS_AHEAD).await);
    let held_token = token(store.save(&held, "holder", None).await.expect("save"));
    issued.push(held_token);
    let highest = *issued.iter().max().expect("tokens");

    let (_pair, failover) = fail_over(pair).await;
    let recovery = granting_again(&store, failover.crash_started).await;
    let intruder = store.save(&held, "intruder", None).await.expect("save");
    let again = cycle(&store, &cycled, 3 * SEQUENCE_LOGS_AHEAD).await;
    let repeated = again.iter().filter(|token| issued.contains(token)).count();
    let not_above = again.iter().filter(|token| **token <= highest).count();
    println!(
        "lagging asynchronous standby: granting again {:.0} ms after the crash; the lock \
         held at the crash (token {held_token}) granted again: {intruder:?}; highest token \
         before {highest}, first after {:?}; {not_above} of {} tokens after not above it, \
         {repeated} of them handed out twice",
        recovery.as_secs_f64() * 1000.0,
        again.first(),
        again.len(),
    );
    assert!(
        matches!(intruder, Acquisition::Granted(_)),
        "the standby had the lock after all: {intruder:?}"
    );
    assert!(
        repeated > 0,
        "no token handed out twice: the standby had the sequence's advance after all"
    );
}

/// Synchronous replication closes the hole by refusing to answer: with the standby not
/// streaming, a take commits on the primary but waits for the standby, and fails at the
/// command timeout. No holder exists that the new primary does not know, and its tokens are
/// above every token a holder received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_replication_a_grant_the_standby_lacks_is_never_answered() {
    let pair = start_pair();
    let (primary, standby) = (
        client(&pair.primary_url()).await,
        client(&pair.standby_url()).await,
    );
    replicate_synchronously(&primary).await;
    let store = store_on(&pair.multi_host_url(), &unique("withheld")).await;
    let (cycled, withheld) = (unique("cycled"), unique("withheld"));
    let issued = cycle(&store, &cycled, 3 * SEQUENCE_LOGS_AHEAD).await;
    let highest = *issued.iter().max().expect("tokens");

    stop_streaming(&standby, &primary).await;
    let started = Instant::now();
    let unanswered = store.save(&withheld, "holder", None).await;
    assert!(
        matches!(unanswered, Err(Error::Storage { .. })),
        "a take the standby never confirmed was answered: {unanswered:?}"
    );
    assert!(
        started.elapsed() < COMMAND_TIMEOUT * 3,
        "{:?}",
        started.elapsed()
    );

    let (_pair, failover) = fail_over(pair).await;
    granting_again(&store, failover.crash_started).await;
    let taken = token(store.save(&withheld, "next", None).await.expect("save"));
    let again = cycle(&store, &cycled, 3 * SEQUENCE_LOGS_AHEAD).await;
    assert!(
        taken > highest && again.iter().all(|token| *token > highest),
        "a token not above {highest}: {taken}, {again:?}"
    );
}

/// The listener moves too: after the failover, a waiter whose retry delay is an hour is
/// woken within a moment of a release by another store, handed over on the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_a_release_wakes_the_waiters_of_other_stores() {
    let pair = start_pair();
    let url = pair.multi_host_url();
    let table = unique("wake");
    let waiters = patient(store_on(&url, &table).await);
    let releaser = store_on(&url, &table).await;
    let key = unique("key");

    let (pair, failover) = fail_over(pair).await;
    let recovery = granting_again(&releaser, failover.crash_started).await;
    let new_primary = client(&pair.standby_url()).await;
    wait_until(
        &new_primary,
        &format!(
            "SELECT count(*) = 2 FROM pg_stat_activity WHERE application_name = \
             '{LISTENER_APPLICATION_NAME}'"
        ),
        "both listeners on the new primary",
    )
    .await;
    let listening = failover.crash_started.elapsed();

    let taken = releaser.save(&key, "holder", None).await.expect("save");
    assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
    let waiting = start_waiting(waiters.create_lock(key.as_str()).expect("a valid key")).await;
    let released_at = Instant::now();
    assert_eq!(
        releaser.delete(&key, "holder").await.expect("delete"),
        OwnerCheck::Applied
    );
    let woken = acquired_after(waiting, released_at).await;
    println!(
        "after the failover: granting again {:.0} ms after the crash, both listeners on the \
         new primary after {:.0} ms, waiter woken {:.1} ms after the release",
        recovery.as_secs_f64() * 1000.0,
        listening.as_secs_f64() * 1000.0,
        woken.as_secs_f64() * 1000.0,
    );
    assert!(
        woken < Duration::from_secs(2),
        "woken {woken:?} after the release"
    );
}

/// An old primary that hangs instead of going away (here: behind a proxy that accepts
/// connections and answers nothing) does not keep the stores from the new one: each
/// connection attempt gives it the connect timeout, and the next one starts with the host
/// that answered. The cost is a command timeout for each pooled connection to the old
/// primary, and a connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_old_primary_costs_timeouts_not_the_failover() {
    let mut pair = start_pair();
    let (proxy, _) = FaultProxy::in_front_of(&pair.primary_url()).expect("a proxy");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        proxy.port(),
        port_of(&pair.standby_url())
    );
    let store = store_on(&url, &unique("hung")).await;
    let key = unique("key");
    let before = cycle(&store, &key, 10).await;
    let primary = client(&pair.primary_url()).await;
    wait_for_the_standby(&primary).await;

    let hung_at = Instant::now();
    proxy.blackhole();
    let promotion = tokio::task::block_in_place(|| pair.promote_standby()).expect("promotion");
    let recovery = granting_again(&store, hung_at).await;
    let after = cycle(&store, &key, 10).await;
    println!(
        "hung old primary: standby promoted in {:.0} ms; granting again {:.0} ms after the \
         old primary hung (command timeout {COMMAND_TIMEOUT:?}, connect timeout \
         {CONNECT_TIMEOUT:?})",
        promotion.as_secs_f64() * 1000.0,
        recovery.as_secs_f64() * 1000.0,
    );
    let highest = before.iter().max().expect("tokens");
    assert!(
        after.iter().all(|token| token > highest),
        "{before:?} then {after:?}"
    );
}
