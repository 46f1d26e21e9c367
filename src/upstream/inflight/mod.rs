//! Multiplexing many client requests over one upstream connection.
//!
//! Every request sent upstream gets a connection-unique integer id (and, when it asked for
//! progress, a progress token equal to that id). [`Rewrite`] remembers what the client used so
//! that the response and `notifications/progress` can be mapped back. [`InFlight`] is the
//! registry a transport without per-request streams (stdio) routes incoming messages through;
//! [`Exchange`] is what the caller holds while the request runs.
//!
//! # Layout
//!
//! ```text
//! rewrite.rs   Rewrite: a request's id and progress token, into the upstream's space and back
//! registry.rs  InFlight: the requests in flight on one connection, and message routing
//! exchange.rs  Exchange: one request's messages, always ending with a response
//! ```

mod exchange;
mod registry;
mod rewrite;

pub(super) use exchange::CancelFn;
pub use exchange::Exchange;
pub(super) use registry::InFlight;
pub(super) use rewrite::Rewrite;
