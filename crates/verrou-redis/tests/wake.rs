//! Wake-on-release: a waiter with a one-hour retry delay still gets the lock within moments
//! of a release by another store, because the release hands it the key by name and its
//! store's subscriber hears it; and the subscriber connection's own life (subscriptions that
//! linger and go by themselves, reconnections, refused rights, the store dropped).

mod acl_support;
mod stats_support;
mod support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acl_support::{acl_user, LOCK_RULES};
use async_trait::async_trait;
use stats_support::{command_calls, reset_command_calls};
use support::{connect, raw_client, unique_key};
use verrou_core::conformance::CountingStore;
use verrou_core::waiting::LINGER;
use verrou_core::{
    Acquisition, Boards, LockFactory, LockStore, OwnerCheck, Place, Result, Retry, RECHECK_EVERY,
};
use verrou_redis::fred::prelude::{Client, ClientLike, EventInterface, PubsubInterface, Value};
use verrou_redis::fred::types::{ClusterHash, CustomCommand};
use verrou_redis::fred::util::redis_keyslot;
use verrou_redis::RedisStore;
use verrou_testkit::{redis_url, RedisServer};

/// How long after lingering a background sweep may take to unsubscribe (it runs a second
/// after the linger, on a loaded machine).
const SWEEP_LIMIT: Duration = Duration::from_secs(5);

/// A retry delay no test waits out: acquiring within [`PROMPT`] of a release means the
/// release was heard.
const HOUR: Duration = Duration::from_secs(3600);
/// Generous for a heard release (about a round trip), far below [`HOUR`].
const PROMPT: Duration = Duration::from_secs(2);
/// How soon after a release a waiter woken by its announcement must have the key: generous
/// (loaded machines), and well before the subscriber's next look at the keys waited for
/// (every [`RECHECK_EVERY`]), which would let the waiter in that soon only half the time.
const AT_ONCE: Duration = RECHECK_EVERY.saturating_sub(Duration::from_millis(500));
/// Long enough for a waiter to have asked the store and subscribed.
const SETTLE: Duration = Duration::from_millis(300);
/// A command timeout that a server down for seconds outlasts.
const SHORT_TIMEOUT: Duration = Duration::from_millis(500);

/// A factory on `store` whose waiters only ask the store again when woken (or after an hour).
fn patient(store: &Arc<RedisStore>) -> LockFactory {
    LockFactory::from_shared(Arc::clone(store) as Arc<dyn LockStore>)
        .with_retry(Retry::new().delay(HOUR))
        .expect("valid retry options")
}

/// Starts acquiring `key` through `factory` in the background; the task returns when it is
/// acquired, with the lock.
fn acquire_in_background(
    factory: &LockFactory,
    key: &str,
) -> tokio::task::JoinHandle<verrou_core::Lock> {
    let lock = factory.create_lock_with_ttl(key, "60s").unwrap();
    tokio::spawn(async move {
        assert!(lock.acquire().await.unwrap(), "no timeout: acquires");
        lock
    })
}

/// Waits for `waiter` to acquire, at most [`PROMPT`] from now; how long it took.
async fn acquired_promptly(waiter: tokio::task::JoinHandle<verrou_core::Lock>) -> Duration {
    let started = Instant::now();
    let lock = tokio::time::timeout(PROMPT, waiter)
        .await
        .unwrap_or_else(|_| panic!("the waiter slept through the release ({PROMPT:?})"))
        .expect("the waiter did not panic");
    lock.release().await.unwrap();
    started.elapsed()
}

/// Waits for `waiter` to acquire, woken by the announcement of a release just made: within
/// [`AT_ONCE`].
async fn acquired_at_once(waiter: tokio::task::JoinHandle<verrou_core::Lock>) {
    let waited = acquired_promptly(waiter).await;
    assert!(waited < AT_ONCE, "acquired {waited:?} after the release");
}

