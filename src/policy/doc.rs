//! The policy file format as written. Values are parsed here, at the boundary: globs and JSON
//! Schemas are compiled and pointers and durations checked while the YAML is read, so a bad
//! value is reported with the path (and so the line) of the field that holds it.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// One policy file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDoc {
    /// What applies when no rule matches, and the approval settings rules inherit.
    #[serde(default)]
    pub defaults: Option<DefaultsDoc>,
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleDoc {
    pub id: RuleId,
    /// For people reading the file; shown by `policy explain`.
    #[serde(default)]
    pub description: Option<String>,
    /// All stated conditions must hold; an absent one holds for every call.
    #[serde(default, rename = "match")]
    pub conditions: Conditions,
    pub verdict: VerdictKind,
    #[serde(default)]
    pub reason: Option<String>,
    // Approval settings (see `ApprovalDoc`). Written out rather than flattened: serde's
    // `flatten` loses the field path of errors and does not combine with `deny_unknown_fields`.
    pub approvers: Option<Vec<String>>,
    pub approver_groups: Option<Vec<String>>,
    pub quorum: Option<Quorum>,
    pub allow_self_approval: Option<bool>,
    pub timeout: Option<Timeout>,
    pub redact: Option<Vec<Pointer>>,
    pub classification: Option<String>,
    pub channel: Option<String>,
    pub post_results: Option<bool>,
    pub break_glass: Option<BreakGlassDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsDoc {
    #[serde(default = "VerdictKind::approve")]
    pub verdict: VerdictKind,
    #[serde(default)]
    pub reason: Option<String>,
    // Approval settings, as in `RuleDoc`.
    pub approvers: Option<Vec<String>>,
    pub approver_groups: Option<Vec<String>>,
    pub quorum: Option<Quorum>,
    pub allow_self_approval: Option<bool>,
    pub timeout: Option<Timeout>,
    pub redact: Option<Vec<Pointer>>,
    pub classification: Option<String>,
    pub channel: Option<String>,
    pub post_results: Option<bool>,
    pub break_glass: Option<BreakGlassDoc>,
}

/// Approval settings as written; every one may be left out.
#[derive(Debug, Default, Clone)]
pub(super) struct ApprovalDoc {
    pub approvers: Option<Vec<String>>,
    pub approver_groups: Option<Vec<String>>,
    pub quorum: Option<Quorum>,
    pub allow_self_approval: Option<bool>,
    pub timeout: Option<Timeout>,
    pub redact: Option<Vec<Pointer>>,
    pub classification: Option<String>,
    pub channel: Option<String>,
    pub post_results: Option<bool>,
    pub break_glass: Option<BreakGlassDoc>,
}

/// Copies the approval settings out of a rule or the defaults, which write them inline.
macro_rules! approval_of {
    ($doc:expr) => {
        ApprovalDoc {
            approvers: $doc.approvers.clone(),
            approver_groups: $doc.approver_groups.clone(),
            quorum: $doc.quorum,
            allow_self_approval: $doc.allow_self_approval,
            timeout: $doc.timeout,
            redact: $doc.redact.clone(),
            classification: $doc.classification.clone(),
            channel: $doc.channel.clone(),
            post_results: $doc.post_results,
            break_glass: $doc.break_glass.clone(),
        }
    };
}

impl RuleDoc {
    pub fn approval(&self) -> ApprovalDoc {
        approval_of!(self)
    }
}

impl DefaultsDoc {
    pub fn approval(&self) -> ApprovalDoc {
        approval_of!(self)
    }
}

impl ApprovalDoc {
    /// The name of the first setting given, to blame when settings are not allowed.
    pub fn first_set(&self) -> Option<&'static str> {
        [
            ("approvers", self.approvers.is_some()),
            ("approver_groups", self.approver_groups.is_some()),
            ("quorum", self.quorum.is_some()),
            ("allow_self_approval", self.allow_self_approval.is_some()),
            ("timeout", self.timeout.is_some()),
            ("redact", self.redact.is_some()),
            ("classification", self.classification.is_some()),
            ("channel", self.channel.is_some()),
            ("post_results", self.post_results.is_some()),
            ("break_glass", self.break_glass.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum VerdictKind {
    Allow,
    Deny,
    Approve,
}

impl VerdictKind {
    fn approve() -> Self {
        VerdictKind::Approve
    }
}

/// What a rule looks at. Lists mean "any of"; fields mean "all of".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Conditions {
    pub server: Option<Patterns>,
    pub tool: Option<Patterns>,
    /// Agent ids.
    pub agent: Option<Patterns>,
    /// Matches when any of the agent's groups matches.
    pub agent_group: Option<Patterns>,
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub idempotent: Option<bool>,
    pub open_world: Option<bool>,
    /// A JSON Schema the call's arguments must satisfy.
    pub arguments: Option<ArgumentSchema>,
}

/// A rule id: unique across files, and never `default`, which names the default verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RuleId(pub String);

impl<'de> Deserialize<'de> for RuleId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = String::deserialize(d)?;
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_.:/".contains(c);
        if id.is_empty() || !id.chars().all(ok) {
            return Err(de::Error::custom(
                "a rule id uses letters, digits and `-_.:/` only, and is not empty",
            ));
        }
        if id == "default" {
            return Err(de::Error::custom(
                "`default` is reserved for the default verdict",
            ));
        }
        Ok(RuleId(id))
    }
}

/// Glob patterns (`*`, `?`, `[abc]`, `{a,b}`), one or a list; matches when any matches.
#[derive(Debug, Clone)]
pub(super) struct Patterns {
    pub source: Vec<String>,
    set: GlobSet,
}

impl Patterns {
    /// The first pattern that matches `name`.
    pub fn first_match(&self, name: &str) -> Option<&str> {
        let index = self.set.matches(name).into_iter().min()?;
        Some(&self.source[index])
    }

    fn compile(source: Vec<String>) -> Result<Self, PatternError> {
        if source.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut set = GlobSetBuilder::new();
        for pattern in &source {
            let glob = Glob::new(pattern).map_err(|source| PatternError::BadGlob {
                pattern: pattern.clone(),
                source,
            })?;
            set.add(glob);
        }
        let set = set.build().map_err(PatternError::Build)?;
        Ok(Patterns { source, set })
    }
}

/// Why a list of glob patterns is refused.
#[derive(Debug, thiserror::Error)]
enum PatternError {
    #[error("list at least one pattern")]
    Empty,
    #[error("bad glob `{pattern}`: {kind}", kind = .source.kind())]
    BadGlob {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error(transparent)]
    Build(globset::Error),
}

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OneOrMany;
        impl<'de> Visitor<'de> for OneOrMany {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a glob pattern or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(vec![v.into()])
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    all.push(p);
                }
                Ok(all)
            }
        }
        let source = d.deserialize_any(OneOrMany)?;
        Patterns::compile(source).map_err(de::Error::custom)
    }
}

