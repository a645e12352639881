//! The history checker: a record of who held which key when, with which fencing token, and
//! the verdict on it.
//!
//! Every holder records its grant when `acquire` returns (the start of its hold), with the
//! end of its local validity (`remaining_time` then), and records the moment it starts to
//! release. Its hold is the interval from the grant to the release or the end of validity,
//! whichever is first: the time it could act believing it held the lock. The checker then
//! finds, per key:
//!
//! - **overlaps**: two holds of the key that intersect (mutual exclusion broken);
//! - **token regressions**: a hold that starts after another ended, with a fencing token not
//!   greater than that one's (a resource would refuse the newer holder, or accept the older).
//!
//! Holds of semaphores and read-write locks are judged by their kind: readers may overlap
//! each other (never a writer); a permit overlaps no more holds of its semaphore than its
//! limit allows at its grant (**over the limit** otherwise). A lock, a semaphore and a
//! read-write lock of one key are separate resources.
//!
//! Grants nobody owns (taken on the server, unknown to every caller) are seen from outside:
//! once every caller has stopped, the store must report the key free within a command
//! timeout (see the fault group).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{Lock, LockKind, Share};

/// A shared, append-only record of holds, for any number of concurrent holders.
#[derive(Debug)]
pub struct History {
    started: Instant,
    holds: Mutex<Vec<Hold>>,
}

/// One hold of a key, as its holder saw it.
#[derive(Debug, Clone)]
pub struct Hold {
    /// The key held.
    pub key: String,
    /// Who held it (a name for the report).
    pub holder: String,
    /// The fencing token of the grant, if the store issues them.
    pub fencing_token: Option<u64>,
    /// What the lock held of its key.
    pub kind: LockKind,
    /// When the `acquire` that got the grant began: the store granted it between then and
    /// `granted_at`.
    pub asked_at: Instant,
    /// When `acquire` returned the grant.
    pub granted_at: Instant,
    /// When the holder stopped relying on it: it began releasing, or its validity ran out.
    pub ended_at: Instant,
}

