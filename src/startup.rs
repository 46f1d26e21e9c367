//! Building and running the gateway from a configuration.

use crate::approval::limits::ApprovalLimits;
use crate::approval::{Broker, Directory};
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::chat::ChatBackend;
use crate::config::Config;
use crate::front::bounds::{self, EdgeLimits};
use crate::front::{OriginPolicy, http};
use crate::gateway::{CallGate, ForwardAll, Gateway, catalog::Namespaces};
use crate::governance::PolicyGate;
use crate::policy::{Policies, PolicySet};
use crate::tasks::Tasks;
use crate::upstream::Upstream;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connects every upstream (concurrently), reads their catalogs and starts the background
/// tasks (notification relay, idle-session sweeper). Stops them on `shutdown`.
pub async fn start_gateway(
    config: &Config,
    gate: Arc<dyn CallGate>,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<Gateway>> {
    // Install the metrics recorder before anything records (upstream health is set at start).
    let _ = crate::telemetry::prometheus();
    for upstream in &config.upstreams {
        if let Some(http) = &upstream.http {
            let field = format!("upstreams[{}].http.url", upstream.name);
            config.tls.setup()?.check_url(&field, &http.url)?;
        }
    }
    let starts = config
        .upstreams
        .iter()
        .map(|u| Upstream::start(u, &config.tls, shutdown.child_token()));
    let mut upstreams = Vec::new();
    for (config, started) in config
        .upstreams
        .iter()
        .zip(futures::future::join_all(starts).await)
    {
        let upstream = started.with_context(|| format!("upstream {}", config.name))?;
        upstreams.push(Arc::new(upstream));
    }
    let namespaces = Namespaces {
        prefixes: config
            .upstreams
            .iter()
            .map(|u| u.prefix().to_owned())
            .collect(),
        separator: config.namespace_separator.clone(),
    };
    let gateway = Gateway::new(upstreams, namespaces, gate, config.server.page_size);
    gateway.refresh_all().await;
    gateway.spawn_event_relay();
    spawn_session_sweeper(
        &gateway,
        Duration::from_secs(config.server.session_idle_secs),
        shutdown,
    );
    Ok(gateway)
}

fn spawn_session_sweeper(gateway: &Arc<Gateway>, max_idle: Duration, shutdown: CancellationToken) {
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(max_idle.min(Duration::from_secs(60)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(gateway) = gateway.upgrade() else {
                break;
            };
            let gone = gateway.sessions.expire(max_idle);
            if gone > 0 {
                tracing::info!(sessions = gone, "idle sessions expired");
            }
        }
    });
}

/// What decides calls: policies, the approval broker and the audit log, when configured.
pub struct Governance {
    pub gate: Arc<dyn CallGate>,
    /// The approver and auditor APIs.
    pub routes: axum::Router,
    pub audit: Option<AuditLog>,
    pub broker: Option<Arc<Broker>>,
    /// Task handles for held calls (with a database only).
    pub tasks: Option<Arc<Tasks>>,
}

impl Governance {
    /// Without `policy_dir` the gateway is a plain proxy (every valid call is forwarded): said
    /// loudly, since it is only for trying the gateway out.
    pub async fn build(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let Some(dir) = &config.policy_dir else {
            tracing::warn!(
                "no policy_dir configured: every valid call is forwarded and nothing is audited"
            );
            return Ok(Governance {
                gate: Arc::new(ForwardAll),
                routes: axum::Router::new(),
                audit: None,
                broker: None,
                tasks: None,
            });
        };
        // Policies first: a bad policy stops the start before anything is created on disk.
        let policies = Policies::new(PolicySet::load_dir(dir).map_err(configured_policies)?);
        let db = crate::store::connect(&config.database.url)
            .await
            .with_context(|| format!("database {}", config.database.url))?;
        let audit = crate::audit::setup::open(db.clone(), &config.audit, &config.database.url)
            .await
            .context("audit log")?;
        let ttl = Duration::from_secs(config.approvals.task_ttl_secs);
        let tasks = Tasks::new(db.clone(), audit.clone(), ttl);
        policies.watch(dir.clone(), shutdown.clone());
        let chats = crate::chat::backends(config)?;
        let broker = start_broker(config, db, &audit, &chats, &shutdown).await?;
        let routes = routes(config, &broker, &audit, &policies, &chats, &shutdown).await?;
        let gate = Arc::new(PolicyGate::new(
            policies,
            audit.clone(),
            broker.clone(),
            config.approvals.max_hold_secs.map(Duration::from_secs),
            shutdown,
        ));
        Ok(Governance {
            gate,
            routes,
            audit: Some(audit),
            broker: Some(broker),
            tasks: Some(tasks),
        })
    }
}

