//! Countersign: an MCP gateway that decides every tool call, holds the ones that need humans,
//! and proves afterwards what happened.
//!
//! # Layout
//!
//! ```text
//! agent ─▶ front (HTTP both eras, stdio) ─▶ gateway ─▶ upstream (HTTP both eras, stdio child)
//!                 authenticate, check          route, validate, gate (the tools/call seam), forward
//! ```

/// Authenticating agents by API key.
pub mod auth;
/// The command line.
pub mod cli;
/// The YAML configuration and its environment overrides.
pub mod config;
/// MCP toward agents: Streamable HTTP and stdio.
pub mod front;
/// The protocol core: local answers, routing, the `tools/call` path.
pub mod gateway;
/// Raw JSON-RPC messages.
pub mod jsonrpc;
/// MCP protocol constants and era rules.
pub mod protocol;
/// Building and running the gateway.
pub mod startup;
/// Logs, traces, metrics.
pub mod telemetry;
/// MCP toward tool servers.
pub mod upstream;
