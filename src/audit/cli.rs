//! `countersign audit …`: verify, checkpoint, list, show, and the signing keys.
//!
//! `list` and `show` record an `audit.read` event before printing anything (and print nothing
//! if they cannot); `verify` and `checkpoint` only read, so they also work on a read-only copy
//! of the database, and `verify --database URL --public-key KEY` needs no gateway config.

use super::events::{AuditEvent, AuditKeyEvent, AuditRead};
use super::setup::{self, AuditPaths};
use super::{
    AuditLog, Checkpoint, EventKind, Filter, Format, NewEvent, SigningKey, TrustedKeys,
    VerifyOptions, anchor, render,
};
use crate::config::Config;
use crate::store::Db;
use anyhow::Context;
use serde_json::json;
use std::path::{Path, PathBuf};
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
    /// Print the public key of the configured signing key (give it to auditors, for
    /// `audit verify --public-key`).
    PublicKey,
    /// Create a new signing key file and print its public key.
    Keygen {
        /// Where to write the key (refuses to overwrite a file).
        #[arg(long)]
        out: PathBuf,
    },
    /// Introduce a new signing key in the chain, signed by the current one. Then point
    /// `audit.signing_key` at the new key and list the old public key in
    /// `audit.trusted_keys`.
    RotateKey {
        /// The new key file (made with `audit keygen`).
        #[arg(long)]
        new_key: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// A checkpoint printed earlier by `audit checkpoint`: that event must still exist with
    /// that hash (catches a cut tail or a recomputed chain).
    #[arg(long, value_name = "SEQ:HASH")]
    pub checkpoint: Option<Checkpoint>,
    /// A public key whose signed heads are trusted (64 hex digits, or a file holding them);
    /// repeatable. With a config, the configured keys are trusted too.
    #[arg(long = "public-key", value_name = "KEY")]
    pub public_keys: Vec<String>,
    /// The anchors file the log must still hold every head of (default with a config: the
    /// configured one).
    #[arg(long, value_name = "FILE")]
    pub anchors: Option<PathBuf>,
    /// Verify this database without a gateway config (offline): give --public-key too.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// A forward with no recorded end is a violation once it is this much older than the
    /// log's last event (seconds).
    #[arg(long, default_value_t = 3600)]
    pub in_flight_secs: u64,
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
    /// RFC 3339 time or date, or a time ago, inclusive (e.g. 2026-01-02, 2026-01-02T03:04:05Z,
    /// 24h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339 time or date, or a time ago, exclusive.
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

/// Runs one `audit` subcommand; the config is read only when the command needs it.
pub async fn run(config: &Path, command: &AuditCommand) -> anyhow::Result<ExitCode> {
    let load = || -> anyhow::Result<Config> { Ok(crate::config::load(config)?) };
    match command {
        AuditCommand::Verify(args) if args.database.is_some() => {
            let url = args.database.as_deref().unwrap_or_default();
            let db = crate::store::connect(url).await?;
            verify(&db, &offline_options(args)?, args).await
        }
        AuditCommand::Keygen { out } => keygen(out),
        command => {
            let config = load()?;
            let db = crate::store::connect(&config.database.url).await?;
            match command {
                AuditCommand::Verify(args) => {
                    let options = configured_options(&config, args)?;
                    verify(&db, &options, args).await
                }
                AuditCommand::Checkpoint => checkpoint(&db).await,
                AuditCommand::PublicKey => {
                    let paths = AuditPaths::of(&config.audit, &config.database.url);
                    let key = SigningKey::load(&paths.signing_key)?;
                    println!("{}  (key id {})", key.public_hex(), key.id());
                    Ok(ExitCode::SUCCESS)
                }
                AuditCommand::List(args) => {
                    let log = setup::open(db, &config.audit, &config.database.url).await?;
                    list(&log, args).await
                }
                AuditCommand::Show(args) => {
                    let log = setup::open(db, &config.audit, &config.database.url).await?;
                    show(&log, args).await
                }
                AuditCommand::RotateKey { new_key } => {
                    let log = setup::open(db, &config.audit, &config.database.url).await?;
                    rotate_key(&log, new_key).await
                }
                AuditCommand::Keygen { .. } => unreachable!("handled above"),
            }
        }
    }
}

/// Offline: only the keys and anchors given on the command line.
fn offline_options(args: &VerifyArgs) -> anyhow::Result<VerifyOptions> {
    if args.public_keys.is_empty() {
        anyhow::bail!(
            "offline verification needs the gateway's public key: --public-key HEX (print it \
             with `countersign audit public-key` where the key is)"
        );
    }
    options(TrustedKeys::new(), None, args)
}

/// With a config: the configured keys and anchors, plus what the command line adds.
fn configured_options(config: &Config, args: &VerifyArgs) -> anyhow::Result<VerifyOptions> {
    let paths = AuditPaths::of(&config.audit, &config.database.url);
    let mut trusted = TrustedKeys::new();
    if paths.signing_key.exists() {
        trusted.add(SigningKey::load(&paths.signing_key)?.public());
    }
    for key in &config.audit.trusted_keys {
        trusted.add_text(key)?;
    }
    options(trusted, Some(paths.anchors), args)
}

fn options(
    mut trusted: TrustedKeys,
    default_anchors: Option<PathBuf>,
    args: &VerifyArgs,
) -> anyhow::Result<VerifyOptions> {
    for key in &args.public_keys {
        trusted.add_text(key)?;
    }
    let anchors = match args.anchors.clone().or(default_anchors) {
        Some(path) => anchor::read(&path)?,
        None => Vec::new(),
    };
    Ok(VerifyOptions {
        checkpoint: args.checkpoint.clone(),
        trusted,
        anchors,
        in_flight: std::time::Duration::from_secs(args.in_flight_secs),
    })
}

/// `audit verify`: exit 0 when the chain and the story hold, 1 when not.
pub async fn verify(
    db: &Db,
    options: &VerifyOptions,
    args: &VerifyArgs,
) -> anyhow::Result<ExitCode> {
    let report = super::verify(db, options)
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

fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let key = SigningKey::generate()?;
    key.save_new(out)?;
    println!("{}  (key id {})", key.public_hex(), key.id());
    Ok(ExitCode::SUCCESS)
}

/// Appends `audit.key` for the new key, introduced by (and signed with) the current one.
async fn rotate_key(log: &AuditLog, new_key: &Path) -> anyhow::Result<ExitCode> {
    let new = SigningKey::load(new_key)?;
    let old = log.keys().signing.id().to_owned();
    let key = AuditKeyEvent {
        key_id: new.id().to_owned(),
        public_key: new.public_hex(),
        introduced_by: Some(old.clone()),
    };
    let appended = log
        .append(NewEvent::new(None, old.clone(), AuditEvent::AuditKey(key)))
        .await?;
    println!(
        "key {} introduced at seq {} (signed by {old}). Now set audit.signing_key to {} and add \
         {} to audit.trusted_keys, then restart.",
        new.id(),
        appended.seq,
        new_key.display(),
        log.keys().signing.public_hex()
    );
    Ok(ExitCode::SUCCESS)
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
pub async fn list(log: &AuditLog, args: &ListArgs) -> anyhow::Result<ExitCode> {
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
    let query = serde_json::to_value(&filter)?;
    record_read(log, args.auditor.as_deref(), "audit list", query).await?;
    let events = log.list(&filter).await?;
    print!("{}", render(&events, args.format));
    if let Some(notice) = truncation_notice(&events, filter.effective_limit()) {
        eprintln!("{notice}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit show CALL_ID [--format …] [--auditor NAME]`: exit 1 when the call has no events.
pub async fn show(log: &AuditLog, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let query = json!({ "call_id": args.call_id });
    record_read(log, args.auditor.as_deref(), "audit show", query).await?;
    let events = log.show(args.call_id).await?;
    if events.is_empty() {
        eprintln!("no events for call {}", args.call_id);
        return Ok(ExitCode::FAILURE);
    }
    print!("{}", render(&events, args.format));
    Ok(ExitCode::SUCCESS)
}

/// What to say when a listing stopped at its limit, so nobody takes a page for the whole.
fn truncation_notice(events: &[super::Event], limit: u32) -> Option<String> {
    let last = events.last()?;
    (events.len() as u32 >= limit).then(|| {
        format!(
            "(stopped at the limit of {limit} events: --limit N for more, or --after-seq {} for \
             the next page)",
            last.seq
        )
    })
}

async fn record_read(
    log: &AuditLog,
    auditor: Option<&str>,
    command: &str,
    query: serde_json::Value,
) -> anyhow::Result<()> {
    let os_user = os_user();
    let read = AuditRead {
        via: "cli".into(),
        route: None,
        command: Some(command.to_owned()),
        query,
        authenticated: None,
        os_user: Some(os_user.clone()),
    };
    let actor = auditor.map(str::to_owned).unwrap_or(os_user);
    log.append(NewEvent::new(None, actor, AuditEvent::AuditRead(read)))
        .await
        .context("cannot record this query in the audit log, so it is not answered")?;
    Ok(())
}

/// Who runs this command, as the operating system knows them: the account of the process's
/// user, else `$USER`-style variables, else the numeric uid (a user without an account entry,
/// as under systemd's `DynamicUser`).
fn os_user() -> String {
    let account = whoami::username().ok().filter(|u| !u.is_empty());
    let variable = || {
        ["USER", "LOGNAME", "USERNAME"]
            .iter()
            .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
    };
    account.or_else(variable).unwrap_or_else(|| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self")
            .map_or_else(|_| "uid unknown".into(), |m| format!("uid {}", m.uid()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_cut_at_its_limit_says_so_and_how_to_go_on() {
        let event = |seq| super::super::Event {
            seq,
            id: Uuid::nil(),
            call_id: None,
            kind: EventKind::AuditRead,
            at: String::new(),
            actor: String::new(),
            payload: json!({}),
            prev_hash: String::new(),
            hash: String::new(),
        };
        let page: Vec<_> = (1..=3).map(event).collect();
        let notice = truncation_notice(&page, 3).unwrap();
        assert!(
            notice.contains("limit of 3") && notice.contains("--after-seq 3"),
            "{notice}"
        );
        assert_eq!(truncation_notice(&page, 100), None);
        assert_eq!(truncation_notice(&[], 100), None);
    }
}
