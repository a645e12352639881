//! Waiting for a key: the one mechanism every store shares.
//!
//! # The vocabulary
//!
//! - A **waiter** is one lock's `acquire` that found its key busy. It has a public *waiter
//!   id* (random, one per lock, not its owner token, which is a secret).
//! - A store that can keep one keeps a **line** per key: the waiters in arrival order, each
//!   with a **place** ([`Place`](crate::Place)) that lasts a *lease* unless the waiter asks
//!   again. A take ([`LockStore::save_in_line`](crate::LockStore::save_in_line)) succeeds
//!   only if the key is free and no live waiter is ahead of the taker; a busy answer keeps
//!   (or makes) the taker's place. A granted take removes the taker's place.
//! - A **release** of a key with a line **hands over** the key to the waiter at the front:
//!   the store cuts that waiter's lease to [`HANDOVER_WINDOW`] (so a waiter that died does
//!   not block those behind it for longer) and **wakes** it, naming its waiter id. Waiters
//!   behind it are not woken and do not ask: one store call per release, whatever the
//!   number of waiters and processes. Within a process too, the wake stirs the named
//!   waiter's task alone, so a hand-over costs the same with eight waiters or a thousand.
//!   A take refused only because of the line (the key is free, but a live waiter is
//!   ahead: the key freed without a release, or the waiter it was handed to never came)
//!   hands the key over to the front the same way, unless the front was handed it already:
//!   a waiter that died holds the line up for one window and one retry delay of the waiter
//!   behind it, however many died in a row. For semaphores and read-write locks, "free" is
//!   free for the front: room for the taker's permit (the front's limit is its own: it may
//!   ask once in vain), or nobody holding the key.
//! - A plain take ([`LockStore::save`](crate::LockStore::save)) from outside the line never
//!   gets a key handed over to a waiter. A store either checks the whole line at every plain
//!   take (memory, Redis with fencing tokens), or **reserves** the key for the waiter it
//!   hands it to, for the window, so that its plain take stays a bare set-if-absent (Redis
//!   by default, PostgreSQL); a key that frees without a release (its holder's TTL ran out,
//!   or the waiter never came) then goes to whoever asks first. A reserved key is held by
//!   nobody: [`LockStore::exists`](crate::LockStore::exists) says it is free.
//! - A store that hears releases **watches** the keys that have waiters in this process
//!   ([`ReleaseFeed::subscribe`]), and reports every release it hears to [`Waiters::wake`]
//!   on the board of the key's family ([`Boards::of`]: locks, semaphores and read-write
//!   locks under one key are watched apart). Its background task lives on a Tokio runtime;
//!   one whose runtime shut down while the store lives on is started again by the next
//!   waiter ([`ReleaseFeed::revive`]), as the board's own sweep of idle keys is.
//!
//! # Who does what
//!
//! Core decides the policy, here and in the lock's wait loop: when a waiter asks (when woken
//! by name or by an anonymous wake, and at each retry delay, which also renews its place),
//! how long a place lasts ([`lease_for`]), how long a released key is left to its front
//! waiter ([`HANDOVER_WINDOW`]), how long an idle key stays watched ([`LINGER`]), how often
//! a store looks again at the keys waited for ([`RECHECK_EVERY`], [`Boards::waited_for`]),
//! and that a waiter that gives up leaves its line. A store provides primitives only: the
//! atomic take that respects the line, `leave_line`, and, if its server can tell, [`Boards`]
//! fed by its subscriptions. A store without any of it works too: its waiters poll at the
//! retry delay.
//!
//! # Why this shape
//!
//! Waking every waiter on a release makes all of them ask, all but one in vain, and lets
//! whoever is quickest (often the holder that just released) win every time. Redisson's fair
//! lock keeps a line in the server too, but each of its waiters polls the line's head; here
//! the release names the front waiter, and only it asks.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::{Family, MAX_DURATION};

/// How long a release leaves the key to the waiter it woke, before the waiters behind it may
/// pass it (if it has not taken the key by then, it is presumed gone).
pub const HANDOVER_WINDOW: Duration = Duration::from_millis(100);

/// How long a key stays watched after its last waiter here stopped waiting, so that a
/// process waiting on the same key again and again does not subscribe each time.
pub const LINGER: Duration = Duration::from_secs(5);

