//! `countersign audit …`: verify, checkpoint, list, show.
//!
//! The lead wires [`AuditCommand`] (or the single functions) into the command line after
//! connecting with [`crate::store::connect`]. `list` and `show` record an `audit.read` event
//! before printing anything (and print nothing if they cannot); `verify` and `checkpoint`
//! only read, so they also work on a read-only copy of the database.

use super::{AuditLog, Checkpoint, EventKind, Filter, Format, NewEvent, render};
use crate::store::Db;
use anyhow::Context;
use serde_json::json;
use std::process::ExitCode;
use uuid::Uuid;

/// The `audit` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; exit 1 and name the first bad event if it is broken.
    Verify(VerifyArgs),
    /// Print the head of the chain as SEQ:HASH; keep it where the database's administrators
    /// cannot edit it, and pass it to `audit verify --checkpoint` later.
    Checkpoint,
    /// List events (recorded as an `audit.read` event).
    List(ListArgs),
    /// Every event of one call (recorded as an `audit.read` event).
    Show(ShowArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// A checkpoint printed earlier by `audit checkpoint`: that event must still exist with
    /// that hash (catches a cut tail or a recomputed chain).
    #[arg(long, value_name = "SEQ:HASH")]
    pub checkpoint: Option<Checkpoint>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub server: Option<String>,
    #[arg(long)]
    pub tool: Option<String>,
    #[arg(long)]
    pub approver: Option<String>,
    /// e.g. approved, denied, expired, cancelled, ok, error
    #[arg(long)]
    pub outcome: Option<String>,
    /// e.g. call.received, approval.decided, audit.read
    #[arg(long)]
    pub kind: Option<EventKind>,
    #[arg(long)]
    pub call_id: Option<Uuid>,
    /// RFC 3339 time or date, inclusive (e.g. 2026-01-02 or 2026-01-02T03:04:05Z).
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339 time or date, exclusive.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many events (default 100, at most 10000).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Start after this seq (the last seq of the previous page).
    #[arg(long)]
    pub after_seq: Option<i64>,
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// Who is asking, as recorded in the audit.read event (default: the OS user).
    #[arg(long)]
    pub auditor: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    pub call_id: Uuid,
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// Who is asking, as recorded in the audit.read event (default: the OS user).
    #[arg(long)]
    pub auditor: Option<String>,
}

impl clap::ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Table, Format::Json, Format::Jsonl, Format::Csv]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }))
    }
}

/// Runs one `audit` subcommand.
pub async fn run(db: &Db, command: &AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => verify(db, args).await,
        AuditCommand::Checkpoint => checkpoint(db).await,
        AuditCommand::List(args) => list(db, args).await,
        AuditCommand::Show(args) => show(db, args).await,
    }
}

/// `audit verify [--checkpoint SEQ:HASH] [--json]`: exit 0 when the chain holds, 1 when not.
pub async fn verify(db: &Db, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = super::verify(db, args.checkpoint.as_ref())
        .await
        .context("reading the audit log")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.ok {
        println!("{report}");
    } else {
        eprintln!("{report}");
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `audit checkpoint`: prints `SEQ:HASH`.
pub async fn checkpoint(db: &Db) -> anyhow::Result<ExitCode> {
    let checkpoint = super::checkpoint(db)
        .await
        .context("reading the audit log")?;
    println!("{checkpoint}");
    Ok(ExitCode::SUCCESS)
}

/// `audit list [filters] [--format table|json|jsonl|csv] [--auditor NAME]`.
pub async fn list(db: &Db, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        agent: args.agent.clone(),
        server: args.server.clone(),
        tool: args.tool.clone(),
        approver: args.approver.clone(),
        outcome: args.outcome.clone(),
        kind: args.kind,
        call_id: args.call_id,
        since: args.since.clone(),
        until: args.until.clone(),
        limit: args.limit,
        after_seq: args.after_seq,
    };
    let log = AuditLog::open(db.clone()).await?;
    record_read(
        &log,
        args.auditor.as_deref(),
        json!({ "command": "audit list", "query": filter }),
    )
    .await?;
    let events = log.list(&filter).await?;
    print!("{}", render(&events, args.format));
    Ok(ExitCode::SUCCESS)
}

/// `audit show CALL_ID [--format …] [--auditor NAME]`: exit 1 when the call has no events.
pub async fn show(db: &Db, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let log = AuditLog::open(db.clone()).await?;
    record_read(
        &log,
        args.auditor.as_deref(),
        json!({ "command": "audit show", "query": { "call_id": args.call_id } }),
    )
    .await?;
    let events = log.show(args.call_id).await?;
    if events.is_empty() {
        eprintln!("no events for call {}", args.call_id);
        return Ok(ExitCode::FAILURE);
    }
    print!("{}", render(&events, args.format));
    Ok(ExitCode::SUCCESS)
}

async fn record_read(
    log: &AuditLog,
    auditor: Option<&str>,
    mut payload: serde_json::Value,
) -> anyhow::Result<()> {
    let os_user = os_user();
    payload["via"] = json!("cli");
    payload["os_user"] = json!(os_user);
    let actor = auditor.map(str::to_owned).unwrap_or(os_user);
    log.append(NewEvent {
        call_id: None,
        kind: EventKind::AuditRead,
        actor,
        payload,
    })
    .await
    .context("cannot record this query in the audit log, so it is not answered")?;
    Ok(())
}

fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}
