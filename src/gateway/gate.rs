//! The gate: the one asynchronous step between a validated `tools/call` and its upstream.
//!
//! The gateway owns the [`CallGate`] trait; governance (`crate::governance`: policy, approvals
//! and audit together) implements it. The gateway core knows only that a gate either lets
//! a call through or refuses it with a reason the agent will read, and tells the gate how a
//! forwarded call ended. While a gate waits (a human approval), it may report progress.

use crate::auth::Agent;
pub use crate::call::{Outcome, Progress, ToolCall};
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// What a gate decided: whether the call is cleared to go upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clearance {
    /// Send the call to the upstream.
    Forward,
    /// Do not run the call; the agent receives this reason as a tool error.
    Refuse(String),
}

/// How a forwarded call ended.
#[derive(Debug)]
pub struct CallOutcome<'a> {
    /// The upstream's final response (a result or a JSON-RPC error), or `None` when the
    /// client went away or cancelled before it arrived.
    pub response: Option<&'a Value>,
    pub outcome: Outcome,
    /// The tool's own time: from sending the call upstream to its answer.
    pub tool_time: Duration,
    /// From the call's arrival to its answer, including any wait for a human.
    pub total_time: Duration,
}

/// Decides whether a call may run. May take as long as it needs (a human approval), and must
/// fail closed: any error inside a gate is a `Refuse`.
pub trait CallGate: Send + Sync + 'static {
    fn check<'a>(&'a self, call: &'a ToolCall, progress: &'a Progress) -> BoxFuture<'a, Clearance>;

    /// Whether `tools/list` should leave this tool out for this agent (every call of it would
    /// be refused whatever the arguments).
    fn hides(&self, _agent: &Agent, _upstream: &str, _tool: &str, _definition: &Value) -> bool {
        false
    }

    /// Whether the policy would hold this call for humans (it then becomes a task for clients
    /// that take tasks). A hint: [`CallGate::check`] decides.
    fn needs_human(&self, _call: &ToolCall) -> bool {
        false
    }

    /// Picks up a call that was waiting on `approval` when its gateway stopped (a task taken
    /// over after a restart): waits for the decision, then lets it through or refuses it.
    fn resume<'a>(
        &'a self,
        _call: &'a ToolCall,
        _approval: Uuid,
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Clearance> {
        Box::pin(std::future::ready(Clearance::Refuse(
            "this gateway cannot resume a held call".into(),
        )))
    }

    /// Called when the client cancelled a call before it was forwarded (a legacy
    /// `notifications/cancelled`, a modern client closing its stream).
    fn withdrawn<'a>(&'a self, _call: &'a ToolCall) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Called once a forwarded call has ended.
    fn finished<'a>(&'a self, _call: &'a ToolCall, _outcome: CallOutcome<'a>) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// At shutdown, once no request is left: resolves when what `finished` started is
    /// recorded (the caller bounds the wait).
    fn drain(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// The gate of the bare proxy: every valid call goes through.
pub struct ForwardAll;

impl CallGate for ForwardAll {
    fn check<'a>(
        &'a self,
        _call: &'a ToolCall,
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Clearance> {
        Box::pin(std::future::ready(Clearance::Forward))
    }
}