/// How often a store whose server announces releases (Redis, PostgreSQL) looks again at
/// every key a waiter of its waits for ([`Boards::waited_for`]) and wakes the waiter that
/// may take each (as when it starts watching one): on such a store, the longest a turn
/// nobody announced (a release that missed a place being made, a front that let its window
/// pass before a waiter that could go next, a holder whose TTL ran out) waits, whatever the
/// retry delay. An in-process store never misses a hand-over, and hears an expiry as it
/// happens: the memory store watches the deadlines of the keys that have waiters (looking at
/// them at least this often).
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// How many recent wakes of a key are remembered for waiters that were between a take and
/// their wait when the wake came.
const RECENT_WAKES: usize = 16;

/// How often idle keys are looked for while some linger.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// How long a waiter's place lasts when the waiter asks every `retry_delay`: two delays (a
/// late ask does not lose the place) and a hand-over window.
pub fn lease_for(retry_delay: Duration) -> Duration {
    retry_delay
        .saturating_mul(2)
        .saturating_add(HANDOVER_WINDOW)
        .min(MAX_DURATION)
}

/// How a store watches keys for releases: given to [`Waiters::new`].
///
/// Calls come from the waiters' tasks and must not block; queue the work for the store's
/// own task (a subscriber connection, a `LISTEN` session).
pub trait ReleaseFeed: Send + Sync + 'static {
    /// Starts hearing releases of `key`. Once the store hears them, it must check whether
    /// `key` is free and, if so, call [`Waiters::wake`] with no waiter: a release that came
    /// before the subscription would otherwise be missed. Also after a reconnection, for
    /// every key of [`Waiters::watched`]; and a store whose announcements travel over a
    /// network, where one can be missed, looks again each [`RECHECK_EVERY`]. It looks only
    /// at the keys still waited for ([`Boards::waited_for`]).
    fn subscribe(&self, key: &str);

    /// Stops hearing releases of `key`. Called while the board is locked, so that it is
    /// ordered with the subscriptions of the same key: it must not call into the board.
    fn unsubscribe(&self, key: &str);

    /// Called each time a waiter starts waiting, from its task, before any
    /// [`subscribe`](Self::subscribe): a store whose background task can end while the
    /// store lives on (the Tokio runtime it ran on was shut down, as each `#[tokio::test]`'s
    /// is) starts it again here, on the waiter's runtime, and hears every watched key
    /// anew. The provided one does nothing.
    fn revive(&self) {}
}

/// The waiters of one store in this process, per key, for locks or for one family of
/// shares: the board on which a store that hears releases reports them (one of its
/// [`Boards`]). Keys are the locks' keys, as the store receives them.
pub struct Waiters {
    board: Arc<Board>,
}

/// What a [`Waiters`] shares with its background sweep of lingering keys.
struct Board {
    feed: Box<dyn ReleaseFeed>,
    keys: Mutex<HashMap<Arc<str>, Watch>>,
    /// How many keys are watched, read without the mutex so that a release nobody here
    /// waits for costs nothing.
    watched: AtomicUsize,
    /// The background sweep while it runs: it unsubscribes the keys that went idle once
    /// they have lingered, and ends (leaving `None`) when none lingers.
    sweeper: Mutex<Option<JoinHandle<()>>>,
    /// How many wakes the board had, all keys together: the last wake's generation. A key
    /// watched anew starts from here, never from zero, so a waiter that read a generation
    /// of the key's earlier watch (swept since) still counts the new watch's wakes.
    generations: AtomicU64,
}

/// One watched key.
struct Watch {
    /// The waiters of this process that wait for the key now, by waiter id: a wake that
    /// names one signals its waits alone, so a hand-over stirs one task however many wait.
    waiters: HashMap<Arc<str>, Signal>,
    /// When the last of them stopped waiting.
    idle_since: Option<Instant>,
    /// The generation of the key's last wake (see [`Board::generations`]).
    generation: u64,
    /// The last wakes: their generation and the waiter they named (`None`: every waiter).
    recent: VecDeque<(u64, Option<Arc<str>>)>,
}

impl Watch {
    /// Whether a waiter here waits for the key now: a key that only lingers has none, and
    /// nobody here to take a turn on it.
    fn is_waited_for(&self) -> bool {
        !self.waiters.is_empty()
    }
}

