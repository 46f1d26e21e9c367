//! The load generator's client: one keep-alive HTTP/1.1 connection pool per target, and one
//! checked `tools/call` of `echo` in either protocol era.

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use std::time::{Duration, Instant};

const MODERN_VERSION: &str = "2026-07-28";
const LEGACY_VERSION: &str = "2025-11-25";
/// Hard bound on any one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// One endpoint under test, with its own keep-alive connection pool.
pub struct Target {
    pub name: &'static str,
    url: String,
    client: reqwest::Client,
    headers: HeaderMap,
}

/// The era a call is made in.
#[derive(Clone)]
pub enum Era {
    Modern,
    Legacy { session: Option<String> },
}

impl Target {
    pub fn new(name: &'static str, url: String, key: &str) -> anyhow::Result<Self> {
        Target::with_timeout(name, url, key, CALL_TIMEOUT)
    }

    /// A target whose calls may take up to `timeout` (a call held for approval).
    pub fn with_timeout(
        name: &'static str,
        url: String,
        key: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = countersign::tls::Tls::new(&Default::default())
            .unwrap()
            .http()
            .tcp_nodelay(true)
            .http1_only()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .timeout(timeout)
            .build()?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        // Sent to both; the echo server ignores it, the gateway authenticates it.
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}"))?,
        );
        Ok(Target {
            name,
            url,
            client,
            headers,
        })
    }

    /// POSTs one message; the status, the `Mcp-Session-Id` answered, and the body.
    pub async fn post(
        &self,
        era: &Era,
        body: String,
        method: &'static str,
    ) -> Result<(u16, Option<String>, bytes::Bytes), String> {
        let mut request = self.client.post(&self.url).headers(self.headers.clone());
        match era {
            Era::Modern => {
                request = request
                    .header("mcp-protocol-version", MODERN_VERSION)
                    .header("mcp-method", method);
                if method == "tools/call" {
                    request = request.header("mcp-name", "echo");
                }
            }
            Era::Legacy { session } => {
                if method != "initialize" {
                    request = request.header("mcp-protocol-version", LEGACY_VERSION);
                }
                if let Some(id) = session {
                    request = request.header("mcp-session-id", id);
                }
            }
        }
        let response = request.body(body).send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, session, bytes))
    }

    /// Opens a legacy session (`initialize` + `notifications/initialized`).
    pub async fn open_session(&self) -> Result<Era, String> {
        let init = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{LEGACY_VERSION}","capabilities":{{}},"clientInfo":{{"name":"bench","version":"0"}}}}}}"#
        );
        let (status, session, body) = self
            .post(&Era::Legacy { session: None }, init, "initialize")
            .await?;
        let answer = parse_answer(&body)?;
        if status != 200 || answer.pointer("/result/protocolVersion").is_none() {
            return Err(format!("initialize answered {status} {answer}"));
        }
        let era = Era::Legacy { session };
        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned();
        let (status, _, _) = self
            .post(&era, initialized, "notifications/initialized")
            .await?;
        if status != 202 {
            return Err(format!("notifications/initialized answered {status}"));
        }
        Ok(era)
    }

    /// One `tools/call` of `echo`, checked; its latency (request sent → whole body read).
    pub async fn call(&self, era: &Era, seq: u64) -> Result<Duration, String> {
        let message = format!("bench-{seq}");
        let started = Instant::now();
        let (status, answer) = self.echo(era, seq, &message, false).await?;
        let elapsed = started.elapsed();
        let correct = status == 200
            && answer.get("id").and_then(Value::as_u64) == Some(seq)
            && answer
                .pointer("/result/content/0/text")
                .and_then(Value::as_str)
                == Some(message.as_str())
            && answer.pointer("/result/isError") == Some(&Value::Bool(false));
        if correct {
            Ok(elapsed)
        } else {
            Err(format!("HTTP {status}: {answer}"))
        }
    }

    /// One `tools/call` of `echo` with `message`, unchecked; `tasks` declares the tasks
    /// extension (modern era), so a call held for approval is answered with a task at once.
    pub async fn echo(
        &self,
        era: &Era,
        seq: u64,
        message: &str,
        tasks: bool,
    ) -> Result<(u16, Value), String> {
        let capabilities = if tasks {
            r#"{"extensions":{"io.modelcontextprotocol/tasks":{}}}"#
        } else {
            "{}"
        };
        let meta = match era {
            Era::Modern => format!(
                r#","_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN_VERSION}","io.modelcontextprotocol/clientCapabilities":{capabilities}}}"#
            ),
            Era::Legacy { .. } => String::new(),
        };
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{seq},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{message}"}}{meta}}}}}"#
        );
        let (status, _, bytes) = self.post(era, body, "tools/call").await?;
        Ok((status, parse_answer(&bytes)?))
    }
}

/// A JSON body, or the last message of an SSE body.
pub fn parse_answer(body: &[u8]) -> Result<Value, String> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let text = String::from_utf8_lossy(body);
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str(d.trim()).ok())
        .ok_or_else(|| format!("not JSON: {text:?}"))
}
