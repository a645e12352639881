//! Durations and TTLs in the forms the Node.js library accepts: `"10s"`, `"1h30m"`,
//! `"250ms"`, a bare number of milliseconds (`"1500"` or `1500`), or a [`Duration`].

use std::time::Duration;

use crate::{Error, Result};

/// The longest duration verrou accepts anywhere: a TTL, an extension, a retry delay or a
/// retry timeout (3650 days, about ten years). Longer ones are [`Error::InvalidDuration`]
/// before any store is asked, so that no deadline computed from one can overflow, on any
/// store. A lock that should never expire has [`Ttl::Never`].
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 60 * 60);

/// How long a lock lives before it expires on its own.
///
/// Anything that is [`IntoDuration`] converts into a TTL; [`Ttl::Never`] makes a lock that
/// lives until it is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The lock never expires on its own.
    Never,
    /// The lock expires this long after it is acquired or extended.
    After(Duration),
}

impl Ttl {
    /// The TTL as an optional duration (`None` for [`Ttl::Never`]).
    pub fn as_duration(self) -> Option<Duration> {
        match self {
            Ttl::Never => None,
            Ttl::After(duration) => Some(duration),
        }
    }
}

/// A value that can be read as a strictly positive duration.
///
/// Implemented for `&str` and `String` (`"10s"`, `"5m"`, `"1h30m"`, `"250ms"`, and bare
/// numbers as milliseconds), [`Duration`], and integers (milliseconds).
///
/// ```
/// use std::time::Duration;
/// use verrou_core::IntoDuration;
///
/// assert_eq!("1h30m".into_duration()?, Duration::from_secs(5400));
/// assert_eq!("1500".into_duration()?, Duration::from_millis(1500));
/// assert_eq!(250.into_duration()?, Duration::from_millis(250));
/// assert!("10 parsecs".into_duration().is_err());
/// # Ok::<(), verrou_core::Error>(())
/// ```
pub trait IntoDuration {
    /// Reads the value; zero, negative and unparseable values are
    /// [`Error::InvalidDuration`].
    fn into_duration(self) -> Result<Duration>;
}

/// A value that can be read as a [`Ttl`]: any [`IntoDuration`], a [`Ttl`], or an
/// `Option` of a duration (`None` = never expires).
pub trait IntoTtl {
    /// Reads the value as a TTL.
    fn into_ttl(self) -> Result<Ttl>;
}

/// `ttl` in whole milliseconds, rounded up so that a positive TTL never becomes zero, for
/// stores that keep milliseconds. Locks only send valid TTLs; a store called directly with
/// zero or more than [`MAX_DURATION`] gets [`Error::InvalidDuration`], the rule every store
/// shares.
pub fn ttl_millis(ttl: Duration) -> Result<u64> {
    ttl.into_duration().map(crate::clock::millis_ceil)
}

/// Parses a duration string the way the Node.js library does: a bare number is milliseconds,
/// anything else goes to `duration_str` (`"10s"`, `"1h30m"`, `"2 days"`...).
pub fn parse_duration(input: &str) -> Result<Duration> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid_duration(input, "it is empty"));
    }
    let duration = if let Ok(millis) = trimmed.parse::<u64>() {
        Duration::from_millis(millis)
    } else if trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        // Digits only, yet too many for a u64: certainly longer than the maximum.
        Duration::MAX
    } else if trimmed.starts_with('-') {
        return Err(Error::invalid_duration(input, "it is negative"));
    } else {
        duration_str::parse(trimmed).map_err(|_| {
            Error::invalid_duration(
                input,
                "expected a number of milliseconds or a duration such as \"250ms\", \"10s\", \"5m\" or \"1h30m\"",
            )
        })?
    };
    positive(duration, || input.to_owned())
}

/// `duration` if it is above zero and at most [`MAX_DURATION`]; `input` (called only when
/// it is not) names it in the error. Inlined: every take checks its TTL, and the check is
/// two comparisons.
#[inline]
fn positive(duration: Duration, input: impl FnOnce() -> String) -> Result<Duration> {
    if !duration.is_zero() && duration <= MAX_DURATION {
        Ok(duration)
    } else {
        Err(out_of_range(duration, input()))
    }
}

/// The error for `duration`, zero or above [`MAX_DURATION`], read from `input`.
#[cold]
fn out_of_range(duration: Duration, input: String) -> Error {
    let reason = if duration.is_zero() {
        "it must be greater than zero"
    } else {
        "it must be at most 3650 days (verrou::MAX_DURATION); use Ttl::Never for a lock that never expires"
    };
    Error::invalid_duration(input, reason)
}

impl IntoDuration for Duration {
    #[inline]
    fn into_duration(self) -> Result<Duration> {
        positive(self, || format!("{self:?}"))
    }
}

impl IntoDuration for &str {
    fn into_duration(self) -> Result<Duration> {
        parse_duration(self)
    }
}

impl IntoDuration for String {
    fn into_duration(self) -> Result<Duration> {
        parse_duration(&self)
    }
}

