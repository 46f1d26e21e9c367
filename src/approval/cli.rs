//! `countersign approvals list|show|approve|deny`: the built-in approval channel for operators
//! at the gateway's host. Votes go through the same broker (and audit log) as every channel.

use super::{Ballot, Broker, Status};
use clap::Subcommand;
use serde_json::json;
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals (pending by default).
    List {
        /// pending, approved, denied, expired, cancelled or all.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// Show one approval as JSON.
    Show { id: Uuid },
    /// Approve as a configured approver.
    Approve {
        id: Uuid,
        /// The approver voting (an id from the configuration's `approvers`).
        #[arg(long = "as")]
        approver: String,
        #[arg(long)]
        reason: Option<String>,
        /// Decide alone, bypassing the quorum; the written justification is audited.
        #[arg(long)]
        break_glass: Option<String>,
    },
    /// Deny as a configured approver; the agent receives the reason.
    Deny {
        id: Uuid,
        #[arg(long = "as")]
        approver: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(broker: &Broker, command: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ApprovalsCommand::List { status } => {
            let filter = match status.as_str() {
                "all" => None,
                s => Some(Status::parse(s).ok_or_else(|| anyhow::anyhow!("unknown status `{s}`"))?),
            };
            for a in broker.list(filter).await? {
                let left = (a.expires_at - super::now_ms()).max(0) / 1000;
                println!(
                    "{}  {:<9} {}/{} by {} (rule {}), expires in {left} s",
                    a.id,
                    a.status.as_str(),
                    a.server,
                    a.tool,
                    a.agent,
                    a.rule
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Show { id } => {
            println!("{}", serde_json::to_string_pretty(&broker.get(id).await?)?);
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Approve {
            id,
            approver,
            reason,
            break_glass,
        } => {
            vote(
                broker,
                id,
                Ballot {
                    approver,
                    approve: true,
                    reason,
                    source: "cli".into(),
                    evidence: os_user(),
                    break_glass,
                },
            )
            .await
        }
        ApprovalsCommand::Deny {
            id,
            approver,
            reason,
        } => {
            let ballot = Ballot {
                approver,
                approve: false,
                reason: Some(reason),
                source: "cli".into(),
                evidence: os_user(),
                break_glass: None,
            };
            vote(broker, id, ballot).await
        }
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

/// Who ran the command, as evidence next to the vote.
fn os_user() -> serde_json::Value {
    json!({"os_user": std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_default()})
}
