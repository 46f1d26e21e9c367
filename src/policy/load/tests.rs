//! Load errors point at the file, line and field at fault.

use crate::policy::PolicyError;
use crate::policy::load::{PolicySet, Source};
use std::path::PathBuf;

fn load(files: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
    let sources = files
        .iter()
        .map(|(name, text)| Source {
            name: (*name).into(),
            path: PathBuf::from("policies").join(name),
            text: (*text).into(),
        })
        .collect();
    PolicySet::from_sources(sources)
}

/// The error of loading one file `p.yaml`, as displayed.
fn error(text: &str) -> String {
    load(&[("p.yaml", text)])
        .expect_err("should not load")
        .to_string()
}

const RULES: &str = "\
defaults:
  verdict: approve
  approver_groups: [operators]
rules:
  - id: read
    verdict: allow
  - id: destructive
    match:
      destructive: true
    verdict: approve
    approvers: [alice, bob]
    quorum: 2
";

#[test]
fn a_valid_file_loads() {
    let set = load(&[("p.yaml", RULES)]).unwrap();
    assert_eq!(
        (set.rule_count(), set.files()),
        (2, &["p.yaml".to_owned()][..])
    );
}

#[test]
fn a_type_error_names_file_line_and_field() {
    let e = error(&RULES.replace("quorum: 2", "quorum: two"));
    assert!(
        e.starts_with("policies/p.yaml:12: field `rules[1].quorum`: invalid type"),
        "{e}"
    );
}

#[test]
fn a_zero_quorum_is_refused_at_its_line() {
    let e = error(&RULES.replace("quorum: 2", "quorum: 0"));
    assert_eq!(
        e,
        "policies/p.yaml:12: field `rules[1].quorum`: quorum must be at least 1"
    );
}

#[test]
fn a_quorum_above_the_listed_approvers_is_refused() {
    let e = error(&RULES.replace("quorum: 2", "quorum: 3"));
    assert!(e.starts_with("policies/p.yaml:12: field `rules[1].quorum`: quorum 3 is more than the 2 listed approvers"), "{e}");
    let groups = RULES.replace("quorum: 2", "quorum: 3\n    approver_groups: [ops]");
    assert!(
        load(&[("p.yaml", &groups)]).is_ok(),
        "a group may supply more approvers"
    );
}

#[test]
fn a_duplicate_rule_id_names_both_places() {
    let other = "rules:\n  - id: other\n    verdict: allow\n  - id: read\n    verdict: allow\n";
    let e = load(&[("a.yaml", RULES), ("b.yaml", other)])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "policies/b.yaml:4: field `rules[1].id`: rule id `read` is already used at a.yaml:5"
    );
}

#[test]
fn a_bad_glob_is_refused_at_its_line() {
    let e = error(&RULES.replace("destructive: true", "tool: 'a[b'"));
    assert!(
        e.starts_with("policies/p.yaml:9: field `rules[1].match.tool`: bad glob `a[b`"),
        "{e}"
    );
}

#[test]
fn a_bad_json_schema_is_refused_at_its_line() {
    let e = error(&RULES.replace("destructive: true", "arguments: {type: 12}"));
    assert!(
        e.starts_with("policies/p.yaml:9: field `rules[1].match.arguments`: invalid JSON Schema"),
        "{e}"
    );
}

#[test]
fn a_remote_schema_reference_is_never_fetched() {
    let e = error(&RULES.replace(
        "destructive: true",
        "arguments: {$ref: 'https://example.com/s.json'}",
    ));
    assert!(
        e.contains("field `rules[1].match.arguments`: invalid JSON Schema"),
        "{e}"
    );
}

#[test]
fn a_bad_redact_pointer_is_refused_at_its_line() {
    let e = error(&RULES.replace("quorum: 2", "quorum: 2\n    redact: [password]"));
    assert!(
        e.starts_with(
            "policies/p.yaml:13: field `rules[1].redact[0]`: `password` is not a JSON pointer"
        ),
        "{e}"
    );
}

#[test]
fn an_unknown_verdict_is_refused_at_its_line() {
    let e = error(&RULES.replace("verdict: allow", "verdict: permit"));
    assert!(
        e.starts_with("policies/p.yaml:6: field `rules[0].verdict`: unknown variant `permit`"),
        "{e}"
    );
}

#[test]
fn a_misspelt_field_is_pointed_at() {
    let e = error(&RULES.replace("quorum: 2", "qourum: 2"));
    assert!(
        e.starts_with("policies/p.yaml:12: field `rules[1].qourum`: unknown field `qourum`"),
        "{e}"
    );
}

