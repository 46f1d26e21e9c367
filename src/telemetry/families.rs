//! The Prometheus metric families: their names, HELP text and buckets in one place, and the
//! small functions the rest of the gateway records through.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

const TOOL_CALLS: &str = "countersign_tool_calls_total";
const TOOL_CALL_DURATION: &str = "countersign_tool_call_duration_seconds";
const UPSTREAM_UP: &str = "countersign_upstream_up";
const UPSTREAM_RESTARTS: &str = "countersign_upstream_restarts_total";
const APPROVALS_PENDING: &str = "countersign_approvals_pending";
const APPROVALS_DECIDED: &str = "countersign_approvals_decided_total";
const APPROVAL_DECISION_TIME: &str = "countersign_approval_decision_seconds";
const APPROVAL_VOTES: &str = "countersign_approval_votes_total";
const AUDIT_BATCH_EVENTS: &str = "countersign_audit_batch_events";
const AUDIT_COMMIT_TIME: &str = "countersign_audit_commit_seconds";
const AUDIT_COMMIT_FAILURES: &str = "countersign_audit_commit_failures_total";
const AUTH_REFUSED: &str = "countersign_auth_refused_total";

/// Seconds, from half a millisecond (a fast tool, a commit) to a minute.
const FAST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Seconds a human takes: ten seconds to a day.
const HUMAN_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
];
/// Events per commit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(FAST_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(APPROVAL_DECISION_TIME.into()),
                    HUMAN_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(AUDIT_BATCH_EVENTS.into()), BATCH_BUCKETS)
            })
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
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        TOOL_CALLS,
        "tools/call requests by server, tool and outcome (ok, tool_error, refused, invalid_arguments, ...)"
    );
    describe_histogram!(
        TOOL_CALL_DURATION,
        Unit::Seconds,
        "The tool's own time: from sending a call upstream to its answer (no wait for approval)"
    );
    describe_gauge!(
        UPSTREAM_UP,
        "1 when the upstream is reachable, 0 when it is not"
    );
    describe_counter!(
        UPSTREAM_RESTARTS,
        "Times a stdio upstream's process was started again after it exited"
    );
    describe_gauge!(
        APPROVALS_PENDING,
        "Approvals waiting for a decision, as the audit log records them"
    );
    describe_counter!(
        APPROVALS_DECIDED,
        "Approvals decided, by outcome (approved, denied, expired, cancelled), channel (cli, http, console, mattermost, matrix, slack, expiry, agent), rule, server, tool and agent"
    );
    describe_histogram!(
        APPROVAL_DECISION_TIME,
        Unit::Seconds,
        "Time from an approval's request to its decision, by outcome and rule"
    );
    describe_counter!(
        APPROVAL_VOTES,
        "Votes counted, by approver and vote (approve, deny): an approver who approves everything at once is a rubber stamp"
    );
    describe_histogram!(
        AUDIT_BATCH_EVENTS,
        "Audit events written per commit (group commit)"
    );
    describe_histogram!(
        AUDIT_COMMIT_TIME,
        Unit::Seconds,
        "Time to write and durably commit one audit batch"
    );
    describe_counter!(
        AUDIT_COMMIT_FAILURES,
        "Audit batches not committed, by reason (tampered, write); their calls were refused"
    );
    describe_counter!(
        AUTH_REFUSED,
        "Requests refused for a missing or unknown credential, by route"
    );
}

/// The pending approvals now.
pub fn approvals_pending(count: usize) {
    prometheus();
    metrics::gauge!(APPROVALS_PENDING).set(count as f64);
}

/// One decided approval, as the metrics label it.
pub struct Decided<'a> {
    pub outcome: &'static str,
    pub channel: &'a str,
    pub rule: &'a str,
    pub server: &'a str,
    pub tool: &'a str,
    pub agent: &'a str,
    /// From the request to the decision.
    pub waited: Duration,
}

/// An approval was decided.
pub fn approval_decided(decided: &Decided<'_>) {
    prometheus();
    metrics::counter!(
        APPROVALS_DECIDED,
        "outcome" => decided.outcome,
        "channel" => decided.channel.to_owned(),
        "rule" => decided.rule.to_owned(),
        "server" => decided.server.to_owned(),
        "tool" => decided.tool.to_owned(),
        "agent" => decided.agent.to_owned(),
    )
    .increment(1);
    metrics::histogram!(
        APPROVAL_DECISION_TIME,
        "outcome" => decided.outcome,
        "rule" => decided.rule.to_owned(),
    )
    .record(decided.waited.as_secs_f64());
}

/// A vote by `approver` was counted.
pub fn approval_vote(approver: &str, approve: bool) {
    prometheus();
    let vote = if approve { "approve" } else { "deny" };
    metrics::counter!(APPROVAL_VOTES, "approver" => approver.to_owned(), "vote" => vote)
        .increment(1);
}

/// One audit batch of `events` committed in `took`.
pub fn audit_committed(events: usize, took: Duration) {
    prometheus();
    metrics::histogram!(AUDIT_BATCH_EVENTS).record(events as f64);
    metrics::histogram!(AUDIT_COMMIT_TIME).record(took.as_secs_f64());
}

/// One audit batch was not committed (`tampered` or `write`).
pub fn audit_commit_failed(reason: &'static str) {
    prometheus();
    metrics::counter!(AUDIT_COMMIT_FAILURES, "reason" => reason).increment(1);
}

/// A request to `route` was refused for its credential.
pub(super) fn auth_refused(route: &'static str) {
    prometheus();
    metrics::counter!(AUTH_REFUSED, "route" => route).increment(1);
}

/// A stdio upstream's process was started again.
pub fn upstream_restarted(upstream: &str) {
    prometheus();
    metrics::counter!(UPSTREAM_RESTARTS, "upstream" => upstream.to_owned()).increment(1);
}

/// Whether `upstream` is reachable.
pub fn upstream_up(upstream: &str, up: bool) {
    prometheus();
    metrics::gauge!(UPSTREAM_UP, "upstream" => upstream.to_owned()).set(if up { 1.0 } else { 0.0 });
}

/// Metrics and the span of one `tools/call`, closed when the call's outcome is known.
pub struct CallRecord {
    /// When the call went upstream, once it has: the tool's own time starts there.
    forwarded: Option<Instant>,
    metrics: Arc<ToolMetrics>,
    span: tracing::Span,
}

impl CallRecord {
    pub fn start(span: tracing::Span, upstream: &str, tool: &str) -> Self {
        CallRecord {
            forwarded: None,
            metrics: ToolMetrics::of(upstream, tool),
            span,
        }
    }

    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The call went upstream now.
    pub fn forwarded(&mut self) {
        self.forwarded = Some(Instant::now());
    }

    /// Records the outcome (`ok`, `tool_error`, `error`, `refused`, `invalid`, `cancelled`, …),
    /// and the tool's own time if the call went upstream.
    pub fn finish(self, outcome: crate::call::Outcome) {
        let outcome = outcome.as_str();
        if let Some(at) = self.forwarded {
            self.metrics.duration.record(at.elapsed().as_secs_f64());
        }
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
            TOOL_CALL_DURATION,
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
            TOOL_CALLS,
            "server" => self.server.clone(),
            "tool" => self.tool.clone(),
            "outcome" => outcome,
        );
        calls.push((outcome, counter.clone()));
        counter
    }
}