/// A hold started but not finished: finish it with [`History::released`].
#[derive(Debug)]
#[must_use = "a hold is recorded when it is released"]
pub struct OpenHold {
    key: String,
    holder: String,
    fencing_token: Option<u64>,
    kind: LockKind,
    asked_at: Instant,
    granted_at: Instant,
    valid_until: Option<Instant>,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Holds recorded.
    pub holds: usize,
    /// Pairs of holds of one key that intersect.
    pub overlaps: Vec<(Hold, Hold)>,
    /// Pairs (earlier, later) of holds of one key whose tokens do not increase.
    pub token_regressions: Vec<(Hold, Hold)>,
    /// Permits granted while their semaphore already had as many holds as their limit.
    pub over_limit: Vec<Hold>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history; times in reports are counted from now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            holds: Mutex::new(Vec::new()),
        }
    }

    /// `lock` was just granted to `holder`: its hold starts now and can last until its
    /// remaining time runs out. For a hold that may overlap others (a permit, a read), use
    /// [`granted_since`](Self::granted_since).
    pub fn granted(&self, lock: &Lock, holder: impl Into<String>) -> OpenHold {
        self.granted_since(Instant::now(), lock, holder)
    }

    /// Like [`granted`](Self::granted), for an `acquire` that began at `asked_at`. Holds
    /// that may overlap are ordered by it: a permit whose grant was answered late (a slow
    /// reply, a replica acknowledgement) may have been granted before a permit that was
    /// taken and released meanwhile, and then rightly carries the smaller token.
    pub fn granted_since(
        &self,
        asked_at: Instant,
        lock: &Lock,
        holder: impl Into<String>,
    ) -> OpenHold {
        let granted_at = Instant::now();
        OpenHold {
            key: lock.key().to_owned(),
            holder: holder.into(),
            fencing_token: lock.fencing_token(),
            kind: lock.kind(),
            asked_at: asked_at.min(granted_at),
            granted_at,
            valid_until: lock
                .remaining_time()
                .and_then(|left| granted_at.checked_add(left)),
        }
    }

    /// The holder of `hold` starts releasing now (or gives up relying on the lock).
    pub fn released(&self, hold: OpenHold) {
        let now = Instant::now();
        let ended_at = hold.valid_until.map_or(now, |until| until.min(now));
        self.holds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Hold {
                key: hold.key,
                holder: hold.holder,
                fencing_token: hold.fencing_token,
                kind: hold.kind,
                asked_at: hold.asked_at,
                granted_at: hold.granted_at,
                ended_at: ended_at.max(hold.granted_at),
            });
    }

    /// Checks every key's holds for overlaps and token regressions.
    pub fn verdict(&self) -> Verdict {
        let holds = self
            .holds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut by_key: BTreeMap<(u8, &str), Vec<&Hold>> = BTreeMap::new();
        for hold in &holds {
            by_key
                .entry((resource(hold.kind), &hold.key))
                .or_default()
                .push(hold);
        }
        let mut verdict = Verdict {
            holds: holds.len(),
            ..Verdict::default()
        };
        for key_holds in by_key.values_mut() {
            key_holds.sort_by_key(|hold| hold.granted_at);
            for (index, earlier) in key_holds.iter().enumerate() {
                for later in &key_holds[index + 1..] {
                    let exclusive = excludes(earlier.kind, later.kind);
                    if exclusive && later.granted_at < earlier.ended_at {
                        verdict
                            .overlaps
                            .push(((*earlier).clone(), (*later).clone()));
                    }
                    // Granted after the earlier hold's grant for sure: an exclusive hold
                    // answered after the earlier ended (the store could not grant it while
                    // the earlier was held), or one that may overlap, asked for after.
                    let granted_after = if exclusive {
                        later.granted_at >= earlier.ended_at
                    } else {
                        later.asked_at >= earlier.ended_at
                    };
                    if let (true, Some(old), Some(new)) =
                        (granted_after, earlier.fencing_token, later.fencing_token)
                    {
                        if new <= old {
                            verdict
                                .token_regressions
                                .push(((*earlier).clone(), (*later).clone()));
                        }
                    }
                }
                if let LockKind::Shared(Share::Permit { limit }) = earlier.kind {
                    // The holds granted before this one and still held at its grant.
                    let beside = key_holds[..index]
                        .iter()
                        .filter(|before| before.ended_at > earlier.granted_at)
                        .count();
                    if beside >= usize::try_from(limit).unwrap_or(usize::MAX) {
                        verdict.over_limit.push((*earlier).clone());
                    }
                }
            }
        }
        verdict
    }

    /// Panics with the whole report if any hold overlapped another or a token went back;
    /// otherwise returns how many holds were checked.
    ///
    /// # Panics
    ///
    /// On any overlap or token regression: that is how a test fails.
    pub fn assert_clean(&self) -> usize {
        let verdict = self.verdict();
        assert!(
            verdict.overlaps.is_empty()
                && verdict.token_regressions.is_empty()
                && verdict.over_limit.is_empty(),
            "{}",
            Report {
                verdict: &verdict,
                started: self.started
            }
        );
        verdict.holds
    }
}

/// Which resource a hold of `kind` is on: a lock, a semaphore, or a read-write lock.
fn resource(kind: LockKind) -> u8 {
    match kind {
        LockKind::Shared(Share::Permit { .. }) => 1,
        LockKind::Shared(_) => 2,
        LockKind::Exclusive => 0,
    }
}

/// Whether holds of these kinds, on one resource, may never overlap (permits are counted
/// apart, against their limit).
fn excludes(one: LockKind, other: LockKind) -> bool {
    !matches!(
        (one, other),
        (LockKind::Shared(Share::Permit { .. }), _)
            | (_, LockKind::Shared(Share::Permit { .. }))
            | (LockKind::Shared(Share::Read), LockKind::Shared(Share::Read))
    )
}

/// A verdict as text, times in milliseconds since the history started.
struct Report<'a> {
    verdict: &'a Verdict,
    started: Instant,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |instant: Instant| {
            instant
                .saturating_duration_since(self.started)
                .as_secs_f64()
                * 1000.0
        };
        let hold = |hold: &Hold| {
            format!(
                "{} held {:?} with token {:?} from {:.1} ms (asked at {:.1} ms) to {:.1} ms",
                hold.holder,
                hold.key,
                hold.fencing_token,
                at(hold.granted_at),
                at(hold.asked_at),
                at(hold.ended_at)
            )
        };
        writeln!(
            formatter,
            "history of {} holds: {} overlaps, {} token regressions, {} permits over the limit",
            self.verdict.holds,
            self.verdict.overlaps.len(),
            self.verdict.token_regressions.len(),
            self.verdict.over_limit.len()
        )?;
        for permit in &self.verdict.over_limit {
            writeln!(formatter, "  over the limit: {}", hold(permit))?;
        }
        for (earlier, later) in &self.verdict.overlaps {
            writeln!(formatter, "  overlap: {} / {}", hold(earlier), hold(later))?;
        }
        for (earlier, later) in &self.verdict.token_regressions {
            writeln!(
                formatter,
                "  token regression: {} / then {}",
                hold(earlier),
                hold(later)
            )?;
        }
        Ok(())
    }
}

