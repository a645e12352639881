//! Time arithmetic that cannot overflow: deadlines on the monotonic clock, and the epoch
//! milliseconds the serialized form carries.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `start + duration`, or `None` when the monotonic clock cannot represent it. verrou's
/// durations are at most [`MAX_DURATION`](crate::MAX_DURATION), so this only fails on a
/// platform whose clock cannot count ten years ahead; callers then pick the safe side.
pub(crate) fn after(start: Instant, duration: Duration) -> Option<Instant> {
    start.checked_add(duration)
}

/// `duration` in whole milliseconds, rounded up so that a positive duration never becomes
/// zero (a TTL of 0.5 ms is written as 1, not as 0, which nobody could read back).
pub(crate) fn millis_ceil(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The wall clock in milliseconds since the Unix epoch (0 before the epoch).
pub(crate) fn epoch_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// What the wall clock will show (or showed) at `instant`, in epoch milliseconds, rounded
/// up.
pub(crate) fn epoch_millis_at(instant: Instant) -> u64 {
    let now = Instant::now();
    let epoch_now = epoch_millis_now();
    match instant.checked_duration_since(now) {
        Some(ahead) => epoch_now.saturating_add(millis_ceil(ahead)),
        None => {
            let behind = now.saturating_duration_since(instant);
            epoch_now.saturating_sub(u64::try_from(behind.as_millis()).unwrap_or(u64::MAX))
        }
    }
}

/// The instant on the monotonic clock at which the wall clock shows `epoch_millis`: in the
/// past for a time already gone (at most as far back as the clock can go), `None` when it
/// is more than [`MAX_DURATION`](crate::MAX_DURATION) ahead (no lock can expire that late).
pub(crate) fn instant_at_epoch_millis(epoch_millis: u64) -> Option<Instant> {
    let now = Instant::now();
    let epoch_now = epoch_millis_now();
    match epoch_millis.checked_sub(epoch_now) {
        Some(ahead) => Some(Duration::from_millis(ahead))
            .filter(|ahead| *ahead <= crate::MAX_DURATION)
            .and_then(|ahead| after(now, ahead)),
        None => {
            let behind = Duration::from_millis(epoch_now.saturating_sub(epoch_millis));
            Some(now.checked_sub(behind).unwrap_or(now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_up() {
        assert_eq!(millis_ceil(Duration::from_micros(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(1500)), 1500);
        assert_eq!(millis_ceil(Duration::from_micros(1_500_001)), 1501);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX);
    }

    #[test]
    fn epoch_instants_never_overflow() {
        assert!(instant_at_epoch_millis(u64::MAX).is_none());
        let too_far = epoch_millis_now() + millis_ceil(crate::MAX_DURATION) + 60_000;
        assert!(instant_at_epoch_millis(too_far).is_none());
        assert!(instant_at_epoch_millis(0).is_some());
        let in_a_minute = instant_at_epoch_millis(epoch_millis_now() + 60_000).unwrap();
        let ahead = in_a_minute.saturating_duration_since(Instant::now());
        assert!(ahead > Duration::from_secs(58) && ahead <= Duration::from_secs(60));
    }

    #[test]
    fn deadlines_never_overflow() {
        assert!(after(Instant::now(), Duration::MAX).is_none());
        assert!(after(Instant::now(), crate::MAX_DURATION).is_some());
    }
}
