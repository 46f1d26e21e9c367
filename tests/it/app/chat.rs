//! What the chat backend tests ask of the app: a held call's approval found by its record,
//! bounded waits on an approval's status and on a call's audit events, and
//! `countersign chat test`.

use super::{Approval, Client, HeldCall, TestApp};
use serde_json::{Value, json};
use std::time::Duration;

impl Client {
    /// The agent's `delete_record` of `record` in a task, and the approval it opened.
    pub async fn held_record(&self, record: &str) -> (HeldCall, Approval) {
        self.held_record_with(json!({"record_id": record})).await
    }

    /// The agent's `delete_record` with `arguments` (naming a `record_id`) in a task, and the
    /// approval it opened, found by that record whatever its status.
    pub async fn held_record_with(&self, arguments: Value) -> (HeldCall, Approval) {
        let record = arguments["record_id"].clone();
        let call = self.spawn_call("delete_record", arguments);
        let approval = self
            .approval_where(|a| a.arguments["record_id"] == record)
            .await;
        (call, approval)
    }

    /// Waits (15 s at most) for an approval, of any status, that is `wanted`; returns it.
    pub async fn approval_where(&self, wanted: impl Fn(&Approval) -> bool) -> Approval {
        let wanted = &wanted;
        crate::wait::eventually(
            "an approval as expected",
            Duration::from_secs(15),
            || async move { self.approvals("all").await.into_iter().find(wanted) },
        )
        .await
    }

    /// Waits (15 s at most) until approval `id` has `status`; returns it.
    pub async fn approval_becomes(&self, id: &str, status: &str) -> Approval {
        let what = format!("approval {id} to become {status}");
        crate::wait::eventually(&what, Duration::from_secs(15), || async move {
            let seen = self.approval(id).await;
            if seen.status == status {
                Ok(seen)
            } else {
                Err(seen.status)
            }
        })
        .await
    }

    /// Waits (10 s at most) until the audit events of call `call_id` include one `wanted`;
    /// returns them all.
    pub async fn call_events_with(
        &self,
        call_id: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let wanted = &wanted;
        crate::wait::eventually(
            "the expected audit event",
            Duration::from_secs(10),
            || async move {
                let events = self.call_events(call_id).await;
                if events.iter().any(wanted) {
                    Ok(events)
                } else {
                    Err(format!("{events:#?}"))
                }
            },
        )
        .await
    }
}

impl TestApp {
    /// `countersign chat test BACKEND` on this configuration, with `env` added to its
    /// environment (30 s at most): whether every check passed, and what it said.
    pub async fn chat_test(&self, backend: &str, env: &[(&str, &str)]) -> (bool, String) {
        let mut command = tokio::process::Command::from(self.cli(&["chat", "test", backend]));
        command.envs(env.iter().copied());
        let output = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .expect("chat test ends in time")
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        (output.status.success(), format!("{stdout}{stderr}"))
    }
}
