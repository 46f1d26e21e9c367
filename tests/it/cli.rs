//! The command line's own helpers: shell completions and the man page, generated from the same
//! definitions the parser uses.

use crate::app::{Agent, Server, TestApp};
use std::process::Command;

fn countersign(args: &[&str]) -> String {
    let out = crate::app::countersign(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_and_the_man_page_know_every_command() {
    let bash = countersign(&["completions", "bash"]);
    assert!(bash.contains("_countersign()"), "{bash}");
    for command in ["serve", "approvals", "audit", "policy", "completions"] {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    let zsh = countersign(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef countersign"), "{zsh}");
    let man = countersign(&["man"]);
    assert!(man.contains(".TH countersign 1"), "{man}");
    assert!(man.contains("approvals") && man.contains("audit"), "{man}");
}

/// `countersign ARGS` in `dir`: exit success, stdout, stderr.
fn run_in(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    run(crate::app::countersign(args)
        .current_dir(dir)
        .env_remove("COUNTERSIGN_CONFIG"))
}

/// Runs `command`: exit success, stdout, stderr.
fn run(command: &mut Command) -> (bool, String, String) {
    let out = command.output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// One configuration with one of each mistake `config check` must find beyond the file's own
/// syntax: every one is reported in the same run, and the check fails.
#[test]
fn config_check_reports_every_problem_the_file_refers_to_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.yaml"),
        "rules:
  - {id: typo-group, match: {tool: a}, verdict: approve, approver_groups: [operatrs]}
  - {id: too-few, match: {tool: b}, verdict: approve, approvers: [alice, ghost], quorum: 2}
  - {id: mute, match: {tool: c}, verdict: approve, approvers: [mute]}
",
    )
    .unwrap();
    let config = format!(
        "server: {{listen: '{busy}', allow_anonymous: true}}
database: {{url: 'sqlite://no-such-dir/audit.db'}}
policy_dir: policies
upstreams:
  - {{name: gone, stdio: {{command: countersign-no-such-command}}}}
  - {{name: here, stdio: {{command: python3}}}}
chat:
  matrix: {{homeserver: 'http://127.0.0.1:9', access_token: t, room: '!r:localhost'}}
tls: {{ca_files: [no-such-ca.pem]}}
approvers:
  - {{id: alice, groups: [operators], token_sha256: '{token}'}}
  - {{id: mute, groups: []}}
",
        token = countersign::auth::hash_key("alice-token"),
    );
    std::fs::write(dir.path().join("c.yaml"), config).unwrap();
    let (ok, out, err) = run_in(dir.path(), &["config", "check", "--config", "c.yaml"]);
    assert!(!ok, "{out}{err}");
    for expected in [
        "problem: upstreams[0].stdio.command: upstream gone: command `countersign-no-such-command` is not found on PATH",
        "problem: rule typo-group: approver group `operatrs` has no members (groups with members: operators)",
        "problem: rule typo-group: needs 1 distinct approvers but only 0 can approve (nobody)",
        "problem: rule too-few: approver `ghost` is not in `approvers`",
        "problem: rule too-few: needs 2 distinct approvers but only 1 can approve (alice)",
        "problem: rule mute: approver `mute` has no token_sha256 and no account on a configured chat backend: they cannot vote",
        "warning: rule too-few: approver `alice` has no `chat.matrix` account",
        "problem: database.url: no-such-dir: the directory does not exist",
        "problem: chat: ",
        "no-such-ca.pem",
        &format!("warning: server.listen: {busy}: `serve` could not bind it now"),
        "is countersign already running?",
    ] {
        assert!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
    assert!(err.contains("8 problems found"), "{err}");
    assert!(!out.contains("upstream here"), "python3 is on PATH:\n{out}");
    drop(held);

    // A policy_dir that is not there says so, and that it is relative to the config file.
    std::fs::remove_dir_all(dir.path().join("policies")).unwrap();
    let (ok, out, _) = run_in(dir.path(), &["config", "check", "--config", "c.yaml"]);
    assert!(!ok);
    assert!(
        out.contains("problem: policy_dir:")
            && out.contains("relative to the config file's directory"),
        "{out}"
    );
}

#[test]
fn a_missing_config_file_says_how_to_pass_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run_in(dir.path(), &["config", "check"]);
    assert!(!ok);
    assert!(
        err.contains("countersign.yaml: no such configuration file; pass --config FILE or set COUNTERSIGN_CONFIG"),
        "{err}"
    );
}

#[test]
fn the_quick_start_configuration_checks_clean() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, out, err) = run_in(
        root,
        &["config", "check", "--config", "examples/quickstart.yaml"],
    );
    // Its listener may be in use by a quick-start gateway: that is only a warning.
    assert!(ok, "{out}{err}");
    assert!(out.contains("examples/quickstart.yaml: ok ("), "{out}");
    assert!(!out.contains("problem:"), "{out}");
}

#[tokio::test]
async fn serve_on_a_port_in_use_says_what_to_do() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap();
    let app = TestApp::builder()
        .plain_proxy()
        .agents(Vec::<Agent>::new())
        .server(Server {
            listen: Some(busy),
            ..Server::default()
        })
        .spawn_stopped()
        .await;
    let (ok, _, err) = run(&mut app.cli(&["serve"]));
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot listen on {busy}"))
            && err.contains("is countersign already running?")
            && err.contains("server.listen"),
        "{err}"
    );
}

