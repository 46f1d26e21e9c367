//! Evaluating one call against a [`PolicySet`]: which rules match, and which one decides.
//! Pure: no I/O, no clock, no randomness.

use super::doc::Patterns;
use super::load::{PolicySet, Rule};
use super::{Annotations, ApprovalSpec, CallFacts, Decision, Verdict};
use crate::auth::Agent;
use serde_json::Value;

/// A rule that matched a call.
#[derive(Debug, Clone)]
pub struct Match {
    pub rule: String,
    /// The file the rule is in.
    pub file: String,
    pub description: Option<String>,
    pub verdict: Verdict,
    /// The conditions that held, in words.
    pub why: String,
}

/// A decision together with every rule that matched, in rule order (for `policy explain`).
#[derive(Debug, Clone)]
pub struct Explained {
    pub decision: Decision,
    pub matches: Vec<Match>,
}

impl PolicySet {
    /// Decides one call. Pure; the caller logs, audits and acts on the result.
    pub fn evaluate(&self, facts: &CallFacts) -> Decision {
        self.explain(facts).decision
    }

    /// Decides one call and reports every rule that matched, including those that lost.
    pub fn explain(&self, facts: &CallFacts) -> Explained {
        let matches: Vec<Match> = self.rules.iter().filter_map(|r| r.check(facts)).collect();
        let (rule, verdict, mut explanation) = match decide(&matches) {
            Some(m) => (
                m.rule.clone(),
                m.verdict.clone(),
                format!("rule `{}` ({}) matched: {}", m.rule, m.file, m.why),
            ),
            None => (
                "default".to_owned(),
                self.default.clone(),
                self.default_explanation(),
            ),
        };
        if let Some(losers) = losers(&matches, &rule) {
            explanation.push_str(&format!("; also matched, lower in precedence: {losers}"));
        }
        let (verdict, explanation) = fail_closed(verdict, explanation, facts.agent);
        let decision = Decision {
            verdict,
            rule,
            policy_version: self.version().to_owned(),
            explanation,
        };
        Explained { decision, matches }
    }

    /// The id of a deny rule that refuses every call of this tool by this agent, whatever the
    /// arguments (a deny rule without an `arguments` condition). Such a tool may be left out of
    /// the agent's `tools/list`: by precedence rule 3 no other rule can let it through.
    pub fn always_denies(
        &self,
        agent: &Agent,
        server: &str,
        tool: &str,
        annotations: Annotations,
    ) -> Option<&str> {
        let arguments = Value::Null;
        let facts = CallFacts {
            agent,
            server,
            tool,
            annotations,
            arguments: &arguments,
        };
        let denies = |r: &&Rule| {
            matches!(r.verdict, Verdict::Deny { .. }) && r.conditions.arguments.is_none()
        };
        let rule = self
            .rules
            .iter()
            .filter(denies)
            .find(|r| r.check(&facts).is_some())?;
        Some(&rule.id)
    }

    fn default_explanation(&self) -> String {
        match &self.default_source {
            Some(file) => format!("no rule matched; the default verdict set in {file} applies"),
            None => {
                "no rule matched, and no file sets `defaults`; the built-in default applies".into()
            }
        }
    }
}

// Precedence (policies/README.md states the same rules with the same numbers):
// 1. A rule matches when every condition it states holds. An absent condition holds for every
//    call, so a rule without `match` matches every call.
// 2. Rules are taken in order: files by name (byte order), then rules as written in each file.
// 3. If any matching rule denies, the first such rule decides.
// 4. Otherwise, if any matching rule asks for approval, the first such rule decides, alone: the
//    settings of other matching approve rules are not merged in.
// 5. Otherwise, if any matching rule allows, the first such rule decides.
// 6. Otherwise no rule matched, and the default verdict decides; the decision's rule is
//    `default`.
// 7. An approval nobody can give is a denial (see `fail_closed`).
fn decide(matches: &[Match]) -> Option<&Match> {
    // `min_by_key` returns the first of equal minima, which is rule 2's tie-break.
    matches.iter().min_by_key(|m| match m.verdict {
        Verdict::Deny { .. } => 0,
        Verdict::Approve(_) => 1,
        Verdict::Allow => 2,
    })
}

