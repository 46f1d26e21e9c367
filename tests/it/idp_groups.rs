//! Identity-provider groups standing for approver groups (issue 15), on SQLite and PostgreSQL:
//! votes cast as the console casts them for someone its OpenID Connect sign-in verified (the
//! broker's `Ballot` with `idp`, from a second broker on the same database, as the CLI has
//! one), against a running gateway; and the attacks on it, each refused by the ledger or
//! named by `audit verify`. The sign-in itself is tested in the browser (`console.rs`).

use crate::app::{Oidc, TestApp};
use crate::support::Backend;
use countersign::approval::{Ballot, Broker, Directory, VoteResult, VoteSource};
use countersign::audit::events::IdpVoter;
use countersign::audit::{EventKind, NewEvent};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

const ISSUER: &str = "https://idp.example";

/// The console's identity provider: its group `idp-ops` stands for the approver group `ops`
/// (which `destructive-needs-two` names, quorum 2); `contractors` stands for nothing.
fn console_oidc() -> Oidc {
    Oidc {
        issuer: ISSUER.into(),
        client_id: "countersign".into(),
        client_secret: "not-used-here".into(),
        approver_groups: vec![("idp-ops".into(), "ops".into())],
    }
}

/// The standard app on `backend`, with the console's identity provider.
async fn setup(backend: Backend) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .oidc(console_oidc())
        .spawn()
        .await
}

/// A broker on the gateway's database, as `countersign approvals` opens one.
async fn broker(config: &Path) -> Arc<Broker> {
    let config = countersign::config::load(config).unwrap();
    let db = countersign::store::connect(&config.database.url)
        .await
        .unwrap();
    let audit = countersign::audit::setup::open(db.clone(), &config.audit, &config.database.url)
        .await
        .unwrap();
    let directory = Arc::new(Directory::from_config(&config));
    Broker::new(db, audit, directory, Vec::new()).await.unwrap()
}

/// An approval as the console casts it for someone its sign-in verified.
fn console_ballot(who: &str, subject: &str, groups: &[&str]) -> Ballot {
    Ballot {
        approver: who.into(),
        approve: true,
        reason: None,
        source: VoteSource::Console,
        evidence: json!({"channel": "console", "authenticated": {"method": "openid connect",
            "via": "console", "issuer": ISSUER, "subject": subject}}),
        break_glass: None,
        idp: Some(IdpVoter {
            issuer: ISSUER.into(),
            subject: subject.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }),
    }
}

