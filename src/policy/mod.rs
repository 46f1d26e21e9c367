//! Policy: which tool calls run, which are refused, and which wait for humans.
//!
//! Policies are a directory of YAML files; `policies/README.md` describes the format and the
//! precedence. [`PolicySet::load_dir`] parses and checks every file once (globs and JSON Schemas
//! are compiled there); [`PolicySet::evaluate`] is pure and every [`Decision`] names the rule
//! behind it and the policy version. [`Policies`] is the shared handle that reloads on change.
//!
//! # Layout
//!
//! ```text
//! doc.rs     the file format as written (serde types that parse at the boundary)
//! load.rs    directory → PolicySet: read, hash, parse, compile, check across files
//! locate.rs  file:line of a field path, for errors
//! eval.rs    PolicySet::evaluate: matching and precedence
//! watch.rs   Policies: the shared, hot-reloaded handle
//! cli.rs     `policy check | test | explain`
//! ```

pub mod cli;
mod doc;
mod error;
mod eval;
mod load;
mod locate;
mod watch;

/// `90s`, `15m`, `2h`, `1d`, `1h30m` as a duration (none for zero or anything else).
pub(crate) use doc::parse_duration;
pub use error::{Location, PolicyError, RELATIVE_POLICY_DIR};
pub use eval::{Explained, Match};
pub use load::PolicySet;
pub use watch::Policies;

use crate::auth::Agent;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// What the policy needs to know about one `tools/call`.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    pub agent: &'a Agent,
    /// The upstream's configured name.
    pub server: &'a str,
    /// The tool's name at the upstream (not namespaced).
    pub tool: &'a str,
    pub annotations: Annotations,
    pub arguments: &'a Value,
}

/// A tool's behaviour hints, with the MCP defaults filled in for hints the tool leaves out.
///
/// The hints come from the upstream server and are claims, not facts: match on them only for
/// servers you trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Annotations {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl Default for Annotations {
    /// The MCP specification's defaults: a tool that says nothing may write, destroy, repeat
    /// with effect and reach the outside world.
    fn default() -> Self {
        Annotations {
            read_only: false,
            destructive: true,
            idempotent: false,
            open_world: true,
        }
    }
}

impl Annotations {
    /// Reads `definition["annotations"]` of a tool as listed by `tools/list`. A hint that is
    /// absent or not a boolean takes the specification's default.
    pub fn from_tool(definition: &Value) -> Self {
        let hints = &definition["annotations"];
        let hint = |name: &str, default: bool| hints[name].as_bool().unwrap_or(default);
        let spec = Annotations::default();
        Annotations {
            read_only: hint("readOnlyHint", spec.read_only),
            destructive: hint("destructiveHint", spec.destructive),
            idempotent: hint("idempotentHint", spec.idempotent),
            open_world: hint("openWorldHint", spec.open_world),
        }
    }
}

/// The outcome of evaluating one call, naming its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The id of the deciding rule, or `default` when no rule matched.
    pub rule: String,
    /// SHA-256 (hex) of the policy files the decision was made with.
    pub policy_version: String,
    /// Why: which rule matched and on which conditions.
    pub explanation: String,
}

/// What happens to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused; the agent receives `reason`.
    Deny {
        reason: String,
    },
    /// Runs only once enough humans approve it.
    Approve(ApprovalSpec),
}

/// Who must approve a call, and how the approval is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// Approver ids (people), as in the configuration's `approvers`.
    pub approvers: Vec<String>,
    /// Approver groups; any member may approve.
    pub approver_groups: Vec<String>,
    /// Distinct humans who must approve; at least 1.
    pub quorum: u32,
    /// Whether the human the agent acts for (`on_behalf_of`) may approve its own call.
    pub allow_self_approval: bool,
    /// Time to gather the quorum; expiry denies.
    pub timeout: Duration,
    /// JSON pointers into the arguments to mask on the approval card.
    pub redact: Vec<String>,
    /// A classification label shown on (and enforced for) the card.
    pub classification: Option<String>,
    /// The chat channel to post the card in; the backend's default when `None`.
    pub channel: Option<String>,
    /// Whether the call's result is posted to the channel afterwards.
    pub post_results: bool,
    /// Who may approve alone (break-glass); `None`: nobody.
    pub break_glass: Option<BreakGlassRule>,
}

