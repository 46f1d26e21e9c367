//! One child process: spawned with its three pipes (stdin fed from a channel, stdout routed
//! through [`super::InFlight`], stderr logged), and stopped at the end.

use super::Shared;
use crate::config::StdioUpstreamConfig;
use serde_json::Value;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

/// How long a child has to exit after its stdin is closed at shutdown before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The pipes of a freshly spawned child.
pub(super) struct Running {
    pub child: Child,
    pub writer: mpsc::UnboundedSender<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
}

/// Spawns `cfg` with its pipes; `shared` receives what it writes to stdout.
pub(super) fn spawn(cfg: &StdioUpstreamConfig, shared: &Arc<Shared>) -> std::io::Result<Running> {
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
    tokio::spawn(log_stderr(stderr, shared.name.clone()));
    let reader = tokio::spawn(read_messages(stdout, shared.clone()));
    Ok(Running {
        child,
        writer,
        reader,
    })
}

/// Closes stdin, gives the child a moment, then kills it; drains what it wrote.
pub(super) async fn stop(running: Running) {
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

/// How a child process ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum Exit {
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

/// One message as a line for the child's stdin.
pub(super) fn encode_line(msg: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("a JSON value always serialises");
    line.push(b'\n');
    line
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
    use serde_json::json;

    #[test]
    fn lines_end_with_one_newline_and_embed_none() {
        let line = encode_line(&json!({"text": "a\nb"}));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
    }
}
