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
use std::sync::{Arc, OnceLock, RwLock};
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

/// Logs a refused credential at WARN, at most once every [`REFUSALS_EVERY`]; the line says how
/// many were refused since the last one, so a flood of bad keys cannot flood the log.
pub fn refused_credential(what: &str, route: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
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
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
        }
        handle
    })
}

/// The HELP text of every family (`# HELP` on `/metrics`).
fn describe() {
    metrics::describe_counter!(
        "countersign_tool_calls_total",
        "tools/call requests by server, tool and outcome (ok, tool_error, denied, invalid_arguments, ...)"
    );
    metrics::describe_histogram!(
        "countersign_tool_call_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a tools/call arriving to its answer, including any wait for human approval"
    );
    metrics::describe_gauge!(
        "countersign_upstream_up",
        "1 when the upstream is reachable, 0 when it is not"
    );
}

/// Metrics and the span of one `tools/call`, closed when the call's outcome is known.
pub struct CallRecord {
    started: Instant,
    metrics: Arc<ToolMetrics>,
    span: tracing::Span,
}

impl CallRecord {
    pub fn start(span: tracing::Span, upstream: &str, tool: &str) -> Self {
        CallRecord {
            started: Instant::now(),
            metrics: ToolMetrics::of(upstream, tool),
            span,
        }
    }

    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Records the outcome (`ok`, `tool_error`, `error`, `refused`, `invalid`, `cancelled`, …).
    pub fn finish(self, outcome: &'static str) {
        self.metrics
            .duration
            .record(self.started.elapsed().as_secs_f64());
        self.metrics.calls(outcome).increment(1);
        self.span.record("countersign.outcome", outcome);
    }
}

/// The metric handles of one tool, registered once and kept: building the labels and looking
/// the series up in the recorder on every call cost more than the recording itself.
struct ToolMetrics {
    server: String,
    tool: String,
    /// `countersign_tool_call_duration_seconds{server, tool}`.
    duration: metrics::Histogram,
    /// `countersign_tool_calls_total{server, tool, outcome}`, one per outcome seen so far.
    calls: RwLock<Vec<(&'static str, metrics::Counter)>>,
}

/// Server name → tool name → handles. Grows with the tools that were called, as the
/// recorder's own series do.
type ToolMetricsMap = HashMap<String, HashMap<String, Arc<ToolMetrics>>>;

impl ToolMetrics {
    /// The handles of `tool` on `server`, registering them on first use.
    fn of(server: &str, tool: &str) -> Arc<ToolMetrics> {
        static ALL: OnceLock<RwLock<ToolMetricsMap>> = OnceLock::new();
        let all = ALL.get_or_init(Default::default);
        let known = |map: &ToolMetricsMap| map.get(server)?.get(tool).cloned();
        if let Some(found) = known(&all.read().unwrap_or_else(|e| e.into_inner())) {
            return found;
        }
        let mut map = all.write().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = known(&map) {
            return found;
        }
        let registered = Arc::new(ToolMetrics::register(server, tool));
        map.entry(server.to_owned())
            .or_default()
            .insert(tool.to_owned(), registered.clone());
        registered
    }

    fn register(server: &str, tool: &str) -> ToolMetrics {
        // Handles taken before a recorder is installed would stay no-ops for good.
        prometheus();
        let duration = metrics::histogram!(
            "countersign_tool_call_duration_seconds",
            "server" => server.to_owned(),
            "tool" => tool.to_owned(),
        );
        ToolMetrics {
            server: server.to_owned(),
            tool: tool.to_owned(),
            duration,
            calls: RwLock::new(Vec::new()),
        }
    }

    /// The call counter for `outcome`, registering it on first use.
    fn calls(&self, outcome: &'static str) -> metrics::Counter {
        let find = |calls: &[(&'static str, metrics::Counter)]| {
            calls
                .iter()
                .find(|(known, _)| *known == outcome)
                .map(|(_, counter)| counter.clone())
        };
        if let Some(counter) = find(&self.calls.read().unwrap_or_else(|e| e.into_inner())) {
            return counter;
        }
        let mut calls = self.calls.write().unwrap_or_else(|e| e.into_inner());
        if let Some(counter) = find(&calls) {
            return counter;
        }
        let counter = metrics::counter!(
            "countersign_tool_calls_total",
            "server" => self.server.clone(),
            "tool" => self.tool.clone(),
            "outcome" => outcome,
        );
        calls.push((outcome, counter.clone()));
        counter
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
