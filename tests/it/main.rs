//! Integration tests: one binary, one module per area.

mod support;

mod approvals;
mod bad_input;
mod conformance;
mod long_waits;
mod mattermost;
mod peers;
mod stdio_front;
mod telemetry;