/// How one waiter's waits for a key are woken: a lock's waits share its waiter id (clones
/// of a lock may wait at once).
struct Signal {
    /// How many waits use it.
    waits: usize,
    /// Signalled at each wake that names the waiter or nobody; the waits then look whether
    /// a wake since their take names them.
    woken: Arc<Notify>,
}

impl Waiters {
    /// A board whose keys are watched through `feed`.
    pub fn new(feed: impl ReleaseFeed) -> Self {
        Self {
            board: Arc::new(Board {
                feed: Box::new(feed),
                keys: Mutex::default(),
                watched: AtomicUsize::new(0),
                sweeper: Mutex::default(),
                generations: AtomicU64::new(0),
            }),
        }
    }

    /// The store heard `key` released and handed over to `waiter` (`None`: to nobody in
    /// particular, every waiter of the key asks). Wakes of keys nobody here watches are
    /// ignored.
    pub fn wake(&self, key: &str, waiter: Option<&str>) {
        if self.board.watched.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut keys = self.board.lock();
        let Some(watch) = keys.get_mut(key) else {
            return;
        };
        // Counted while the board is locked, so generations follow the wakes' order.
        watch.generation = self.board.generations.fetch_add(1, Ordering::Relaxed) + 1;
        if watch.recent.len() == RECENT_WAKES {
            watch.recent.pop_front();
        }
        watch
            .recent
            .push_back((watch.generation, waiter.map(Arc::from)));
        match waiter {
            Some(named) => {
                if let Some(signal) = watch.waiters.get(named) {
                    signal.woken.notify_waiters();
                }
            }
            None => {
                for signal in watch.waiters.values() {
                    signal.woken.notify_waiters();
                }
            }
        }
    }

    /// Every key watched now (with waiters, or lingering): what a store subscribes to again
    /// after a reconnection.
    pub fn watched(&self) -> Vec<Arc<str>> {
        self.board.lock().keys().cloned().collect()
    }

    /// The generation of `key`'s last wake, if it is watched: read before a take, so that a
    /// wake arriving between the take's answer and the wait is not missed.
    pub(crate) fn generation(&self, key: &str) -> u64 {
        if self.board.watched.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.board
            .lock()
            .get(key)
            .map_or(0, |watch| watch.generation)
    }

    /// Starts waiting for `key` as `waiter`, having seen its wakes up to `seen` (what
    /// [`generation`](Self::generation) said before the take that found it busy).
    pub(crate) fn join<'board>(
        &'board self,
        key: &str,
        waiter: &'board str,
        seen: u64,
    ) -> Ticket<'board> {
        let mut keys = self.board.lock();
        let key: Arc<str> = Arc::from(key);
        let new = !keys.contains_key(&key);
        let watch = keys.entry(Arc::clone(&key)).or_insert_with(|| Watch {
            waiters: HashMap::new(),
            idle_since: None,
            generation: self.board.generations.load(Ordering::Relaxed),
            recent: VecDeque::new(),
        });
        let signal = watch
            .waiters
            .entry(Arc::from(waiter))
            .or_insert_with(|| Signal {
                waits: 0,
                woken: Arc::new(Notify::new()),
            });
        signal.waits += 1;
        let woken = Arc::clone(&signal.woken);
        watch.idle_since = None;
        // A key first watched now has had no wake yet: every one to come counts.
        let seen = if new { 0 } else { seen };
        self.board.watched.store(keys.len(), Ordering::Release);
        drop(keys);
        self.board.feed.revive();
        if new {
            self.board.feed.subscribe(&key);
        }
        Ticket {
            board: self,
            key,
            waiter,
            seen,
            woken,
        }
    }
}

/// A key a store's [`Boards`] watch: the family of its board (`None`: a lock's) and the key.
pub type WatchedKey = (Option<Family>, Arc<str>);

/// A store's boards: one for its plain locks and one per family of shares, so that a
/// semaphore and a lock under the same key are watched and woken apart.
///
/// A store that hears releases creates one, keeps it, and returns it from
/// [`LockStore::boards`](crate::LockStore::boards).
#[derive(Debug)]
pub struct Boards {
    locks: Waiters,
    semaphores: Waiters,
    rw_locks: Waiters,
}