impl IntoDuration for &String {
    fn into_duration(self) -> Result<Duration> {
        parse_duration(self)
    }
}

macro_rules! millis_into_duration {
    ($($int:ty),*) => {$(
        impl IntoDuration for $int {
            fn into_duration(self) -> Result<Duration> {
                let millis = u64::try_from(self)
                    .map_err(|_| Error::invalid_duration(self.to_string(), "it is negative"))?;
                positive(Duration::from_millis(millis), || self.to_string())
            }
        }
    )*};
}

millis_into_duration!(i32, i64, u32, u64, usize);

impl<T: IntoDuration> IntoTtl for T {
    fn into_ttl(self) -> Result<Ttl> {
        self.into_duration().map(Ttl::After)
    }
}

impl IntoTtl for Ttl {
    fn into_ttl(self) -> Result<Ttl> {
        match self {
            Ttl::After(duration) => duration.into_ttl(),
            Ttl::Never => Ok(Ttl::Never),
        }
    }
}

impl<T: IntoDuration> IntoTtl for Option<T> {
    fn into_ttl(self) -> Result<Ttl> {
        self.map_or(Ok(Ttl::Never), IntoTtl::into_ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn reads_the_reference_forms() {
        assert_eq!("10s".into_duration().unwrap(), ms(10_000));
        assert_eq!("5m".into_duration().unwrap(), ms(300_000));
        assert_eq!("1h30m".into_duration().unwrap(), ms(5_400_000));
        assert_eq!("250ms".into_duration().unwrap(), ms(250));
        assert_eq!(Duration::from_secs(2).into_duration().unwrap(), ms(2000));
        assert_eq!(30_000.into_duration().unwrap(), ms(30_000));
    }

    #[test]
    fn bare_number_strings_are_milliseconds() {
        assert_eq!("1500".into_duration().unwrap(), ms(1500));
        assert_eq!(" 1500 ".to_string().into_duration().unwrap(), ms(1500));
    }

    fn assert_invalid(result: Result<Duration>, input: &str) {
        match result {
            Err(Error::InvalidDuration { input: got, .. }) => assert_eq!(got, input),
            other => panic!("expected InvalidDuration for {input:?}, got {other:?}"),
        }
    }

    #[test]
    fn rejects_garbage_zero_and_negative_values() {
        assert_invalid("10 parsecs".into_duration(), "10 parsecs");
        assert_invalid("".into_duration(), "");
        assert_invalid("   ".into_duration(), "   ");
        assert_invalid("0".into_duration(), "0");
        assert_invalid("0s".into_duration(), "0s");
        assert_invalid("-5s".into_duration(), "-5s");
        assert_invalid("-5".into_duration(), "-5");
        assert_invalid(0.into_duration(), "0");
        assert_invalid((-100).into_duration(), "-100");
        assert_invalid(Duration::ZERO.into_duration(), "0ns");
    }

    #[test]
    fn durations_above_the_maximum_are_refused_in_every_form() {
        assert_eq!(MAX_DURATION.into_duration().unwrap(), MAX_DURATION);
        let just_over = MAX_DURATION + Duration::from_nanos(1);
        assert_invalid(just_over.into_duration(), &format!("{just_over:?}"));
        assert_invalid(
            Duration::MAX.into_duration(),
            &format!("{:?}", Duration::MAX),
        );
        assert_invalid(u64::MAX.into_duration(), &u64::MAX.to_string());
        assert_invalid(i64::MAX.into_duration(), &i64::MAX.to_string());
        assert_invalid("3651d".into_duration(), "3651d");
        assert_invalid(
            "99999999999999999999999".into_duration(),
            "99999999999999999999999",
        );
        assert!("3650d".into_duration().is_ok());
        let message = Duration::MAX.into_duration().unwrap_err().to_string();
        assert!(message.contains("3650 days"), "{message}");
    }

    #[test]
    fn ttl_millis_rounds_up_and_keeps_the_one_rule() {
        assert_eq!(ttl_millis(Duration::from_micros(1)).unwrap(), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1_500_001)).unwrap(), 1501);
        assert_eq!(ttl_millis(MAX_DURATION).unwrap(), 3650 * 86_400_000);
        assert!(ttl_millis(Duration::ZERO).is_err());
        assert!(ttl_millis(MAX_DURATION + Duration::from_nanos(1)).is_err());
    }

    #[test]
    fn error_message_names_the_input() {
        let message = "10 parsecs".into_duration().unwrap_err().to_string();
        assert!(message.contains("10 parsecs"), "{message}");
    }

    #[test]
    fn ttl_forms() {
        assert_eq!("10s".into_ttl().unwrap(), Ttl::After(ms(10_000)));
        assert_eq!(Ttl::Never.into_ttl().unwrap(), Ttl::Never);
        assert_eq!(None::<Duration>.into_ttl().unwrap(), Ttl::Never);
        assert_eq!(Some("1s").into_ttl().unwrap(), Ttl::After(ms(1000)));
        assert!(Ttl::After(Duration::ZERO).into_ttl().is_err());
        assert!("nope".into_ttl().is_err());
    }
}