/// The approval broker, telling `chats` about each approval, with its expiry watch running.
async fn start_broker(
    config: &Config,
    db: crate::store::Db,
    audit: &AuditLog,
    chats: &[Arc<dyn ChatBackend>],
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<Broker>> {
    let directory =
        Directory::from_config(config).with_limits(ApprovalLimits::new(&config.approvals));
    let broker = Broker::new(
        db,
        audit.clone(),
        Arc::new(directory),
        crate::chat::notifiers(chats),
    )
    .await
    .context("approvals")?;
    broker.set_progress_every(Duration::from_secs(config.approvals.progress_secs));
    broker.spawn_watch(shutdown.clone());
    Ok(broker)
}

/// The approver and auditor APIs, the console when enabled, and each chat backend's callbacks
/// (whose background loops start here).
async fn routes(
    config: &Config,
    broker: &Arc<Broker>,
    audit: &AuditLog,
    policies: &Policies,
    chats: &[Arc<dyn ChatBackend>],
    shutdown: &CancellationToken,
) -> anyhow::Result<axum::Router> {
    let mut routes = crate::approval::http::router(broker.clone()).merge(
        crate::audit::auditor_router(audit.clone(), &config.auditors),
    );
    if let Some(console) =
        crate::console::Console::new(config, broker.clone(), audit.clone(), policies.clone())
            .await?
    {
        routes = routes.merge(crate::console::router(console));
    }
    for chat in chats {
        routes = routes.merge(chat.clone().router(broker.clone()));
        chat.clone().spawn(broker.clone(), shutdown.clone());
    }
    Ok(routes)
}

/// A policy error, with where a configured directory is looked for when it cannot be read.
fn configured_policies(e: crate::policy::PolicyError) -> anyhow::Error {
    match e {
        crate::policy::PolicyError::ReadDir { .. } => {
            anyhow::anyhow!("policy_dir: {e} ({})", crate::policy::RELATIVE_POLICY_DIR)
        }
        other => other.into(),
    }
}

impl Governance {
    /// Takes over what a stopped gateway left: its tasks (resumed, or ambiguous when their
    /// call had gone out; first, so they are not counted twice), then its other calls whose end
    /// was never recorded (ambiguous). Both go on in the background until `shutdown`.
    pub async fn take_over(
        &self,
        gateway: &Arc<Gateway>,
        config: &Config,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        if let Some(tasks) = &self.tasks {
            let tasks = tasks.clone();
            gateway
                .enable_tasks(tasks, shutdown.clone())
                .await
                .context("tasks")?;
        }
        if let Some(audit) = &self.audit {
            gateway.record_with(audit.clone());
            let longest = config
                .upstreams
                .iter()
                .map(|u| u.timeout())
                .max()
                .unwrap_or_default();
            audit.spawn_unfinished_scan(longest, shutdown);
        }
        Ok(())
    }
}

/// The HTTP gateway: a bound listener and the router behind it.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    gateway: Arc<Gateway>,
    origins: Arc<OriginPolicy>,
    limits: EdgeLimits,
}

impl Application {
    /// Starts the gateway as configured (policies, approvals and audit when `policy_dir` is
    /// set) and binds the listener (port 0 picks a free port).
    pub async fn build(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let governance = Governance::build(config, shutdown.clone()).await?;
        let mut app =
            Application::with_gate(config, governance.gate.clone(), shutdown.clone()).await?;
        governance.take_over(&app.gateway, config, shutdown).await?;
        // `/mcp` answers an oversize body with a JSON-RPC error itself; the approver, auditor
        // and chat endpoints get the same size limit here.
        let limit = tower_http::limit::RequestBodyLimitLayer::new(config.server.max_body_bytes);
        app.router = app.router.merge(governance.routes.layer(limit));
        Ok(app)
    }

    /// Starts the gateway with the given gate and no approver or auditor API.
    pub async fn with_gate(
        config: &Config,
        gate: Arc<dyn CallGate>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let address = config.server.listen;
        let listener = TcpListener::bind(address).await.map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "; another process listens there (is countersign already running?): stop it or change server.listen"
                }
                _ => "; check server.listen",
            };
            anyhow::anyhow!("cannot listen on {address}: {e}{hint}")
        })?;
        let gateway = start_gateway(config, gate, shutdown).await?;
        let front = http::HttpFront {
            gateway: gateway.clone(),
            auth: Arc::new(Authenticator::new(
                &config.agents,
                config.server.allow_anonymous,
            )),
            max_body_bytes: config.server.max_body_bytes,
            metrics_token_sha256: config
                .server
                .metrics_token_sha256
                .as_ref()
                .map(|h| h.trim().to_ascii_lowercase()),
        };
        Ok(Application {
            listener,
            router: http::router(front),
            gateway,
            origins: Arc::new(OriginPolicy {
                allowed_origins: config.server.allowed_origins.clone(),
                loopback_only: config.server.listen.ip().is_loopback(),
            }),
            limits: EdgeLimits::from_config(&config.server),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Serves until `shutdown`, then answers calls still waiting for a human and lets the
    /// requests in flight finish within `server.shutdown_grace_secs`. Every route gets the
    /// Host and Origin checks; connections get the header and body deadlines (see
    /// [`bounds`]).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let listener = self.listener;
        tracing::info!(addr = %listener.local_addr()?, "gateway listening");
        let router = http::guard(self.router, self.origins);
        let gateway = self.gateway.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            gateway.stop_holding();
        });
        let served = bounds::serve(listener, router, self.limits, shutdown).await;
        // No request is left: what the last calls' ends started is recorded before the
        // process goes, within a bound.
        if tokio::time::timeout(DRAIN_BOUND, self.gateway.drain())
            .await
            .is_err()
        {
            tracing::error!(
                "the ends of the last calls were not all recorded within {} s; they will be found as ambiguous",
                DRAIN_BOUND.as_secs()
            );
        }
        served
    }
}

/// Longest a stopping gateway waits for the audit records of the last calls.
const DRAIN_BOUND: Duration = Duration::from_secs(5);