#[test]
fn a_missing_id_is_reported_at_the_rule() {
    let e = error(&RULES.replace("  - id: read\n", "  - description: read\n"));
    assert!(
        e.starts_with("policies/p.yaml:5: field `rules[0]`: missing field `id`"),
        "{e}"
    );
}

#[test]
fn the_id_default_is_reserved() {
    let e = error(&RULES.replace("id: read", "id: default"));
    assert!(
        e.contains("field `rules[0].id`: `default` is reserved"),
        "{e}"
    );
}

#[test]
fn a_deny_rule_needs_a_reason() {
    let e = error(&RULES.replace("verdict: allow", "verdict: deny"));
    assert!(
        e.starts_with("policies/p.yaml:6: field `rules[0].verdict`: a deny rule needs a `reason`"),
        "{e}"
    );
}

#[test]
fn a_reason_on_a_rule_that_does_not_deny_is_refused() {
    let e = error(&RULES.replace("verdict: allow", "verdict: allow\n    reason: why"));
    assert!(
        e.contains("field `rules[0].reason`: `reason` applies only to `verdict: deny`"),
        "{e}"
    );
}

#[test]
fn approval_settings_on_an_allow_rule_are_refused() {
    let e = error(&RULES.replace("verdict: allow", "verdict: allow\n    quorum: 2"));
    assert!(e.starts_with("policies/p.yaml:7: field `rules[0].quorum`: `quorum` applies only to `verdict: approve`"), "{e}");
}

#[test]
fn an_approve_rule_without_approvers_here_or_in_defaults_is_refused() {
    let text = "rules:\n  - id: r\n    verdict: approve\n    quorum: 1\n";
    let e = error(text);
    assert!(e.starts_with("policies/p.yaml:3: field `rules[0].verdict`: an approval needs `approvers` or `approver_groups`"), "{e}");
}

#[test]
fn defaults_may_be_set_in_one_file_only() {
    let e = load(&[("a.yaml", RULES), ("b.yaml", "defaults: {verdict: deny}\n")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "policies/b.yaml:1: field `defaults`: `defaults` is already set in a.yaml; set it in one file only"
    );
}

#[test]
fn a_bad_timeout_in_defaults_is_refused_at_its_line() {
    let e = error(&RULES.replace("defaults:\n", "defaults:\n  timeout: soon\n"));
    assert!(
        e.starts_with("policies/p.yaml:2: field `defaults.timeout`: `soon` is not a duration"),
        "{e}"
    );
}

#[test]
fn a_yaml_syntax_error_has_a_line() {
    let e = load(&[("p.yaml", "rules: [\n")]).unwrap_err();
    let at = e.location().expect("located");
    assert!(at.line.is_some() && at.field.is_none(), "{e}");
}

#[test]
fn an_empty_file_is_a_file_without_rules() {
    assert_eq!(
        load(&[("p.yaml", "# nothing yet\n")]).unwrap().rule_count(),
        0
    );
}

#[test]
fn only_visible_yaml_files_directly_in_the_directory_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("a.yaml", "rules: [{id: a, verdict: allow}]\n");
    write("b.yml", "rules: [{id: b, verdict: allow}]\n");
    write(".hidden.yaml", "not: [valid\n");
    write("notes.txt", "not yaml: [\n");
    std::fs::create_dir(dir.path().join("fixtures")).unwrap();
    write("fixtures/cases.yaml", "- not a policy\n");
    let set = PolicySet::load_dir(dir.path()).unwrap();
    assert_eq!(set.files(), ["a.yaml", "b.yml"]);
}

#[test]
fn a_directory_without_policy_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = PolicySet::load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, PolicyError::NoFiles { .. }), "{e}");
    let e = PolicySet::load_dir(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(e, PolicyError::ReadDir { .. }), "{e}");
}

#[test]
fn break_glass_must_name_who_may_use_it() {
    let with = |setting: &str| RULES.replace("quorum: 2", &format!("quorum: 2\n    {setting}"));
    assert!(load(&[("p.yaml", &with("break_glass: {approvers: [alice]}"))]).is_ok());
    let e = error(&with("break_glass: {}"));
    assert!(
        e.contains("field `rules[1].break_glass`: break_glass must name the approvers"),
        "{e}"
    );
    let e = error(&with(
        "break_glass: {approvers: [alice], min_justification: 0}",
    ));
    assert!(e.contains("break_glass.min_justification"), "{e}");
    let e = error(&with("break_glass: {approvers: [alice], why: x}"));
    assert!(e.contains("unknown field `why`"), "{e}");
}