/// The sharded channels with subscribers on the server of `raw` carrying releases of `key`,
/// with their subscriber counts.
async fn release_channels(raw: &Client, key: &str) -> Vec<(String, i64)> {
    let command = || CustomCommand::new_static("PUBSUB", ClusterHash::Random, false);
    let channels: Vec<String> = raw
        .custom(command(), vec!["SHARDCHANNELS", "verrou:released:*"])
        .await
        .unwrap();
    let mut found = Vec::new();
    for channel in channels
        .into_iter()
        .filter(|channel| channel.ends_with(&format!("}}:{key}")))
    {
        let counts: Vec<Value> = raw
            .custom(command(), vec!["SHARDNUMSUB", channel.as_str()])
            .await
            .unwrap();
        let count = counts.get(1).and_then(Value::as_i64).unwrap_or_default();
        found.push((channel, count));
    }
    found
}

/// Polls until `key` has `expected` subscribed release channels with one subscriber each,
/// for at most `within`.
async fn wait_for_subscriptions(raw: &Client, key: &str, expected: usize, within: Duration) {
    poll_until(within, || async {
        let channels = release_channels(raw, key).await;
        if channels.len() == expected && channels.iter().all(|(_, count)| *count == 1) {
            return Ok(());
        }
        Err(format!(
            "expected {expected} subscribed release channel(s) for {key} within {within:?}, found {channels:?}"
        ))
    })
    .await;
}

/// Asks `look` every 50 ms until it answers `Ok`; fails with its last complaint once
/// `within` has passed.
async fn poll_until<F, Fut>(within: Duration, look: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let complaint = match look().await {
            Ok(()) => return,
            Err(complaint) => complaint,
        };
        assert!(Instant::now() < deadline, "{complaint}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_on_another_store_wakes_a_waiter_at_once() {
    a_release_wakes_a_waiter_at_once(false).await;
}

/// The releasing store hears its own hand-over on its subscriber like any other store:
/// nothing wakes its waiter but that message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_on_the_same_store_wakes_its_waiter_at_once() {
    a_release_wakes_a_waiter_at_once(true).await;
}

