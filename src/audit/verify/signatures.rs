//! Signed heads: each one checked with the trusted keys, keys rotated in by a trusted key
//! trusted from the next signed head, and no events after the last signed head.

use super::{Breach, Chain};
use crate::audit::events::AuditKeyEvent;
use crate::audit::keys::HeadError;
use crate::audit::keys::parse_public;

impl Chain {
    /// A signature on the row at `seq` over `hash`, checked when keys were given.
    pub(super) fn check_signature(
        &mut self,
        seq: i64,
        hash: &str,
        key_id: Option<&str>,
        signature: Option<&str>,
    ) -> Result<(), HeadError> {
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Ok(());
        };
        if self.trusted.is_empty() {
            self.last_signed = seq;
            return Ok(());
        }
        self.trusted.verify_head(key_id, seq, hash, signature)?;
        self.last_signed = seq;
        self.signed_heads += 1;
        for key in self.introduced.drain(..) {
            if let Ok(id) = self.trusted.add_text(&key) {
                tracing::debug!(key = %id, "a rotated-in key is trusted from here on");
            }
        }
        Ok(())
    }

    /// An `audit.key` event introduced by a trusted key: its key becomes trusted at the next
    /// signed head.
    pub(super) fn note_key(&mut self, payload: &str) {
        let Ok(event) = serde_json::from_str::<AuditKeyEvent>(payload) else {
            return;
        };
        if event
            .introduced_by
            .as_deref()
            .is_some_and(|by| self.trusted.contains(by))
            && parse_public(&event.public_key).is_ok()
        {
            self.introduced.push(event.public_key);
        }
    }

    /// Events after the last signed head were appended by someone without a key.
    pub(super) fn unsigned_tail(&self) -> Option<Breach> {
        let last = self.expected_seq - 1;
        (last > self.last_signed).then(|| Breach {
            seq: self.last_signed + 1,
            reason: format!(
                "events {}..{last} come after the last signed head: they were appended by \
                 someone who does not hold a signing key",
                self.last_signed + 1
            ),
        })
    }
}
