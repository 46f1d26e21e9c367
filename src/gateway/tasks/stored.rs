//! What a task stores of its call, so that another instance (or this one after a restart)
//! can run it: the request as it goes upstream, who asked, and the client's protocol. Read
//! back against today's catalog: a tool that is gone or moved fails the task, never runs
//! elsewhere.

use super::TaskCall;
use crate::auth::Agent;
use crate::gateway::Gateway;
use crate::gateway::gate::ToolCall;
use crate::gateway::pipeline::RoutedCall;
use crate::protocol::Era;
use crate::tasks::Task;
use crate::upstream::ClientContext;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The stored form (the `tasks.call` column).
#[derive(Serialize, Deserialize)]
struct StoredCall {
    exposed: String,
    upstream: String,
    #[serde(default)]
    tool: String,
    #[serde(default)]
    agent: StoredAgent,
    message: Value,
    #[serde(default)]
    client: StoredClient,
}

#[derive(Serialize, Deserialize, Default)]
struct StoredAgent {
    #[serde(default)]
    id: String,
    #[serde(default)]
    on_behalf_of: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredClient {
    #[serde(default)]
    era: StoredEra,
    #[serde(default)]
    protocol_version: String,
    #[serde(default = "empty_object")]
    capabilities: Value,
}

impl Default for StoredClient {
    fn default() -> Self {
        StoredClient {
            era: StoredEra::Legacy,
            protocol_version: String::new(),
            capabilities: empty_object(),
        }
    }
}

#[derive(Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum StoredEra {
    Modern,
    #[default]
    #[serde(other)]
    Legacy,
}

fn empty_object() -> Value {
    json!({})
}

/// Why a stored task's call cannot run today.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unrunnable {
    #[error("the stored task is incomplete")]
    Incomplete(#[source] serde_json::Error),
    #[error("the tool {0} is no longer offered; the call was not run")]
    NoLongerOffered(String),
    #[error("the tool {0} moved to another server; the call was not run")]
    Moved(String),
}

impl TaskCall {
    pub(super) fn to_json(&self) -> Value {
        let call = &self.routed.call;
        let client = &self.routed.client;
        let stored = StoredCall {
            exposed: self.exposed.clone(),
            upstream: call.upstream.to_string(),
            tool: call.tool.clone(),
            agent: StoredAgent {
                id: call.agent.id.to_string(),
                on_behalf_of: call.agent.on_behalf_of.as_deref().map(str::to_owned),
                groups: call.agent.groups.to_vec(),
            },
            message: self.routed.message.clone(),
            client: StoredClient {
                era: match client.era {
                    Era::Modern => StoredEra::Modern,
                    Era::Legacy => StoredEra::Legacy,
                },
                protocol_version: client.protocol_version.clone(),
                capabilities: client.capabilities.clone(),
            },
        };
        serde_json::to_value(stored).expect("a stored call is plain data and serialises")
    }
}

impl Gateway {
    /// The call of a stored task, against today's catalog.
    pub(super) async fn rebuild(&self, task: &Task) -> Result<TaskCall, Unrunnable> {
        let stored: StoredCall =
            serde_json::from_value(task.call.clone()).map_err(Unrunnable::Incomplete)?;
        let route = match self.snapshot().tool(&stored.exposed) {
            Some(route) => route.clone(),
            None => {
                self.refresh_all().await;
                let route = self.snapshot().tool(&stored.exposed).cloned();
                route.ok_or_else(|| Unrunnable::NoLongerOffered(stored.exposed.clone()))?
            }
        };
        let upstream = self.upstreams[route.upstream].clone();
        if *upstream.name != *stored.upstream {
            return Err(Unrunnable::Moved(stored.exposed));
        }
        let agent = Agent {
            id: task.agent.as_str().into(),
            on_behalf_of: stored.agent.on_behalf_of.map(Into::into),
            groups: stored.agent.groups.into(),
        };
        let arguments = stored.message.pointer("/params/arguments").cloned();
        let call = ToolCall {
            id: task.call_id,
            agent,
            upstream: stored.upstream.as_str().into(),
            tool: route.name.clone(),
            arguments: arguments.unwrap_or_else(empty_object),
            definition: route.tool.clone(),
        };
        let client = ClientContext {
            era: match stored.client.era {
                StoredEra::Modern => Era::Modern,
                StoredEra::Legacy => Era::Legacy,
            },
            protocol_version: stored.client.protocol_version,
            capabilities: stored.client.capabilities,
            mirrored_headers: Vec::new(),
        };
        let routed = RoutedCall {
            call,
            upstream,
            upstream_index: route.upstream,
            message: stored.message,
            client,
        };
        Ok(TaskCall {
            routed,
            exposed: stored.exposed,
        })
    }
}
