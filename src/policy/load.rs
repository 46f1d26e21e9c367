//! A policy directory → a checked, compiled [`PolicySet`].
//!
//! Every `*.yaml` and `*.yml` file directly in the directory is a policy file; hidden files and
//! subdirectories are ignored. Files are taken in byte order of their names, which is also the
//! order in which rules are tried (see `eval.rs`).

use super::doc::{
    ApprovalDoc, BreakGlassDoc, Conditions, DefaultsDoc, FileDoc, RuleDoc, VerdictKind,
};
use super::error::{Location, PolicyError};
use super::locate::{FieldPath, Seg, line_of};
use super::{ApprovalSpec, BreakGlassRule, DEFAULT_MIN_JUSTIFICATION, Verdict};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an approval waits when no `timeout` is set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The reason a default `deny` gives when it sets none.
const DEFAULT_DENY_REASON: &str = "no policy rule allows this call";

/// Every rule of a policy directory, compiled, plus the default verdict and the version.
#[derive(Debug)]
pub struct PolicySet {
    pub(super) rules: Vec<Rule>,
    pub(super) default: Verdict,
    /// The file that set `defaults`, if any did.
    pub(super) default_source: Option<String>,
    version: String,
    files: Vec<String>,
}

/// One compiled rule.
#[derive(Debug)]
pub(super) struct Rule {
    pub id: String,
    /// The file it came from (name only).
    pub file: String,
    pub description: Option<String>,
    pub conditions: Conditions,
    pub verdict: Verdict,
}

/// One policy file as read.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

/// A problem found after parsing: the field (relative to what was being compiled) and message.
type FieldError = (FieldPath, String);

impl PolicySet {
    /// Reads, parses and checks every policy file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        Self::from_sources(read_sources(dir)?)
    }

    /// SHA-256 (hex) over the names and bytes of all files, in order.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The description of rule `id`, if it has one.
    pub fn describe(&self, id: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.description.as_deref())
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The names of the files loaded, in order.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Every rule that holds calls for a human approval, by id (`default` for the default).
    pub fn approval_rules(&self) -> impl Iterator<Item = (&str, &ApprovalSpec)> {
        let default = match &self.default {
            Verdict::Approve(spec) => Some(("default", spec)),
            _ => None,
        };
        self.rules
            .iter()
            .filter_map(|rule| match &rule.verdict {
                Verdict::Approve(spec) => Some((rule.id.as_str(), spec)),
                _ => None,
            })
            .chain(default)
    }

    /// What applies when no rule matches (before the fail-closed check of `evaluate`).
    pub fn default_verdict(&self) -> &Verdict {
        &self.default
    }

    pub(super) fn from_sources(mut sources: Vec<Source>) -> Result<Self, PolicyError> {
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        let sources = &sources[..];
        let docs = sources
            .iter()
            .map(|s| Ok(parse_yaml::<Option<FileDoc>>(&s.text, &s.path)?.unwrap_or_default()))
            .collect::<Result<Vec<_>, PolicyError>>()?;
        let (defaults, default_source) = find_defaults(sources, &docs)?;
        let rules = compile_rules(sources, docs, &defaults.template)?;
        Ok(PolicySet {
            rules,
            default: defaults.verdict,
            default_source,
            version: version_of(sources),
            files: sources.iter().map(|s| s.name.clone()).collect(),
        })
    }
}

/// Lists and reads the policy files of `dir`, sorted by name.
pub(super) fn read_sources(dir: &Path) -> Result<Vec<Source>, PolicyError> {
    let dir_error = |source| PolicyError::ReadDir {
        dir: dir.into(),
        source,
    };
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let path = entry.map_err(dir_error)?.path();
        let Some(name) = policy_file_name(&path) else {
            continue;
        };
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::ReadFile {
            file: path.clone(),
            source,
        })?;
        sources.push(Source { name, path, text });
    }
    if sources.is_empty() {
        return Err(PolicyError::NoFiles { dir: dir.into() });
    }
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(sources)
}

fn policy_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    (yaml && !name.starts_with('.')).then(|| name.to_owned())
}

/// The policy version: SHA-256 over each file's name and bytes, each part preceded by its
/// length (8 bytes, big-endian) so that no two different directories hash alike.
pub(super) fn version_of(sources: &[Source]) -> String {
    let mut hash = Sha256::new();
    for s in sources {
        for part in [s.name.as_bytes(), s.text.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
    }
    hex::encode(hash.finalize())
}

/// Parses YAML `text` from `file` into `T`; errors name the file, line and field.
pub(super) fn parse_yaml<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, PolicyError> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = Location {
            file: file.into(),
            line: e.location().map(|l| l.line()),
            field: None,
        };
        PolicyError::Invalid {
            at,
            message: e.to_string(),
        }
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = FieldPath::from_serde(e.path());
        let message = e.into_inner().to_string();
        // serde may report an unknown key at its parent; point at the key itself.
        if let Some(key) = unknown_key(&message)
            && path.0.last() != Some(&Seg::Key(key.into()))
        {
            path = path.key(key);
        }
        located(file, text, &path, message)
    })
}

