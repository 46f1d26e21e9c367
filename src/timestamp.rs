//! Unix time as text, in one place, on the `time` crate: the audit log's stored form (RFC 3339,
//! UTC, microseconds: part of every event's hash, so its shape never changes), what people read
//! on cards, and the parsing of what they type.

use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    now_micros() / 1000
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The audit log's form: `2026-01-02T03:04:05.123456Z` (always six fraction digits, `Z`).
pub fn rfc3339_micros(micros: i64) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    utc(i128::from(micros) * 1000)
        .format(format)
        .unwrap_or_else(|_| "0000-00-00T00:00:00.000000Z".into())
}

/// Unix milliseconds in the audit log's form.
pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339_micros(ms.saturating_mul(1000))
}

/// Unix milliseconds as people read them on a card: `2026-11-24 23:25:32 UTC`.
pub fn utc_display(ms: i64) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    utc(i128::from(ms) * 1_000_000)
        .format(format)
        .unwrap_or_default()
}

/// Microseconds since the Unix epoch of an RFC 3339 timestamp (`Z` or an offset, any fraction,
/// which is cut to microseconds) or of a bare date (midnight UTC).
pub fn parse_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    let at = match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(at) => at,
        Err(_) => {
            let date = Date::parse(text, format_description!("[year]-[month]-[day]")).ok()?;
            PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc()
        }
    };
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1000)).ok()
}

fn utc(nanos: i128) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_has_six_fraction_digits_and_z() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_767_323_045_123_456),
            "2026-01-02T03:04:05.123456Z"
        );
        assert_eq!(rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
        let now = now_micros();
        assert_eq!(parse_micros(&rfc3339_micros(now)), Some(now));
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc_display(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_display(1_795_549_332_758), "2026-11-24 19:42:12 UTC");
        assert_eq!(utc_display(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn offsets_fractions_and_dates_parse() {
        let at = |s| parse_micros(s).map(rfc3339_micros);
        assert_eq!(
            at("2026-01-02T05:04:05.1+02:00").as_deref(),
            Some("2026-01-02T03:04:05.100000Z")
        );
        assert_eq!(
            at("2024-02-29T23:59:59-00:30").as_deref(),
            Some("2024-03-01T00:29:59.000000Z")
        );
        assert_eq!(
            at("2026-01-02").as_deref(),
            Some("2026-01-02T00:00:00.000000Z")
        );
        for bad in ["", "2026-13-01", "2026-01-02T03:04", "2026-01-02T03:04:05"] {
            assert_eq!(parse_micros(bad), None, "{bad}");
        }
    }
}
