//! A typed test app, in the manner of zero-to-production's `spawn_app`: the settings a test
//! varies (database, cast, policy, upstreams, server, TLS, console, limits) are named fields of
//! [`TestAppBuilder`], turned into the gateway's YAML in one place ([`TestAppBuilder::yaml`]);
//! the [`TestApp`] it spawns owns the gateway, its database and its files, and talks to it
//! through typed methods ([`Client`]).
//!
//! ```ignore
//! let app = TestApp::builder().backend(backend).max_hold_secs(1).spawn().await;
//! let (held, id) = app.held_delete("r1").await;
//! app.vote(&id, "bob", Vote::Approve).await;
//! assert_eq!(app.vote(&id, "carol", Vote::Approve).await["result"], "decided");
//! assert_eq!(held.answer().await.text(), "deleted r1");
//! let kinds = app.story(&app.approval(&id).await.call_id).await;
//! ```

#![allow(dead_code)]

mod chat;
mod client;
mod process;

#[allow(unused_imports)]
pub use client::{Approval, Client, HeldCall, Reply, Vote, api, text};

use crate::support::{self, Backend, GatewayProcess, TestDb, TestGateway};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// The test policy most tests run under: arithmetic is refused, reads are allowed, production
/// records are never deleted, `slow_count` needs bob within a second and `delete_record` two
/// of ops (bob may break the glass).
pub const POLICY: &str = r#"
defaults:
  verdict: deny
  reason: no rule allows this call
rules:
  - id: no-adding
    match: {tool: add}
    verdict: deny
    reason: agents do their own arithmetic
  - id: read-only-is-fine
    match: {server: echo, read_only: true}
    verdict: allow
  - id: no-deleting-prod
    match:
      tool: delete_record
      arguments: {properties: {record_id: {pattern: "^prod-"}}, required: [record_id]}
    verdict: deny
    reason: production records are never deleted by agents
  - id: slow-needs-one-quickly
    match: {tool: slow_count}
    verdict: approve
    approvers: [bob]
    quorum: 1
    timeout: 1s
  - id: destructive-needs-two
    match: {tool: delete_record, destructive: true}
    verdict: approve
    approver_groups: [ops]
    quorum: 2
    timeout: 1m
    break_glass: {approvers: [bob], min_justification: 20}
"#;

/// The key of the standard agent, `agent-1`.
pub const AGENT_KEY: &str = "agent-key";

/// The bearer token of approver or auditor `who`.
pub fn token(who: &str) -> String {
    format!("{who}-token")
}

/// An agent: its id, API key and the human it acts for.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub key: String,
    pub on_behalf_of: Option<String>,
}

impl Agent {
    pub fn new(id: &str, key: &str) -> Agent {
        Agent {
            id: id.into(),
            key: key.into(),
            on_behalf_of: None,
        }
    }

    pub fn on_behalf_of(mut self, human: &str) -> Agent {
        self.on_behalf_of = Some(human.into());
        self
    }
}

/// An approver, with the token [`token`] gives them.
#[derive(Debug, Clone)]
pub struct Approver {
    pub id: String,
    pub groups: Vec<String>,
    /// Chat backend → their handle there (`chat: {mattermost: bob}`).
    pub chat: Vec<(String, String)>,
}

impl Approver {
    pub fn new(id: &str) -> Approver {
        Approver {
            id: id.into(),
            groups: Vec::new(),
            chat: Vec::new(),
        }
    }

    /// Their handle on chat `backend` (`mattermost`, `matrix`, `slack`).
    pub fn chat(mut self, backend: &str, handle: &str) -> Approver {
        self.chat.push((backend.into(), handle.into()));
        self
    }

    pub fn in_groups(mut self, groups: &[&str]) -> Approver {
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }
}

/// An upstream MCP server (the standard one is [`Upstream::Echo`], named `echo`).
#[derive(Debug, Clone)]
pub enum Upstream {
    /// `examples/upstreams/echo_server.py` over stdio.
    Echo,
    /// A server over streamable HTTP.
    Http { url: String },
    /// `python3 SCRIPT` over stdio.
    Python { script: PathBuf },
}

