//! The `tools/call` seam: the one asynchronous step between a validated call and the upstream.
//!
//! Policy, approvals and audit plug in here. The gateway core knows only that a gate either lets
//! a call through or refuses it with a reason the agent will read.

use crate::auth::Agent;
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use uuid::Uuid;

/// A tool call that has been routed and whose arguments match the tool's `inputSchema`.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// Gateway-minted id (UUID v7), the key for everything recorded about this call.
    pub id: Uuid,
    pub agent: Agent,
    /// The upstream's configured name.
    pub upstream: Arc<str>,
    /// The tool's name at the upstream (not namespaced).
    pub tool: String,
    pub arguments: Value,
    /// The tool as the upstream described it (annotations, schemas).
    pub definition: Arc<Value>,
}

/// What a gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send the call to the upstream.
    Forward,
    /// Do not run the call; the agent receives this reason as a tool error.
    Refuse(String),
}

/// Decides whether a call may run. May take as long as it needs (a human approval), and must
/// fail closed: any error inside a gate is a `Refuse`.
pub trait CallGate: Send + Sync + 'static {
    fn check<'a>(&'a self, call: &'a ToolCall) -> BoxFuture<'a, Verdict>;
}

/// The gate of the bare proxy: every valid call goes through.
pub struct ForwardAll;

impl CallGate for ForwardAll {
    fn check<'a>(&'a self, _call: &'a ToolCall) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(Verdict::Forward))
    }
}
