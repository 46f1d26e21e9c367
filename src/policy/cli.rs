//! `countersign policy check | test | explain`: each prints to stdout and returns the exit code.
//!
//! Problems in the user's files (policies, fixtures) are printed with their file, line and field
//! and exit 1; `Err` is kept for bad command-line values and failures to write the output.

use super::doc::format_duration;
use super::load::parse_yaml;
use super::{Annotations, ApprovalSpec, CallFacts, Decision, PolicySet, Verdict};
use crate::auth::Agent;
use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// `policy check DIR`: loads every file and prints the version and what was loaded.
pub fn check(dir: &Path) -> anyhow::Result<ExitCode> {
    check_to(dir, &mut std::io::stdout().lock())
}

/// `policy test DIR FIXTURES`: evaluates each fixture call and compares with what it expects.
/// Exits 0 only when every case passes.
pub fn test(dir: &Path, fixtures: &Path) -> anyhow::Result<ExitCode> {
    test_to(dir, fixtures, &mut std::io::stdout().lock())
}

/// `policy explain DIR --server S --tool T --agent A ...`: the decision on one call and why.
pub fn explain(dir: &Path, call: &ExplainArgs) -> anyhow::Result<ExitCode> {
    explain_to(dir, call, &mut std::io::stdout().lock())
}

/// The call `policy explain` evaluates.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExplainArgs {
    /// The upstream's configured name.
    #[arg(long)]
    pub server: String,
    /// The tool's name at the upstream.
    #[arg(long)]
    pub tool: String,
    #[arg(long)]
    pub agent: String,
    /// An agent group (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    #[arg(long)]
    pub on_behalf_of: Option<String>,
    /// The tool's MCP `annotations` object as JSON (`{"readOnlyHint": true}`).
    #[arg(long)]
    pub annotations: Option<String>,
    /// The call's arguments as JSON; `{}` when absent.
    #[arg(long)]
    pub arguments: Option<String>,
}

