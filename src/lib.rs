//! Countersign: an MCP gateway that decides every tool call, holds the ones that need humans,
//! and proves afterwards what happened.
//!
//! # Layout
//!
//! ```text
//! agent ─▶ front (HTTP both eras, stdio) ─▶ gateway ─▶ upstream (HTTP both eras, stdio child)
//!                 authenticate, check          route, validate, gate, forward
//!                                              │
//!                                 governance (policy, approval, audit) decides behind the gate
//! ```

/// The approval broker: pending → approved / denied / expired / cancelled, persisted.
pub mod approval;
/// The audit log: append-only, hash-chained events; queries, verify, auditor API.
pub mod audit;
/// Authenticating agents by API key.
pub mod auth;
/// Exponential backoff between attempts to reach something that is down.
pub mod backoff;
/// What one `tools/call` is to every layer: the routed call and its caller's progress.
pub mod call;
/// Canonical JSON (RFC 8785 with exact 64-bit integers) for digests, and the check that a
/// request's numbers are held exactly.
pub mod canonical;
/// Chat backends where approvers are asked: Mattermost, Matrix, Slack, a signed webhook.
pub mod chat;
/// The command line.
pub mod cli;
/// The YAML configuration and its environment overrides.
pub mod config;
/// The web console for approvers and auditors, with OpenID Connect sign-in.
pub mod console;
/// MCP toward agents: Streamable HTTP and stdio.
pub mod front;
/// The protocol core: local answers, routing, the `tools/call` path.
pub mod gateway;
/// What decides every call behind the gateway's gate: policy, approval, audit.
pub mod governance;
/// How the HTTP APIs answer a failed request.
pub mod http_error;
/// Raw JSON-RPC messages.
pub mod jsonrpc;
/// Policy files and the decision on each tool call: allow, deny, or approve by whom.
pub mod policy;
/// `config check`: what the configuration refers to, checked before anything starts.
pub mod preflight;
/// MCP protocol constants and era rules.
pub mod protocol;
/// Building and running the gateway.
pub mod startup;
/// The database: SQLite or PostgreSQL, migrated at connect.
pub mod store;
/// Task handles for calls that wait for humans: durable, leased, resumed after a restart.
pub mod tasks;
/// Logs, traces, metrics.
pub mod telemetry;
/// Unix time as text: the audit log's timestamps, the cards', and parsing what people type.
pub mod timestamp;
/// TLS for https upstreams and chat servers.
pub mod tls;
/// MCP toward tool servers.
pub mod upstream;
