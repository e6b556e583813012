//! Time: RFC 3339 formatting and parsing of UTC times (without a date
//! library), protobuf timestamp conversions, and saturating deadlines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats `t` as `2024-11-13T14:04:28.376Z` (millisecond precision).
pub fn format_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    let (y, mo, da) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Formats `t` in RFC 3339 as the API's JSON form of a job writes its
/// times: UTC as `+00:00`, and 0, 3, 6 or 9 fraction digits, the fewest
/// that hold the time exactly (`2024-11-13T14:04:28+00:00`,
/// `2024-11-13T14:04:28.376+00:00`). A year past 9999 (or before year 0)
/// is written with its sign, as ISO 8601 asks.
pub fn format_rfc3339(t: SystemTime) -> String {
    // Whole seconds since the epoch (floored) and the nanoseconds past them.
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, 1_000_000_000 - n),
            }
        }
    };
    let (y, mo, da) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else {
        format!("{y:+05}")
    };
    let frac = if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    };
    format!(
        "{year}-{mo:02}-{da:02}T{:02}:{:02}:{:02}{frac}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Formats `t` compactly for names: `2024-11-13T14:04:28.376Z` becomes
/// `20241113140428376`.
pub fn format_compact(t: SystemTime) -> String {
    format_millis(t)
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

/// Parses an RFC 3339 UTC or offset time (`2024-11-13T14:04:28Z`,
/// `2024-11-13T14:04:28.5+01:00`). Returns `None` when malformed.
pub fn parse(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if !s.is_ascii()
        || b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = frac[..digits].parse::<u32>().ok()? * 10u32.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let oh = rest.get(1..3)?.parse::<i64>().ok()?;
            let om = rest.get(4..6)?.parse::<i64>().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + se) - offset;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Converts a protobuf timestamp; `None` if it is out of range.
pub(crate) fn to_system_time(ts: &pbjson_types::Timestamp) -> Option<SystemTime> {
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    if ts.seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(u64::try_from(ts.seconds).ok()?, nanos))
    } else {
        let back = Duration::new(ts.seconds.unsigned_abs(), 0);
        UNIX_EPOCH
            .checked_sub(back)?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

/// Converts a `SystemTime` to a protobuf timestamp.
#[cfg_attr(not(feature = "emulator"), allow(dead_code))]
pub(crate) fn to_timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => pbjson_types::Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        },
        Err(e) => {
            let d = e.duration();
            let mut seconds = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let mut nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
            if nanos > 0 {
                seconds -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            pbjson_types::Timestamp { seconds, nanos }
        }
    }
}

/// The instant `d` from now on Tokio's clock, saturating thirty years out
/// instead of overflowing on a huge `d`.
pub(crate) fn after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_both_ways() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_000_000);
        assert_eq!(to_system_time(&to_timestamp(t)), Some(t));
        let before = UNIX_EPOCH - Duration::new(5, 250_000_000);
        let ts = to_timestamp(before);
        assert_eq!((ts.seconds, ts.nanos), (-6, 750_000_000));
        assert_eq!(to_system_time(&ts), Some(before));
        let bad = pbjson_types::Timestamp {
            seconds: 1,
            nanos: -5,
        };
        assert_eq!(to_system_time(&bad), None);
    }

    #[test]
    fn formats_and_parses() {
        let t = UNIX_EPOCH + Duration::from_millis(1_731_506_668_376);
        assert_eq!(format_millis(t), "2024-11-13T14:04:28.376Z");
        assert_eq!(format_compact(t), "20241113140428376");
        assert_eq!(parse("2024-11-13T14:04:28.376Z"), Some(t));
        assert_eq!(parse("2024-11-13T15:04:28.376+01:00"), Some(t));
        assert_eq!(
            parse("2000-02-29T00:00:00Z").map(format_millis).as_deref(),
            Some("2000-02-29T00:00:00.000Z")
        );
        assert_eq!(format_rfc3339(t), "2024-11-13T14:04:28.376+00:00");
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20+00:00"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::new(0, 1_500)),
            "1970-01-01T00:00:00.000001500+00:00"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::new(0, 20_000)),
            "1970-01-01T00:00:00.000020+00:00"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::new(5, 250_000_000)),
            "1969-12-31T23:59:54.750+00:00"
        );
        assert_eq!(parse(&format_rfc3339(t)), Some(t));
        for bad in [
            "",
            "2024-01-01T00:00:00\u{e9}1234",
            "2024-13-01T00:00:00Z",
            "2024-11-13 14:04",
            "2024-11-13T14:04:28",
            "2024-11-13T14:04:28.Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod prop_tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text: no panic.
        #[test]
        fn parsing_never_panics(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{0,20}(Z|[+-][0-9]{2}:[0-9]{2})?|.{0,40}") {
            let _ = parse(&s);
        }

        /// Formatted times read back to the millisecond.
        #[test]
        fn formatted_times_round_trip(ms in 0u64..253_402_300_799_000) {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            prop_assert_eq!(parse(&format_millis(t)), Some(t));
        }

        /// RFC 3339 times read back to the nanosecond, and are what the
        /// JSON form of a timestamp holds.
        #[test]
        fn rfc3339_round_trips(secs in -62_135_596_800i64..253_402_300_800, nanos in 0u32..1_000_000_000) {
            let ts = pbjson_types::Timestamp { seconds: secs, nanos: nanos as i32 };
            let Some(t) = to_system_time(&ts) else {
                return Err(TestCaseError::fail("a timestamp in range"));
            };
            let text = format_rfc3339(t);
            prop_assert_eq!(serde_json::to_value(ts).ok(), Some(serde_json::Value::String(text.clone())));
            if secs >= 0 {
                prop_assert_eq!(parse(&text), Some(t));
            }
        }
    }
}
