//! The command line: `serve`, `stdio`, `config check`, `hash-key`.

use crate::auth::{Authenticator, hash_key};
use crate::config::{self, Config};
use crate::gateway::ForwardAll;
use crate::startup::{Application, start_gateway};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
        env = "COUNTERSIGN_CONFIG",
        default_value = "countersign.yaml"
    )]
    config: PathBuf,
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(config::load(&self.config)?)
    }
}

/// Runs the parsed command; the binary's only job.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(arg) => serve(arg.load()?).await,
        Command::Stdio(arg) => stdio(arg.load()?).await,
        Command::Config(ConfigCommand::Check(arg)) => {
            let config = arg.load()?;
            println!(
                "{}: ok ({} upstreams, {} agents)",
                arg.config.display(),
                config.upstreams.len(),
                config.agents.len()
            );
            Ok(())
        }
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_line(&mut key)?;
            println!("{}", hash_key(key.trim_end_matches(['\r', '\n'])));
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init(&config.telemetry)?;
    let shutdown = CancellationToken::new();
    let app = Application::build(&config, Arc::new(ForwardAll), shutdown.clone()).await?;
    tokio::spawn(stop_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

async fn stdio(config: Config) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init(&config.telemetry)?;
    let auth = Authenticator::new(&config.agents, config.server.allow_anonymous);
    let key = std::env::var("COUNTERSIGN_API_KEY").ok();
    let agent = match key {
        Some(key) => auth.authenticate_key(&key),
        None => auth.authenticate(None),
    }
    .context("stdio mode authenticates the agent with COUNTERSIGN_API_KEY")?;
    let shutdown = CancellationToken::new();
    let gateway = start_gateway(&config, Arc::new(ForwardAll), shutdown.clone()).await?;
    crate::front::stdio::serve(gateway, agent, tokio::io::stdin(), tokio::io::stdout()).await?;
    shutdown.cancel();
    Ok(())
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
