//! Prometheus metrics (listed in `sidecar/README.md`), served by the admin listener at `/metrics`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// At most this many distinct `tool` label values; further tools count as `_other`, so a
/// client inventing tool names cannot grow the metrics without bound.
pub const MAX_TOOL_LABELS: usize = 1_000;
/// The `tool` label of tools beyond [`MAX_TOOL_LABELS`].
pub const OTHER_TOOL: &str = "_other";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    mode: &'static str,
    tool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
    cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OnErrorLabels {
    on_error: &'static str,
}

/// Every metric the sidecar exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    evaluation: Histogram,
    jwt_failures: Family<ReasonLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    upstream: Family<StatusLabels, Counter>,
    list_filtered: Family<ResultLabels, Counter>,
    policies: Gauge,
    tools: Gauge,
    tool_labels: Mutex<HashSet<String>>,
    throttled: Family<LimitLabels, Counter>,
    store_errors: Family<OnErrorLabels, Counter>,
    limit_reloads: Family<ResultLabels, Counter>,
    limits: Gauge,
    store_up: Gauge,
    test_clock: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "mcp_policy_decisions",
            "tools/call decisions by decision (ALLOW, DENY, ERROR), mode and tool",
            decisions.clone(),
        );
        // 5 us .. about 84 ms.
        let evaluation = Histogram::new(exponential_buckets(0.000_005, 2.0, 15));
        registry.register(
            "mcp_policy_evaluation_seconds",
            "Time spent deciding one tools/call",
            evaluation.clone(),
        );
        let jwt_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "mcp_policy_jwt_failures",
            "Requests refused by authentication, by reason",
            jwt_failures.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "mcp_policy_reloads",
            "Policy loads (start and hot reload) by result (success, failure)",
            reloads.clone(),
        );
        let upstream = Family::<StatusLabels, Counter>::default();
        registry.register(
            "mcp_policy_upstream_responses",
            "Upstream responses by HTTP status; `error` when the upstream could not be reached",
            upstream.clone(),
        );
        let list_filtered = Family::<ResultLabels, Counter>::default();
        registry.register(
            "mcp_policy_list_filtered_tools",
            "Tools seen in tools/list responses by result (allowed, denied, error)",
            list_filtered.clone(),
        );
        let policies = Gauge::default();
        registry.register(
            "mcp_policy_policies_loaded",
            "Policies in the active set",
            policies.clone(),
        );
        let tools = Gauge::default();
        registry.register(
            "mcp_policy_tools_known",
            "Tools in the catalog that types call inputs",
            tools.clone(),
        );
        let throttled = Family::<LimitLabels, Counter>::default();
        registry.register(
            "mcp_policy_rate_limited_calls",
            "tools/call refused by a rate limit (never forwarded), by limit id and cause (exceeded, blocked: rate 0, store_unavailable: the state store failed and on_error = deny)",
            throttled.clone(),
        );
        let store_errors = Family::<OnErrorLabels, Counter>::default();
        registry.register(
            "mcp_policy_rate_limit_store_errors",
            "Calls the state store could not count, by what state.on_error made of them (deny: refused, allow: let through unchecked)",
            store_errors.clone(),
        );
        let limit_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "mcp_policy_rate_limit_reloads",
            "Rate limit loads from the config file (start and hot reload) by result (success, failure)",
            limit_reloads.clone(),
        );
        let limits = Gauge::default();
        registry.register(
            "mcp_policy_rate_limits_loaded",
            "Rate limits in force",
            limits.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "mcp_policy_state_store_up",
            "Whether the state store answered its last health check (1) or not (0); the memory store always does",
            store_up.clone(),
        );
        let test_clock = Gauge::default();
        registry.register(
            "mcp_policy_test_clock",
            "1 when context.system.now is read from the test clock file (MCP_POLICY_TEST_CLOCK_FILE), never in production",
            test_clock.clone(),
        );
        Self {
            registry,
            decisions,
            evaluation,
            jwt_failures,
            reloads,
            upstream,
            list_filtered,
            policies,
            tools,
            tool_labels: Mutex::new(HashSet::new()),
            throttled,
            store_errors,
            limit_reloads,
            limits,
            store_up,
            test_clock,
        }
    }

    /// The `tool` label for `tool`, bounded by [`MAX_TOOL_LABELS`].
    fn tool_label(&self, tool: &str) -> String {
        let mut seen = self
            .tool_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(tool) {
            return tool.to_owned();
        }
        if seen.len() >= MAX_TOOL_LABELS {
            return OTHER_TOOL.to_owned();
        }
        seen.insert(tool.to_owned());
        tool.to_owned()
    }

    /// Counts one tools/call decision and its evaluation time.
    pub fn decision(
        &self,
        decision: &'static str,
        mode: &'static str,
        tool: &str,
        latency: Duration,
    ) {
        let labels = DecisionLabels {
            decision,
            mode,
            tool: self.tool_label(tool),
        };
        self.decisions.get_or_create(&labels).inc();
        self.evaluation.observe(latency.as_secs_f64());
    }

    /// Counts the tools of one filtered tools/list.
    pub fn list(&self, allowed: usize, denied: usize, error: bool) {
        let add = |result, n: usize| {
            if n > 0 {
                self.list_filtered
                    .get_or_create(&ResultLabels { result })
                    .inc_by(n as u64);
            }
        };
        add("allowed", allowed);
        add("denied", denied);
        if error {
            self.list_filtered
                .get_or_create(&ResultLabels { result: "error" })
                .inc();
        }
    }

    /// Counts a request refused by authentication.
    pub fn jwt_failure(&self, reason: &str) {
        self.jwt_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a policy load; on success also records the size of the active set.
    pub fn reload(&self, success: Option<usize>) {
        let result = if success.is_some() {
            "success"
        } else {
            "failure"
        };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        if let Some(count) = success {
            self.policies.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Records the size of the tool catalog.
    pub fn tools_known(&self, count: usize) {
        self.tools.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts an upstream response by status, or `error` when it could not be reached.
    pub fn upstream(&self, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.upstream.get_or_create(&StatusLabels { status }).inc();
    }

    /// Counts a call refused by the rate limits: by the limit `limit` for `cause`.
    pub fn throttled(&self, limit: &str, cause: &'static str) {
        self.throttled
            .get_or_create(&LimitLabels {
                limit: limit.to_owned(),
                cause,
            })
            .inc();
    }

    /// Counts a call the state store could not count, refused (`deny`) or let through
    /// (`allow`).
    pub fn store_error(&self, on_error: &'static str) {
        self.store_errors
            .get_or_create(&OnErrorLabels { on_error })
            .inc();
    }

    /// Counts a rate limit load; on success also records how many limits are in force.
    pub fn limits_reload(&self, success: Option<usize>) {
        let result = if success.is_some() {
            "success"
        } else {
            "failure"
        };
        self.limit_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(count) = success {
            self.limits.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Records whether the state store answered its last health check.
    pub fn store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// Records that the test clock is in use.
    pub fn test_clock(&self) {
        self.test_clock.set(1);
    }

    /// The metrics in OpenMetrics text.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_named_families() {
        let metrics = Metrics::new();
        metrics.decision(
            "DENY",
            "ENFORCE",
            "process_refund",
            Duration::from_micros(12),
        );
        metrics.reload(None);
        metrics.upstream(Some(200));
        metrics.upstream(None);
        metrics.jwt_failure("expired");
        metrics.list(3, 1, false);
        metrics.throttled("refunds-per-user", "exceeded");
        metrics.store_error("deny");
        metrics.limits_reload(Some(2));
        metrics.store_up(true);
        let text = metrics.encode();
        for line in [
            r#"mcp_policy_decisions_total{decision="DENY",mode="ENFORCE",tool="process_refund"} 1"#,
            r#"mcp_policy_reloads_total{result="failure"} 1"#,
            r#"mcp_policy_upstream_responses_total{status="200"} 1"#,
            r#"mcp_policy_upstream_responses_total{status="error"} 1"#,
            r#"mcp_policy_jwt_failures_total{reason="expired"} 1"#,
            r#"mcp_policy_list_filtered_tools_total{result="allowed"} 3"#,
            "mcp_policy_evaluation_seconds_count 1",
            r#"mcp_policy_rate_limited_calls_total{limit="refunds-per-user",cause="exceeded"} 1"#,
            r#"mcp_policy_rate_limit_store_errors_total{on_error="deny"} 1"#,
            r#"mcp_policy_rate_limit_reloads_total{result="success"} 1"#,
            "mcp_policy_rate_limits_loaded 2",
            "mcp_policy_state_store_up 1",
            "mcp_policy_test_clock 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn tool_labels_are_bounded() {
        let metrics = Metrics::new();
        for i in 0..MAX_TOOL_LABELS {
            assert_eq!(metrics.tool_label(&format!("t{i}")), format!("t{i}"));
        }
        assert_eq!(metrics.tool_label("one_more"), OTHER_TOOL);
        assert_eq!(metrics.tool_label("t1"), "t1");
    }
}