fn unknown_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

/// An [`PolicyError::Invalid`] at `path` in `file`, whose contents are `text`.
pub(super) fn located(file: &Path, text: &str, path: &FieldPath, message: String) -> PolicyError {
    let at = Location {
        file: file.into(),
        line: line_of(text, path),
        field: path.dotted(),
    };
    PolicyError::Invalid { at, message }
}

/// The default verdict and the approval settings rules inherit.
struct Defaults {
    verdict: Verdict,
    template: ApprovalDoc,
}

/// At most one file may set `defaults`; without one, the built-in default approves with no
/// approvers, which `evaluate` turns into a denial (fail closed).
fn find_defaults(
    sources: &[Source],
    docs: &[FileDoc],
) -> Result<(Defaults, Option<String>), PolicyError> {
    let mut set_in = docs
        .iter()
        .enumerate()
        .filter(|(_, d)| d.defaults.is_some())
        .map(|(i, _)| i);
    let Some(first) = set_in.next() else {
        let builtin = spec_of(&ApprovalDoc::default()).expect("the built-in defaults are valid");
        let defaults = Defaults {
            verdict: Verdict::Approve(builtin),
            template: ApprovalDoc::default(),
        };
        return Ok((defaults, None));
    };
    let at = FieldPath::default().key("defaults");
    if let Some(second) = set_in.next() {
        let s = &sources[second];
        let message = format!(
            "`defaults` is already set in {}; set it in one file only",
            sources[first].name
        );
        return Err(located(&s.path, &s.text, &at, message));
    }
    let doc = docs[first].defaults.as_ref().expect("found above");
    let s = &sources[first];
    let defaults =
        compile_defaults(doc).map_err(|(p, m)| located(&s.path, &s.text, &join(&at, p), m))?;
    Ok((defaults, Some(s.name.clone())))
}

fn compile_defaults(doc: &DefaultsDoc) -> Result<Defaults, FieldError> {
    let template = doc.approval();
    let spec = spec_of(&template)?;
    let verdict = match doc.verdict {
        VerdictKind::Deny => Verdict::Deny {
            reason: doc
                .reason
                .clone()
                .unwrap_or_else(|| DEFAULT_DENY_REASON.into()),
        },
        VerdictKind::Allow => no_reason(&doc.reason).map(|()| Verdict::Allow)?,
        VerdictKind::Approve => no_reason(&doc.reason).map(|()| Verdict::Approve(spec))?,
    };
    Ok(Defaults { verdict, template })
}

/// Compiles every rule of every file, in order, and checks that ids are unique.
fn compile_rules(
    sources: &[Source],
    docs: Vec<FileDoc>,
    template: &ApprovalDoc,
) -> Result<Vec<Rule>, PolicyError> {
    let mut rules = Vec::new();
    let mut seen: HashMap<String, (String, Option<usize>)> = HashMap::new();
    for (s, doc) in sources.iter().zip(docs) {
        for (i, rule) in doc.rules.into_iter().enumerate() {
            let at = FieldPath::default().key("rules").index(i);
            let rule = compile_rule(rule, template, &s.name)
                .map_err(|(p, m)| located(&s.path, &s.text, &join(&at, p), m))?;
            let id_at = at.clone().key("id");
            if let Some((file, line)) = seen.get(&rule.id) {
                let first = line.map_or(file.clone(), |l| format!("{file}:{l}"));
                let message = format!("rule id `{}` is already used at {first}", rule.id);
                return Err(located(&s.path, &s.text, &id_at, message));
            }
            seen.insert(rule.id.clone(), (s.name.clone(), line_of(&s.text, &id_at)));
            rules.push(rule);
        }
    }
    Ok(rules)
}