/// `countersign audit verify`: (success, what it said).
fn verify(app: &TestApp) -> (bool, String) {
    let out = app.cli(&["audit", "verify"]).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The payloads of the audit events of `kind` (as auditor audrey).
async fn payloads(app: &TestApp, kind: &str) -> Vec<Value> {
    let events = app.audit_events(&format!("kind={kind}&limit=1000")).await;
    events.iter().map(|e| e["payload"].clone()).collect()
}

fn refused(result: &VoteResult, want: &str) {
    match result {
        VoteResult::NotAuthorized { why } => assert!(why.contains(want), "{why}"),
        other => panic!("counted where it must be refused ({want}): {other:?}"),
    }
}

/// A member of `idp-ops` who is not in `approvers` approves with bob: the call runs, the log
/// shows why she could, and the story holds. Every attack on the way is refused.
async fn a_group_member_approves(backend: Backend) {
    let app = setup(backend).await;
    let console = broker(&app.config_file()).await;
    let (agent, id) = app.held_delete("rec-groups").await;
    let approval = id.parse().unwrap();
    outsiders_and_the_agents_human_are_refused(&console, &app, &id).await;
    // bob approves with his token, then signs in mapped to his id and holding the group.
    let approve = format!("/approvals/{id}/approve");
    let (status, said) = app.post(&approve, "bob", None).await;
    assert_eq!(
        (status, said["result"].as_str()),
        (200, Some("counted")),
        "{said}"
    );
    let again = console_ballot("bob", "s-bob", &["idp-ops"]);
    assert_eq!(
        console.vote(approval, again).await.unwrap(),
        VoteResult::AlreadyVoted
    );
    // gina, in no configuration, decides through her group.
    let gina = console_ballot("idp:0123456789abcdef", "s-gina", &["x", "idp-ops"]);
    let decided = console.vote(approval, gina).await.unwrap();
    assert!(matches!(decided, VoteResult::Decided { .. }), "{decided:?}");
    let response = agent.answer().await;
    assert!(response.text().contains("rec-groups"), "{response}");
    the_log_shows_the_group(&app).await;

    // On the next call, gina votes again as carol (mapped to her subject since): one person.
    let (_agent, id) = app.held_delete("rec-groups-2").await;
    let approval = id.parse().unwrap();
    let gina = console_ballot("idp:0123456789abcdef", "s-gina", &["idp-ops"]);
    let counted = console.vote(approval, gina).await.unwrap();
    assert_eq!(
        counted,
        VoteResult::Counted {
            approvals: 1,
            quorum: 2
        }
    );
    let as_carol = console_ballot("carol", "s-gina", &["idp-ops"]);
    assert_eq!(
        console.vote(approval, as_carol).await.unwrap(),
        VoteResult::AlreadyVoted
    );
    let (ok, said) = verify(&app);
    assert!(ok, "{said}");
}

/// An outsider whose token carries only an unmapped group; the agent's own human holding the
/// group; a configured approver outside `ops` claiming the group over a channel that is not
/// the console, or in an API body: none counts.
async fn outsiders_and_the_agents_human_are_refused(console: &Broker, app: &TestApp, id: &str) {
    let approval = id.parse().unwrap();
    let eve = console_ballot("idp:e5e5e5e5e5e5e5e5", "s-eve", &["contractors"]);
    let eve = console.vote(approval, eve).await.unwrap();
    refused(&eve, "none of their groups stands for an approver group");
    let alice = console_ballot("alice", "s-alice", &["idp-ops"]);
    refused(
        &console.vote(approval, alice).await.unwrap(),
        "asked for this call",
    );
    let mut dave = console_ballot("dave", "s-dave", &["idp-ops"]);
    dave.source = VoteSource::Http;
    let dave = console.vote(approval, dave).await.unwrap();
    refused(&dave, "not an approver for this call");
    let approve = format!("/approvals/{id}/approve");
    let body = json!({"idp": {"issuer": ISSUER, "subject": "s-dave", "groups": ["idp-ops"]}});
    let (status, said) = app.post(&approve, "dave", Some(body)).await;
    assert_eq!(status, 422, "{said}");
}

crate::on_both_databases!(a_group_member_approves: a_group_member_not_in_approvers_approves_and_every_attack_is_refused_on_sqlite, a_group_member_not_in_approvers_approves_and_every_attack_is_refused_on_postgres);

/// `approval.requested` records what the group stood for; gina's vote, who she is at the
/// provider and the group that made her eligible (only that one).
async fn the_log_shows_the_group(app: &TestApp) {
    let requested = payloads(app, "approval.requested").await;
    assert_eq!(
        requested[0]["eligible_groups"],
        json!([{"group": "ops", "issuer": ISSUER, "idp_groups": ["idp-ops"]}])
    );
    let votes = payloads(app, "approval.vote").await;
    let gina = votes
        .iter()
        .find(|v| v["idp"]["subject"] == "s-gina")
        .unwrap();
    assert_eq!(gina["result"]["result"], "decided", "{gina}");
    assert_eq!(
        gina["idp"],
        json!({"issuer": ISSUER, "subject": "s-gina", "groups": ["idp-ops"]}),
        "{gina}"
    );
    let decided = payloads(app, "approval.decided").await;
    let counted = &decided[0]["approvers"];
    assert_eq!(counted[0]["approver"], "bob", "{counted}");
    assert_eq!(counted[1]["idp"]["subject"], "s-gina", "{counted}");
    assert!(
        votes
            .iter()
            .filter(|v| v["source"] != "console")
            .all(|v| v.get("idp").is_none()),
        "{votes:?}"
    );
}

/// Someone holding the signing key forges a counted vote from a group the request never
/// recorded, and the decision: the gateway runs nothing, and `audit verify` names the vote.
async fn a_forged_group_vote(backend: Backend) {
    let app = setup(backend).await;
    let (agent, id) = app.held_delete("rec-forged").await;
    let (status, _) = app
        .post(&format!("/approvals/{id}/approve"), "bob", None)
        .await;
    assert_eq!(status, 200);
    forge_group_vote(&app, &id).await;
    let response = agent.answer().await;
    assert!(
        response.is_error() || response.message.get("error").is_some(),
        "{response}"
    );
    let (ok, said) = verify(&app);
    assert!(!ok, "{said}");
    assert!(
        said.contains("a vote from idp:ffffffffffffffff counted")
            && said.contains("contractors stand for no approver group it named"),
        "{said}"
    );
}

/// What someone with the database and the signing key can do: a counted vote from mallory,
/// whose group `contractors` the request did not record, and the approval decided on it (the
/// working table too, or the waiting call would not look again), all properly signed.
async fn forge_group_vote(app: &TestApp, id: &str) {
    let loaded = countersign::config::load(&app.config_file()).unwrap();
    let url = &loaded.database.url;
    let handle = countersign::store::connect(url).await.unwrap();
    let log = countersign::audit::setup::open(handle, &loaded.audit, url)
        .await
        .unwrap();
    let call_id = Some(app.approval(id).await.call_id.parse().unwrap());
    let names = json!({"agent": "agent-1", "server": "echo", "tool": "delete_record"});
    let mut vote = json!({"approval_id": id, "approver": "idp:ffffffffffffffff",
        "vote": "approve", "source": "console", "result": {"result": "counted"},
        "idp": {"issuer": ISSUER, "subject": "s-mallory", "groups": ["contractors"]}});
    let mut decided = json!({"approval_id": id, "outcome": "approved", "decided_by": "bob"});
    for p in [&mut vote, &mut decided] {
        let names = names.as_object().unwrap().clone();
        p.as_object_mut().unwrap().extend(names);
    }
    let owner = app.owner().await;
    let row =
        "UPDATE approvals SET status = 'approved', decided_by = 'bob' WHERE status = 'pending'";
    sqlx::query(row).execute(&owner).await.unwrap();
    let forged = [
        (EventKind::ApprovalVote, vote),
        (EventKind::ApprovalDecided, decided),
    ];
    for (kind, payload) in forged {
        let actor = "idp:ffffffffffffffff";
        let event = NewEvent::untyped(call_id, kind, actor, payload);
        log.append(event).await.unwrap();
    }
}

crate::on_both_databases!(a_forged_group_vote: a_forged_vote_from_a_group_the_request_did_not_record_runs_nothing_and_is_named_on_sqlite, a_forged_vote_from_a_group_the_request_did_not_record_runs_nothing_and_is_named_on_postgres);