/// How long an interval lasted, for reports.
pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(holder: &str, token: u64, from_ms: u64, to_ms: u64, origin: Instant) -> Hold {
        Hold {
            key: "k".into(),
            holder: holder.into(),
            fencing_token: Some(token),
            kind: LockKind::Exclusive,
            asked_at: origin + Duration::from_millis(from_ms),
            granted_at: origin + Duration::from_millis(from_ms),
            ended_at: origin + Duration::from_millis(to_ms),
        }
    }

    fn asked_at(from_ms: u64, origin: Instant, hold: Hold) -> Hold {
        let asked_at = origin + Duration::from_millis(from_ms);
        Hold { asked_at, ..hold }
    }

    fn of_kind(kind: LockKind, hold: Hold) -> Hold {
        Hold { kind, ..hold }
    }

    fn verdict_of(holds: Vec<Hold>) -> Verdict {
        let history = History::new();
        *history.holds.lock().unwrap() = holds;
        history.verdict()
    }

    #[test]
    fn finds_overlaps_and_regressions_and_nothing_else() {
        let origin = Instant::now();
        let clean = verdict_of(vec![
            hold("a", 1, 0, 10, origin),
            hold("b", 2, 10, 20, origin),
            hold("c", 5, 30, 40, origin),
        ]);
        assert!(clean.overlaps.is_empty() && clean.token_regressions.is_empty());
        let overlap = verdict_of(vec![
            hold("a", 1, 0, 10, origin),
            hold("b", 2, 9, 20, origin),
        ]);
        assert_eq!(overlap.overlaps.len(), 1);
        let regression = verdict_of(vec![
            hold("a", 7, 0, 10, origin),
            hold("b", 7, 11, 20, origin),
        ]);
        assert_eq!(regression.token_regressions.len(), 1);
    }

    #[test]
    fn readers_share_and_permits_count_against_their_limit() {
        let origin = Instant::now();
        let read = |hold| of_kind(LockKind::Shared(Share::Read), hold);
        let write = |hold| of_kind(LockKind::Shared(Share::Write), hold);
        let readers = verdict_of(vec![
            read(hold("a", 1, 0, 10, origin)),
            read(hold("b", 2, 5, 20, origin)),
        ]);
        assert!(readers.overlaps.is_empty(), "readers overlap freely");
        let beside = verdict_of(vec![
            read(hold("a", 1, 0, 10, origin)),
            write(hold("w", 2, 5, 20, origin)),
        ]);
        assert_eq!(beside.overlaps.len(), 1, "a writer beside a reader");
        let permit = |limit, held| of_kind(LockKind::Shared(Share::Permit { limit }), held);
        let within = verdict_of(vec![
            permit(2, hold("a", 1, 0, 10, origin)),
            permit(2, hold("b", 2, 1, 10, origin)),
            permit(2, hold("c", 3, 10, 20, origin)),
        ]);
        assert!(within.over_limit.is_empty() && within.overlaps.is_empty());
        let over = verdict_of(vec![
            permit(2, hold("a", 1, 0, 10, origin)),
            permit(2, hold("b", 2, 1, 10, origin)),
            permit(2, hold("c", 3, 2, 20, origin)),
        ]);
        assert_eq!(over.over_limit.len(), 1, "a third permit of 2");
        // Asked for at 0 ms, answered at 12 ms (a slow reply): granted before "a", whose
        // hold was taken and released meanwhile, so its smaller token is right...
        let answered_late = verdict_of(vec![
            permit(2, hold("a", 5, 1, 10, origin)),
            permit(2, asked_at(0, origin, hold("b", 4, 12, 20, origin))),
        ]);
        assert!(answered_late.token_regressions.is_empty());
        // ... but not once asked for after "a" ended.
        let asked_after = verdict_of(vec![
            permit(2, hold("a", 5, 1, 10, origin)),
            permit(2, asked_at(11, origin, hold("b", 4, 12, 20, origin))),
        ]);
        assert_eq!(asked_after.token_regressions.len(), 1);
        let apart = verdict_of(vec![
            hold("lock", 1, 0, 10, origin),
            write(hold("writer", 2, 0, 10, origin)),
        ]);
        assert!(
            apart.overlaps.is_empty(),
            "a lock and a read-write lock of one key"
        );
    }
}