fn compile_rule(doc: RuleDoc, template: &ApprovalDoc, file: &str) -> Result<Rule, FieldError> {
    let approval = doc.approval();
    let verdict = match doc.verdict {
        VerdictKind::Allow => {
            no_reason(&doc.reason)?;
            no_approval(&approval)?;
            Verdict::Allow
        }
        VerdictKind::Deny => {
            no_approval(&approval)?;
            let reason = doc.reason.filter(|r| !r.trim().is_empty());
            let reason = reason.ok_or_else(|| {
                field(
                    "verdict",
                    "a deny rule needs a `reason`: the agent reads it",
                )
            })?;
            Verdict::Deny { reason }
        }
        VerdictKind::Approve => {
            no_reason(&doc.reason)?;
            let spec = spec_of(&approval.inherit(template))?;
            if spec.approvers.is_empty() && spec.approver_groups.is_empty() {
                let message =
                    "an approval needs `approvers` or `approver_groups`, here or in `defaults`";
                return Err(field("verdict", message));
            }
            Verdict::Approve(spec)
        }
    };
    Ok(Rule {
        id: doc.id.0,
        file: file.into(),
        description: doc.description,
        conditions: doc.conditions,
        verdict,
    })
}

/// The approval a set of settings describes, with built-in values for what is left out.
fn spec_of(doc: &ApprovalDoc) -> Result<ApprovalSpec, FieldError> {
    let approvers = dedup(doc.approvers.clone().unwrap_or_default());
    let approver_groups = dedup(doc.approver_groups.clone().unwrap_or_default());
    let quorum = doc.quorum.map_or(1, |q| q.0);
    let possible = approvers.len();
    if approver_groups.is_empty() && possible > 0 && quorum as usize > possible {
        let message = format!(
            "quorum {quorum} is more than the {possible} listed approvers, and no approver group is named"
        );
        return Err(field("quorum", &message));
    }
    Ok(ApprovalSpec {
        approvers,
        approver_groups,
        quorum,
        allow_self_approval: doc.allow_self_approval.unwrap_or(false),
        timeout: doc.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
        redact: dedup(doc.redact.iter().flatten().map(|p| p.0.clone()).collect()),
        classification: doc.classification.clone(),
        channel: doc.channel.clone(),
        post_results: doc.post_results.unwrap_or(false),
        break_glass: doc.break_glass.as_ref().map(break_glass_of).transpose()?,
    })
}

/// Break-glass must name who may use it: a rule that says `break_glass: {}` allows nobody.
fn break_glass_of(doc: &BreakGlassDoc) -> Result<BreakGlassRule, FieldError> {
    if doc.approvers.is_empty() && doc.approver_groups.is_empty() {
        return Err(field(
            "break_glass",
            "break_glass must name the approvers or approver_groups who may use it",
        ));
    }
    let min_justification = doc.min_justification.unwrap_or(DEFAULT_MIN_JUSTIFICATION);
    if min_justification == 0 {
        return Err(field(
            "break_glass.min_justification",
            "a break-glass justification must be at least 1 character",
        ));
    }
    Ok(BreakGlassRule {
        approvers: dedup(doc.approvers.clone()),
        approver_groups: dedup(doc.approver_groups.clone()),
        min_justification,
    })
}

impl ApprovalDoc {
    /// These settings, with those left out taken from `defaults`. Approvers and approver groups
    /// are inherited together or not at all; `redact` lists are joined, so a rule can only add
    /// to what is hidden.
    fn inherit(mut self, defaults: &ApprovalDoc) -> ApprovalDoc {
        if self.approvers.is_none() && self.approver_groups.is_none() {
            self.approvers.clone_from(&defaults.approvers);
            self.approver_groups.clone_from(&defaults.approver_groups);
        }
        let redact = defaults
            .redact
            .iter()
            .chain(&self.redact)
            .flatten()
            .cloned()
            .collect::<Vec<_>>();
        ApprovalDoc {
            quorum: self.quorum.or(defaults.quorum),
            allow_self_approval: self.allow_self_approval.or(defaults.allow_self_approval),
            timeout: self.timeout.or(defaults.timeout),
            redact: (!redact.is_empty()).then_some(redact),
            classification: self
                .classification
                .or_else(|| defaults.classification.clone()),
            channel: self.channel.or_else(|| defaults.channel.clone()),
            post_results: self.post_results.or(defaults.post_results),
            break_glass: self.break_glass.or_else(|| defaults.break_glass.clone()),
            ..self
        }
    }
}

fn no_reason(reason: &Option<String>) -> Result<(), FieldError> {
    match reason {
        Some(_) => Err(field("reason", "`reason` applies only to `verdict: deny`")),
        None => Ok(()),
    }
}

fn no_approval(approval: &ApprovalDoc) -> Result<(), FieldError> {
    match approval.first_set() {
        Some(name) => Err(field(
            name,
            &format!("`{name}` applies only to `verdict: approve`"),
        )),
        None => Ok(()),
    }
}

fn field(name: &str, message: &str) -> FieldError {
    (FieldPath::default().key(name), message.into())
}

fn join(base: &FieldPath, rest: FieldPath) -> FieldPath {
    FieldPath(base.0.iter().cloned().chain(rest.0).collect())
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests;