pub fn check_to(dir: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let Some(set) = load(dir, out)? else {
        return Ok(ExitCode::FAILURE);
    };
    writeln!(
        out,
        "ok: {} rules in {} file(s)",
        set.rule_count(),
        set.files().len()
    )?;
    writeln!(out, "policy version: {}", set.version())?;
    writeln!(out, "files: {}", set.files().join(", "))?;
    writeln!(out, "default verdict: {}", set.default_verdict())?;
    if let Verdict::Approve(spec) = set.default_verdict()
        && spec.approvers.is_empty()
        && spec.approver_groups.is_empty()
    {
        writeln!(
            out,
            "warning: the default approval names no approvers, so calls no rule matches are denied"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn test_to(dir: &Path, fixtures: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let Some(set) = load(dir, out)? else {
        return Ok(ExitCode::FAILURE);
    };
    let text = std::fs::read_to_string(fixtures)
        .with_context(|| format!("cannot read {}", fixtures.display()))?;
    let cases: Vec<Case> = match parse_yaml(&text, fixtures) {
        Ok(cases) => cases,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut failed = 0;
    for case in &cases {
        let decision = case.evaluate(&set);
        let verdict = summary(&decision);
        match case.mismatch(&decision) {
            None => writeln!(out, "PASS  {}: {verdict}", case.name)?,
            Some(expected) => {
                failed += 1;
                writeln!(
                    out,
                    "FAIL  {}: expected {expected}, got {verdict}; {}",
                    case.name, decision.explanation
                )?;
            }
        }
    }
    writeln!(out, "{} passed, {failed} failed", cases.len() - failed)?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn explain_to(dir: &Path, call: &ExplainArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let hints: Hints = json_arg("--annotations", call.annotations.as_deref(), "{}")?;
    let arguments: Value = json_arg("--arguments", call.arguments.as_deref(), "{}")?;
    let Some(set) = load(dir, out)? else {
        return Ok(ExitCode::FAILURE);
    };
    let agent = agent(&call.agent, &call.groups, &call.on_behalf_of);
    let facts = CallFacts {
        agent: &agent,
        server: &call.server,
        tool: &call.tool,
        annotations: hints.annotations(),
        arguments: &arguments,
    };
    let explained = set.explain(&facts);
    let d = &explained.decision;
    let winner = explained.matches.iter().find(|m| m.rule == d.rule);
    writeln!(out, "policy version: {}", d.policy_version)?;
    match winner {
        Some(m) => writeln!(out, "rule: {} ({})", m.rule, m.file)?,
        None => writeln!(out, "rule: {}", d.rule)?,
    }
    if let Some(text) = winner.and_then(|m| m.description.as_deref()) {
        writeln!(out, "  {text}")?;
    }
    write_verdict(&d.verdict, out)?;
    writeln!(out, "why: {}", d.explanation)?;
    let losers: Vec<_> = explained
        .matches
        .iter()
        .filter(|m| m.rule != d.rule)
        .collect();
    if !losers.is_empty() {
        writeln!(out, "also matched, lost by precedence:")?;
        for m in losers {
            writeln!(
                out,
                "  {} ({}): {}; {}",
                m.rule,
                m.file,
                m.verdict.kind(),
                m.why
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads `dir`, printing the error (and returning `None`) when it does not load.
fn load(dir: &Path, out: &mut dyn Write) -> anyhow::Result<Option<PolicySet>> {
    match PolicySet::load_dir(dir) {
        Ok(set) => Ok(Some(set)),
        Err(e) => {
            writeln!(out, "error: {e}")?;
            Ok(None)
        }
    }
}

fn write_verdict(verdict: &Verdict, out: &mut dyn Write) -> std::io::Result<()> {
    match verdict {
        Verdict::Allow => writeln!(out, "verdict: allow"),
        Verdict::Deny { reason } => writeln!(out, "verdict: deny\nreason: {reason}"),
        Verdict::Approve(spec) => {
            writeln!(out, "verdict: approve")?;
            write_approval(spec, out)
        }
    }
}

fn write_approval(spec: &ApprovalSpec, out: &mut dyn Write) -> std::io::Result<()> {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    writeln!(out, "  approvers: {}", list(&spec.approvers))?;
    writeln!(out, "  approver groups: {}", list(&spec.approver_groups))?;
    writeln!(out, "  quorum: {}", spec.quorum)?;
    writeln!(
        out,
        "  self-approval allowed: {}",
        yes_no(spec.allow_self_approval)
    )?;
    writeln!(out, "  timeout: {}", format_duration(spec.timeout))?;
    writeln!(out, "  redact: {}", list(&spec.redact))?;
    writeln!(
        out,
        "  classification: {}",
        spec.classification.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "  channel: {}", spec.channel.as_deref().unwrap_or("-"))?;
    writeln!(out, "  post results: {}", yes_no(spec.post_results))
}

fn json_arg<T: serde::de::DeserializeOwned>(
    flag: &str,
    value: Option<&str>,
    absent: &str,
) -> anyhow::Result<T> {
    serde_json::from_str(value.unwrap_or(absent)).with_context(|| format!("{flag} is not valid"))
}

fn agent(id: &str, groups: &[String], on_behalf_of: &Option<String>) -> Agent {
    Agent {
        id: id.into(),
        on_behalf_of: on_behalf_of.as_deref().map(Into::into),
        groups: groups.to_vec().into(),
    }
}

/// `approve by rule x`, for one line of test output.
fn summary(decision: &Decision) -> String {
    format!("{} by rule {}", decision.verdict.kind(), decision.rule)
}

/// One fixture: a call and the decision it should get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    agent: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    on_behalf_of: Option<String>,
    server: String,
    tool: String,
    /// The tool's MCP annotations; hints left out take the specification's defaults.
    #[serde(default)]
    annotations: Hints,
    /// `{}` when left out.
    #[serde(default)]
    arguments: Option<Value>,
    expect: Expected,
    /// The rule id expected to decide (`default` for the default verdict).
    #[serde(default)]
    rule: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Allow,
    Deny,
    Approve,
}

impl Case {
    fn evaluate(&self, set: &PolicySet) -> Decision {
        let agent = agent(&self.agent, &self.groups, &self.on_behalf_of);
        let empty = Value::Object(Default::default());
        set.evaluate(&CallFacts {
            agent: &agent,
            server: &self.server,
            tool: &self.tool,
            annotations: self.annotations.annotations(),
            arguments: self.arguments.as_ref().unwrap_or(&empty),
        })
    }

    /// What was expected, in words, if `decision` is not it.
    fn mismatch(&self, decision: &Decision) -> Option<String> {
        let verdict_ok = matches!(
            (self.expect, &decision.verdict),
            (Expected::Allow, Verdict::Allow)
                | (Expected::Deny, Verdict::Deny { .. })
                | (Expected::Approve, Verdict::Approve(_))
        );
        let rule_ok = self.rule.as_ref().is_none_or(|r| *r == decision.rule);
        let expect = format!("{:?}", self.expect).to_lowercase();
        (!verdict_ok || !rule_ok).then(|| match &self.rule {
            Some(rule) => format!("{expect} by rule {rule}"),
            None => expect,
        })
    }
}

/// A tool's MCP annotations as written in fixtures and `--annotations`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Hints {
    read_only_hint: Option<bool>,
    destructive_hint: Option<bool>,
    idempotent_hint: Option<bool>,
    open_world_hint: Option<bool>,
    #[allow(dead_code)] // accepted because tools send it; policy does not look at it
    title: Option<String>,
}

impl Hints {
    fn annotations(&self) -> Annotations {
        let spec = Annotations::default();
        Annotations {
            read_only: self.read_only_hint.unwrap_or(spec.read_only),
            destructive: self.destructive_hint.unwrap_or(spec.destructive),
            idempotent: self.idempotent_hint.unwrap_or(spec.idempotent),
            open_world: self.open_world_hint.unwrap_or(spec.open_world),
        }
    }
}
