//! Gateway configuration: one YAML file plus `COUNTERSIGN_*` environment overrides.
//!
//! Every error names the file (or environment variable), the line and the field at fault.
//!
//! Parts: the types of the file are here and in [`chat`] and [`console`] (their sections);
//! `load` reads the file and applies the overrides of `env`; `validate` checks what the types
//! cannot express; [`changes`] watches the file for changes that need a restart.

pub mod changes;
pub mod chat;
pub mod console;
mod env;
mod load;
mod validate;

pub use load::{ConfigError, load, parse};
pub use validate::Invalid;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// The MCP servers behind the gateway, in order; the first is the default route for
    /// methods that name no server.
    pub upstreams: Vec<UpstreamConfig>,
    /// Separator between an upstream's prefix and a tool or prompt name (`server__tool`).
    #[serde(default = "default_separator")]
    pub namespace_separator: String,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Directory of policy files (`policies/*.yaml`), resolved against the config file.
    #[serde(default)]
    pub policy_dir: Option<PathBuf>,
    #[serde(default)]
    pub database: DatabaseConfig,
    /// The keys and anchors the audit log is kept with.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The humans who may approve calls, and their groups.
    #[serde(default)]
    pub approvers: Vec<ApproverConfig>,
    /// Who may query the audit log over HTTP.
    #[serde(default)]
    pub auditors: Vec<AuditorConfig>,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// Chat backends where approval cards are posted.
    #[serde(default)]
    pub chat: chat::ChatConfig,
    /// Which CAs `https://` upstreams and chat servers are checked against.
    #[serde(default)]
    pub tls: crate::tls::TlsConfig,
    /// The web console for approvers and auditors.
    #[serde(default)]
    pub console: console::ConsoleConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Longest a `tools/call` is held open waiting for approval (seconds). Past it the agent
    /// gets a tool error naming the pending approval, and a retry of the same call joins it.
    /// Unset: held until the approval's own timeout.
    #[serde(default)]
    pub max_hold_secs: Option<u64>,
    /// How long a task's outcome is kept after it ended (seconds; clients of 2025-11-25 may ask
    /// for less). Default: one day.
    #[serde(default = "default_task_ttl_secs")]
    pub task_ttl_secs: u64,
    /// How often a held call reports progress to its client (seconds; keep it under the
    /// clients' request timeouts). Default: 10.
    #[serde(default = "default_progress_secs")]
    pub progress_secs: u64,
    /// Most approvals one agent may have pending at once; past it new calls that need
    /// approval are refused (and recorded). Default: 20.
    #[serde(default = "default_max_pending_per_agent")]
    pub max_pending_per_agent: usize,
    /// Most approvals pending at once for one tool (of one upstream), whoever asked.
    /// Default: 50.
    #[serde(default = "default_max_pending_per_tool")]
    pub max_pending_per_tool: usize,
    /// New approvals one agent may open per minute (a token bucket that holds a minute's
    /// worth). Default: 30.
    #[serde(default = "default_new_per_minute")]
    pub new_per_minute_per_agent: u32,
}

fn default_max_pending_per_agent() -> usize {
    20
}

fn default_max_pending_per_tool() -> usize {
    50
}

fn default_new_per_minute() -> u32 {
    30
}

fn default_progress_secs() -> u64 {
    10
}

fn default_task_ttl_secs() -> u64 {
    24 * 3600
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            max_hold_secs: None,
            task_ttl_secs: default_task_ttl_secs(),
            progress_secs: default_progress_secs(),
            max_pending_per_agent: default_max_pending_per_agent(),
            max_pending_per_tool: default_max_pending_per_tool(),
            new_per_minute_per_agent: default_new_per_minute(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing; WAL mode) or `postgres://…`.
    #[serde(default = "default_database_url")]
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: default_database_url(),
        }
    }
}

/// The audit log's keys and anchors, none of which may live in the database. Paths are
/// resolved against the config file; unset, they default to files beside a SQLite database
/// (`countersign.db.signing-key`, `.redaction-key`, `.anchors`), or for PostgreSQL to a
/// directory per database under `$COUNTERSIGN_STATE_DIR` (default
/// `~/.local/state/countersign`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 key that signs the chain head at every commit (created when missing).
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// Public keys (hex, or files holding hex) whose heads are accepted besides the signing
    /// key's own: other replicas' keys, and the previous key after a rotation.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// The HMAC key that turns redacted argument values into keyed digests (created when
    /// missing). Whoever holds it can confirm a value they already know.
    #[serde(default)]
    pub redaction_key: Option<PathBuf>,
    #[serde(default)]
    pub anchors: AnchorsConfig,
}

/// Where signed heads are exported, off the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorsConfig {
    /// An append-only file of signed heads; put it on another mount or host.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How often the head is anchored when it moved (seconds).
    #[serde(default = "default_anchor_secs")]
    pub every_secs: u64,
}

impl Default for AnchorsConfig {
    fn default() -> Self {
        AnchorsConfig {
            file: None,
            every_secs: default_anchor_secs(),
        }
    }
}

