//! The gateway as a stdio MCP server, for agents that only spawn servers.
//!
//! One client, one session: newline-delimited JSON-RPC on stdin, answers and notifications on
//! stdout (logs go to stderr). Each request runs in its own task, so a long call does not hold up
//! the others; one writer task owns stdout.

use super::numbers;
use crate::auth::Agent;
use crate::gateway::{self, Caller, Gateway, Reply, Session};
use crate::jsonrpc::{self, code};
use crate::protocol::{self, Era};
use serde_json::Value;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Serves one client on `input`/`output` until `input` closes.
pub async fn serve<R, W>(
    gateway: Arc<Gateway>,
    agent: Agent,
    input: R,
    output: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let session = Session::new(
        gateway::session::new_session_id(),
        agent,
        gateway::legacy_client(&Value::Null),
    );
    gateway.sessions.insert(session.clone());
    let (tx, rx) = mpsc::channel::<Value>(256);
    let writer = tokio::spawn(write_lines(rx, output));
    let relay = tokio::spawn(relay_outbox(session.clone(), tx.clone()));
    let mut lines = BufReader::new(input).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(message) => match numbers::check_call(line.as_bytes(), &message) {
                Ok(()) => dispatch(&gateway, &session, message, tx.clone()),
                Err(why) => {
                    let id = message.get("id").cloned();
                    let refusal = jsonrpc::error(id, code::INVALID_PARAMS, why.to_string());
                    let _ = tx.send(refusal).await;
                }
            },
            Err(e) => {
                let _ = tx
                    .send(jsonrpc::error(
                        None,
                        code::PARSE_ERROR,
                        format!("malformed JSON: {e}"),
                    ))
                    .await;
            }
        }
    }
    relay.abort();
    gateway.sessions.remove(&session.id);
    drop(tx);
    writer.await.map_err(std::io::Error::other)?
}

/// Handles one message in its own task and queues what it produces for stdout.
fn dispatch(
    gateway: &Arc<Gateway>,
    session: &Arc<Session>,
    message: Value,
    tx: mpsc::Sender<Value>,
) {
    if jsonrpc::method(&message) == Some("initialize") {
        session.set_client(gateway::legacy_client(&message));
    }
    let client = if jsonrpc::meta(&message)
        .is_some_and(|m| m.contains_key(protocol::META_PROTOCOL_VERSION))
    {
        gateway::modern_client(&message)
    } else {
        session.client()
    };
    let modern_removed = client.era == Era::Modern
        && protocol::REMOVED_IN_MODERN.contains(&jsonrpc::method(&message).unwrap_or_default());
    let caller = Caller {
        agent: session.agent.clone(),
        client,
        session: Some(session.clone()),
        param_headers: None,
    };
    let gateway = gateway.clone();
    tokio::spawn(async move {
        if modern_removed && message.get("id").is_some() {
            let e = jsonrpc::error(
                message.get("id").cloned(),
                code::METHOD_NOT_FOUND,
                "method not part of protocol 2026-07-28",
            );
            let _ = tx.send(e).await;
            return;
        }
        match gateway.handle(&caller, message).await {
            Reply::Accepted => {}
            Reply::Response(response) => {
                let _ = tx.send(response).await;
            }
            Reply::Stream(mut stream) => {
                while let Some(m) = stream.next().await {
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
}

async fn relay_outbox(session: Arc<Session>, tx: mpsc::Sender<Value>) {
    let mut outbox = session.subscribe();
    loop {
        match outbox.recv().await {
            Ok(m) => {
                if tx.send(m).await.is_err() {
                    break;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "stdio client is slow; dropped notifications");
            }
            Err(_) => break,
        }
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Value>,
    mut output: W,
) -> std::io::Result<()> {
    while let Some(message) = rx.recv().await {
        let mut line = serde_json::to_vec(&message).expect("a JSON value serializes");
        line.push(b'\n');
        output.write_all(&line).await?;
        output.flush().await?;
    }
    Ok(())
}