/// Precedence rule 7: an approval that names no approver, or whose only approvers are listed
/// people fewer than the quorum once the requester's own human is left out (self-approval
/// refused), can never be granted; deny it now rather than at expiry.
fn fail_closed(verdict: Verdict, explanation: String, agent: &Agent) -> (Verdict, String) {
    let Verdict::Approve(spec) = &verdict else {
        return (verdict, explanation);
    };
    match unapprovable(spec, agent) {
        Some(reason) => {
            let explanation = format!("{explanation}; {reason}, so the call is denied");
            (
                Verdict::Deny {
                    reason: format!("This call cannot be approved: {reason}."),
                },
                explanation,
            )
        }
        None => (verdict, explanation),
    }
}

fn unapprovable(spec: &ApprovalSpec, agent: &Agent) -> Option<String> {
    if !spec.approver_groups.is_empty() {
        return None;
    }
    if spec.approvers.is_empty() {
        return Some("the policy names no approvers for it".into());
    }
    let requester = agent.on_behalf_of.as_deref();
    let eligible = spec
        .approvers
        .iter()
        .filter(|a| spec.allow_self_approval || Some(a.as_str()) != requester)
        .count();
    (eligible < spec.quorum as usize).then(|| {
        let who = requester.unwrap_or_default();
        format!(
            "it needs {} approvers but only {eligible} may approve, since {who} requested it and self-approval is refused",
            spec.quorum
        )
    })
}

/// The other matching rules, in order, as `` `id` (verdict) ``.
fn losers(matches: &[Match], winner: &str) -> Option<String> {
    let losers: Vec<String> = matches
        .iter()
        .filter(|m| m.rule != winner)
        .map(|m| format!("`{}` ({})", m.rule, m.verdict.kind()))
        .collect();
    (!losers.is_empty()).then(|| losers.join(", "))
}

impl Rule {
    /// The rule as a [`Match`] if every condition it states holds for `facts`.
    fn check(&self, facts: &CallFacts) -> Option<Match> {
        let c = &self.conditions;
        let a = facts.annotations;
        let mut why = Vec::new();
        pattern(&mut why, "server", &c.server, facts.server)?;
        pattern(&mut why, "tool", &c.tool, facts.tool)?;
        pattern(&mut why, "agent", &c.agent, &facts.agent.id)?;
        if let Some(groups) = &c.agent_group {
            let (group, glob) = facts
                .agent
                .groups
                .iter()
                .find_map(|g| Some((g, groups.first_match(g)?)))?;
            why.push(format!("agent group `{group}` matches `{glob}`"));
        }
        flag(&mut why, "read_only", c.read_only, a.read_only)?;
        flag(&mut why, "destructive", c.destructive, a.destructive)?;
        flag(&mut why, "idempotent", c.idempotent, a.idempotent)?;
        flag(&mut why, "open_world", c.open_world, a.open_world)?;
        if let Some(schema) = &c.arguments {
            schema.0.is_valid(facts.arguments).then_some(())?;
            why.push("the arguments match the schema".into());
        }
        if why.is_empty() {
            why.push("the rule has no conditions".into());
        }
        Some(Match {
            rule: self.id.clone(),
            file: self.file.clone(),
            description: self.description.clone(),
            verdict: self.verdict.clone(),
            why: why.join(", "),
        })
    }
}

/// `Some` when there is no such condition or `name` matches it (noting why); `None` otherwise.
fn pattern(
    why: &mut Vec<String>,
    what: &str,
    patterns: &Option<Patterns>,
    name: &str,
) -> Option<()> {
    if let Some(p) = patterns {
        let glob = p.first_match(name)?;
        why.push(format!("{what} `{name}` matches `{glob}`"));
    }
    Some(())
}

fn flag(why: &mut Vec<String>, what: &str, wanted: Option<bool>, actual: bool) -> Option<()> {
    if let Some(wanted) = wanted {
        (wanted == actual).then_some(())?;
        why.push(format!("{what} is {actual}"));
    }
    Some(())
}

#[cfg(test)]
mod tests;
