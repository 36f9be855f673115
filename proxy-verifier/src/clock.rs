//! Calendar time from the injected [`Clock`]: the wall-clock reads of the audit log and the hold
//! queue go through it, so tests can fix the time they see.

use aip_aat::clock::Clock;
use time::OffsetDateTime;

/// The time `clock` reads now, to the millisecond; a reading `time` cannot represent (beyond
/// year ±9999) gives the Unix epoch.
pub(crate) fn now_utc(clock: &dyn Clock) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(clock.now_millis()) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