impl Upstream {
    fn yaml(&self, name: &str) -> Value {
        match self {
            Upstream::Echo => Upstream::Python {
                script: support::echo_upstream(),
            }
            .yaml(name),
            Upstream::Http { url } => json!({"name": name, "http": {"url": url}}),
            Upstream::Python { script } => {
                json!({"name": name, "stdio": {"command": "python3", "args": [script]}})
            }
        }
    }
}

/// `server:`; what is `None` keeps the gateway's default.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// Where a gateway started outside the harness listens (`countersign serve`, the CLI).
    pub listen: Option<std::net::SocketAddr>,
    pub max_body_bytes: Option<usize>,
}

/// The console's OpenID Connect sign-in.
#[derive(Debug, Clone)]
pub struct Oidc {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Provider group → approver group.
    pub approver_groups: Vec<(String, String)>,
}

/// `approvals:`; what is `None` keeps the gateway's default.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApprovalLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_hold_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_per_agent: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_per_tool: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_per_minute_per_agent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_ttl_secs: Option<u64>,
}

/// Where the policy comes from.
#[derive(Debug, Clone)]
enum Policy {
    /// This text, written to `policy.yaml` in the app's own policy directory.
    Text(String),
    /// A directory the test made.
    Dir(PathBuf),
    /// None: no `policy_dir` and no `database`, so the gateway is a plain proxy.
    None,
}

/// The settings of a test gateway. The defaults are the standard cast: agent `agent-1` (key
/// [`AGENT_KEY`]) acting for alice; approvers alice, bob and carol (ops) and dave (finance);
/// auditor audrey; [`POLICY`]; the echo upstream; SQLite; in process.
#[derive(Debug, Clone)]
pub struct TestAppBuilder {
    backend: Backend,
    policy: Policy,
    /// In order, by name; the first is the default route.
    upstreams: Vec<(String, Upstream)>,
    server: Server,
    /// `tls.ca_files`: the CAs `https://` upstreams and chat servers are checked against.
    ca_files: Vec<PathBuf>,
    agents: Vec<Agent>,
    approvers: Vec<Approver>,
    auditors: Vec<String>,
    limits: ApprovalLimits,
    /// Write head anchors to the app's `anchors.jsonl` this often.
    anchors_every_secs: Option<u64>,
    /// Redact with a key kept in the app's `redaction.key`.
    redaction_key: bool,
    oidc: Option<Oidc>,
    /// Run `countersign serve` as a child process (so it can be sent signals).
    child_process: bool,
    /// Listen on this loopback port, known before the gateway starts (a peer's callback URL).
    port: Option<u16>,
    /// Settings by dotted path (`chat.mattermost`, `server.max_connections`), over the rest.
    settings: Vec<(String, Value)>,
}

impl Default for TestAppBuilder {
    fn default() -> Self {
        TestAppBuilder {
            backend: Backend::Sqlite,
            policy: Policy::Text(POLICY.into()),
            upstreams: vec![("echo".into(), Upstream::Echo)],
            server: Server::default(),
            ca_files: Vec::new(),
            agents: vec![Agent::new("agent-1", AGENT_KEY).on_behalf_of("alice")],
            approvers: vec![
                Approver::new("alice").in_groups(&["ops"]),
                Approver::new("bob").in_groups(&["ops"]),
                Approver::new("carol").in_groups(&["ops"]),
                Approver::new("dave").in_groups(&["finance"]),
            ],
            auditors: vec!["audrey".into()],
            limits: ApprovalLimits::default(),
            anchors_every_secs: None,
            redaction_key: false,
            oidc: None,
            child_process: false,
            port: None,
            settings: Vec::new(),
        }
    }
}

impl TestAppBuilder {
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// The policy, as the text of one policy file.
    pub fn policy(mut self, text: &str) -> Self {
        self.policy = Policy::Text(text.into());
        self
    }

    /// The policy directory, made by the test.
    pub fn policy_dir(mut self, dir: &Path) -> Self {
        self.policy = Policy::Dir(dir.into());
        self
    }

    /// A plain proxy: no policy, no database, nobody to approve or audit.
    pub fn plain_proxy(mut self) -> Self {
        self.policy = Policy::None;
        self.approvers.clear();
        self.auditors.clear();
        self
    }

