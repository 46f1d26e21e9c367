//! MCP toward agents: Streamable HTTP (legacy sessions and modern stateless requests) and stdio.
//!
//! Parts: [`http`] serves `/mcp` and the operators' endpoints; [`bounds`] limits connections
//! and how long clients may take; `checks` refuses foreign origins and modern requests whose
//! headers disagree with their body; `numbers` refuses arguments that cannot be bound exactly;
//! [`stdio`] serves one agent over stdin and stdout.

pub mod bounds;
mod checks;
pub mod http;
mod numbers;
pub mod stdio;

pub use checks::OriginPolicy;
