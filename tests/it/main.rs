//! Integration tests: one binary, one module per area.

mod app;
mod support;

/// A fresh database per test, and bounded waiting.
mod db;
mod wait;

mod approvals;
mod audit;
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
mod layers;
mod long_waits;
mod matrix;
mod mattermost;
mod peers;
mod policy;
mod slack;
mod stdio_front;
mod synapse;
mod telemetry;
mod tls;
mod trust;
mod upstream_http;
mod upstream_stdio;
mod webhook;