    /// The only upstream, named `echo`.
    pub fn upstream(self, upstream: Upstream) -> Self {
        self.upstreams(vec![("echo", upstream)])
    }

    /// The upstreams, in order, by name.
    pub fn upstreams(mut self, upstreams: Vec<(&str, Upstream)>) -> Self {
        self.upstreams = upstreams
            .into_iter()
            .map(|(name, upstream)| (name.to_owned(), upstream))
            .collect();
        self
    }

    /// One more upstream, after the others.
    pub fn also_upstream(mut self, name: &str, upstream: Upstream) -> Self {
        self.upstreams.push((name.into(), upstream));
        self
    }

    pub fn server(mut self, server: Server) -> Self {
        self.server = server;
        self
    }

    /// Trust the CA in `pem` (`tls.ca_files`).
    pub fn trust_ca(mut self, pem: &Path) -> Self {
        self.ca_files.push(pem.into());
        self
    }

    pub fn agents(mut self, agents: Vec<Agent>) -> Self {
        self.agents = agents;
        self
    }

    pub fn approvers(mut self, approvers: Vec<Approver>) -> Self {
        self.approvers = approvers;
        self
    }

    pub fn auditors(mut self, auditors: &[&str]) -> Self {
        self.auditors = auditors.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn limits(mut self, limits: ApprovalLimits) -> Self {
        self.limits = limits;
        self
    }

    /// A call held longer than this is told to retry (`approvals.max_hold_secs`).
    pub fn max_hold_secs(mut self, secs: u64) -> Self {
        self.limits.max_hold_secs = Some(secs);
        self
    }

    /// How often a waiting call hears progress (`approvals.progress_secs`).
    pub fn progress_secs(mut self, secs: u64) -> Self {
        self.limits.progress_secs = Some(secs);
        self
    }

    /// Signed heads anchored to [`TestApp::anchors_file`] every `secs`.
    pub fn anchors_every_secs(mut self, secs: u64) -> Self {
        self.anchors_every_secs = Some(secs);
        self
    }

    /// Redacted values keyed with [`TestApp::redaction_key_file`].
    pub fn redaction_key(mut self) -> Self {
        self.redaction_key = true;
        self
    }

    pub fn oidc(mut self, oidc: Oidc) -> Self {
        self.oidc = Some(oidc);
        self
    }

    /// Run the gateway as a child process, on a free loopback port.
    pub fn child_process(mut self) -> Self {
        self.child_process = true;
        self
    }

    /// Listen on loopback `port`, known before the gateway starts: for peers that call back
    /// (a chat server's buttons). [`TestApp::base`] names it.
    pub fn listen_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets the configuration value at dotted `path` (`chat.mattermost`,
    /// `server.max_connections`, `telemetry`), over what the other settings wrote: for the
    /// settings one area of tests varies, in the gateway's own terms.
    pub fn set(mut self, path: &str, value: impl serde::Serialize) -> Self {
        let value = serde_json::to_value(value).expect("a configuration value");
        self.settings.push((path.into(), value));
        self
    }

    /// A fresh database, the policy and the app's files, and the gateway over them.
    pub async fn spawn(self) -> TestApp {
        let mut app = self.spawn_stopped().await;
        app.start().await;
        app
    }

    /// The same, with the gateway not started (for the command line; [`TestApp::start`]
    /// starts it).
    pub async fn spawn_stopped(self) -> TestApp {
        let db = TestDb::new(self.backend).await;
        let dir = tempfile::tempdir().unwrap();
        let policies = match &self.policy {
            Policy::Text(text) => {
                let policies = dir.path().join("policies");
                std::fs::create_dir(&policies).unwrap();
                std::fs::write(policies.join("policy.yaml"), text).unwrap();
                policies
            }
            Policy::Dir(dir) => dir.clone(),
            // Not in the configuration.
            Policy::None => dir.path().join("policies"),
        };
        let app = TestApp {
            running: Running::Stopped,
            client: Client::at(([127, 0, 0, 1], 0).into(), ""),
            settings: self,
            policies,
            dir,
            db,
        };
        std::fs::write(app.config_file(), app.yaml(None)).unwrap();
        app
    }

    /// The gateway's YAML: these settings over `db_url` and `policies`, listening on loopback
    /// `port` when given (else where the harness puts it), with the app's files in `dir`.
    pub fn yaml(&self, db_url: &str, policies: &Path, dir: &Path, port: Option<u16>) -> String {
        let mut config = Map::new();
        let mut server = Map::new();
        if let Some(port) = port.or(self.port) {
            server.insert("listen".into(), json!(format!("127.0.0.1:{port}")));
        } else if let Some(listen) = self.server.listen {
            server.insert("listen".into(), json!(listen));
        }
        if let Some(max) = self.server.max_body_bytes {
            server.insert("max_body_bytes".into(), json!(max));
        }
        if self.agents.is_empty() {
            server.insert("allow_anonymous".into(), json!(true));
        }
        if !server.is_empty() {
            config.insert("server".into(), Value::Object(server));
        }
        if !matches!(self.policy, Policy::None) {
            config.insert("database".into(), json!({"url": db_url}));
            config.insert("policy_dir".into(), json!(policies));
        }
        let upstreams: Vec<Value> = self
            .upstreams
            .iter()
            .map(|(name, upstream)| upstream.yaml(name))
            .collect();
        config.insert("upstreams".into(), json!(upstreams));
        if !self.ca_files.is_empty() {
            config.insert("tls".into(), json!({"ca_files": self.ca_files}));
        }
        let agents: Vec<Value> = self
            .agents
            .iter()
            .map(|a| {
                let mut agent =
                    json!({"id": a.id, "key_sha256": countersign::auth::hash_key(&a.key)});
                if let Some(human) = &a.on_behalf_of {
                    agent["on_behalf_of"] = json!(human);
                }
                agent
            })
            .collect();
        if !agents.is_empty() {
            config.insert("agents".into(), json!(agents));
        }
        let approvers: Vec<Value> = self
            .approvers
            .iter()
            .map(|a| {
                let token_sha256 = countersign::auth::hash_key(&token(&a.id));
                let mut approver =
                    json!({"id": a.id, "groups": a.groups, "token_sha256": token_sha256});
                if !a.chat.is_empty() {
                    let chat: Map<String, Value> =
                        a.chat.iter().map(|(b, h)| (b.clone(), json!(h))).collect();
                    approver["chat"] = Value::Object(chat);
                }
                approver
            })
            .collect();
        if !approvers.is_empty() {
            config.insert("approvers".into(), json!(approvers));
        }
        let auditors: Vec<Value> = self
            .auditors
            .iter()
            .map(|a| json!({"id": a, "token_sha256": countersign::auth::hash_key(&token(a))}))
            .collect();
        if !auditors.is_empty() {
            config.insert("auditors".into(), json!(auditors));
        }
        let limits = serde_json::to_value(&self.limits).unwrap();
        if limits.as_object().is_some_and(|l| !l.is_empty()) {
            config.insert("approvals".into(), limits);
        }
        let mut audit = Map::new();
        if let Some(every) = self.anchors_every_secs {
            let file = dir.join("anchors.jsonl");
            audit.insert("anchors".into(), json!({"file": file, "every_secs": every}));
        }
        if self.redaction_key {
            audit.insert("redaction_key".into(), json!(dir.join("redaction.key")));
        }
        if !audit.is_empty() {
            config.insert("audit".into(), Value::Object(audit));
        }
        if let Some(oidc) = &self.oidc {
            let groups: Map<String, Value> = oidc
                .approver_groups
                .iter()
                .map(|(idp, group)| (idp.clone(), json!(group)))
                .collect();
            config.insert(
                "console".into(),
                json!({"oidc": {"issuer": oidc.issuer, "client_id": oidc.client_id,
                    "client_secret": oidc.client_secret, "approver_groups": groups}}),
            );
        }
        for (path, value) in &self.settings {
            set_path(&mut config, path, value.clone());
        }
        serde_yaml_ng::to_string(&config).unwrap()
    }
}

/// Sets `config.<path>` (dotted) to `value`, making the objects on the way.
fn set_path(config: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            config.insert(path.into(), value);
        }
        Some((head, rest)) => {
            let inner = config.entry(head).or_insert_with(|| json!({}));
            let inner = inner
                .as_object_mut()
                .unwrap_or_else(|| panic!("{head} is not a map"));
            set_path(inner, rest, value);
        }
    }
}

