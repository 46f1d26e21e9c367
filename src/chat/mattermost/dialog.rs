//! The deny-reason dialog. A submission carries no trigger_id and no secret context, and its
//! `url` and `state` pass through the client, so `state` is bound by an HMAC to the approval,
//! the user the dialog was opened for, its expiry and the click that opened it (its button's
//! token and its signed `trigger_id`, kept as evidence):
//!
//! ```text
//! state = <approval id>.<user id>.<base64url approver id>.<expiry ms>.<click token sha256>.<trigger id>.<base64url HMAC-SHA256>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::Digest as _;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long a user has to give the reason.
pub const DIALOG_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// Longest reason accepted (Mattermost's textarea allows 3000).
pub const MAX_REASON_CHARS: usize = 1_000;

/// What a valid `state` binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogState {
    pub approval_id: String,
    pub user_id: String,
    /// The approver the user maps to (when the dialog was opened).
    pub approver: String,
    pub expires_at: i64,
    pub token_sha256: String,
    /// The click's `trigger_id` (standard base64: never a `.`).
    pub trigger_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the dialog state is malformed")]
    Malformed,
    #[error("the dialog state was not issued by Countersign")]
    BadMac,
    #[error("the dialog was opened for another user")]
    WrongUser,
    #[error("the dialog has expired")]
    Expired,
}

/// Signs and checks dialog states with a key derived from the bot token (shared by replicas).
pub struct StateKey([u8; 32]);

impl StateKey {
    pub fn from_bot_token(token: &str) -> Self {
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"countersign mattermost dialog state\0");
        hasher.update(token.as_bytes());
        StateKey(hasher.finalize().into())
    }

    fn mac(&self, body: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        mac
    }

    pub fn sign(&self, state: &DialogState) -> String {
        let body = format!(
            "{}.{}.{}.{}.{}.{}",
            state.approval_id,
            state.user_id,
            URL_SAFE_NO_PAD.encode(&state.approver),
            state.expires_at,
            state.token_sha256,
            state.trigger_id
        );
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&body).finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The state, if it is authentic, for `user_id` and not expired at `now_ms`.
    pub fn verify(
        &self,
        state: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<DialogState, StateError> {
        let (body, tag) = state.rsplit_once('.').ok_or(StateError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| StateError::Malformed)?;
        self.mac(body)
            .verify_slice(&tag)
            .map_err(|_| StateError::BadMac)?;
        let parts: Vec<&str> = body.split('.').collect();
        let [
            approval_id,
            user,
            approver,
            expires_at,
            token_sha256,
            trigger_id,
        ] = parts[..]
        else {
            return Err(StateError::Malformed);
        };
        let approver = URL_SAFE_NO_PAD
            .decode(approver)
            .ok()
            .and_then(|a| String::from_utf8(a).ok())
            .ok_or(StateError::Malformed)?;
        let expires_at = expires_at.parse().map_err(|_| StateError::Malformed)?;
        if user != user_id {
            return Err(StateError::WrongUser);
        }
        if expires_at <= now_ms {
            return Err(StateError::Expired);
        }
        Ok(DialogState {
            approval_id: approval_id.to_owned(),
            user_id: user.to_owned(),
            approver,
            expires_at,
            token_sha256: token_sha256.to_owned(),
            trigger_id: trigger_id.to_owned(),
        })
    }
}

/// The `dialogs/open` body asking for the reason.
pub fn open_request(trigger_id: &str, url: &str, tool: &str, state: &str) -> Value {
    json!({
        "trigger_id": trigger_id,
        "url": url,
        "dialog": {
            "callback_id": "deny_reason",
            "title": "Deny tool call",
            "introduction_text": format!(
                "Why deny {}? The agent and the audit log get your reason.",
                crate::chat::escape::markdown_code(tool)
            ),
            "elements": [{"display_name": "Reason", "name": "reason", "type": "textarea",
                          "max_length": MAX_REASON_CHARS, "optional": false}],
            "submit_label": "Deny",
            "notify_on_cancel": true,
            "state": state,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DialogState {
        DialogState {
            approval_id: "a1".into(),
            user_id: "u1".into(),
            approver: "bob.smith".into(),
            expires_at: 2_000,
            token_sha256: "ab".into(),
            trigger_id: "dHJpZ2dlcg==".into(),
        }
    }

    #[test]
    fn a_signed_state_verifies_for_its_user_until_it_expires() {
        let key = StateKey::from_bot_token("t");
        let signed = key.sign(&state());
        assert_eq!(key.verify(&signed, "u1", 1_000), Ok(state()));
        assert_eq!(key.verify(&signed, "u2", 1_000), Err(StateError::WrongUser));
        assert_eq!(key.verify(&signed, "u1", 2_000), Err(StateError::Expired));
    }

    #[test]
    fn a_tampered_or_foreign_state_is_refused() {
        let key = StateKey::from_bot_token("t");
        let signed = key.sign(&state());
        let tampered = signed.replacen("a1.", "a2.", 1);
        assert_eq!(key.verify(&tampered, "u1", 1_000), Err(StateError::BadMac));
        let foreign = StateKey::from_bot_token("other").sign(&state());
        assert_eq!(key.verify(&foreign, "u1", 1_000), Err(StateError::BadMac));
        assert_eq!(
            key.verify("nodots", "u1", 1_000),
            Err(StateError::Malformed)
        );
    }
}
