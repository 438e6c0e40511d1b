//! Durations and timestamps as docker prints them (go-units
//! `HumanDuration`, Go's `time.Time.String` and RFC 3339).

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_MINUTE: i128 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i128 = 60 * NANOS_PER_MINUTE;

/// A rough, human approximation of `duration`, exactly as go-units
/// `HumanDuration` words it: `Less than a second`, `About a minute`,
/// `3 hours`, `2 weeks`, `13 months`, `3 years`.
pub fn human_duration(duration: Duration) -> String {
    human_duration_nanos(i128::try_from(duration.as_nanos()).unwrap_or(i128::MAX))
}

/// Go's `time.Duration` is an `int64` of nanoseconds and `Time.Sub`
/// saturates, so a created time in the future gives a negative duration.
fn human_duration_nanos(nanos: i128) -> String {
    let nanos = nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    // Go truncates `d.Seconds()` and `d.Minutes()` towards zero, but rounds
    // hours with `int(d.Hours() + 0.5)` in floating point; mirror both.
    let seconds = nanos / NANOS_PER_SECOND;
    let minutes = nanos / NANOS_PER_MINUTE;
    let hours_float =
        (nanos / NANOS_PER_HOUR) as f64 + (nanos % NANOS_PER_HOUR) as f64 / NANOS_PER_HOUR as f64;
    let hours = (hours_float + 0.5) as i64;
    if seconds < 1 {
        "Less than a second".to_owned()
    } else if seconds == 1 {
        "1 second".to_owned()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_owned()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_owned()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours_float as i64 / 24 / 365)
    }
}

/// Seconds from the Unix epoch to Go's zero `time.Time` (0001-01-01 UTC).
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Go's zero `time.Time`, which the daemon reports for an image without a
/// `created` field (containerd image store).
pub fn go_zero_time() -> Timestamp {
    Timestamp::from_second(GO_ZERO_TIME_SECONDS).expect("year 1 is within jiff's range")
}

/// The `CREATED` column of `docker images`: `HumanDuration(now - created)`
/// followed by ` ago`.
///
/// Like docker, this is empty for Go's zero time (see [`go_zero_time`]); the
/// default images template turns the empty value into `N/A`. Any other
/// time, including the Unix epoch, is worded (`56 years ago`).
pub fn created_since(created: Timestamp, now: Timestamp) -> String {
    if created.as_second() == GO_ZERO_TIME_SECONDS && created.subsec_nanosecond() == 0 {
        return String::new();
    }
    format!("{} ago", human_duration_nanos(elapsed_nanos(created, now)))
}

/// The `CREATED` column of `docker history`: `N/A` for layers created on
/// or before 2000-01-01 (reproducible builds with `SOURCE_DATE_EPOCH=0`),
/// otherwise as [`created_since`].
pub fn history_created_since(created: Timestamp, now: Timestamp) -> String {
    // Docker compares whole Unix seconds against 2000-01-01T00:00:00Z.
    const HISTORY_EPOCH_SECONDS: i64 = 946_684_800;
    if created.as_second() <= HISTORY_EPOCH_SECONDS {
        return "N/A".to_owned();
    }
    format!("{} ago", human_duration_nanos(elapsed_nanos(created, now)))
}

fn elapsed_nanos(created: Timestamp, now: Timestamp) -> i128 {
    now.duration_since(created).as_nanos()
}

/// Go's `time.Time.String()` in `time_zone`: `2024-01-02 15:04:05 +0000 UTC`,
/// with fractional seconds only when non-zero (trailing zeros dropped).
///
/// This is the images `.CreatedAt` field; docker uses the local time zone.
pub fn go_time_string(time: Timestamp, time_zone: &TimeZone) -> String {
    let zoned = time_zone.to_datetime(time);
    let mut out = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        zoned.year(),
        zoned.month(),
        zoned.day(),
        zoned.hour(),
        zoned.minute(),
        zoned.second(),
    );
    let nanos = time.subsec_nanosecond();
    if nanos != 0 {
        let fraction = format!("{:09}", nanos.unsigned_abs());
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    let offset_seconds = time_zone.to_offset(time).seconds();
    let offset = format_offset(offset_seconds, "");
    // Go prints the zone's name, or the numeric offset again for a zone
    // without one (jiff makes up names such as `+01` for fixed offsets).
    let name = if time_zone.iana_name() == Some("UTC") || time_zone == &TimeZone::UTC {
        "UTC".to_owned()
    } else if time_zone.to_fixed_offset().is_ok() {
        offset.clone()
    } else {
        let info = time_zone.to_offset_info(time);
        match info.abbreviation() {
            "" => offset.clone(),
            abbreviation => abbreviation.to_owned(),
        }
    };
    format!("{out} {offset} {name}")
}