/// The gateway of a [`TestApp`].
enum Running {
    InProcess(TestGateway),
    Child(GatewayProcess),
    Stopped,
}

/// A gateway, its database and files; the gateway stops and the database goes when dropped.
/// Derefs to the [`Client`] of its gateway.
pub struct TestApp {
    // Dropped in this order: the gateway stops before its files and database go.
    running: Running,
    client: Client,
    settings: TestAppBuilder,
    policies: PathBuf,
    /// The app's files: its policy (unless the test gave a directory), config files, keys.
    dir: tempfile::TempDir,
    pub db: TestDb,
}

impl std::ops::Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// The running gateway.
    pub fn gateway(&self) -> &TestGateway {
        match &self.running {
            Running::InProcess(gw) => gw,
            Running::Child(child) => &child.gw,
            Running::Stopped => panic!("the gateway is stopped"),
        }
    }

    /// The directory holding the app's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The anchors file (with [`TestAppBuilder::anchors_every_secs`]).
    pub fn anchors_file(&self) -> PathBuf {
        self.dir().join("anchors.jsonl")
    }

    /// The redaction key (with [`TestAppBuilder::redaction_key`]).
    pub fn redaction_key_file(&self) -> PathBuf {
        self.dir().join("redaction.key")
    }

    fn yaml(&self, port: Option<u16>) -> String {
        self.settings
            .yaml(&self.db.url, &self.policies, self.dir(), port)
    }

    /// The gateway's configuration in a file, as the CLI reads it.
    pub fn config_file(&self) -> PathBuf {
        self.dir().join("countersign.yaml")
    }

    /// `countersign ARGS --config` the gateway's configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Command {
        let mut command = countersign(args);
        command.arg("--config").arg(self.config_file());
        command
    }

    /// Starts the gateway (again), on the same database and files.
    pub async fn start(&mut self) {
        let running = if self.settings.child_process {
            let port = self.settings.port.unwrap_or_else(support::free_port);
            let path = self.dir().join(format!("gateway-{port}.yaml"));
            std::fs::write(&path, self.yaml(Some(port))).unwrap();
            Running::Child(GatewayProcess::spawn(&path, port).await)
        } else {
            let port = self.settings.port.unwrap_or(0);
            Running::InProcess(support::spawn_gateway_on(&self.yaml(None), port).await)
        };
        self.running = running;
        self.client = Client::new(self.gateway(), &self.agent_key());
    }

    /// Builds a gateway on this configuration without serving it: what a restart would meet.
    pub async fn try_build(&self) -> anyhow::Result<countersign::startup::Application> {
        let config = countersign::config::parse(&self.yaml(None), "restart.yaml", &[])?;
        countersign::startup::Application::build(
            &config,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
    }

    /// Stops the gateway (in process: cancels it; a child: kills it).
    pub fn stop(&mut self) {
        self.running = Running::Stopped;
    }

    /// Sends `signal` (`-TERM`, `-KILL`) to the child process and waits for it to end.
    pub async fn signal(&mut self, signal: &str) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::Child(child) => child.signal(signal).await,
            _ => panic!("signals go to a child process"),
        }
    }

    /// Another gateway on the same configuration and database, running beside this one.
    pub async fn replica(&self) -> Replica {
        let gw = support::spawn_gateway(&self.yaml(None)).await;
        let client = Client::new(&gw, &self.agent_key());
        Replica { _gw: gw, client }
    }

    /// A connection pool to the database, as its owner has one.
    pub async fn owner(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.db.url).await.unwrap()
    }

    fn agent_key(&self) -> String {
        self.settings
            .agents
            .first()
            .map(|a| a.key.clone())
            .unwrap_or_default()
    }
}

/// A second gateway of a [`TestApp`]; derefs to its [`Client`].
pub struct Replica {
    _gw: TestGateway,
    client: Client,
}

impl std::ops::Deref for Replica {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// `countersign ARGS`, with no approver token in its environment and nothing on stdin.
pub fn countersign(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    command
        .args(args)
        .env_remove("COUNTERSIGN_APPROVER_TOKEN")
        .stdin(std::process::Stdio::null());
    command
}
