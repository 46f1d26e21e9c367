//! MCP toward agents: Streamable HTTP (legacy sessions and modern stateless requests) and stdio.

pub mod bounds;
mod checks;
pub mod http;
mod numbers;
pub mod stdio;

pub use checks::OriginPolicy;