/// A JSON Schema, compiled once at load. Remote `$ref`s are never fetched.
#[derive(Clone)]
pub(super) struct ArgumentSchema(pub Arc<jsonschema::Validator>);

impl fmt::Debug for ArgumentSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArgumentSchema")
    }
}

impl<'de> Deserialize<'de> for ArgumentSchema {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let schema = serde_json::Value::deserialize(d)?;
        let validator = jsonschema::options()
            .offline()
            .build(&schema)
            .map_err(|e| de::Error::custom(format!("invalid JSON Schema: {e}")))?;
        Ok(ArgumentSchema(Arc::new(validator)))
    }
}

/// The number of distinct approvers needed; at least 1.
#[derive(Debug, Clone, Copy)]
pub(super) struct Quorum(pub u32);

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(de::Error::custom("quorum must be at least 1")),
            n => Ok(Quorum(n)),
        }
    }
}

/// Who may approve alone, bypassing the quorum, and how much they must write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BreakGlassDoc {
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default)]
    pub approver_groups: Vec<String>,
    /// The shortest justification accepted, in characters (default 20).
    #[serde(default)]
    pub min_justification: Option<usize>,
}

/// A duration written as `90s`, `15m`, `2h`, `1d` or combined (`1h30m`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeout(pub Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Timeout).ok_or_else(|| {
            de::Error::custom(format!(
                "`{text}` is not a duration like 90s, 15m, 2h or 1h30m"
            ))
        })
    }
}

/// Parses `1h30m`-style durations. Zero is refused: an approval that expires at once is a
/// mistake, not a policy.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest[digits..].chars().next()? {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    (total > 0).then(|| Duration::from_secs(total))
}

/// The largest whole unit that divides the duration: `15m`, `90s`, `2h`.
pub(super) fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, suffix) in [(86_400, 'd'), (3600, 'h'), (60, 'm')] {
        if s > 0 && s.is_multiple_of(unit) {
            return format!("{}{suffix}", s / unit);
        }
    }
    format!("{s}s")
}

/// A JSON pointer (RFC 6901) into a call's arguments: `""` or `/a/0/b`, `~0` and `~1` escapes.
#[derive(Debug, Clone)]
pub(super) struct Pointer(pub String);

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let escapes_ok = text
            .split('~')
            .skip(1)
            .all(|after| after.starts_with(['0', '1']));
        if !(text.is_empty() || text.starts_with('/')) || !escapes_ok {
            return Err(de::Error::custom(format!(
                "`{text}` is not a JSON pointer (like `/password` or `/items/0/token`)"
            )));
        }
        Ok(Pointer(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        for bad in ["", "0m", "15", "m", "15 minutes", "1.5h", "-1m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn a_pattern_list_matches_when_any_pattern_matches() {
        let p = Patterns::compile(vec!["fs_*".into(), "echo".into()]).unwrap();
        assert_eq!(p.first_match("echo"), Some("echo"));
        assert_eq!(p.first_match("fs_write"), Some("fs_*"));
        assert_eq!(p.first_match("fs"), None);
        assert!(
            Patterns::compile(vec!["a[".into()])
                .unwrap_err()
                .to_string()
                .contains("bad glob `a[`")
        );
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        let parse = |s: &str| Pointer::deserialize(serde_json::Value::from(s)).map(|p| p.0);
        assert_eq!(parse("/a~1b/0").unwrap(), "/a~1b/0");
        assert_eq!(parse("").unwrap(), "");
        assert!(parse("password").is_err());
        assert!(parse("/a~2").is_err());
    }
}