/// Break-glass on a rule: who may approve alone, and the justification they must write. Each
/// such approval is listed by `audit verify` until another approver reviews it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassRule {
    pub approvers: Vec<String>,
    pub approver_groups: Vec<String>,
    /// The shortest justification accepted, in characters.
    pub min_justification: usize,
}

/// The shortest break-glass justification unless a rule says otherwise.
pub const DEFAULT_MIN_JUSTIFICATION: usize = 20;

/// What a redacted argument starts with, wherever it is shown or recorded.
pub const REDACTED: &str = "[redacted]";

impl ApprovalSpec {
    /// The arguments as a card may show them and the log may record them: every value
    /// `redact` points at is replaced by `[redacted] ` and `seal(value)` (a keyed digest, so an
    /// auditor who knows the value can confirm it). Pointers to absent values are ignored.
    pub fn redact_arguments(&self, arguments: &Value, seal: impl Fn(&Value) -> String) -> Value {
        let mut shown = arguments.clone();
        for pointer in &self.redact {
            if let Some(value) = shown.pointer_mut(pointer) {
                *value = Value::String(format!("{REDACTED} {}", seal(value)));
            }
        }
        shown
    }
}

impl Verdict {
    /// `allow`, `deny` or `approve`, as written in policy files.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny { .. } => "deny",
            Verdict::Approve(_) => "approve",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allow => f.write_str("allow"),
            Verdict::Deny { reason } => write!(f, "deny ({reason})"),
            Verdict::Approve(spec) => write!(f, "approve ({spec})"),
        }
    }
}

impl fmt::Display for ApprovalSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".into()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "approvers: {}; groups: {}; quorum {}; timeout {}; self-approval {}",
            list(&self.approvers),
            list(&self.approver_groups),
            self.quorum,
            doc::format_duration(self.timeout),
            if self.allow_self_approval {
                "allowed"
            } else {
                "refused"
            },
        )?;
        if !self.redact.is_empty() {
            write!(f, "; redact {}", self.redact.join(", "))?;
        }
        if let Some(label) = &self.classification {
            write!(f, "; classification {label}")?;
        }
        if let Some(channel) = &self.channel {
            write!(f, "; channel {channel}")?;
        }
        if self.post_results {
            f.write_str("; results posted")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tool_without_annotations_gets_the_spec_defaults() {
        let a = Annotations::from_tool(&json!({"name": "t"}));
        assert_eq!(a, Annotations::default());
        assert!(!a.read_only && a.destructive && !a.idempotent && a.open_world);
    }

    #[test]
    fn declared_hints_override_the_defaults_one_by_one() {
        let def = json!({"annotations": {"readOnlyHint": true, "openWorldHint": false}});
        let a = Annotations::from_tool(&def);
        assert!(a.read_only && !a.open_world);
        assert!(
            a.destructive && !a.idempotent,
            "undeclared hints keep their defaults"
        );
    }

    #[test]
    fn a_hint_that_is_not_a_boolean_takes_the_default() {
        let def = json!({"annotations": {"destructiveHint": "no", "readOnlyHint": 1}});
        assert_eq!(Annotations::from_tool(&def), Annotations::default());
    }

    #[test]
    fn redaction_masks_the_pointed_values_and_ignores_absent_ones() {
        let spec = ApprovalSpec {
            redact: vec!["/password".into(), "/nested/0/key".into(), "/absent".into()],
            ..test_spec()
        };
        let seal = |v: &Value| format!("sealed({v})");
        let shown = spec.redact_arguments(
            &json!({"user": "u", "password": "p", "nested": [{"key": 1}]}),
            seal,
        );
        assert_eq!(
            shown,
            json!({"user": "u", "password": "[redacted] sealed(\"p\")", "nested": [{"key": "[redacted] sealed(1)"}]})
        );
    }

    pub(crate) fn test_spec() -> ApprovalSpec {
        ApprovalSpec {
            approvers: vec![],
            approver_groups: vec!["operators".into()],
            quorum: 1,
            allow_self_approval: false,
            timeout: Duration::from_secs(900),
            redact: vec![],
            classification: None,
            channel: None,
            post_results: false,
            break_glass: None,
        }
    }
}