impl Boards {
    /// Every board's family (`None`: plain locks).
    pub const FAMILIES: [Option<Family>; 3] = [None, Some(Family::Semaphore), Some(Family::RwLock)];

    /// The boards, each watching its keys through the feed `feed` makes for its family
    /// (`None`: plain locks).
    pub fn new<F: ReleaseFeed>(feed: impl Fn(Option<Family>) -> F) -> Self {
        Self {
            locks: Waiters::new(feed(None)),
            semaphores: Waiters::new(feed(Some(Family::Semaphore))),
            rw_locks: Waiters::new(feed(Some(Family::RwLock))),
        }
    }

    /// The board of `family` (`None`: plain locks).
    pub fn of(&self, family: Option<Family>) -> &Waiters {
        match family {
            None => &self.locks,
            Some(Family::Semaphore) => &self.semaphores,
            Some(Family::RwLock) => &self.rw_locks,
        }
    }

    /// Those of `keys` that a waiter here waits for now: the only ones a store looks at for a
    /// turn nobody announced (after subscribing, after a reconnection, each
    /// [`RECHECK_EVERY`]). A lingering key stays subscribed, but looking at it would ask the
    /// server about a turn nobody here takes; a waiter elsewhere has its own store look.
    pub fn waited_for(&self, keys: impl IntoIterator<Item = WatchedKey>) -> Vec<WatchedKey> {
        let mut keys: Vec<WatchedKey> = keys.into_iter().collect();
        // One lock of each board, however many keys.
        for family in Self::FAMILIES {
            let watches = self.of(family).board.lock();
            keys.retain(|(of, key)| {
                *of != family || watches.get(key).is_some_and(Watch::is_waited_for)
            });
        }
        keys
    }

    /// Every key watched now, on every board, with the board's family: what a store
    /// subscribes to again after a reconnection.
    pub fn watched(&self) -> Vec<WatchedKey> {
        Self::FAMILIES
            .into_iter()
            .flat_map(|family| {
                self.of(family)
                    .watched()
                    .into_iter()
                    .map(move |key| (family, key))
            })
            .collect()
    }
}

impl Board {
    /// Removes the keys idle for [`LINGER`] and unsubscribes them; whether other keys still
    /// linger.
    fn sweep(&self) -> bool {
        let now = Instant::now();
        let mut keys = self.lock();
        // Unsubscribed while the board is locked: a waiter that watches the key again
        // afterwards subscribes after this, never before.
        keys.retain(|key, watch| {
            let lingered = watch
                .idle_since
                .is_some_and(|since| now.saturating_duration_since(since) >= LINGER);
            if lingered {
                self.feed.unsubscribe(key);
            }
            !lingered
        });
        self.watched.store(keys.len(), Ordering::Release);
        keys.values().any(|watch| watch.idle_since.is_some())
    }

    /// Starts the background sweep unless it runs already: every [`SWEEP_PERIOD`] while
    /// keys linger, ending with the board. A sweep that ended without saying so (its
    /// runtime was shut down) is started again, here. Without a Tokio runtime here, the
    /// next waiter that stops waiting on one starts it.
    fn schedule_sweep(self: &Arc<Self>) {
        let mut sweeper = lock(&self.sweeper);
        if sweeper.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            *sweeper = None;
            return;
        };
        let board = Arc::downgrade(self);
        *sweeper = Some(runtime.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_PERIOD).await;
                let Some(board) = board.upgrade() else {
                    return;
                };
                // It ends while the sweeper is locked: a key that starts lingering meanwhile
                // finds it running (and is swept next time) or gone (and starts another).
                let mut sweeper = lock(&board.sweeper);
                if !board.sweep() {
                    *sweeper = None;
                    return;
                }
            }
        }));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Watch>> {
        lock(&self.keys)
    }
}

/// Locks `mutex`; a panic elsewhere while it was locked left nothing half-done here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Waiters")
            .field("watched", &self.board.watched.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// One waiter's watch of its key; stops watching when dropped.
pub(crate) struct Ticket<'board> {
    board: &'board Waiters,
    key: Arc<str>,
    waiter: &'board str,
    /// The key's wakes up to this generation were seen (came before the waiter's last take).
    seen: u64,
    woken: Arc<Notify>,
}

