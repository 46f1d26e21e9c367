//! Bounds on approval requests, so that one agent cannot flood its approvers: how many calls
//! one agent, and one tool, may have waiting for a human at once, and how fast one agent may
//! ask for new approvals (a token bucket per agent).
//!
//! The counts are in memory, per gateway process: a [`Permit`] is held while its call waits
//! for its approval and gives its place back when dropped (decided, timed out, cancelled).

use crate::audit::NewEvent;
use crate::audit::events::{ApprovalRefused, AuditEvent};
use crate::call::ToolCall;
use crate::config::ApprovalsConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The limits and the live counts behind them. Cheap to share.
#[derive(Debug, Clone)]
pub struct ApprovalLimits {
    per_agent: usize,
    per_tool: usize,
    per_minute: u32,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    by_agent: HashMap<String, usize>,
    /// By (upstream, tool).
    by_tool: HashMap<(String, String), usize>,
    buckets: HashMap<String, Bucket>,
}

/// A token bucket holding up to a minute's worth of new approvals.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a call may not ask for an approval now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "agent {agent} already has {limit} calls waiting for approval (approvals.max_pending_per_agent); the call was not run. Retry once some are decided."
    )]
    AgentPending { agent: String, limit: usize },
    #[error(
        "tool {server}/{tool} already has {limit} calls waiting for approval (approvals.max_pending_per_tool); the call was not run. Retry once some are decided."
    )]
    ToolPending {
        server: String,
        tool: String,
        limit: usize,
    },
    #[error(
        "agent {agent} asked for more than {per_minute} approvals a minute (approvals.new_per_minute_per_agent); the call was not run. Retry in {retry_secs} s."
    )]
    TooFast {
        agent: String,
        per_minute: u32,
        retry_secs: u64,
    },
}

/// A place among the pending approvals; given back on drop.
#[derive(Debug)]
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    agent: String,
    tool: (String, String),
}

impl Default for ApprovalLimits {
    fn default() -> Self {
        ApprovalLimits::new(&ApprovalsConfig::default())
    }
}

impl ApprovalLimits {
    pub fn new(config: &ApprovalsConfig) -> Self {
        ApprovalLimits {
            per_agent: config.max_pending_per_agent,
            per_tool: config.max_pending_per_tool,
            per_minute: config.new_per_minute_per_agent,
            counts: Arc::default(),
        }
    }

    /// Admits one more call of `agent` to `server`'s `tool` waiting for approval, or says why
    /// not. A refused call takes no place and no token.
    pub fn admit(&self, agent: &str, server: &str, tool: &str) -> Result<Permit, Refused> {
        self.admit_at(agent, server, tool, Instant::now())
    }

