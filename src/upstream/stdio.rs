//! A child process speaking newline-delimited JSON-RPC on stdin/stdout.
//!
//! A supervisor task owns the child: it spawns it, handshakes (`server/discover` and/or
//! `initialize`, depending on the configured era), then waits for it to exit and restarts it
//! with exponential backoff until shutdown. Requests from all clients share the child; their
//! ids and progress tokens are rewritten by [`InFlight`].

use super::health::{self, Health};
use super::inflight::{CancelFn, Exchange, InFlight};
use super::messages;
use super::{ClientContext, UpstreamError};
use crate::config::{EraPreference, StdioUpstreamConfig, UpstreamConfig};
use crate::jsonrpc;
use crate::protocol::{self, Era};
use serde_json::{Value, json};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long an `auto` upstream has to answer `server/discover` before it is taken as legacy.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `initialize` may take.
const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child has to exit after its stdin is closed at shutdown before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

pub struct StdioTransport {
    shared: Arc<Shared>,
    /// Stops the supervisor when the transport is dropped without a shutdown.
    _stop: DropGuard,
}

/// State shared by the transport, its supervisor and the child's reader.
struct Shared {
    name: String,
    timeout: Duration,
    inflight: InFlight,
    events: broadcast::Sender<Value>,
    health: Health,
    /// Lines for the current child's stdin; `None` while no handshaken child is running.
    writer: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    /// The era and capabilities from the last successful handshake.
    server: RwLock<(Option<Era>, Value)>,
}

impl StdioTransport {
    /// Spawns the child and waits for the first handshake attempt (successful or not).
    pub async fn start(
        config: &UpstreamConfig,
        stdio: &StdioUpstreamConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            timeout: config.timeout(),
            inflight: InFlight::new(),
            events: broadcast::channel(256).0,
            health: Health::new(&config.name),
            writer: Mutex::new(None),
            server: RwLock::new((None, json!({}))),
        });
        let stop = shutdown.child_token();
        let (first_tx, first_rx) = oneshot::channel();
        let supervisor = Supervisor {
            shared: shared.clone(),
            command: stdio.clone(),
            era: config.era,
            stop: stop.clone(),
        };
        tokio::spawn(supervisor.run(first_tx));
        let _ = first_rx.await;
        Ok(StdioTransport {
            shared,
            _stop: stop.drop_guard(),
        })
    }

    pub async fn request(
        &self,
        mut request: Value,
        client: &ClientContext,
    ) -> Result<Exchange, UpstreamError> {
        let s = &self.shared;
        if s.era() == Some(Era::Modern) {
            messages::add_modern_meta(&mut request, client);
        }
        let (rewrite, rx) = s.inflight.register(&mut request);
        let id = rewrite.upstream_id;
        // Registered before looking for the writer: a child exiting meanwhile fails it.
        if let Err(e) = s.send(&request) {
            s.inflight.remove(id);
            return Err(e);
        }
        let cancel: CancelFn = {
            let shared = self.shared.clone();
            Box::new(move |reason| shared.cancel(id, reason))
        };
        Ok(Exchange::new(
            rx,
            rewrite.client_id,
            &s.name,
            s.timeout,
            Some(cancel),
        ))
    }

    /// Sends a client notification; those the modern era removed are dropped for a modern child.
    pub async fn notify(
        &self,
        notification: Value,
        _client: &ClientContext,
    ) -> Result<(), UpstreamError> {
        let method = jsonrpc::method(&notification).unwrap_or_default();
        let removed =
            self.shared.era() == Some(Era::Modern) && protocol::REMOVED_IN_MODERN.contains(&method);
        if removed || messages::is_gateway_owned(method) {
            tracing::debug!(upstream = %self.shared.name, method, "notification not forwarded");
            return Ok(());
        }
        self.shared.send(&notification)
    }

    pub async fn respond(&self, response: Value) -> Result<(), UpstreamError> {
        self.shared.send(&response)
    }

    pub fn events(&self) -> broadcast::Receiver<Value> {
        self.shared.events.subscribe()
    }

    pub fn capabilities(&self) -> Value {
        self.shared.read_server().1.clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.shared.health.get()
    }
}

impl Shared {
    fn era(&self) -> Option<Era> {
        self.read_server().0
    }

