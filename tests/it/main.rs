//! Integration tests: one binary, one module per area.

mod app;
mod support;

/// Shared with the other test binaries: a fresh database per test, and bounded waiting.
#[path = "../common/db.rs"]
mod db;
#[path = "../common/wait.rs"]
mod wait;

mod approvals;
mod bad_input;
mod chat_gateway;
mod chat_table;
mod cli;
mod conformance;
mod console;
mod console_groups;
mod console_http;
mod edge;
mod exact;
mod idp_groups;
mod long_waits;
mod matrix;
mod mattermost;
mod peers;
mod slack;
mod stdio_front;
mod synapse;
mod telemetry;
mod tls;
mod trust;
mod webhook;