/// A waiter that retries once an hour takes the key as soon as its holder (on the waiter's
/// store if `same_store`, else on another) releases it.
async fn a_release_wakes_a_waiter_at_once(same_store: bool) {
    let url = redis_url();
    let a = Arc::new(connect(&url, |_| {}).await);
    let b = if same_store {
        Arc::clone(&a)
    } else {
        Arc::new(connect(&url, |_| {}).await)
    };
    let key = unique_key("wake-release");
    let holder = patient(&b).create_lock_with_ttl(&key, "60s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());

    let waiter = acquire_in_background(&patient(&a), &key);
    tokio::time::sleep(SETTLE).await;
    assert!(!waiter.is_finished(), "acquired a held lock");
    holder.release().await.unwrap();
    acquired_at_once(waiter).await;
}

/// The subscriber runs on the runtime the store was connected on, with its connections: a
/// first wait from a runtime that then shuts down (a job's own) does not take it along, and
/// the store's next waiter is still woken by a release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_wait_on_a_runtime_that_shuts_down_leaves_the_subscriber_running() {
    let url = redis_url();
    let store = Arc::new(connect(&url, |_| {}).await);
    let key = unique_key("wake-runtimes");
    let holder = patient(&store).create_lock_with_ttl(&key, "60s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    let brief = patient(&store).create_lock_with_ttl(&key, "60s").unwrap();
    let waited = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
        runtime.block_on(brief.acquire_with(Retry::new().delay(50).attempts(3)))
    })
    .join()
    .expect("the job's thread");
    assert!(!waited.unwrap(), "the key is held");

    let waiter = acquire_in_background(&patient(&store), &key);
    tokio::time::sleep(SETTLE).await;
    assert!(!waiter.is_finished(), "acquired a held lock");
    holder.release().await.unwrap();
    acquired_at_once(waiter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_release_on_another_store_wakes_a_waiter_at_once() {
    let url = redis_url();
    let (a, b) = (
        Arc::new(connect(&url, |_| {}).await),
        Arc::new(connect(&url, |_| {}).await),
    );
    let key = unique_key("wake-force-release");
    let holder = patient(&b).create_lock(&key).unwrap();
    assert!(holder.acquire_immediately().await.unwrap());

    let waiter = acquire_in_background(&patient(&a), &key);
    tokio::time::sleep(SETTLE).await;
    assert!(!waiter.is_finished(), "acquired a held lock");
    let intruder = patient(&b).create_lock(&key).unwrap();
    intruder.force_release().await.unwrap();
    acquired_at_once(waiter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_prefix_is_part_of_the_release_channel() {
    let url = redis_url();
    let (a, b, raw) = (
        Arc::new(connect(&url, |config| config.key_prefix = "app-a:".into()).await),
        Arc::new(connect(&url, |config| config.key_prefix = "app-a:".into()).await),
        raw_client(&url).await,
    );
    let name = unique_key("wake-prefix");
    let holder = patient(&b).create_lock_with_ttl(&name, "60s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    let waiter = acquire_in_background(&patient(&a), &name);

    let redis_key = format!("app-a:{name}");
    wait_for_subscriptions(&raw, &redis_key, 1, PROMPT).await;
    let (channel, _) = &release_channels(&raw, &redis_key).await[0];
    assert!(
        channel.starts_with("verrou:released:{") && channel.ends_with(&format!("}}:{redis_key}")),
        "{channel}"
    );
    assert_eq!(
        redis_keyslot(channel.as_bytes()),
        redis_keyslot(redis_key.as_bytes()),
        "{channel} is in the slot of {redis_key}"
    );
    holder.release().await.unwrap();
    acquired_at_once(waiter).await;
}

/// Waits for `key` through `store` until `within` gives up, the key being held.
async fn wait_in_vain(store: &Arc<RedisStore>, key: &str, within: Duration) {
    let lock = patient(store).create_lock(key).unwrap();
    let acquired = lock.acquire_with(Retry::new().timeout(within)).await;
    assert!(!acquired.unwrap(), "acquired a held lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_outlives_its_waiters_briefly_then_goes() {
    let url = redis_url();
    let (store, holder, raw) = (
        Arc::new(connect(&url, |_| {}).await),
        connect(&url, |_| {}).await,
        raw_client(&url).await,
    );
    let key = unique_key("wake-unsubscribe");
    assert!(matches!(
        holder.save(&key, "holder", Some(HOUR)).await.unwrap(),
        Acquisition::Granted(_)
    ));
    wait_in_vain(&store, &key, SETTLE).await;
    wait_for_subscriptions(&raw, &key, 1, PROMPT).await;
    // Nobody waits any more: the subscription lingers, then goes by itself (core's board
    // sweeps lingering keys in the background).
    tokio::time::sleep(LINGER - Duration::from_secs(1)).await;
    wait_for_subscriptions(&raw, &key, 1, PROMPT).await;
    wait_for_subscriptions(&raw, &key, 0, SWEEP_LIMIT).await;
    holder.force_delete(&key).await.unwrap();
}

/// Waits (up to `within`) until the server at `raw` holds no waiting line: a waiter that
/// gave up leaves its key's line in the background, with a script of its own.
async fn wait_for_no_line(raw: &Client, within: Duration) {
    poll_until(within, || async {
        let keys = CustomCommand::new_static("KEYS", ClusterHash::FirstKey, false);
        let lines: Vec<String> = raw.custom(keys, vec!["verrou:line:*"]).await.unwrap();
        if lines.is_empty() {
            return Ok(());
        }
        Err(format!("a waiter that gave up is still in line: {lines:?}"))
    })
    .await;
}

/// How many scripts the server at `raw` ran since its counts were reset.
async fn scripts_run(raw: &Client) -> u64 {
    command_calls(raw)
        .await
        .into_iter()
        .filter(|(name, _)| name == "evalsha" || name == "eval")
        .map(|(_, calls)| calls)
        .sum()
}

/// Each second the subscriber looks again at the keys its waiters wait for (one script
/// each), and only at those: a key whose last waiter here left lingers (still subscribed,
/// for the next waiter), but costs the server nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_looks_again_only_at_keys_waited_for() {
    // A private server: the command counts are ours alone.
    let server = RedisServer::start().expect("a private redis-server");
    let url = server.url();
    let (store, holder, raw) = (
        Arc::new(connect(&url, |_| {}).await),
        connect(&url, |_| {}).await,
        raw_client(&url).await,
    );
    let (lingering, waited) = (unique_key("look-lingering"), unique_key("look-waited"));
    for key in [&lingering, &waited] {
        assert!(matches!(
            holder.save(key, "holder", Some(HOUR)).await.unwrap(),
            Acquisition::Granted(_)
        ));
    }
    wait_in_vain(&store, &lingering, SETTLE).await;
    wait_for_subscriptions(&raw, &lingering, 1, PROMPT).await;
    wait_for_no_line(&raw, PROMPT).await;

    // Only a lingering key: two looks again and a half, well within the linger.
    reset_command_calls(&raw).await;
    tokio::time::sleep(RECHECK_EVERY * 5 / 2).await;
    assert_eq!(scripts_run(&raw).await, 0, "a lingering key was looked at");
    wait_for_subscriptions(&raw, &lingering, 1, Duration::ZERO).await;

    // A waiter waits for the other key: it is looked at each second (a look may come late
    // on a loaded machine).
    let waiter = acquire_in_background(&patient(&store), &waited);
    tokio::time::sleep(SETTLE).await;
    reset_command_calls(&raw).await;
    tokio::time::sleep(RECHECK_EVERY * 7 / 2).await;
    let looks = scripts_run(&raw).await;
    assert!(
        (2..=4).contains(&looks),
        "{looks} scripts in three looks again and a half at one key"
    );

    holder.force_delete(&waited).await.unwrap();
    acquired_promptly(waiter).await;
    holder.force_delete(&lingering).await.unwrap();
}

/// A store whose first busy answer to a take in line comes back late, after [`SETTLE`]: a
/// release meanwhile is published before the waiter's store subscribes to the key.
struct LateAnswer {
    inner: RedisStore,
    late: AtomicBool,
}

#[async_trait]
impl LockStore for LateAnswer {
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        self.inner.save(key, owner, ttl).await
    }

    async fn save_in_line(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Place<'_>,
    ) -> Result<Acquisition> {
        let answer = self.inner.save_in_line(key, owner, ttl, place).await?;
        if answer == Acquisition::Busy && self.late.swap(false, Ordering::SeqCst) {
            tokio::time::sleep(SETTLE).await;
        }
        Ok(answer)
    }

    async fn leave_line(&self, key: &str, waiter: &str) -> Result<()> {
        self.inner.leave_line(key, waiter).await
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        self.inner.delete(key, owner).await
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.inner.force_delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        self.inner.extend(key, owner, ttl).await
    }

    fn boards(&self) -> Option<&Boards> {
        self.inner.boards()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_published_before_the_subscription_is_not_missed() {
    let url = redis_url();
    let holder = Arc::new(connect(&url, |_| {}).await);
    let late = LateAnswer {
        inner: connect(&url, |_| {}).await,
        late: AtomicBool::new(true),
    };
    let key = unique_key("wake-missed");
    let lock = patient(&holder).create_lock_with_ttl(&key, "60s").unwrap();
    assert!(lock.acquire_immediately().await.unwrap());
    let waiters = LockFactory::new(late)
        .with_retry(Retry::new().delay(HOUR))
        .unwrap();
    let waiter = acquire_in_background(&waiters, &key);
    // Released while the waiter's busy answer is on its way: the hand-over names it, but
    // its store does not hear it; once subscribed, the store finds it is the next taker.
    tokio::time::sleep(SETTLE / 3).await;
    lock.release().await.unwrap();
    acquired_promptly(waiter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_attempts_are_the_store_calls_each_after_the_full_delay() {
    let url = redis_url();
    let holder = connect(&url, |_| {}).await;
    let key = unique_key("wake-attempts");
    assert!(matches!(
        holder.save(&key, "holder", Some(HOUR)).await.unwrap(),
        Acquisition::Granted(_)
    ));
    let counting = Arc::new(CountingStore::new(Arc::new(connect(&url, |_| {}).await)));
    let factory = LockFactory::from_shared(Arc::clone(&counting) as Arc<dyn LockStore>);
    let lock = factory.create_lock_with_ttl(&key, "60s").unwrap();

    let started = Instant::now();
    let acquired = lock
        .acquire_with(Retry::new().attempts(4).delay(100))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(!acquired, "acquired a held lock");
    // Three full delays between four attempts (lower bound only: a loaded machine is slow).
    assert!(took >= Duration::from_millis(290), "gave up after {took:?}");
    assert_eq!(counting.saves.load(Ordering::SeqCst), 4, "store calls");
    holder.force_delete(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_subscriber_wakes_no_waiter_of_a_held_key() {
    // A private server: killing subscriber connections must not disturb other tests.
    let server = RedisServer::start().expect("a private redis-server");
    let url = server.url();
    let (b, raw) = (
        Arc::new(connect(&url, |_| {}).await),
        raw_client(&url).await,
    );
    let counting = Arc::new(CountingStore::new(Arc::new(connect(&url, |_| {}).await)));
    let factory = LockFactory::from_shared(Arc::clone(&counting) as Arc<dyn LockStore>)
        .with_retry(Retry::new().delay(HOUR))
        .unwrap();
    let key = unique_key("wake-reconnected");
    let holder = patient(&b).create_lock_with_ttl(&key, "60s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    let waiter = acquire_in_background(&factory, &key);
    wait_for_subscriptions(&raw, &key, 1, PROMPT).await;
    tokio::time::sleep(SETTLE).await;
    let asked = counting.saves.load(Ordering::SeqCst);
    assert_eq!(
        asked, 1,
        "a waiter of a held key asked again before any release"
    );

    let _: Value = raw
        .custom(
            CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
            vec!["KILL", "TYPE", "pubsub"],
        )
        .await
        .unwrap();
    wait_for_subscriptions(&raw, &key, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        counting.saves.load(Ordering::SeqCst),
        asked,
        "the resubscription woke a waiter of a held key"
    );
    assert!(!waiter.is_finished(), "acquired a held lock");
    holder.release().await.unwrap();
    acquired_promptly(waiter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_resubscribes_after_the_server_restarts() {
    let mut server = RedisServer::start().expect("a private redis-server");
    let url = server.url();
    let (a, b, raw) = (
        Arc::new(connect(&url, |config| config.command_timeout = SHORT_TIMEOUT).await),
        Arc::new(connect(&url, |_| {}).await),
        raw_client(&url).await,
    );
    let key = unique_key("wake-restart");
    let holder = patient(&b).create_lock_with_ttl(&key, "60s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    let first = acquire_in_background(&patient(&a), &key);
    wait_for_subscriptions(&raw, &key, 1, PROMPT).await;

    server.stop();
    // Down for a few of the subscriber's looks again at its keys: a server that does not
    // answer wakes nobody (woken, the waiter would ask, and fail, at once).
    tokio::time::sleep(verrou_core::RECHECK_EVERY * 2 + SETTLE).await;
    server.restart().expect("the server restarts on its port");
    // The restarted server is empty, so the lock is free; once its subscription is renewed
    // the waiter is woken (the key is found free: a release may have gone unheard), asks,
    // and gets it. Within the reconnection backoff, not the hour.
    let first = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the waiter was woken after the reconnection")
        .unwrap();
    let raw = raw_client(&url).await;
    wait_for_subscriptions(&raw, &key, 1, PROMPT).await;

    // A second waiter of the same store relies on the renewed subscription: the key is
    // watched already, so nothing new is subscribed for it.
    let second = acquire_in_background(&patient(&a), &key);
    tokio::time::sleep(SETTLE).await;
    assert!(!second.is_finished(), "acquired a held lock");
    first.release().await.unwrap();
    acquired_promptly(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscriber_connection_comes_back_and_lock_operations_never_notice() {
    // A private server: killing subscriber connections must not disturb other tests.
    let server = RedisServer::start().expect("a private redis-server");
    let url = server.url();
    let (a, b, raw) = (
        Arc::new(connect(&url, |_| {}).await),
        Arc::new(connect(&url, |_| {}).await),
        raw_client(&url).await,
    );
    let key = unique_key("wake-killed");
    let holder = patient(&b).create_lock_with_ttl(&key, "60s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    let waiter = acquire_in_background(&patient(&a), &key);
    wait_for_subscriptions(&raw, &key, 1, PROMPT).await;

    // Kill the store's subscriber connection.
    let _: Value = raw
        .custom(
            CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
            vec!["KILL", "TYPE", "pubsub"],
        )
        .await
        .unwrap();
    // Lock operations of the waiting store go on meanwhile.
    let other = patient(&a)
        .create_lock_with_ttl(unique_key("wake-killed-other"), "10s")
        .unwrap();
    for _ in 0..20 {
        assert!(other.acquire_immediately().await.unwrap());
        other.release().await.unwrap();
    }
    wait_for_subscriptions(&raw, &key, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(SETTLE).await;
    assert!(!waiter.is_finished(), "acquired a held lock");
    holder.release().await.unwrap();
    acquired_promptly(waiter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_rules_the_readme_lists_are_enough() {
    let server = RedisServer::start().expect("a private redis-server");
    let admin = raw_client(&server.url()).await;
    acl_user(&admin, "locker", LOCK_RULES).await;
    let url = format!("redis://locker:pw@127.0.0.1:{}", server.port());
    let prefixed = |config: &mut verrou_redis::RedisConfig| config.key_prefix = "locks:".into();
    let (a, b) = (
        Arc::new(connect(&url, prefixed).await),
        Arc::new(connect(&url, prefixed).await),
    );
    let key = unique_key("wake-acl");
    let holder = patient(&b).create_lock_with_ttl(&key, "60s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    holder.extend().await.unwrap();
    assert!(holder.is_locked().await.unwrap());
    let waiter = acquire_in_background(&patient(&a), &key);
    tokio::time::sleep(SETTLE).await;
    assert!(!waiter.is_finished(), "acquired a held lock");
    holder.release().await.unwrap();
    acquired_promptly(waiter).await;
    holder.force_release().await.unwrap();
}

/// The ACL rules of a user that may use keys and scripts but no pub/sub channel (the Redis
/// 7 default for new users): publishing and subscribing are refused.
const NO_CHANNELS: &[&str] = &["~*", "+@all", "resetchannels"];

/// A private server (kept running while the first value lives), a client of its admin, and
/// two stores of a user with the [`NO_CHANNELS`] rules.
async fn stores_without_channel_rights() -> (RedisServer, Client, Arc<RedisStore>, Arc<RedisStore>)
{
    let server = RedisServer::start().expect("a private redis-server");
    let admin = raw_client(&server.url()).await;
    acl_user(&admin, "locker", NO_CHANNELS).await;
    let url = format!("redis://locker:pw@127.0.0.1:{}", server.port());
    let (a, b) = (
        Arc::new(connect(&url, |_| {}).await),
        Arc::new(connect(&url, |_| {}).await),
    );
    (server, admin, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pubsub_rights_locks_work_and_waiters_poll() {
    let (_server, _admin, a, b) = stores_without_channel_rights().await;
    let key = unique_key("wake-refused");
    let delay = Duration::from_millis(400);
    let polling = LockFactory::from_shared(Arc::clone(&a) as Arc<dyn LockStore>)
        .with_retry(Retry::new().delay(delay))
        .unwrap();

    for _ in 0..2 {
        let holder = patient(&b).create_lock_with_ttl(&key, "60s").unwrap();
        assert!(holder.acquire_immediately().await.unwrap());
        let waiter = acquire_in_background(&polling, &key);
        tokio::time::sleep(SETTLE).await;
        assert!(!waiter.is_finished(), "acquired a held lock");
        let released = Instant::now();
        holder.release().await.unwrap();
        holder.acquire_immediately().await.unwrap_or_default();
        holder.force_release().await.unwrap();
        let lock = tokio::time::timeout(delay + PROMPT, waiter)
            .await
            .expect("the waiter polls at its retry delay")
            .unwrap();
        assert!(released.elapsed() <= delay + PROMPT);
        lock.release().await.unwrap();
    }
}

/// A subscription that failed is made again after a pause, as long as its key is watched:
/// here the server refuses it (the user may not use the channel) until an operator grants
/// the channel, after which the waiter, with an hour-long retry delay, hears the release.
/// (The same retry makes again the subscriptions fred refuses while it reconnects.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_is_made_once_the_rights_allow_it() {
    let (_server, admin, a, b) = stores_without_channel_rights().await;
    let key = unique_key("wake-granted");
    let holder = patient(&b).create_lock_with_ttl(&key, "60s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    let waiter = acquire_in_background(&patient(&a), &key);
    tokio::time::sleep(SETTLE).await;
    assert!(
        release_channels(&admin, &key).await.is_empty(),
        "subscribed without the right"
    );
    acl_user(
        &admin,
        "locker",
        &["~*", "+@all", "resetchannels", "&verrou:released:*"],
    )
    .await;
    // Made again within the longest pause between tries (5 s).
    wait_for_subscriptions(&admin, &key, 1, Duration::from_secs(8)).await;
    assert!(!waiter.is_finished(), "acquired a held lock");
    holder.release().await.unwrap();
    acquired_promptly(waiter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_store_that_waited_closes_its_subscriber_too() {
    let server = RedisServer::start().expect("a private redis-server");
    let url = server.url();
    let raw = raw_client(&url).await;
    let store = Arc::new(connect(&url, |_| {}).await);
    let holder = connect(&url, |_| {}).await;
    let key = unique_key("wake-drop");
    assert!(matches!(
        holder.save(&key, "holder", Some(HOUR)).await.unwrap(),
        Acquisition::Granted(_)
    ));
    wait_in_vain(&store, &key, SETTLE).await;
    wait_for_subscriptions(&raw, &key, 1, PROMPT).await;

    drop(store);
    wait_for_subscriptions(&raw, &key, 0, PROMPT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_publishes_its_front_waiter_and_nothing_when_nobody_waits() {
    // A private server: no other test publishes there.
    let server = RedisServer::start().expect("a private redis-server");
    let url = server.url();
    let (a, b, raw, listener) = (
        Arc::new(connect(&url, |_| {}).await),
        Arc::new(connect(&url, |_| {}).await),
        raw_client(&url).await,
        raw_client(&url).await,
    );
    let key = unique_key("wake-message");
    let holder = patient(&b).create_lock_with_ttl(&key, "60s").unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    let waiter = acquire_in_background(&patient(&a), &key);
    wait_for_subscriptions(&raw, &key, 1, PROMPT).await;
    let (channel, _) = release_channels(&raw, &key).await.remove(0);
    let mut messages = listener.message_rx();
    listener.ssubscribe(channel.as_str()).await.unwrap();

    holder.release().await.unwrap();
    let message = tokio::time::timeout(PROMPT, messages.recv())
        .await
        .expect("the release was published")
        .unwrap();
    let text = message.value.as_string().unwrap();
    // No store id: every store that hears it wakes the waiter if it waits there.
    let waiter_id = text.strip_prefix(':').expect(":WAITER");
    assert!(!waiter_id.is_empty() && !waiter_id.contains(':'), "{text}");
    let lock = tokio::time::timeout(PROMPT, waiter).await.unwrap().unwrap();
    // Nobody waits now: the release publishes nothing.
    lock.release().await.unwrap();
    let quiet = tokio::time::timeout(SETTLE, messages.recv()).await;
    assert!(quiet.is_err(), "published with nobody waiting: {quiet:?}");
}
