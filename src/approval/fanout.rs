//! Chat fan-out: what the broker tells every configured chat backend (the [`Notifier`](super::Notifier)s) about
//! an approval's life. Posting the card decides whether anyone can be asked; every later
//! update runs on its own task, so a slow chat server never holds up a decision.

use super::{Approval, Broker, BrokerError, CallSummary};

impl Broker {
    /// Posts the card to every chat backend. When backends are configured and none could post
    /// it, nobody can decide: the approval is cancelled (and the call refused).
    pub(super) async fn announce(&self, approval: &Approval) -> Result<(), BrokerError> {
        if self.chats.is_empty() {
            return Ok(());
        }
        let posts = self.chats.iter().map(|chat| chat.requested(approval));
        let mut failures = Vec::new();
        for (chat, posted) in self
            .chats
            .iter()
            .zip(futures::future::join_all(posts).await)
        {
            if let Err(e) = posted {
                tracing::error!(approval = %approval.id, backend = chat.name(), error = %e, "could not post the approval card");
                failures.push(e.to_string());
            }
        }
        if failures.len() == self.chats.len() {
            let reason = format!("no approver could be asked: {}", failures.join("; "));
            self.cancel(approval.id, "countersign", &reason).await?;
        }
        Ok(())
    }

    /// Tells the chat backends that an approved call ran (a reply in the card's thread).
    pub fn call_finished(&self, approval: Approval, call: CallSummary) {
        for chat in &self.chats {
            let (chat, approval, call) = (chat.clone(), approval.clone(), call.clone());
            self.updates
                .spawn(async move { chat.finished(&approval, &call).await });
        }
    }

    /// Chat updates run on their own tasks: a slow chat server never holds up a decision.
    pub(super) fn tell_decided(&self, approval: Approval) {
        for chat in &self.chats {
            let (chat, approval) = (chat.clone(), approval.clone());
            self.updates
                .spawn(async move { chat.decided(&approval).await });
        }
    }

    pub(super) fn tell_progressed(&self, approval: Approval, approvals: u32) {
        for chat in &self.chats {
            let (chat, approval) = (chat.clone(), approval.clone());
            self.updates
                .spawn(async move { chat.progressed(&approval, approvals).await });
        }
    }
}
