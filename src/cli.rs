//! The command line: `serve`, `stdio`, `config check`, `hash-key`.

use crate::auth::{Authenticator, hash_key};
use crate::config::{self, Config};
use crate::startup::{Application, Governance, start_gateway};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "countersign",
    version,
    about = "MCP tool-call approval gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway over Streamable HTTP.
    Serve(ConfigArg),
    /// Run the gateway as a stdio MCP server (the agent's API key in COUNTERSIGN_API_KEY).
    Stdio(ConfigArg),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the SHA-256 of an API key for `agents[].key_sha256` (reads the key from stdin).
    HashKey,
    /// Policy commands: check, test, explain.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The audit log: verify, checkpoint, list, show.
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: crate::audit::cli::AuditCommand,
    },
    /// The built-in approval channel: list, show, approve, deny.
    Approvals {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: crate::approval::cli::ApprovalsCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout: `countersign man > countersign.1`.
    Man,
    /// Chat backends.
    Chat {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: ChatCommand,
    },
}

#[derive(Subcommand)]
enum ChatCommand {
    /// Check a backend's server URL, token, channel access and callback URL; say what to fix.
    Test {
        /// `mattermost`, `matrix`, `slack` or `webhook`.
        backend: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate the policy files; print the policy version.
    Check {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Run fixture calls with expected verdicts; exit 1 if any differs.
    Test { dir: PathBuf, fixtures: PathBuf },
    /// Show which rule decides a call, and why.
    Explain {
        dir: PathBuf,
        #[command(flatten)]
        call: crate::policy::cli::ExplainArgs,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and the environment overrides.
    Check(ConfigArg),
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "COUNTERSIGN_CONFIG",
        default_value = "countersign.yaml"
    )]
    config: PathBuf,
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<Config> {
        if !self.config.exists() {
            anyhow::bail!(
                "{}: no such configuration file; pass --config FILE or set COUNTERSIGN_CONFIG \
                 (examples/quickstart.yaml is a start)",
                self.config.display()
            );
        }
        Ok(config::load(&self.config)?)
    }
}

/// An error and its causes on one line, each cause said once: many errors already quote their
/// cause in their own message.
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Runs the parsed command; the binary's only job.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Policy(command) => policy(command),
        Command::Audit { config, command } => {
            crate::audit::cli::run(&config.config, &command).await
        }
        Command::Approvals { config, command } => {
            let config = config.load()?;
            let db = crate::store::connect(&config.database.url).await?;
            let audit =
                crate::audit::setup::open(db.clone(), &config.audit, &config.database.url).await?;
            let directory = Arc::new(crate::approval::Directory::from_config(&config));
            let chats = crate::chat::backends(&config)?;
            let notifiers = crate::chat::notifiers(&chats);
            let broker = crate::approval::Broker::new(db, audit, directory, notifiers).await?;
            let code = crate::approval::cli::run(&broker, command).await;
            broker.flush_updates().await;
            code
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "countersign", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat {
            config,
            command: ChatCommand::Test { backend },
        } => {
            let passed = crate::chat::test(&config.load()?, &backend).await?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        other => run_gateway_command(other).await.map(|()| ExitCode::SUCCESS),
    }
}

fn policy(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    use crate::policy::cli;
    match command {
        PolicyCommand::Check { dir } => cli::check(&dir),
        PolicyCommand::Test { dir, fixtures } => cli::test(&dir, &fixtures),
        PolicyCommand::Explain { dir, call } => cli::explain(&dir, &call),
    }
}

async fn run_gateway_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(arg) => serve(arg.load()?, &arg.config).await,
        Command::Stdio(arg) => stdio(arg.load()?, &arg.config).await,
        Command::Config(ConfigCommand::Check(arg)) => check_config(&arg).await,
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_line(&mut key)?;
            println!("{}", hash_key(key.trim_end_matches(['\r', '\n'])));
            Ok(())
        }
        Command::Policy(_)
        | Command::Completions { .. }
        | Command::Man
        | Command::Audit { .. }
        | Command::Approvals { .. }
        | Command::Chat { .. } => {
            unreachable!("handled in run")
        }
    }
}

/// `config check`: every finding at once; fails when any is a problem.
async fn check_config(arg: &ConfigArg) -> anyhow::Result<()> {
    let config = arg.load()?;
    let report = crate::preflight::check(&config).await;
    for finding in &report.findings {
        println!("{}: {finding}", arg.config.display());
    }
    let problems = report.problems();
    if problems > 0 {
        anyhow::bail!(
            "{}: {problems} problem{} found",
            arg.config.display(),
            if problems == 1 { "" } else { "s" }
        );
    }
    let rules = report
        .rules
        .map_or("no policy_dir".to_owned(), |n| format!("{n} policy rules"));
    println!(
        "{}: ok ({} upstreams, {} agents, {rules})",
        arg.config.display(),
        config.upstreams.len(),
        config.agents.len()
    );
    Ok(())
}

async fn serve(config: Config, path: &std::path::Path) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init(&config.telemetry)?;
    log_start(&config, path);
    // Two steps: on a signal the listener stops and drains (within the grace); only then do
    // the upstreams, chat backends and background tasks stop, so forwarded calls can finish.
    let shutdown = CancellationToken::new();
    let app = Application::build(&config, shutdown.clone()).await?;
    config::changes::watch(path.to_owned(), shutdown.clone());
    let stopping = CancellationToken::new();
    tokio::spawn(stop_on_signal(stopping.clone()));
    let served = app.run_until_stopped(stopping).await;
    shutdown.cancel();
    served?;
    Ok(())
}

async fn stdio(config: Config, path: &std::path::Path) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init(&config.telemetry)?;
    log_start(&config, path);
    let auth = Authenticator::new(&config.agents, config.server.allow_anonymous);
    let key = std::env::var("COUNTERSIGN_API_KEY").ok();
    let agent = match key {
        Some(key) => auth.authenticate_key(&key),
        None => auth.authenticate(None),
    }
    .context("stdio mode authenticates the agent with COUNTERSIGN_API_KEY")?;
    let shutdown = CancellationToken::new();
    let governance = Governance::build(&config, shutdown.clone()).await?;
    let gateway = start_gateway(&config, governance.gate.clone(), shutdown.clone()).await?;
    governance
        .take_over(&gateway, &config, shutdown.clone())
        .await?;
    crate::front::stdio::serve(gateway, agent, tokio::io::stdin(), tokio::io::stdout()).await?;
    shutdown.cancel();
    Ok(())
}

/// What this run is made of, in one line at start-up (the listener is logged once bound).
fn log_start(config: &Config, path: &std::path::Path) {
    let policies = config.policy_dir.as_ref().map(|dir| {
        crate::policy::PolicySet::load_dir(dir)
            .map(|set| set.version().to_owned())
            .unwrap_or_else(|e| format!("unreadable ({e})"))
    });
    tracing::info!(
        config = %path.display(),
        database = %crate::store::redact(&config.database.url),
        policy_version = policies.as_deref().unwrap_or("none (plain proxy)"),
        upstreams = config.upstreams.len(),
        "starting countersign {}",
        env!("CARGO_PKG_VERSION")
    );
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Quoting {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn an_error_that_quotes_its_cause_says_it_once_and_context_keeps_both() {
        let quoting = Quoting {
            path: "policies",
            source: std::io::Error::other("no such directory"),
        };
        let e = anyhow::Error::new(quoting).context("policy_dir");
        assert_eq!(
            describe(&e),
            "policy_dir: cannot read policies: no such directory"
        );
    }
}
