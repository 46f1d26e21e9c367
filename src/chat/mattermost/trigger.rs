//! Verifying a click's `trigger_id`: Mattermost signs
//! `"<clientTriggerId>:<user_id>:<unix_ms>:"` with its ECDSA P-256 key and publishes the public
//! half as `AsymmetricSigningPublicKey` in the unauthenticated client config.
//!
//! ```text
//! trigger_id = base64( "<client id>:<user id>:<unix ms>:" + base64( DER signature ) )
//! ```

use super::api::{Api, ApiError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use std::sync::Mutex;
use std::time::Duration;

/// How long after its timestamp a trigger is accepted, exactly: Mattermost's default
/// `OutgoingIntegrationRequestsTimeout`, after which the server no longer waits for the answer.
/// No allowance is added for clock skew in this direction.
pub const TRIGGER_LIFETIME_MS: i64 = 30_000;
/// How far ahead of the gateway's clock a trigger's timestamp may be: the server's clock may
/// run ahead by this much (keep both on NTP). A trigger further ahead is refused.
pub const FUTURE_SKEW_MS: i64 = 2_000;
/// The key is fetched again at most this often after a failed verification.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// Why a trigger_id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("the trigger_id is malformed")]
    Malformed,
    #[error("the trigger_id signature does not verify")]
    BadSignature,
    #[error("the trigger_id was issued for another user")]
    WrongUser,
    #[error("the trigger_id is too old")]
    Stale,
    #[error("the trigger_id is from the future")]
    Future,
}

/// Why the server's signing key cannot be had: the click is then vouched for by its context
/// token alone, and audited as weaker evidence with this reason.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A fetch failed moments ago; not asked again yet.
    #[error("the server's signing key is unavailable")]
    RecentlyUnavailable,
    #[error("the client config: {0}")]
    ClientConfig(#[source] ApiError),
    #[error("the server publishes no AsymmetricSigningPublicKey")]
    NotPublished,
    #[error("AsymmetricSigningPublicKey is not base64: {0}")]
    NotBase64(#[source] base64::DecodeError),
    #[error("AsymmetricSigningPublicKey is not a P-256 key: {0}")]
    NotP256(#[source] p256::pkcs8::spki::Error),
}

/// What the click's trigger_id proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// Signed by the server for this user just now.
    Verified { at_ms: i64 },
    /// The server's key could not be had (older server, config unreachable): only the context
    /// token vouches for the click; the audit says so.
    Unverifiable { why: String },
}

/// The parts of a trigger_id.
struct Trigger {
    user_id: String,
    at_ms: i64,
    signed: String,
    signature: Vec<u8>,
}

fn parse(trigger_id: &str) -> Result<Trigger, TriggerError> {
    let raw = B64
        .decode(trigger_id)
        .map_err(|_| TriggerError::Malformed)?;
    let raw = String::from_utf8(raw).map_err(|_| TriggerError::Malformed)?;
    let mut parts = raw.splitn(4, ':');
    let (Some(client), Some(user), Some(ms), Some(sig)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TriggerError::Malformed);
    };
    Ok(Trigger {
        user_id: user.to_owned(),
        at_ms: ms.parse().map_err(|_| TriggerError::Malformed)?,
        signed: format!("{client}:{user}:{ms}:"),
        signature: B64.decode(sig).map_err(|_| TriggerError::Malformed)?,
    })
}

/// A trigger is good from [`FUTURE_SKEW_MS`] ahead of `now_ms` until exactly
/// [`TRIGGER_LIFETIME_MS`] after its timestamp.
fn check_age(at_ms: i64, now_ms: i64) -> Result<(), TriggerError> {
    if now_ms - at_ms > TRIGGER_LIFETIME_MS {
        return Err(TriggerError::Stale);
    }
    if at_ms - now_ms > FUTURE_SKEW_MS {
        return Err(TriggerError::Future);
    }
    Ok(())
}

fn signature_ok(key: &VerifyingKey, trigger: &Trigger) -> bool {
    DerSignature::from_bytes(&trigger.signature)
        .is_ok_and(|sig| key.verify(trigger.signed.as_bytes(), &sig).is_ok())
}

