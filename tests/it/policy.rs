//! The shipped policies load and pass their fixtures; the CLI functions report as documented;
//! a running gateway picks up policy edits and keeps the old policy when an edit is broken.

use countersign::policy::cli::{self, ExplainArgs};
use countersign::policy::{Policies, PolicySet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::wait;

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// Runs one CLI function against an in-memory stdout.
fn run(f: impl FnOnce(&mut Vec<u8>) -> anyhow::Result<ExitCode>) -> (ExitCode, String) {
    let mut out = Vec::new();
    let code = f(&mut out).expect("the command runs");
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn every_shipped_policy_file_loads() {
    let set = PolicySet::load_dir(&policies_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.files().contains(&"default.yaml".to_owned()));
    assert!(set.rule_count() > 0);
}

#[test]
fn the_shipped_fixtures_pass() {
    let fixtures = policies_dir().join("fixtures/default.yaml");
    let (code, out) = run(|o| cli::test_to(&policies_dir(), &fixtures, o));
    assert_eq!(code, ExitCode::SUCCESS, "{out}");
    assert!(out.trim_end().ends_with(" passed, 0 failed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn check_prints_the_version_and_the_rule_count() {
    let (code, out) = run(|o| cli::check_to(&policies_dir(), o));
    assert_eq!(code, ExitCode::SUCCESS, "{out}");
    let version = PolicySet::load_dir(&policies_dir())
        .unwrap()
        .version()
        .to_owned();
    assert!(out.contains(&format!("policy version: {version}")), "{out}");
    assert!(out.contains(" rules"), "{out}");
}

#[test]
fn check_exits_1_with_the_located_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "rules:\n  - id: r\n    verdict: maybe\n",
    )
    .unwrap();
    let (code, out) = run(|o| cli::check_to(dir.path(), o));
    assert_eq!(code, ExitCode::FAILURE);
    assert!(
        out.contains("p.yaml:3: field `rules[0].verdict`: unknown variant `maybe`"),
        "{out}"
    );
}

#[test]
fn a_failing_fixture_is_reported_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "rules:\n  - id: all\n    verdict: allow\n",
    )
    .unwrap();
    let fixtures = dir.path().join("cases.yml.txt");
    let cases = "- {name: passes, agent: a, server: s, tool: t, expect: allow, rule: all}\n\
                 - {name: fails, agent: a, server: s, tool: t, expect: deny}\n";
    std::fs::write(&fixtures, cases).unwrap();
    let (code, out) = run(|o| cli::test_to(dir.path(), &fixtures, o));
    assert_eq!(code, ExitCode::FAILURE);
    assert!(out.contains("PASS  passes: allow by rule all"), "{out}");
    assert!(
        out.contains("FAIL  fails: expected deny, got allow by rule all"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("1 passed, 1 failed"), "{out}");
}

#[test]
fn explain_names_the_deciding_rule_its_settings_and_the_rules_that_lost() {
    let args = ExplainArgs {
        server: "echo".into(),
        tool: "run_shell".into(),
        agent: "demo-agent".into(),
        annotations: Some(r#"{"readOnlyHint": true}"#.into()),
        ..ExplainArgs::default()
    };
    let (code, out) = run(|o| cli::explain_to(&policies_dir(), &args, o));
    assert_eq!(code, ExitCode::SUCCESS, "{out}");
    assert!(out.contains("rule: no-shell (default.yaml)"), "{out}");
    assert!(out.contains("verdict: deny\nreason: Shell"), "{out}");
    assert!(
        out.contains(
            "also matched, lost by precedence:\n  read-only-trusted (default.yaml): allow"
        ),
        "{out}"
    );

    let args = ExplainArgs {
        tool: "delete_record".into(),
        annotations: None,
        ..args
    };
    let (_, out) = run(|o| cli::explain_to(&policies_dir(), &args, o));
    assert!(
        out.contains("verdict: approve\n  approvers: -\n  approver groups: operators\n  quorum: 2"),
        "{out}"
    );
}

#[test]
fn explain_refuses_arguments_that_are_not_json() {
    let args = ExplainArgs {
        arguments: Some("{nope".into()),
        ..ExplainArgs::default()
    };
    let mut out = Vec::new();
    let e = cli::explain_to(&policies_dir(), &args, &mut out).unwrap_err();
    assert!(e.to_string().contains("--arguments"), "{e}");
}

const V1: &str = "rules:\n  - id: r\n    verdict: allow\n";

/// Polls `policies` until its version differs from `old`, for at most `limit`.
async fn next_version(policies: &Policies, old: &str, limit: Duration) -> Option<String> {
    wait::within(limit, || async move {
        Some(policies.current().version().to_owned()).filter(|now| now != old)
    })
    .await
    .ok()
}

#[tokio::test]
async fn an_edited_policy_is_picked_up_and_a_broken_edit_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, V1).unwrap();
    let policies = Policies::new(PolicySet::load_dir(dir.path()).unwrap());
    let shutdown = CancellationToken::new();
    let task = policies.watch(dir.path().to_path_buf(), shutdown.clone());
    let v1 = policies.current().version().to_owned();

    std::fs::write(&file, V1.replace("allow", "deny\n    reason: stop")).unwrap();
    let v2 = next_version(&policies, &v1, Duration::from_secs(10))
        .await
        .expect("reloaded in time");
    assert_eq!(v2, policies.current().version());
    assert_eq!(policies.current().rule_count(), 1);

    std::fs::write(&file, "rules:\n  - id: r\n    verdict: [broken\n").unwrap();
    assert_eq!(
        next_version(&policies, &v2, Duration::from_millis(2500)).await,
        None,
        "a broken edit must not replace the policy"
    );

    std::fs::write(dir.path().join("q.yaml"), "rules: []\n").unwrap();
    std::fs::write(&file, V1).unwrap();
    let v3 = next_version(&policies, &v2, Duration::from_secs(10))
        .await
        .expect("the repaired edit loads");
    assert_ne!(v3, v1, "a new file is part of the version");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the watcher stops")
        .unwrap();
}
