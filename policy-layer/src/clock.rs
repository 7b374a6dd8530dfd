//! Time as policies see it: `context.system.now`, a Cedar `datetime` in UTC with millisecond
//! precision (`docs/cedar-model.md`).
//!
//! The layer reads a [`Clock`] each time it decides a call or filters a list: the system clock
//! by default ([`SystemClock`]), or one the application injects ([`crate::PolicyLayer::clock`]),
//! for example a [`ManualClock`] that tests set to a business hour and then to the night, so
//! time-based policies are tested without waiting for the time to come.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// An instant as Cedar's `datetime` holds it: milliseconds since the Unix epoch, UTC (leap
/// seconds aside, as Cedar counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A text that is not an RFC 3339 date and time (`2025-01-15T09:30:00Z`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not an RFC 3339 date and time (for example 2025-01-15T09:30:00Z): {reason}")]
pub struct TimestampError {
    text: String,
    reason: String,
}

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch (negative: before it).
    #[must_use]
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// The instant of a [`SystemTime`], truncated to the millisecond.
    #[must_use]
    pub fn from_system_time(time: SystemTime) -> Self {
        let millis = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        };
        Self(millis)
    }

    /// Reads an RFC 3339 date and time with an offset (`2025-01-15T09:30:00Z`,
    /// `2025-01-15T10:30:00.250+01:00`); fractions below the millisecond are dropped.
    ///
    /// # Errors
    /// [`TimestampError`] naming the text.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        DateTime::parse_from_rfc3339(text.trim())
            .map(|time| Self(time.timestamp_millis()))
            .map_err(|e| TimestampError {
                text: text.to_owned(),
                reason: e.to_string(),
            })
    }

    /// This instant plus `duration` (saturating).
    #[must_use]
    pub fn plus(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds: `2025-01-15T09:30:00.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(time) => f.write_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "{}ms since 1970-01-01T00:00:00Z", self.0),
        }
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(text: &str) -> Result<Self, TimestampError> {
        Self::parse_rfc3339(text)
    }
}

/// Where the layer reads the time from.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// A clock that says what it was last set to, for tests; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `now`.
    #[must_use]
    pub fn new(now: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(now.unix_millis())))
    }

    /// Sets the time.
    pub fn set(&self, now: Timestamp) {
        self.0.store(now.unix_millis(), Ordering::Relaxed);
    }

    /// Moves the time forward by `duration`.
    pub fn advance(&self, duration: Duration) {
        self.set(self.now().plus(duration));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rfc3339_with_offsets_and_writes_utc_milliseconds() {
        let t = Timestamp::parse_rfc3339("2025-01-15T10:30:00.250+01:00").expect("valid");
        assert_eq!(t.to_string(), "2025-01-15T09:30:00.250Z");
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T00:00:01Z").expect("valid"),
            Timestamp::from_unix_millis(1000)
        );
        let err = Timestamp::parse_rfc3339("2025-01-15").expect_err("no time");
        assert!(
            err.to_string()
                .starts_with("\"2025-01-15\" is not an RFC 3339"),
            "{err}"
        );
    }

    #[test]
    fn system_time_before_the_epoch_is_negative() {
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(Timestamp::from_system_time(before).unix_millis(), -1500);
    }

    #[test]
    fn a_manual_clock_says_what_it_was_set_to_in_every_clone() {
        let clock = ManualClock::new(Timestamp::from_unix_millis(0));
        let other = clock.clone();
        clock.advance(Duration::from_secs(9 * 3600));
        assert_eq!(other.now().to_string(), "1970-01-01T09:00:00.000Z");
    }
}
