//! The hash chain: canonical bytes of an event, the chained hash, and the event timestamps.
//!
//! `hash = SHA-256(prev_hash || canonical)`, where `prev_hash` is the previous event's hash as
//! 64 lowercase hex ASCII characters (64 `0`s before the first event) and `canonical` is the
//! canonical JSON of `{"seq", "id", "call_id", "kind", "at", "actor", "payload"}`: RFC 8785
//! (JCS) with exact 64-bit integers ([`crate::canonical`]). While a payload's integers lie
//! within ±2^53 that is plain JCS, and anyone can recompute it with a JCS library and
//! `sha256sum`; a larger integer is written with all its digits, where JCS would round it.
//!
//! The payload is stored already canonical, so the canonical bytes are put together from the
//! stored text without parsing it again; [`tests::fast_path_equals_canonical_json`] checks that
//! this equals the canonical JSON of the whole object (and JCS, within ±2^53).

use crate::canonical::write_string;
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hashed fields of one event, as stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub call_id: Option<&'a str>,
    pub kind: &'a str,
    pub at: &'a str,
    pub actor: &'a str,
    /// The payload's canonical JSON text.
    pub payload: &'a str,
}

/// Appends the JCS canonical JSON of `fields` to `out` (keys in JCS order).
pub(crate) fn write_canonical(out: &mut Vec<u8>, f: &Fields<'_>) {
    out.extend_from_slice(b"{\"actor\":");
    write_string(out, f.actor);
    out.extend_from_slice(b",\"at\":");
    write_string(out, f.at);
    out.extend_from_slice(b",\"call_id\":");
    match f.call_id {
        Some(call_id) => write_string(out, call_id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"id\":");
    write_string(out, f.id);
    out.extend_from_slice(b",\"kind\":");
    write_string(out, f.kind);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(f.payload.as_bytes());
    out.extend_from_slice(b",\"seq\":");
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}", f.seq);
    out.push(b'}');
}

/// `SHA-256(prev_hash || canonical)` as 64 lowercase hex characters.
pub(crate) fn chain_hash(prev_hash: &str, canonical: &[u8]) -> [u8; 64] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical);
    let digest: [u8; 32] = hasher.finalize().into();
    let mut hex_out = [0u8; 64];
    hex::encode_to_slice(digest, &mut hex_out).expect("64 bytes hold 32 bytes as hex");
    hex_out
}

/// The payload's canonical JSON text (RFC 8785 with exact 64-bit integers).
pub(crate) fn canonical_payload(payload: &serde_json::Value) -> String {
    crate::canonical::to_string(payload)
}

/// Now, as stored in `at`: RFC 3339 UTC with six fractional digits.
pub(crate) fn now_timestamp() -> String {
    format_timestamp(crate::timestamp::now_micros())
}

/// Microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub(crate) fn format_timestamp(micros: i64) -> String {
    crate::timestamp::rfc3339_micros(micros)
}

/// Parses an RFC 3339 timestamp (`2026-01-02T03:04:05Z`, with optional fraction and a `Z` or
/// `±HH:MM` offset), a bare date (`2026-01-02`, midnight UTC), or a time ago (`24h`, `7d`,
/// `1h30m`) into the stored form.
pub(crate) fn parse_timestamp(s: &str) -> Result<String, BadTimestamp> {
    let ago = || {
        let ago = crate::policy::parse_duration(s)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        Some(format_timestamp(now.checked_sub(ago)?.as_micros() as i64))
    };
    crate::timestamp::parse_micros(s)
        .map(format_timestamp)
        .or_else(ago)
        .ok_or_else(|| BadTimestamp(s.to_owned()))
}

/// A text that [`parse_timestamp`] does not read as a moment.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not an RFC 3339 timestamp, a date or a time ago (e.g. \
     2026-01-02T03:04:05Z, 2026-01-02, 24h, 7d)"
)]
pub(crate) struct BadTimestamp(String);

/// Microseconds since the Unix epoch of an RFC 3339 timestamp.
pub(crate) fn timestamp_micros(s: &str) -> Option<i64> {
    crate::timestamp::parse_micros(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fast_path_equals_canonical_json() {
        let within_2_53 = [
            json!({"b": 1, "a": [1.5, 1e21, -0.0, "x\u{1}\u{7f}\u{2028}é\"\\"], "agent": "ci"}),
            json!({}),
            json!({"z": {"y": null, "x": true}, "€": 3, "\r": "\t\u{8}\u{c}"}),
        ];
        let beyond = json!({"amount": 9_007_199_254_740_993_u64, "min": i64::MIN, "max": u64::MAX});
        let payloads: Vec<_> = within_2_53.iter().chain([&beyond]).collect();
        for (n, payload) in payloads.iter().enumerate() {
            for call_id in [None, Some("0190a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b")] {
                let canonical_payload = canonical_payload(payload);
                let actor = "al\"ice\n\u{1f}\u{7f}😀";
                let fields = Fields {
                    seq: 42 + n as i64,
                    id: "0190a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5c",
                    call_id,
                    kind: "call.received",
                    at: "2026-01-02T03:04:05.123456Z",
                    actor,
                    payload: &canonical_payload,
                };
                let mut fast = Vec::new();
                write_canonical(&mut fast, &fields);
                let whole = json!({
                    "seq": fields.seq, "id": fields.id, "call_id": call_id, "kind": fields.kind,
                    "at": fields.at, "actor": actor, "payload": payload,
                });
                let fast = String::from_utf8(fast).unwrap();
                assert_eq!(fast, crate::canonical::to_string(&whole));
                if n < within_2_53.len() {
                    assert_eq!(fast, serde_json_canonicalizer::to_string(&whole).unwrap());
                } else {
                    assert!(fast.contains(r#""amount":9007199254740993,"#), "{fast}");
                }
            }
        }
    }

    #[test]
    fn the_chain_hash_is_sha256_of_prev_hex_and_canonical_bytes() {
        let h = chain_hash(GENESIS_HASH, b"{}");
        let expected = hex::encode(Sha256::digest(format!("{GENESIS_HASH}{{}}").as_bytes()));
        assert_eq!(std::str::from_utf8(&h).unwrap(), expected);
    }

    #[test]
    fn timestamps_format_and_parse() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_timestamp(1_767_323_045_123_456),
            "2026-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            parse_timestamp("2026-01-02T03:04:05.123456Z").unwrap(),
            "2026-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            parse_timestamp("2026-01-02T05:04:05.1+02:00").unwrap(),
            "2026-01-02T03:04:05.100000Z"
        );
        assert_eq!(
            parse_timestamp("2026-01-02").unwrap(),
            "2026-01-02T00:00:00.000000Z"
        );
        assert_eq!(
            parse_timestamp("2024-02-29T23:59:59-00:30").unwrap(),
            "2024-03-01T00:29:59.000000Z"
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-01-02T03:04",
            "2026-01-02T03:04:05",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
        let now = now_timestamp();
        assert_eq!(parse_timestamp(&now).unwrap(), now);
        // A time ago: 24h before now, to the second.
        let day_ago = parse_timestamp("24h").unwrap();
        let expected = timestamp_micros(&now).unwrap() - 86_400_000_000;
        let got = timestamp_micros(&day_ago).unwrap();
        assert!((got - expected).abs() < 5_000_000, "{day_ago}");
        assert!(parse_timestamp("7d").unwrap() < day_ago);
        assert!(parse_timestamp("0h").is_err() && parse_timestamp("5y").is_err());
    }
}
