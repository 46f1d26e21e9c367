//! Slack's v0 request signature: `v0=hex(HMAC-SHA256(signing_secret, "v0:" + timestamp + ":"
//! + raw body))`, accepted only within five minutes of the request's timestamp.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Requests older (or newer) than this are refused, so a captured request cannot be replayed.
pub const WINDOW_SECS: i64 = 300;

/// Why a callback was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature")]
    Missing,
    #[error("X-Slack-Request-Timestamp is not a number")]
    BadTimestamp,
    #[error("the request is {0} s away from now (more than {WINDOW_SECS} s)")]
    Stale(i64),
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks a callback's headers against its raw body (before any decoding).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let skew = (now_secs - at).abs();
    if skew > WINDOW_SECS {
        return Err(SignatureError::Stale(skew));
    }
    let hex_sig = signature
        .strip_prefix("v0=")
        .ok_or(SignatureError::Mismatch)?;
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::Mismatch)?;
    let mut mac = mac(secret, timestamp);
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The signature Slack would send for `body` at `timestamp` (for tests and tools).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = mac(secret, timestamp);
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac(secret: &[u8], timestamp: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example from Slack's "Verifying requests from Slack" documentation.
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const NOW: i64 = 1_531_420_618 + 60;

    fn check(timestamp: &str, signature: &str, body: &str, now: i64) -> Result<(), SignatureError> {
        verify(
            SECRET,
            Some(timestamp),
            Some(signature),
            body.as_bytes(),
            now,
        )
    }

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(sign(SECRET, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        assert_eq!(check(TIMESTAMP, SIGNATURE, BODY, NOW), Ok(()));
    }

    #[test]
    fn a_stale_request_is_refused_even_when_signed() {
        let late = 1_531_420_618 + WINDOW_SECS + 1;
        assert_eq!(
            check(TIMESTAMP, SIGNATURE, BODY, late),
            Err(SignatureError::Stale(301))
        );
        let early = 1_531_420_618 - WINDOW_SECS - 1;
        assert!(check(TIMESTAMP, SIGNATURE, BODY, early).is_err());
        assert_eq!(
            check(TIMESTAMP, SIGNATURE, BODY, 1_531_420_618 + WINDOW_SECS),
            Ok(())
        );
    }

    #[test]
    fn an_altered_body_or_timestamp_is_refused() {
        let altered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            check(TIMESTAMP, SIGNATURE, &altered, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check("1531420619", SIGNATURE, BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        let wrong_secret = verify(
            b"other",
            Some(TIMESTAMP),
            Some(SIGNATURE),
            BODY.as_bytes(),
            NOW,
        );
        assert_eq!(wrong_secret, Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(
            verify(SECRET, None, Some(SIGNATURE), BODY.as_bytes(), NOW),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            check("soon", SIGNATURE, BODY, NOW),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            check(TIMESTAMP, "v1=abc", BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(TIMESTAMP, "v0=zz", BODY, NOW),
            Err(SignatureError::Mismatch)
        );
    }
}