    fn admit_at(
        &self,
        agent: &str,
        server: &str,
        tool: &str,
        now: Instant,
    ) -> Result<Permit, Refused> {
        let mut counts = self.counts.lock().expect("limits lock");
        let key = (server.to_owned(), tool.to_owned());
        if counts.by_agent.get(agent).copied().unwrap_or(0) >= self.per_agent {
            return Err(Refused::AgentPending {
                agent: agent.to_owned(),
                limit: self.per_agent,
            });
        }
        if counts.by_tool.get(&key).copied().unwrap_or(0) >= self.per_tool {
            return Err(Refused::ToolPending {
                server: server.to_owned(),
                tool: tool.to_owned(),
                limit: self.per_tool,
            });
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let bucket = counts.buckets.entry(agent.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec);
            return Err(Refused::TooFast {
                agent: agent.to_owned(),
                per_minute: self.per_minute,
                retry_secs: wait.as_secs().max(1),
            });
        }
        bucket.tokens -= 1.0;
        *counts.by_agent.entry(agent.to_owned()).or_default() += 1;
        *counts.by_tool.entry(key.clone()).or_default() += 1;
        Ok(Permit {
            counts: self.counts.clone(),
            agent: agent.to_owned(),
            tool: key,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("limits lock");
        release(&mut counts.by_agent, &self.agent);
        release(&mut counts.by_tool, &self.tool);
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Refused {
    /// The audit event recording the refusal (`approval.refused`: no approval was opened, so
    /// there is nothing to decide).
    pub fn event(&self, call: &ToolCall) -> NewEvent {
        let limit = match self {
            Refused::AgentPending { .. } => "approvals.max_pending_per_agent",
            Refused::ToolPending { .. } => "approvals.max_pending_per_tool",
            Refused::TooFast { .. } => "approvals.new_per_minute_per_agent",
        };
        let refused = ApprovalRefused {
            agent: call.agent.id.to_string(),
            server: call.upstream.to_string(),
            tool: call.tool.clone(),
            outcome: "refused".into(),
            limit: limit.into(),
            reason: self.to_string(),
        };
        NewEvent::new(
            Some(call.id),
            "countersign",
            AuditEvent::ApprovalRefused(refused),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_agent: usize, per_tool: usize, per_minute: u32) -> ApprovalLimits {
        ApprovalLimits::new(&ApprovalsConfig {
            max_pending_per_agent: per_agent,
            max_pending_per_tool: per_tool,
            new_per_minute_per_agent: per_minute,
            ..ApprovalsConfig::default()
        })
    }

    #[test]
    fn an_agent_past_its_cap_is_refused_until_a_permit_is_dropped() {
        let l = limits(2, 100, 1000);
        let a = l.admit("ci", "fs", "rm").unwrap();
        let _b = l.admit("ci", "fs", "mv").unwrap();
        let refused = l.admit("ci", "db", "drop").unwrap_err();
        assert!(matches!(refused, Refused::AgentPending { limit: 2, .. }));
        assert!(refused.to_string().contains("max_pending_per_agent"));
        assert!(
            l.admit("other", "fs", "rm").is_ok(),
            "other agents are not affected"
        );
        drop(a);
        assert!(l.admit("ci", "db", "drop").is_ok());
    }

    #[test]
    fn a_tool_past_its_cap_is_refused_whoever_asks() {
        let l = limits(100, 2, 1000);
        let _a = l.admit("a", "fs", "rm").unwrap();
        let _b = l.admit("b", "fs", "rm").unwrap();
        let refused = l.admit("c", "fs", "rm").unwrap_err();
        assert!(matches!(refused, Refused::ToolPending { limit: 2, .. }));
        assert!(l.admit("c", "fs", "mv").is_ok());
        assert!(
            l.admit("c", "other", "rm").is_ok(),
            "tools are per upstream"
        );
    }

    #[test]
    fn new_approvals_are_rate_limited_per_agent_and_refill() {
        let l = limits(1000, 1000, 60);
        let t0 = Instant::now();
        let permits: Vec<_> = (0..60)
            .map(|_| l.admit_at("ci", "fs", "rm", t0).unwrap())
            .collect();
        drop(permits);
        let refused = l.admit_at("ci", "fs", "rm", t0).unwrap_err();
        assert!(
            matches!(refused, Refused::TooFast { retry_secs: 1, .. }),
            "{refused:?}"
        );
        assert!(l.admit_at("other", "fs", "rm", t0).is_ok());
        // One per second comes back.
        let later = t0 + Duration::from_millis(1500);
        assert!(l.admit_at("ci", "fs", "rm", later).is_ok());
        assert!(l.admit_at("ci", "fs", "rm", later).is_err());
    }

    #[test]
    fn a_refusal_takes_no_place() {
        let l = limits(1, 100, 1000);
        let a = l.admit("ci", "fs", "rm").unwrap();
        for _ in 0..5 {
            assert!(l.admit("ci", "fs", "rm").is_err());
        }
        drop(a);
        assert_eq!(l.counts.lock().unwrap().by_agent.len(), 0);
        assert_eq!(l.counts.lock().unwrap().by_tool.len(), 0);
    }
}
