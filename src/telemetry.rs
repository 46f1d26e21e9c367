//! Logs, traces and metrics.
//!
//! Logs go to stderr (stdout belongs to MCP in stdio mode). Traces are exported over OTLP/HTTP
//! when configured, one span per call carrying the MCP semantic-convention attributes, continuing
//! the client's trace when `_meta.traceparent` is present. Metrics are rendered for Prometheus.

use crate::config::TelemetryConfig;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

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

/// Installs the global subscriber. Call once, from the binary.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let filter = std::env::var("COUNTERSIGN_LOG")
        .ok()
        .or_else(|| config.log_filter.clone())
        .unwrap_or_else(|| "info".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if config.json_logs {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(otlp_provider(endpoint)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("countersign")));
    tracing_subscriber::registry()
        .with(EnvFilter::try_new(&filter)?)
        .with(fmt)
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

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets(&buckets)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // A second recorder (another gateway in the same test process) keeps the first.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Metrics and the span of one `tools/call`, closed when the call's outcome is known.
pub struct CallRecord {
    started: Instant,
    upstream: String,
    tool: String,
    span: tracing::Span,
}

impl CallRecord {
    pub fn start(span: tracing::Span, upstream: &str, tool: &str) -> Self {
        CallRecord {
            started: Instant::now(),
            upstream: upstream.to_owned(),
            tool: tool.to_owned(),
            span,
        }
    }

    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Records the outcome (`ok`, `tool_error`, `error`, `refused`, `invalid`, `cancelled`, …).
    pub fn finish(self, outcome: &'static str) {
        let labels = [
            ("server", self.upstream.clone()),
            ("tool", self.tool.clone()),
        ];
        metrics::histogram!("countersign_tool_call_duration_seconds", &labels)
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!("countersign_tool_calls_total", "server" => self.upstream, "tool" => self.tool, "outcome" => outcome)
            .increment(1);
        self.span.record("countersign.outcome", outcome);
    }
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
