//! What the log must still hold: the checkpoint, if one was given, and every anchored head.

use super::{Breach, Chain, Checkpoint};
use crate::audit::GENESIS_HASH;
use crate::audit::anchor::Anchor;

impl Chain {
    /// At the checkpoint's seq, the row's hash must be the checkpoint's.
    pub(super) fn check_checkpoint_at(&mut self, seq: i64, hash: &str) -> Result<(), Breach> {
        if let Some(cp) = &self.checkpoint
            && cp.seq == seq
        {
            self.checkpoint_seen = true;
            if cp.hash != hash {
                return Err(Breach {
                    seq,
                    reason: format!(
                        "hash {hash} differs from the checkpoint's {}: the log was rewritten \
                         at or before this event",
                        cp.hash
                    ),
                });
            }
        }
        Ok(())
    }

    /// Once every row is read: the log must reach the checkpoint.
    pub(super) fn check_checkpoint(&self, checkpoint: Option<&Checkpoint>) -> Option<Breach> {
        let cp = checkpoint?;
        if cp.seq == 0 && cp.hash != GENESIS_HASH {
            return Some(Breach {
                seq: 0,
                reason: "a checkpoint at seq 0 must carry the genesis hash".into(),
            });
        }
        (cp.seq > 0 && !self.checkpoint_seen).then(|| Breach {
            seq: self.expected_seq,
            reason: format!(
                "the log ends at seq {} but the checkpoint names seq {}: events were removed \
                 from the tail",
                self.expected_seq - 1,
                cp.seq
            ),
        })
    }

    /// Every anchored head must be signed by a trusted key and still be in the log.
    pub(super) fn check_anchors(&self, anchors: &[Anchor], head_seq: i64) -> Option<Breach> {
        for anchor in anchors {
            if !self.trusted.is_empty()
                && let Err(e) = self.trusted.verify_head(
                    &anchor.key_id,
                    anchor.seq,
                    &anchor.hash,
                    &anchor.signature,
                )
            {
                return Some(Breach {
                    seq: anchor.seq,
                    reason: format!("the anchor at seq {}: {e}", anchor.seq),
                });
            }
            if anchor.seq > head_seq {
                return Some(Breach {
                    seq: head_seq + 1,
                    reason: format!(
                        "the log ends at seq {head_seq} but an anchor (written {}) records seq \
                         {}: events were removed from the tail{}",
                        anchor.at,
                        anchor.seq,
                        if head_seq == 0 {
                            " (the log is empty)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            let found = self.anchored.get(&anchor.seq).map(String::as_str);
            if found != Some(anchor.hash.as_str()) {
                return Some(Breach {
                    seq: anchor.seq,
                    reason: format!(
                        "the anchor records hash {} at seq {} but the log holds {}: the log was \
                         rewritten",
                        anchor.hash,
                        anchor.seq,
                        found.unwrap_or("nothing")
                    ),
                });
            }
        }
        None
    }
}