fn default_anchor_secs() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverConfig {
    /// The person's id; policies name it, and an agent's `on_behalf_of` refers to it.
    pub id: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// SHA-256 (hex) of the approver's token for the approver HTTP API.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// The approver's account on each chat backend, by backend name: `mattermost: alice`
    /// (username or user id), `matrix: "@alice:example.org"`, `slack: U012AB3CD`.
    #[serde(default)]
    pub chat: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditorConfig {
    pub id: String,
    /// SHA-256 (hex) of the auditor's token for the auditor HTTP API.
    pub token_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for the HTTP listener. Loopback unless `allow_non_loopback` is set.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Must be true to bind an address other than loopback.
    #[serde(default)]
    pub allow_non_loopback: bool,
    /// Accept callers without an API key (identity `anonymous`). For local testing only.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Origins allowed in the `Origin` header besides the listener's own loopback origins.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Page size of merged `tools/list`, `prompts/list`, `resources/list` results.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Idle legacy sessions are dropped after this many seconds.
    #[serde(default = "default_session_idle")]
    pub session_idle_secs: u64,
    /// A connection must send a request's headers within this many seconds (else it is
    /// closed).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// A request's whole body must arrive within this many seconds of its headers (else 408
    /// and the connection is closed).
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_secs: u64,
    /// Most client connections open at once; more wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// On SIGTERM, how long requests in flight may take to finish before their connections
    /// are closed. Calls still waiting for an approval are answered at once.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// SHA-256 (hex) of a token that `/metrics` then requires (`Authorization: Bearer`).
    #[serde(default)]
    pub metrics_token_sha256: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name; also the default namespace prefix.
    pub name: String,
    /// Namespace prefix for tool and prompt names; `""` exposes names unprefixed.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A Streamable HTTP endpoint (exactly one of `http` and `stdio`).
    #[serde(default)]
    pub http: Option<HttpUpstreamConfig>,
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    #[serde(default)]
    pub stdio: Option<StdioUpstreamConfig>,
    /// Which protocol era to speak; `auto` probes.
    #[serde(default)]
    pub era: EraPreference,
    /// Per-request timeout in seconds (a hard maximum for one upstream request).
    #[serde(default = "default_upstream_timeout")]
    pub timeout_secs: u64,
    /// Methods outside MCP that clients may send to this upstream (refused with `-32601`
    /// otherwise), e.g. `[custom/search]`.
    #[serde(default)]
    pub pass_methods: Vec<String>,
}

/// How to reach one upstream (validated: exactly one of `http`, `stdio`).
#[derive(Debug, Clone, Copy)]
pub enum UpstreamTransport<'a> {
    Http(&'a HttpUpstreamConfig),
    Stdio(&'a StdioUpstreamConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpUpstreamConfig {
    pub url: String,
    /// Extra headers (e.g. the gateway's own credentials for this upstream). Never the agent's.
    /// Secret: kept out of `Debug` output and logs.
    #[serde(default)]
    pub headers: BTreeMap<String, secrecy::SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioUpstreamConfig {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EraPreference {
    #[default]
    Auto,
    Legacy,
    Modern,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's identity as recorded with its calls.
    pub id: String,
    /// The human the agent acts for, when known.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// SHA-256 of the API key, hex (`countersign hash-key` prints it).
    pub key_sha256: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `tracing` filter directive, e.g. `info,countersign=debug`.
    #[serde(default)]
    pub log_filter: Option<String>,
    /// Log as JSON lines instead of text.
    #[serde(default)]
    pub json_logs: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            allow_non_loopback: false,
            allow_anonymous: false,
            allowed_origins: Vec::new(),
            max_body_bytes: default_max_body(),
            page_size: default_page_size(),
            session_idle_secs: default_session_idle(),
            header_read_timeout_secs: default_header_read_timeout(),
            body_read_timeout_secs: default_body_read_timeout(),
            max_connections: default_max_connections(),
            shutdown_grace_secs: default_shutdown_grace(),
            metrics_token_sha256: None,
        }
    }
}

impl UpstreamConfig {
    /// The namespace prefix for this upstream's tools and prompts.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.name)
    }

    /// The transport; `load` has checked that exactly one is configured.
    pub fn transport(&self) -> UpstreamTransport<'_> {
        match (&self.http, &self.stdio) {
            (Some(http), _) => UpstreamTransport::Http(http),
            (None, Some(stdio)) => UpstreamTransport::Stdio(stdio),
            (None, None) => unreachable!("config validation requires http or stdio"),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

fn default_database_url() -> String {
    "sqlite://countersign.db".into()
}
fn default_separator() -> String {
    "__".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8931))
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_page_size() -> usize {
    200
}
fn default_session_idle() -> u64 {
    3600
}
fn default_header_read_timeout() -> u64 {
    10
}
fn default_body_read_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    512
}
fn default_shutdown_grace() -> u64 {
    10
}
fn default_upstream_timeout() -> u64 {
    300
}
