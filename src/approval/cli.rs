//! `countersign approvals list|show|approve|deny|review`: the built-in approval channel for
//! operators at the gateway's host. Votes go through the same broker (and audit log) as every
//! channel, and the voter proves who they are with their own approver token: `--as` alone
//! names nobody.

use super::{Ballot, Broker, Status, VoteSource};
use crate::auth::hash_key;
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use uuid::Uuid;

/// The environment variable a CLI approver's token may come from.
pub const TOKEN_ENV: &str = "COUNTERSIGN_APPROVER_TOKEN";

/// How the approver proves who they are.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Credential {
    /// A file holding the approver's token (else COUNTERSIGN_APPROVER_TOKEN, else a prompt).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The approver you expect the token to be (checked, never trusted alone).
    #[arg(long = "as", value_name = "APPROVER")]
    expect: Option<String>,
}

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals (pending by default): what each asks, its progress and who voted.
    List {
        /// pending, approved, denied, expired, cancelled or all.
        #[arg(long, default_value = "pending")]
        status: String,
        /// `table` for people, `json` for programs.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Show one approval as JSON.
    Show { id: Uuid },
    /// Follow approvals: each pending one, then every new request, vote and decision, as they
    /// happen, until interrupted.
    Watch {
        /// `table` for people, `json` for programs (one object per line).
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Approve as a configured approver.
    Approve {
        id: Uuid,
        #[command(flatten)]
        credential: Credential,
        #[arg(long)]
        reason: Option<String>,
        /// Decide alone, bypassing the quorum, where the rule allows you to; the written
        /// justification is audited and another approver must review it afterwards.
        #[arg(long)]
        break_glass: Option<String>,
    },
    /// Deny as a configured approver; the agent receives the reason.
    Deny {
        id: Uuid,
        #[command(flatten)]
        credential: Credential,
        #[arg(long)]
        reason: String,
    },
    /// Review a break-glass approval another approver made (`approval.reviewed`).
    Review {
        id: Uuid,
        #[command(flatten)]
        credential: Credential,
        /// What you checked.
        #[arg(long)]
        note: String,
    },
}

pub async fn run(broker: &Broker, command: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ApprovalsCommand::List { status, format } => list(broker, &status, format == "json").await,
        ApprovalsCommand::Watch { format } => watch(broker, format == "json").await,
        ApprovalsCommand::Show { id } => show(broker, id).await,
        ApprovalsCommand::Approve {
            id,
            credential,
            reason,
            break_glass,
        } => {
            let (approver, evidence) = authenticate(broker, &credential)?;
            let ballot = Ballot {
                approver,
                approve: true,
                reason,
                source: VoteSource::Cli,
                evidence,
                break_glass,
                idp: None,
            };
            vote(broker, id, ballot).await
        }
        ApprovalsCommand::Deny {
            id,
            credential,
            reason,
        } => {
            let (approver, evidence) = authenticate(broker, &credential)?;
            let ballot = Ballot {
                approver,
                approve: false,
                reason: Some(reason),
                source: VoteSource::Cli,
                evidence,
                break_glass: None,
                idp: None,
            };
            vote(broker, id, ballot).await
        }
        ApprovalsCommand::Review {
            id,
            credential,
            note,
        } => review(broker, id, &credential, &note).await,
    }
}

/// `approvals list`: the approvals with `status` (`all` for every one), with who voted.
async fn list(broker: &Broker, status: &str, json: bool) -> anyhow::Result<ExitCode> {
    let filter = match status {
        "all" => None,
        s => Some(Status::parse(s).ok_or_else(|| anyhow::anyhow!("unknown status `{s}`"))?),
    };
    let mut listed = Vec::new();
    for approval in broker.list(filter).await? {
        let approvers = broker.approvers(approval.id).await?;
        listed.push((approval, approvers));
    }
    if json {
        let json: Vec<Value> = listed.iter().map(|(a, by)| described(a, by)).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for (approval, approvers) in &listed {
            print!(
                "{}",
                table_row(approval, approvers, crate::timestamp::now_ms())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `approvals show`: one approval as JSON.
async fn show(broker: &Broker, id: Uuid) -> anyhow::Result<ExitCode> {
    let approval = broker.get(id).await?;
    let approvers = broker.approvers(id).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&described(&approval, &approvers))?
    );
    Ok(ExitCode::SUCCESS)
}

/// `approvals review`: records the review, or prints why it is refused (and fails).
async fn review(
    broker: &Broker,
    id: Uuid,
    credential: &Credential,
    note: &str,
) -> anyhow::Result<ExitCode> {
    let (reviewer, evidence) = authenticate(broker, credential)?;
    match broker
        .review(id, &reviewer, note, evidence["authenticated"].clone())
        .await?
    {
        Ok(()) => {
            println!("{}", json!({"result": "reviewed", "by": reviewer}));
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!("{}", json!({"result": "refused", "why": why.to_string()}));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// How often `approvals watch` looks.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `approvals watch`: prints an approval when it is first seen pending, when its votes change,
/// and when it is decided; stops on Ctrl-C or SIGTERM.
async fn watch(broker: &Broker, json: bool) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut open: std::collections::HashMap<Uuid, usize> = Default::default();
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
        }
        let pending = broker.list(Some(Status::Pending)).await?;
        let mut still_open = std::collections::HashMap::new();
        for approval in pending {
            let approvers = broker.approvers(approval.id).await?;
            if open.get(&approval.id) != Some(&approvers.len()) {
                print_change(&approval, &approvers, json)?;
            }
            still_open.insert(approval.id, approvers.len());
        }
        for id in open.keys().filter(|id| !still_open.contains_key(id)) {
            let approval = broker.get(*id).await?;
            print_change(&approval, &broker.approvers(*id).await?, json)?;
        }
        open = still_open;
    }
}

fn print_change(
    approval: &super::Approval,
    approvers: &[String],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(&described(approval, approvers))?
        );
    } else {
        print!(
            "{}",
            table_row(approval, approvers, crate::timestamp::now_ms())
        );
    }
    Ok(())
}

