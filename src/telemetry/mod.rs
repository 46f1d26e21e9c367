//! Logs, traces and metrics.
//!
//! Logs go to stderr (stdout belongs to MCP in stdio mode). Traces are exported over OTLP/HTTP
//! when configured, one span per call carrying the MCP semantic-convention attributes, continuing
//! the client's trace when `_meta.traceparent` is present. Metrics are rendered for Prometheus.

use crate::config::TelemetryConfig;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

mod families;

pub use families::{
    CallRecord, Decided, approval_decided, approval_vote, approvals_pending, audit_commit_failed,
    audit_committed, prometheus, upstream_restarted, upstream_up,
};

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Logs a refused credential at WARN, at most once every [`REFUSALS_EVERY`]; the line says how
/// many were refused since the last one, so a flood of bad keys cannot flood the log.
pub fn refused_credential(what: &str, route: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    families::auth_refused(route);
    let refused = SINCE.fetch_add(1, Ordering::Relaxed) + 1;
    let last = LAST_MS.load(Ordering::Relaxed);
    let due = now.saturating_sub(last) >= REFUSALS_EVERY.as_millis() as u64;
    if due
        && LAST_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        SINCE.fetch_sub(refused, Ordering::Relaxed);
        tracing::warn!(
            what,
            route,
            refused,
            "refused a missing or unknown credential"
        );
    }
}

/// How often a refused credential may be logged.
pub const REFUSALS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Installs the global subscriber. Call once, from the binary.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let filter = std::env::var("COUNTERSIGN_LOG")
        .ok()
        .or_else(|| config.log_filter.clone())
        .unwrap_or_else(|| "info".into());
    use std::io::IsTerminal as _;
    // Colour only for a person at a terminal: a journal or a file gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = if config.json_logs {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(otlp_provider(endpoint)?),
        None => None,
    };
    // Each layer filters for itself: the call spans (debug level, see `CALL_SPAN_TARGET`) go to
    // the OTLP exporter whatever the log level, and cost nothing when neither layer wants them.
    let otel = provider.as_ref().map(|p| {
        let spans = tracing_subscriber::filter::Targets::new()
            .with_target("countersign", tracing::Level::DEBUG);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("countersign"))
            .with_filter(spans)
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(EnvFilter::try_new(&filter)?))
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

fn otlp_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("countersign")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Makes `span` a child of the trace named in a request's `_meta` (`traceparent`,
/// `tracestate`), if any.
pub fn continue_trace(span: &tracing::Span, meta: Option<&Map<String, Value>>) {
    let Some(meta) = meta else { return };
    let carrier: HashMap<String, String> = ["traceparent", "tracestate", "baggage"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), meta.get(k)?.as_str()?.to_owned())))
        .collect();
    if carrier.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s trace context into an outgoing `_meta`, so the upstream continues the trace.
/// Does nothing when the span is not exported (no OTLP endpoint).
pub fn inject_trace(span: &tracing::Span, meta: &mut Map<String, Value>) {
    let context = span.context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    for (k, v) in carrier {
        meta.insert(k, Value::String(v));
    }
}
