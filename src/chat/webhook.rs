//! The signed webhook: a JSON POST to another system for each pending approval, counted vote,
//! decision and finished call. Decisions come back through the approver HTTP API.
//!
//! Each request carries `X-Countersign-Timestamp` (Unix seconds) and
//! `X-Countersign-Signature: v1=<hex HMAC-SHA256(secret, "v1:" + timestamp + ":" + body)>`;
//! receivers should recompute it over the raw body, compare in constant time, and reject
//! timestamps more than five minutes old.

use super::retry::{Retryable, until_expiry};
use super::{CallSummary, ChatBackend, ChatError, Check};
use crate::approval::Approval;
use crate::approval::Notifier;
use crate::tls::Tls;
use futures::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

pub use crate::config::chat::WebhookConfig;

const BACKEND: &str = "webhook";
pub const TIMESTAMP_HEADER: &str = "x-countersign-timestamp";
pub const SIGNATURE_HEADER: &str = "x-countersign-signature";
pub const EVENT_HEADER: &str = "x-countersign-event";

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot reach {url}: {}", crate::tls::explain(.source))]
    Transport { url: String, source: reqwest::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
}

impl Retryable for DeliveryError {
    fn is_refusal(&self) -> bool {
        matches!(self, DeliveryError::Status { status, .. }
            if (400..500).contains(status) && ![408, 429].contains(status))
    }
}

pub struct Webhook {
    config: WebhookConfig,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(config: WebhookConfig, tls: &Tls) -> Self {
        Webhook {
            config,
            http: tls.client(),
        }
    }

    async fn deliver(&self, event: &str, payload: &Value) -> Result<(), DeliveryError> {
        let body = payload.to_string();
        let timestamp = crate::timestamp::now_ms() / 1000;
        let signature = sign(
            self.config.secret.expose_secret().as_bytes(),
            timestamp,
            body.as_bytes(),
        );
        let url = &self.config.url;
        let sent = self
            .http
            .post(url)
            .timeout(Duration::from_secs(self.config.timeout_secs))
            .header("content-type", "application/json")
            .header(EVENT_HEADER, event)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|source| DeliveryError::Transport {
                url: url.clone(),
                source,
            })?;
        if !sent.status().is_success() {
            return Err(DeliveryError::Status {
                url: url.clone(),
                status: sent.status().as_u16(),
            });
        }
        Ok(())
    }

    /// Best-effort delivery: logged when it fails.
    async fn notify(&self, event: &str, payload: Value) {
        if let Err(e) = self.deliver(event, &payload).await {
            tracing::warn!(event, error = %e, "webhook: delivery failed");
        }
    }
}

/// `v1=<hex HMAC-SHA256(secret, "v1:{timestamp}:{body}")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("v1:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The event body: its type, the approval, and where approvers decide.
fn payload(kind: &str, approval: &Approval, extra: Value) -> Value {
    let id = approval.id;
    let mut body = json!({
        "type": kind,
        "approval": approval,
        "decide": {"approve": format!("/approvals/{id}/approve"), "deny": format!("/approvals/{id}/deny")},
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

impl Notifier for Webhook {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn requested<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, Result<(), ChatError>> {
        Box::pin(async move {
            let body = payload("approval.requested", approval, json!({}));
            until_expiry(approval.expires_at, || {
                self.deliver("approval.requested", &body)
            })
            .await
            .map_err(|e| ChatError::Unavailable {
                backend: BACKEND,
                detail: e.to_string(),
            })
        })
    }

    fn progressed<'a>(&'a self, approval: &'a Approval, approvals: u32) -> BoxFuture<'a, ()> {
        let body = payload(
            "approval.progressed",
            approval,
            json!({"approvals": approvals}),
        );
        Box::pin(self.notify("approval.progressed", body))
    }

    fn decided<'a>(&'a self, approval: &'a Approval) -> BoxFuture<'a, ()> {
        let body = payload("approval.decided", approval, json!({}));
        Box::pin(self.notify("approval.decided", body))
    }

    fn finished<'a>(&'a self, approval: &'a Approval, call: &'a CallSummary) -> BoxFuture<'a, ()> {
        let result = approval
            .spec
            .post_results
            .then(|| call.response.clone())
            .flatten();
        let extra = json!({"call": {"outcome": call.outcome,
            "tool_ms": call.tool_time.as_millis() as u64,
            "total_ms": call.total_time.as_millis() as u64, "response": result}});
        let body = payload("call.finished", approval, extra);
        Box::pin(self.notify("call.finished", body))
    }
}

impl ChatBackend for Webhook {
    fn diagnose(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            let ping = self.deliver("ping", &json!({"type": "ping"})).await;
            vec![Check {
                what: match &ping {
                    Ok(()) => format!("{} accepts a signed ping", self.config.url),
                    Err(e) => format!("signed ping: {e}"),
                },
                ok: ping.is_ok(),
                fix: ping
                    .is_err()
                    .then(|| "check chat.webhook.url and that the receiver answers 2xx".into()),
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        // Computed independently: printf 'v1:1700000000:{"a":1}' |
        //   openssl dgst -sha256 -hmac s3cret
        let signed = sign(b"s3cret", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(signed, EXPECTED);
        assert_ne!(sign(b"s3cret", 1_700_000_001, br#"{"a":1}"#), EXPECTED);
        assert_ne!(sign(b"s3cret", 1_700_000_000, br#"{"a":2}"#), EXPECTED);
    }

    const EXPECTED: &str = "v1=5758379e1e2bd8ca5cbc893acda89dd28be628dc70c337e7943ddd194922a4bf";
}