/// The server's signing key, fetched on first use and again when a signature fails.
pub struct TriggerKeys {
    cached: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    key: Option<VerifyingKey>,
    fetched_at: Option<tokio::time::Instant>,
}

impl TriggerKeys {
    pub fn new() -> Self {
        TriggerKeys {
            cached: Mutex::new(Cached::default()),
        }
    }

    /// Checks `trigger_id` for a click by `user_id` at `now_ms`.
    pub async fn verify(
        &self,
        api: &Api,
        trigger_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Proof, TriggerError> {
        let key = match self.key(api, false).await {
            Ok(key) => key,
            Err(why) => {
                return Ok(Proof::Unverifiable {
                    why: why.to_string(),
                });
            }
        };
        let trigger = parse(trigger_id)?;
        if !signature_ok(&key, &trigger) {
            // The server may have a new key: fetch it once more (rate-limited) and retry.
            match self.key(api, true).await {
                Ok(fresh) if fresh != key && signature_ok(&fresh, &trigger) => {}
                _ => return Err(TriggerError::BadSignature),
            }
        }
        if trigger.user_id != user_id {
            return Err(TriggerError::WrongUser);
        }
        check_age(trigger.at_ms, now_ms)?;
        Ok(Proof::Verified {
            at_ms: trigger.at_ms,
        })
    }

    /// The cached key, or one fetched now (`refresh`: fetch even if cached, at most every 10 s).
    async fn key(&self, api: &Api, refresh: bool) -> Result<VerifyingKey, KeyError> {
        {
            let cached = self.cached.lock().expect("key cache lock");
            let recent = cached
                .fetched_at
                .is_some_and(|at| at.elapsed() < REFRESH_AT_MOST_EVERY);
            match (&cached.key, refresh) {
                (Some(key), false) => return Ok(*key),
                (Some(key), true) if recent => return Ok(*key),
                (None, _) if recent => return Err(KeyError::RecentlyUnavailable),
                _ => {}
            }
        }
        let fetched = fetch_key(api).await;
        let mut cached = self.cached.lock().expect("key cache lock");
        cached.fetched_at = Some(tokio::time::Instant::now());
        match fetched {
            Ok(key) => {
                cached.key = Some(key);
                Ok(key)
            }
            Err(why) => cached.key.ok_or(why),
        }
    }
}

async fn fetch_key(api: &Api) -> Result<VerifyingKey, KeyError> {
    let config = api.client_config().await.map_err(KeyError::ClientConfig)?;
    let Some(b64) = config["AsymmetricSigningPublicKey"]
        .as_str()
        .filter(|k| !k.is_empty())
    else {
        return Err(KeyError::NotPublished);
    };
    let der = B64.decode(b64).map_err(KeyError::NotBase64)?;
    VerifyingKey::from_public_key_der(&der).map_err(KeyError::NotP256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_triggers_are_refused() {
        for bad in [
            "",
            "!!!",
            &B64.encode("only:three:parts"),
            &B64.encode("a:b:notms:c2ln"),
        ] {
            assert_eq!(parse(bad).err(), Some(TriggerError::Malformed), "{bad}");
        }
    }

    #[test]
    fn a_trigger_is_good_for_exactly_30_seconds() {
        let now = 1_795_549_543_394;
        assert_eq!(check_age(now - 30_000, now), Ok(()));
        assert_eq!(check_age(now - 30_001, now), Err(TriggerError::Stale));
        assert_eq!(check_age(now + 2_000, now), Ok(()));
        assert_eq!(check_age(now + 2_001, now), Err(TriggerError::Future));
    }

    #[test]
    fn a_trigger_splits_into_its_signed_prefix_and_signature() {
        let raw = format!("cid:user1:1795549543394:{}", B64.encode([1u8, 2, 3]));
        let t = parse(&B64.encode(raw)).unwrap();
        assert_eq!(t.user_id, "user1");
        assert_eq!(t.at_ms, 1_795_549_543_394);
        assert_eq!(t.signed, "cid:user1:1795549543394:");
        assert_eq!(t.signature, vec![1, 2, 3]);
    }
}