/// Go's `time.RFC3339` layout in `time_zone`: `2024-01-02T15:04:05Z` or
/// `…+01:00`. This is the history `.CreatedAt` field (and `-H=false`).
pub fn rfc3339(time: Timestamp, time_zone: &TimeZone) -> String {
    let zoned = time_zone.to_datetime(time);
    let offset_seconds = time_zone.to_offset(time).seconds();
    let offset = if offset_seconds == 0 {
        "Z".to_owned()
    } else {
        format_offset(offset_seconds, ":")
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{offset}",
        zoned.year(),
        zoned.month(),
        zoned.day(),
        zoned.hour(),
        zoned.minute(),
        zoned.second(),
    )
}

fn format_offset(seconds: i32, separator: &str) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let seconds = seconds.unsigned_abs();
    format!(
        "{sign}{:02}{separator}{:02}",
        seconds / 3600,
        seconds / 60 % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1;
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    const WEEK: u64 = 7 * DAY;
    const MONTH: u64 = 30 * DAY;
    const YEAR: u64 = 365 * DAY;

    /// go-units' own `TestHumanDuration` table.
    #[test]
    fn go_units_human_duration() {
        let cases: &[(Duration, &str)] = &[
            (Duration::from_millis(450), "Less than a second"),
            (Duration::from_secs(SECOND), "1 second"),
            (Duration::from_secs(45), "45 seconds"),
            (Duration::from_secs(46), "46 seconds"),
            (Duration::from_secs(59), "59 seconds"),
            (Duration::from_secs(60), "About a minute"),
            (Duration::from_secs(3 * MINUTE), "3 minutes"),
            (Duration::from_secs(35 * MINUTE), "35 minutes"),
            (Duration::from_secs(35 * MINUTE + 40), "35 minutes"),
            (Duration::from_secs(45 * MINUTE), "45 minutes"),
            (Duration::from_secs(45 * MINUTE + 40), "45 minutes"),
            (Duration::from_secs(46 * MINUTE), "46 minutes"),
            (Duration::from_secs(59 * MINUTE), "59 minutes"),
            (Duration::from_secs(HOUR), "About an hour"),
            (Duration::from_secs(HOUR + 29 * MINUTE), "About an hour"),
            (Duration::from_secs(HOUR + 31 * MINUTE), "2 hours"),
            (Duration::from_secs(HOUR + 59 * MINUTE), "2 hours"),
            (Duration::from_secs(3 * HOUR), "3 hours"),
            (Duration::from_secs(3 * HOUR + 29 * MINUTE), "3 hours"),
            (Duration::from_secs(3 * HOUR + 31 * MINUTE), "4 hours"),
            (Duration::from_secs(3 * HOUR + 59 * MINUTE), "4 hours"),
            (Duration::from_secs(3 * HOUR + 60 * MINUTE), "4 hours"),
            (Duration::from_secs(24 * HOUR), "24 hours"),
            (Duration::from_secs(DAY + 12 * HOUR), "36 hours"),
            (Duration::from_secs(2 * DAY), "2 days"),
            (Duration::from_secs(7 * DAY), "7 days"),
            (Duration::from_secs(13 * DAY + 5 * HOUR), "13 days"),
            (Duration::from_secs(2 * WEEK), "2 weeks"),
            (Duration::from_secs(2 * WEEK + 4 * DAY), "2 weeks"),
            (Duration::from_secs(3 * WEEK), "3 weeks"),
            (Duration::from_secs(4 * WEEK), "4 weeks"),
            (Duration::from_secs(4 * WEEK + 3 * DAY), "4 weeks"),
            (Duration::from_secs(MONTH), "4 weeks"),
            (Duration::from_secs(MONTH + 2 * WEEK), "6 weeks"),
            (Duration::from_secs(2 * MONTH), "2 months"),
            (Duration::from_secs(2 * MONTH + 2 * WEEK), "2 months"),
            (Duration::from_secs(3 * MONTH), "3 months"),
            (Duration::from_secs(3 * MONTH + WEEK), "3 months"),
            (Duration::from_secs(5 * MONTH + 2 * WEEK), "5 months"),
            (Duration::from_secs(13 * MONTH), "13 months"),
            (Duration::from_secs(23 * MONTH), "23 months"),
            (Duration::from_secs(24 * MONTH), "24 months"),
            (Duration::from_secs(24 * MONTH + 2 * WEEK), "2 years"),
            (Duration::from_secs(3 * YEAR + 2 * MONTH), "3 years"),
            // Edges around each threshold.
            (Duration::from_nanos(999_999_999), "Less than a second"),
            (Duration::from_millis(1999), "1 second"),
            (Duration::from_millis(119_999), "About a minute"),
            (Duration::from_secs(HOUR - 1), "59 minutes"),
            (Duration::from_secs(HOUR + 30 * MINUTE), "2 hours"),
            (Duration::from_secs(HOUR + 30 * MINUTE - 1), "About an hour"),
            (Duration::from_secs(47 * HOUR + 29 * MINUTE), "47 hours"),
            (Duration::from_secs(47 * HOUR + 30 * MINUTE), "2 days"),
            (Duration::from_secs(2 * WEEK - 31 * MINUTE), "13 days"),
            (Duration::from_secs(2 * WEEK - 30 * MINUTE), "2 weeks"),
            (Duration::from_secs(2 * MONTH - 31 * MINUTE), "8 weeks"),
            (Duration::from_secs(2 * YEAR - 31 * MINUTE), "24 months"),
            (Duration::from_secs(2 * YEAR), "2 years"),
            (Duration::from_secs(56 * YEAR), "56 years"),
        ];
        for (duration, expected) in cases {
            assert_eq!(human_duration(*duration), *expected, "{duration:?}");
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn created_since_words_the_age() {
        let now = at("2025-03-01T12:00:00Z");
        assert_eq!(
            created_since(at("2025-01-01T12:00:00Z"), now),
            "8 weeks ago"
        );
        assert_eq!(
            created_since(at("2025-03-01T11:59:58Z"), now),
            "2 seconds ago"
        );
        // A clock skewed into the future reads as brand new, as in Go.
        assert_eq!(
            created_since(at("2025-03-02T00:00:00Z"), now),
            "Less than a second ago"
        );
        // The Unix epoch is a real time for `docker images`.
        assert_eq!(created_since(Timestamp::UNIX_EPOCH, now), "55 years ago");
        assert_eq!(created_since(go_zero_time(), now), "");
    }

    #[test]
    fn history_hides_pre_2000_times() {
        let now = at("2025-03-01T12:00:00Z");
        assert_eq!(history_created_since(Timestamp::UNIX_EPOCH, now), "N/A");
        assert_eq!(
            history_created_since(at("2000-01-01T00:00:00Z"), now),
            "N/A"
        );
        assert_eq!(
            history_created_since(at("2000-01-01T00:00:01Z"), now),
            "25 years ago"
        );
        assert_eq!(
            history_created_since(at("2025-02-28T12:00:00Z"), now),
            "24 hours ago"
        );
    }

    #[test]
    fn go_time_formats() {
        let time = at("2024-01-02T15:04:05Z");
        assert_eq!(
            go_time_string(time, &TimeZone::UTC),
            "2024-01-02 15:04:05 +0000 UTC"
        );
        assert_eq!(rfc3339(time, &TimeZone::UTC), "2024-01-02T15:04:05Z");
        let fractional = at("2024-01-02T15:04:05.120Z");
        assert_eq!(
            go_time_string(fractional, &TimeZone::UTC),
            "2024-01-02 15:04:05.12 +0000 UTC"
        );
        assert_eq!(rfc3339(fractional, &TimeZone::UTC), "2024-01-02T15:04:05Z");
        let plus_one = TimeZone::fixed(jiff::tz::offset(1));
        assert_eq!(rfc3339(time, &plus_one), "2024-01-02T16:04:05+01:00");
        assert_eq!(
            go_time_string(time, &plus_one),
            "2024-01-02 16:04:05 +0100 +0100"
        );
    }
}