/// An approval with its times in RFC 3339 and the approvers so far.
fn described(approval: &super::Approval, approvers: &[String]) -> Value {
    let mut json = serde_json::to_value(approval).unwrap_or_default();
    let time = |ms: i64| crate::audit::rfc3339_of_ms(ms);
    json["created"] = json!(time(approval.created_at));
    json["expires"] = json!(time(approval.expires_at));
    json["decided"] = json!(approval.decided_at.map(time));
    json["approvals_so_far"] = json!(approvers);
    json
}

/// Two lines for a person: what is asked and where it stands; then the (redacted) arguments.
fn table_row(a: &super::Approval, approvers: &[String], now_ms: i64) -> String {
    let behalf = a
        .on_behalf_of
        .as_deref()
        .map(|h| format!(" for {h}"))
        .unwrap_or_default();
    let progress = format!(
        "{}/{}{}",
        approvers.len(),
        a.spec.quorum,
        if approvers.is_empty() {
            String::new()
        } else {
            format!(" ({})", approvers.join(", "))
        }
    );
    let when = match a.status {
        Status::Pending => format!("expires in {} s", (a.expires_at - now_ms).max(0) / 1000),
        _ => format!(
            "decided by {} at {}",
            a.decided_by.as_deref().unwrap_or("countersign"),
            a.decided_at
                .map(crate::audit::rfc3339_of_ms)
                .unwrap_or_default()
        ),
    };
    let mut arguments = a.arguments.to_string();
    if arguments.chars().count() > 200 {
        arguments = arguments.chars().take(200).collect::<String>()
            + " … (full: countersign approvals show ID)";
    }
    format!(
        "{}  {:<9} {}/{} by {}{behalf} (rule {}), {progress}, {when}\n    arguments: {arguments}\n",
        a.id,
        a.status.as_str(),
        a.server,
        a.tool,
        a.agent,
        a.rule,
    )
}

/// The approver whose token was presented, and the evidence of it for the vote event.
fn authenticate(broker: &Broker, credential: &Credential) -> anyhow::Result<(String, Value)> {
    let (token, from) = read_token(credential)?;
    let person = broker.directory().by_token(token.trim()).ok_or_else(|| {
        anyhow::anyhow!("the approver token (from {from}) matches no configured approver")
    })?;
    if let Some(expected) = credential.expect.as_deref()
        && expected != person.id
    {
        anyhow::bail!(
            "the token is {}'s, not {expected}'s: a vote is cast only as the token's owner",
            person.id
        );
    }
    let evidence = json!({
        "authenticated": {
            "method": "approver token",
            "via": "cli",
            "from": from,
            "token_sha256_prefix": &hash_key(token.trim())[..12],
        },
        "os_user": os_user(),
    });
    Ok((person.id.clone(), evidence))
}

/// The token from `--token-file`, the environment, or a prompt on the terminal.
fn read_token(credential: &Credential) -> anyhow::Result<(String, &'static str)> {
    if let Some(path) = &credential.token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?;
        return Ok((token, "a token file"));
    }
    if let Ok(token) = std::env::var(TOKEN_ENV)
        && !token.trim().is_empty()
    {
        return Ok((token, TOKEN_ENV));
    }
    use std::io::IsTerminal as _;
    let prompt = || {
        std::io::stdin()
            .is_terminal()
            .then(|| rpassword::prompt_password("approver token: ").ok())
            .flatten()
    };
    match prompt() {
        Some(token) if !token.trim().is_empty() => Ok((token, "a prompt")),
        _ => anyhow::bail!(
            "an approver token is required: set {TOKEN_ENV}, pass --token-file FILE, or type it \
             at the prompt (--as alone names nobody)"
        ),
    }
}

async fn vote(broker: &Broker, id: Uuid, ballot: Ballot) -> anyhow::Result<ExitCode> {
    let result = broker.vote(id, ballot).await?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(match result {
        super::VoteResult::Counted { .. } | super::VoteResult::Decided { .. } => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// Who ran the command, kept next to the vote.
fn os_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}