    fn read_server(&self) -> std::sync::RwLockReadGuard<'_, (Option<Era>, Value)> {
        self.server.read().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Option<mpsc::UnboundedSender<Vec<u8>>>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one message to the running child.
    fn send(&self, msg: &Value) -> Result<(), UpstreamError> {
        let line = encode_line(msg);
        let sent = self.writer().as_ref().is_some_and(|w| w.send(line).is_ok());
        sent.then_some(())
            .ok_or_else(|| UpstreamError::Unavailable {
                upstream: self.name.clone(),
                reason: "the process is not running".into(),
            })
    }

    /// Cancels a request that is still in flight.
    fn cancel(&self, upstream_id: i64, reason: &str) {
        if self.inflight.remove(upstream_id) {
            let _ = self.send(&messages::cancelled_notification(upstream_id, reason));
        }
    }

    /// The child is handshaken: requests may flow.
    fn connected(&self, writer: mpsc::UnboundedSender<Vec<u8>>, era: Era, capabilities: Value) {
        *self.server.write().unwrap_or_else(|e| e.into_inner()) = (Some(era), capabilities);
        *self.writer() = Some(writer);
        self.health.set(true);
    }

    /// The child is going away: new requests are refused.
    fn refuse_requests(&self) {
        self.writer().take();
        self.health.set(false);
    }

    /// Sends a handshake request and waits for its response (`None` on timeout).
    async fn call(
        &self,
        writer: &mpsc::UnboundedSender<Vec<u8>>,
        mut request: Value,
        wait: Duration,
    ) -> Option<Value> {
        let (rewrite, mut rx) = self.inflight.register(&mut request);
        let _ = writer.send(encode_line(&request));
        let response = tokio::time::timeout(wait, rx.recv()).await.ok().flatten();
        self.inflight.remove(rewrite.upstream_id);
        response
    }
}

fn encode_line(msg: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("a JSON value always serialises");
    line.push(b'\n');
    line
}

/// Owns the child process across restarts.
struct Supervisor {
    shared: Arc<Shared>,
    command: StdioUpstreamConfig,
    era: EraPreference,
    stop: CancellationToken,
}

