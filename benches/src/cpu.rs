//! CPU time spent per cycle, by this process (the client side: verrou or the bare client)
//! and by the server where it reports it: on two cores shared by the client and the server,
//! a side that spends more CPU per cycle leaves the server less, so the split shows where a
//! throughput gap comes from.

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::{TimeVal, TimeValLike};

/// The CPU time (user and system) this process has used so far, if the OS tells.
pub(crate) fn process_time() -> Option<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let duration = |time: TimeVal| {
        u64::try_from(time.num_microseconds())
            .ok()
            .map(Duration::from_micros)
    };
    duration(usage.user_time())?.checked_add(duration(usage.system_time())?)
}

/// CPU time used between two readings, unless one is unknown (or the second is earlier).
pub(crate) fn between(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    after?.checked_sub(before?)
}

/// CPU time `spent` over `cycles`, per cycle, in microseconds.
pub(crate) fn micros_per_cycle(spent: Option<Duration>, cycles: u64) -> Option<f64> {
    let spent = spent?;
    (cycles > 0).then(|| spent.as_secs_f64() * 1e6 / cycles as f64)
}

/// The CPU time a Redis server reports having used (`INFO cpu`: `used_cpu_sys` plus
/// `used_cpu_user`, in seconds with microseconds), if `info` holds both.
pub(crate) fn redis_server_time(info: &str) -> Option<Duration> {
    let seconds = |field: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .and_then(|value| Duration::try_from_secs_f64(value).ok())
    };
    seconds("used_cpu_sys")?.checked_add(seconds("used_cpu_user")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_servers_cpu_time_is_its_system_and_user_time() {
        let info = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250001\r\nused_cpu_sys_children:9.0\r\n";
        assert_eq!(
            redis_server_time(info),
            Some(Duration::from_micros(3_750_001))
        );
        assert_eq!(redis_server_time("# CPU\r\nused_cpu_sys:1.5\r\n"), None);
    }

    #[test]
    fn time_per_cycle_needs_both_readings_and_a_cycle() {
        let (before, after) = (Some(Duration::from_secs(1)), Some(Duration::from_secs(3)));
        assert_eq!(micros_per_cycle(between(before, after), 4), Some(500_000.0));
        assert_eq!(micros_per_cycle(between(None, after), 4), None);
        assert_eq!(micros_per_cycle(between(before, after), 0), None);
        assert_eq!(micros_per_cycle(between(after, before), 4), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_that_grows() {
        let before = process_time().expect("getrusage answers");
        let mut spin = 0u64;
        while process_time().expect("getrusage answers") == before {
            spin = spin.wrapping_add(1);
        }
        assert!(process_time() > Some(before));
    }
}
