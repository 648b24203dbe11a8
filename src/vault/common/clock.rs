//! The time the domain sees. Timestamps (audit events, consents, receipts,
//! field updates) and the date values are checked against come from one
//! `Clock`, so tests move time on instead of sleeping until it passes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Milliseconds since the Unix epoch, as the vault records them.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;

    /// Today's date in UTC (a date of birth may not be after it).
    fn today(&self) -> time::Date {
        let nanos = i128::from(self.now_ms()) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .map_or(time::Date::MIN, time::OffsetDateTime::date)
    }
}

/// The system's clock: what a serving vault uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = time::OffsetDateTime::now_utc();
        (now.unix_timestamp_nanos() / 1_000_000) as i64
    }
}

/// A clock that stands still until told to move: for tests.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock that reads the system's time now, and then stays there.
    pub fn starting_now() -> ManualClock {
        ManualClock::at(SystemClock.now_ms())
    }

    /// A clock that stands at `now_ms`.
    pub fn at(now_ms: i64) -> ManualClock {
        ManualClock {
            now_ms: AtomicI64::new(now_ms),
        }
    }

    pub fn advance(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::at(0);
        assert_eq!(clock.now_ms(), 0);
        assert_eq!(clock.today(), time::macros::date!(1970 - 01 - 01));
        clock.advance(Duration::from_secs(86_400));
        assert_eq!(clock.now_ms(), 86_400_000);
        assert_eq!(clock.today(), time::macros::date!(1970 - 01 - 02));
    }

    #[test]
    fn the_system_clock_reads_the_time_in_milliseconds() {
        let before = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        let now = SystemClock.now_ms();
        assert!(now >= before && now < before + 60_000, "{now} vs {before}");
    }
}