/// The pipes of a freshly spawned child.
struct Running {
    child: Child,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    /// Runs children until shutdown; `first` is signalled after the first handshake attempt.
    async fn run(self, first: oneshot::Sender<()>) {
        let mut first = Some(first);
        let mut backoff = health::reconnect_backoff();
        let mut runs = 0u64;
        while !self.stop.is_cancelled() {
            if runs > 0 {
                crate::telemetry::upstream_restarted(&self.shared.name);
            }
            runs += 1;
            let started = Instant::now();
            self.run_child(&mut first).await;
            if started.elapsed() >= health::STABLE {
                backoff.reset();
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }

    /// Spawns, handshakes and waits for one child; returns once it is gone.
    async fn run_child(&self, first: &mut Option<oneshot::Sender<()>>) {
        let name = &self.shared.name;
        let mut running = match self.spawn() {
            Ok(running) => running,
            Err(e) => {
                tracing::error!(target: "countersign::upstream", upstream = %name, command = %self.command.command, error = %e, "cannot start the upstream process (is the command on PATH, or its path right?)");
                first.take().map(|f| f.send(()));
                return;
            }
        };
        let handshake = tokio::select! {
            h = self.handshake(&running.writer) => h,
            status = running.child.wait() => Err(Exit::from(status).into()),
            _ = self.stop.cancelled() => Err(HandshakeError::ShutDown),
        };
        let why = match handshake {
            Ok((era, capabilities)) => {
                tracing::info!(target: "countersign::upstream", upstream = %name, era = era.as_str(), "upstream process ready");
                self.shared
                    .connected(running.writer.clone(), era, capabilities);
                first.take().map(|f| f.send(()));
                self.wait_for_exit(&mut running.child).await
            }
            Err(why) => {
                tracing::warn!(target: "countersign::upstream", upstream = %name, why = %why, "upstream handshake failed");
                first.take().map(|f| f.send(()));
                Gone::Handshake(why)
            }
        };
        self.shared.refuse_requests();
        self.stop_child(running).await;
        self.shared
            .inflight
            .fail_all(&format!("upstream {name} {why}"));
    }

    fn spawn(&self) -> std::io::Result<Running> {
        let cfg = &self.command;
        let mut command = Command::new(&cfg.command);
        command
            .args(&cfg.args)
            .envs(&cfg.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &cfg.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (writer, lines) = mpsc::unbounded_channel();
        tokio::spawn(write_lines(stdin, lines));
        tokio::spawn(log_stderr(stderr, self.shared.name.clone()));
        let reader = tokio::spawn(read_messages(stdout, self.shared.clone()));
        Ok(Running {
            child,
            writer,
            reader,
        })
    }

    /// Finds the child's era and capabilities, as configured.
    async fn handshake(
        &self,
        writer: &mpsc::UnboundedSender<Vec<u8>>,
    ) -> Result<(Era, Value), HandshakeError> {
        if self.era != EraPreference::Legacy {
            let wait = if self.era == EraPreference::Auto {
                DISCOVER_TIMEOUT
            } else {
                INITIALIZE_TIMEOUT
            };
            match self
                .shared
                .call(writer, messages::discover_request(), wait)
                .await
            {
                Some(r) if r.get("result").is_some() => {
                    return Ok((Era::Modern, capabilities_of(&r)));
                }
                r if self.era == EraPreference::Modern => {
                    return Err(HandshakeError::Discover(r));
                }
                _ => {}
            }
        }
        let response = self
            .shared
            .call(writer, messages::initialize_request(), INITIALIZE_TIMEOUT)
            .await;
        match response {
            Some(r) if r.get("result").is_some() => {
                let _ = writer.send(encode_line(&jsonrpc::notification(
                    "notifications/initialized",
                    json!({}),
                )));
                Ok((Era::Legacy, capabilities_of(&r)))
            }
            r => Err(HandshakeError::Initialize(r)),
        }
    }

    /// Waits until the child exits or shutdown; says why it is gone.
    async fn wait_for_exit(&self, child: &mut Child) -> Gone {
        tokio::select! {
            status = child.wait() => Gone::Exited(status.into()),
            _ = self.stop.cancelled() => Gone::ShutDown,
        }
    }

    /// Closes stdin, gives the child a moment, then kills it; drains what it wrote.
    async fn stop_child(&self, running: Running) {
        let Running {
            mut child,
            writer,
            reader,
        } = running;
        drop(writer);
        if tokio::time::timeout(EXIT_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        // Responses written just before the exit are still routed.
        let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
    }
}

fn capabilities_of(response: &Value) -> Value {
    response
        .pointer("/result/capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}))
}

/// How a child process ended.
#[derive(Debug, thiserror::Error)]
enum Exit {
    #[error("exited ({0})")]
    Status(ExitStatus),
    #[error("could not be waited for: {0}")]
    Unwaitable(#[source] std::io::Error),
}

impl From<std::io::Result<ExitStatus>> for Exit {
    fn from(status: std::io::Result<ExitStatus>) -> Self {
        match status {
            Ok(status) => Exit::Status(status),
            Err(e) => Exit::Unwaitable(e),
        }
    }
}

/// Why a child did not get through the handshake.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    /// A `modern` upstream did not answer `server/discover` with a result (`None`: not in time).
    #[error("server/discover failed: {0:?}")]
    Discover(Option<Value>),
    /// `initialize` was not answered with a result (`None`: not in time).
    #[error("initialize failed: {0:?}")]
    Initialize(Option<Value>),
    /// The child ended during the handshake.
    #[error(transparent)]
    Exited(#[from] Exit),
    #[error("shut down")]
    ShutDown,
}

/// Why a child no longer serves requests; those in flight end with `upstream {name} {why}`.
#[derive(Debug, thiserror::Error)]
enum Gone {
    #[error(transparent)]
    Handshake(HandshakeError),
    /// The child ended after it was ready.
    #[error(transparent)]
    Exited(Exit),
    #[error("was shut down")]
    ShutDown,
}

async fn write_lines(mut stdin: ChildStdin, mut lines: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(line) = lines.recv().await {
        if stdin.write_all(&line).await.is_err() {
            return;
        }
    }
}

async fn read_messages(stdout: ChildStdout, shared: Arc<Shared>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(msg) => shared.inflight.route(msg, &shared.events),
            Err(e) => {
                tracing::warn!(target: "countersign::upstream", upstream = %shared.name, error = %e, "upstream wrote a line that is not JSON")
            }
        }
    }
}

async fn log_stderr(stderr: tokio::process::ChildStderr, name: String) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "countersign::upstream", upstream = %name, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway awaits these inside spawned tasks.
    #[allow(dead_code)]
    fn futures_are_send(t: &StdioTransport, c: &ClientContext) {
        fn is_send<T: Send>(_: T) {}
        is_send(t.request(Value::Null, c));
        is_send(t.notify(Value::Null, c));
        is_send(t.respond(Value::Null));
    }

    #[test]
    fn lines_end_with_one_newline_and_embed_none() {
        let line = encode_line(&json!({"text": "a\nb"}));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
    }
}