impl Ticket<'_> {
    /// A take is about to be sent: the wakes so far are answered by it.
    pub(crate) fn asking(&mut self) {
        if let Some(watch) = self.board.board.lock().get(&self.key) {
            self.seen = watch.generation;
        }
    }

    /// Waits until a wake since the last take names this waiter (or nobody in particular),
    /// or `max_wait` has passed. Whether it was woken.
    pub(crate) async fn wait(&self, max_wait: Duration) -> bool {
        let sleep = tokio::time::sleep(max_wait);
        tokio::pin!(sleep);
        loop {
            let woken = self.woken.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.is_woken() {
                return true;
            }
            tokio::select! {
                () = &mut woken => {}
                () = &mut sleep => return false,
            }
        }
    }

    /// Whether a wake since the last take names this waiter or nobody in particular.
    fn is_woken(&self) -> bool {
        let keys = self.board.board.lock();
        keys.get(&self.key).is_some_and(|watch| {
            watch.recent.iter().any(|(generation, waiter)| {
                *generation > self.seen
                    && waiter.as_deref().is_none_or(|named| named == self.waiter)
            })
        })
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let board = &self.board.board;
        let mut keys = board.lock();
        let mut went_idle = false;
        if let Some(watch) = keys.get_mut(&self.key) {
            if let Some(signal) = watch.waiters.get_mut(self.waiter) {
                signal.waits -= 1;
                if signal.waits == 0 {
                    watch.waiters.remove(self.waiter);
                }
            }
            if !watch.is_waited_for() {
                watch.idle_since = Some(Instant::now());
                went_idle = true;
            }
        }
        drop(keys);
        if went_idle {
            board.schedule_sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<String>>>);

    impl ReleaseFeed for Recorded {
        fn subscribe(&self, key: &str) {
            self.0.lock().unwrap().push(format!("+{key}"));
        }
        fn unsubscribe(&self, key: &str) {
            self.0.lock().unwrap().push(format!("-{key}"));
        }
    }

    #[tokio::test]
    async fn a_wake_reaches_only_the_waiter_it_names() {
        let feed = Recorded::default();
        let board = Waiters::new(feed.clone());
        let first = board.join("k", "a", 0);
        let second = board.join("k", "b", 0);
        assert_eq!(*feed.0.lock().unwrap(), ["+k"], "one subscription per key");
        board.wake("k", Some("b"));
        assert!(second.wait(Duration::from_secs(5)).await);
        assert!(!first.wait(Duration::from_millis(20)).await);
        board.wake("k", None);
        assert!(first.wait(Duration::from_secs(5)).await);
    }

    /// A waker that counts how often it is woken.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_named_wake_stirs_no_other_waiters_task() {
        let board = Waiters::new(Recorded::default());
        let tickets: Vec<Ticket<'_>> = (0..100)
            .map(|index| board.join("k", ["a", "b", "c", "d"][index % 4], 0))
            .collect();
        let mut waits: Vec<_> = tickets
            .iter()
            .map(|ticket| Box::pin(ticket.wait(Duration::from_secs(60))))
            .collect();
        let wakers: Vec<Arc<CountingWaker>> = waits
            .iter_mut()
            .map(|wait| {
                let counter = Arc::new(CountingWaker::default());
                let waker = std::task::Waker::from(Arc::clone(&counter));
                let polled = wait
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(&waker));
                assert!(polled.is_pending(), "nothing woke it yet");
                counter
            })
            .collect();
        let stirred = || -> Vec<usize> {
            (0..wakers.len())
                .filter(|index| wakers[*index].0.load(Ordering::SeqCst) > 0)
                .collect()
        };
        board.wake("k", Some("b"));
        let expected: Vec<usize> = (0..100).filter(|index| index % 4 == 1).collect();
        assert_eq!(
            stirred(),
            expected,
            "only the named waiter's waits are woken"
        );
        board.wake("k", None);
        assert_eq!(
            stirred().len(),
            100,
            "a wake naming nobody wakes every waiter"
        );
    }

    #[tokio::test]
    async fn a_wake_between_take_and_wait_is_kept() {
        let board = Waiters::new(Recorded::default());
        let _other = board.join("k", "other", 0);
        let seen = board.generation("k");
        board.wake("k", Some("late"));
        let late = board.join("k", "late", seen);
        assert!(late.wait(Duration::from_secs(5)).await);
        let mut late = late;
        late.asking();
        assert!(
            !late.wait(Duration::from_millis(20)).await,
            "answered by the take"
        );
    }

    #[tokio::test]
    async fn a_wake_after_the_key_was_swept_and_watched_again_is_kept() {
        let board = Waiters::new(Recorded::default());
        let earlier = board.join("k", "earlier", 0);
        for _ in 0..5 {
            board.wake("k", None);
        }
        drop(earlier);
        // The late waiter reads the generation, and its take finds the key busy...
        let seen = board.generation("k");
        // ... then the key, idle, is swept, and another waiter watches it anew ...
        board.board.lock().get_mut("k").unwrap().idle_since = Instant::now().checked_sub(LINGER);
        assert!(!board.board.sweep());
        let _other = board.join("k", "other", 0);
        // ... and the key is handed to the late waiter before it joins.
        board.wake("k", Some("late"));
        let late = board.join("k", "late", seen);
        assert!(late.wait(Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn only_keys_idle_for_the_linger_are_unsubscribed() {
        let feed = Recorded::default();
        let board = Waiters::new(feed.clone());
        drop(board.join("old", "a", 0));
        drop(board.join("recent", "b", 0));
        let _busy = board.join("busy", "c", 0);
        // As if "old" had lingered long enough.
        board.board.lock().get_mut("old").unwrap().idle_since = Instant::now().checked_sub(LINGER);
        assert!(board.board.sweep(), "\"recent\" still lingers");
        assert_eq!(
            *feed.0.lock().unwrap(),
            ["+old", "+recent", "+busy", "-old"]
        );
        let mut watched = board.watched();
        watched.sort();
        assert_eq!(watched, [Arc::from("busy"), Arc::from("recent")]);
        board.wake("old", None);
    }

    #[tokio::test]
    async fn only_keys_a_waiter_waits_for_are_looked_at() {
        let boards = Boards::new(|_| Recorded::default());
        drop(boards.of(None).join("lingers", "a", 0));
        let _lock_waiter = boards.of(None).join("waited", "b", 0);
        let _permit_waiter = boards.of(Some(Family::Semaphore)).join("lingers", "c", 0);
        let watched = boards.watched();
        assert_eq!(watched.len(), 3, "{watched:?}");
        let looked_at = boards.waited_for(watched);
        assert_eq!(looked_at.len(), 2, "{looked_at:?}");
        for expected in [
            (None, Arc::from("waited")),
            (Some(Family::Semaphore), Arc::from("lingers")),
        ] {
            assert!(looked_at.contains(&expected), "{looked_at:?}");
        }
    }

    #[tokio::test]
    async fn idle_keys_are_unsubscribed_even_if_nobody_waits_again() {
        let feed = Recorded::default();
        let board = Waiters::new(feed.clone());
        drop(board.join("quiet", "a", 0));
        tokio::time::sleep(LINGER + SWEEP_PERIOD + Duration::from_millis(500)).await;
        assert_eq!(*feed.0.lock().unwrap(), ["+quiet", "-quiet"]);
        assert!(board.watched().is_empty());
        assert!(
            board.board.sweeper.lock().unwrap().is_none(),
            "the sweep stops once nothing lingers"
        );
    }

    /// A board used from one `#[tokio::test]` after another: the sweep the first started
    /// ended with its runtime, and the next runtime starts it again.
    #[test]
    fn a_sweep_that_ended_with_its_runtime_is_started_again() {
        let feed = Recorded::default();
        let board = Waiters::new(feed.clone());
        let runtime = || tokio::runtime::Runtime::new().unwrap();
        runtime().block_on(async { drop(board.join("first", "a", 0)) });
        runtime().block_on(async {
            drop(board.join("second", "b", 0));
            tokio::time::sleep(LINGER + SWEEP_PERIOD + Duration::from_millis(500)).await;
        });
        // Swept together, in the map's order.
        let mut calls = feed.0.lock().unwrap().clone();
        calls.sort();
        assert_eq!(calls, ["+first", "+second", "-first", "-second"]);
    }

    #[test]
    fn leases_outlast_two_delays_and_saturate() {
        assert_eq!(
            lease_for(Duration::from_millis(250)),
            Duration::from_millis(600)
        );
        assert_eq!(lease_for(Duration::MAX), MAX_DURATION);
    }
}