/// `audit.read` names the operating-system account that ran the query, even when `$USER` and
/// `$LOGNAME` are empty (a service account, a bare `sudo`).
#[tokio::test]
async fn an_audit_query_from_the_cli_names_the_account_that_ran_it() {
    let app = TestApp::builder()
        .policy("defaults: {verdict: allow}\nrules: []\n")
        .agents(Vec::<Agent>::new())
        .spawn_stopped()
        .await;
    let list = || {
        app.cli(&["audit", "list", "--format", "json"])
            .env("USER", "")
            .env("LOGNAME", "")
            .env_remove("USERNAME")
            .output()
            .unwrap()
    };
    assert!(list().status.success());
    let out = list();
    assert!(out.status.success(), "{out:?}");
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let read = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "audit.read")
        .expect("the first query was recorded");
    let account = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let account = String::from_utf8(account.stdout).unwrap();
    assert_eq!(read["actor"], account.trim(), "{read}");
}

/// The shipped systemd unit passes `systemd-analyze verify` with nothing to say: no unknown
/// key, no unknown system-call group, the command it runs exists.
#[test]
fn the_systemd_unit_verifies_clean() {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing; .ci/run installs the systemd package"
        );
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("deploy/systemd/countersign.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/countersign serve"));
    for hardening in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=countersign",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    // The binary this test was built with stands in for /usr/local/bin/countersign.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("countersign.service");
    let unit = unit.replace(
        "/usr/local/bin/countersign",
        env!("CARGO_BIN_EXE_countersign"),
    );
    std::fs::write(&copy, unit).unwrap();
    let out = std::process::Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{out:?}");
}

/// `config check` on identity-provider groups standing for approver groups: a rule whose
/// quorum needs members from the provider is a warning (not a problem), a group that stands
/// for an approver group no rule names is a warning, and mistakes in the mapping itself, or an
/// approver id shaped like a group member's, are refused with the field named.
#[test]
fn config_check_knows_identity_provider_groups() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.yaml"),
        "rules:
  - {id: pay, match: {tool: a}, verdict: approve, approver_groups: [payments], quorum: 2}
  - {id: idp-only, match: {tool: b}, verdict: approve, approver_groups: [treasury]}
",
    )
    .unwrap();
    let config = |approvers: &str, groups: &str| {
        format!(
            "database: {{url: 'sqlite://audit.db'}}
policy_dir: policies
upstreams: [{{name: here, stdio: {{command: python3}}}}]
agents:
  - {{id: bot, on_behalf_of: alice, key_sha256: '{bot}'}}
  - {{id: other-bot, on_behalf_of: dana, key_sha256: '{bot}'}}
approvers: {approvers}
console:
  oidc:
    issuer: 'https://idp.example'
    client_id: c
    client_secret: s
    people: [{{subject: s-alice, approver: alice}}]
    approver_groups: {groups}
",
            bot = countersign::auth::hash_key("bot-key")
        )
    };
    let alice = format!(
        "[{{id: alice, groups: [payments], token_sha256: '{}'}}]",
        countersign::auth::hash_key("alice-token")
    );
    let mapping = "{pay-team: payments, vault: treasury, typo-team: paymnts}";
    std::fs::write(dir.path().join("c.yaml"), config(&alice, mapping)).unwrap();
    let (ok, out, err) = run_in(dir.path(), &["config", "check", "--config", "c.yaml"]);
    assert!(ok, "{out}{err}");
    for expected in [
        "warning: rule pay: needs 2 distinct approvers but only 1 configured ones can approve (alice); the rest must be members of the identity provider's groups pay-team voting from the console",
        "warning: console.oidc.approver_groups.typo-team: approver group `paymnts` is named by no rule's approver_groups",
        "warning: agents[1].on_behalf_of: `dana` (behind agent other-bot) is mapped by no subject or email in console.oidc.people",
    ] {
        assert!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
    assert!(!out.contains("treasury` has no members"), "{out}");
    assert!(
        !out.contains("agents[0].on_behalf_of"),
        "alice is mapped by subject:\n{out}"
    );

    for (approvers, groups, expected) in [
        (
            alice.as_str(),
            "{pay-team: ''}",
            "console.oidc.approver_groups.pay-team",
        ),
        (
            "[{id: 'idp:0123', groups: [payments]}]",
            "{}",
            "approvers[0].id",
        ),
    ] {
        std::fs::write(dir.path().join("c.yaml"), config(approvers, groups)).unwrap();
        let (ok, out, err) = run_in(dir.path(), &["config", "check", "--config", "c.yaml"]);
        assert!(
            !ok && err.contains(expected),
            "no `{expected}` in:\n{out}{err}"
        );
    }
}
