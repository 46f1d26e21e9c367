//! What the chat tests (Mattermost, the chat table, the webhook) need of the app beyond the
//! rest: a held call's approval seen whatever its status, since a chat backend may cancel or
//! expire it before the test looks.

use super::client::{Approval, Client, HeldCall};
use serde_json::json;
use std::time::Duration;

impl Client {
    /// The agent's `delete_record` call of `record`, in a task, and the approval it opened, in
    /// whatever status it has by now (waits 15 s at most for it).
    pub async fn requested_delete(&self, record: &str) -> (HeldCall, Approval) {
        let call = self.spawn_call("delete_record", json!({"record_id": record}));
        let what = format!("an approval for record {record}");
        let approval = crate::wait::eventually(&what, Duration::from_secs(15), || async move {
            let all = self.approvals("all").await;
            all.into_iter().find(|a| a.arguments["record_id"] == record)
        })
        .await;
        (call, approval)
    }
}
