//! Integration tests: one binary, one module per area.

mod support;

mod approvals;
mod bad_input;
mod chat_gateway;
mod chat_table;
mod conformance;
mod matrix;
mod peers;
mod slack;
mod stdio_front;
mod synapse;
mod telemetry;
mod webhook;
