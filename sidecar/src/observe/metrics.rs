//! Prometheus metrics (listed in `sidecar/README.md`), served by the admin listener at `/metrics`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use policy_layer::CallRecord;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format, [`Format::Text`].
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// At most this many distinct `tool` label values; further tools count as `_other`, so a
/// client inventing tool names cannot grow the metrics without bound.
pub const MAX_TOOL_LABELS: usize = 1_000;
/// The `tool` label of tools beyond [`MAX_TOOL_LABELS`].
pub const OTHER_TOOL: &str = "_other";
/// At most this many distinct `policy` label values (policy ids come from the policy files,
/// which change across reloads); further ids count as [`OTHER_POLICY`].
pub const MAX_POLICY_LABELS: usize = 1_000;
/// The `policy` label of policy ids beyond [`MAX_POLICY_LABELS`].
pub const OTHER_POLICY: &str = "_other";
/// The `policy` label of a denial no policy determined: no permit applied (the default deny).
pub const NO_PERMIT: &str = "_no_permit";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    mode: &'static str,
    tool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    mode: &'static str,
    policy: String,
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
    denials: Family<DenialLabels, Counter>,
    evaluation: Histogram,
    jwt_failures: Family<ReasonLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    last_reload_successful: Gauge,
    upstream: Family<StatusLabels, Counter>,
    list_filtered: Family<ResultLabels, Counter>,
    policies: Gauge,
    tools: Gauge,
    tools_drifted: Gauge,
    tool_labels: BoundedLabels,
    policy_labels: BoundedLabels,
    throttled: Family<LimitLabels, Counter>,
    store_errors: Family<OnErrorLabels, Counter>,
    limit_reloads: Family<ResultLabels, Counter>,
    limits: Gauge,
    store_up: Gauge,
    test_clock: Gauge,
    temporal_evaluation: Histogram,
    session_refusals: Family<ReasonLabels, Counter>,
}

/// The label values handed out so far for one label, at most `limit` of them.
#[derive(Debug)]
struct BoundedLabels {
    seen: Mutex<HashSet<String>>,
    limit: usize,
    other: &'static str,
}

impl BoundedLabels {
    fn new(limit: usize, other: &'static str) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            limit,
            other,
        }
    }

    /// `value` if it was seen before or there is room for it, else the `other` value.
    fn label(&self, value: &str) -> String {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() >= self.limit {
            return self.other.to_owned();
        }
        seen.insert(value.to_owned());
        value.to_owned()
    }
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
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "mcp_policy_denials",
            "Denied tools/call decisions by mode and determining policy id (`_no_permit`: no \
             permit applied); a call denied by several forbids counts for each",
            denials.clone(),
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
        let last_reload_successful = Gauge::default();
        registry.register(
            "mcp_policy_last_reload_successful",
            "1 when the last policy load succeeded, 0 when it failed (the last good set is \
             still enforced)",
            last_reload_successful.clone(),
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
        let tools_drifted = Gauge::default();
        registry.register(
            "mcp_policy_tools_unpinned",
            "Tools of the catalog that do not match tools.lock (denied until pinned again)",
            tools_drifted.clone(),
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
        // 1 us .. about 16 ms.
        let temporal_evaluation = Histogram::new(exponential_buckets(0.000_001, 2.0, 15));
        registry.register(
            "mcp_policy_temporal_evaluation_seconds",
            "Time spent evaluating the temporal conditions of one tools/call over its policy \
             session (AgentCore's TemporalLatency)",
            temporal_evaluation.clone(),
        );
        let session_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "mcp_policy_session_refusals",
            "Requests refused because their policy session cannot be decided, by reason \
             (changed, evicted, overflowed: 409; store_unavailable: 503)",
            session_refusals.clone(),
        );
        Self {
            registry,
            decisions,
            denials,
            evaluation,
            jwt_failures,
            reloads,
            last_reload_successful,
            upstream,
            list_filtered,
            policies,
            tools,
            tools_drifted,
            tool_labels: BoundedLabels::new(MAX_TOOL_LABELS, OTHER_TOOL),
            policy_labels: BoundedLabels::new(MAX_POLICY_LABELS, OTHER_POLICY),
            throttled,
            store_errors,
            limit_reloads,
            limits,
            store_up,
            test_clock,
            temporal_evaluation,
            session_refusals,
        }
    }

    /// Counts one tools/call: its decision and evaluation time and, when denied, the policies
    /// that determined the denial.
    pub fn call(&self, record: &CallRecord<'_>) {
        let mode = record.mode.as_str();
        // Other requests count under their method: what they name (a uri) is unbounded.
        let label = if record.method == "tools/call" {
            record.tool
        } else {
            record.method
        };
        self.decision(record.decision(), mode, label, record.latency);
        if let Some(temporal) = &record.temporal {
            self.temporal_evaluation
                .observe(temporal.latency.as_secs_f64());
        }
        if let Ok(outcome) = record.outcome
            && !outcome.allowed()
        {
            self.denied_by(mode, &outcome.determining);
        }
    }

    /// Counts a denial for each determining policy, or as [`NO_PERMIT`] when there is none.
    fn denied_by(&self, mode: &'static str, determining: &[String]) {
        if determining.is_empty() {
            self.denials
                .get_or_create(&DenialLabels {
                    mode,
                    policy: NO_PERMIT.to_owned(),
                })
                .inc();
        }
        for policy in determining {
            self.denials
                .get_or_create(&DenialLabels {
                    mode,
                    policy: self.policy_labels.label(policy),
                })
                .inc();
        }
    }

    /// Counts one tools/call decision and its evaluation time.
    fn decision(&self, decision: &'static str, mode: &'static str, tool: &str, latency: Duration) {
        let labels = DecisionLabels {
            decision,
            mode,
            tool: self.tool_labels.label(tool),
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

    /// Counts a request refused for its policy session.
    pub fn session_refusal(&self, reason: &str) {
        self.session_refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
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
        self.last_reload_successful
            .set(i64::from(success.is_some()));
        if let Some(count) = success {
            self.policies.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Records the size of the tool catalog.
    pub fn tools_known(&self, count: usize) {
        self.tools.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Records how many tools do not match `tools.lock`.
    pub fn tools_unpinned(&self, count: usize) {
        self.tools_drifted
            .set(i64::try_from(count).unwrap_or(i64::MAX));
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

    /// The metrics in `format`.
    #[must_use]
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Text => openmetrics_to_text(&self.encode()),
        }
    }
}

/// The exposition formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, what Prometheus asks for.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for clients that do not ask for OpenMetrics (curl,
    /// `promtool check metrics`, older scrapers).
    Text,
}

impl Format {
    /// The format an `Accept` header prefers: OpenMetrics when it names
    /// `application/openmetrics-text` with a quality at least that of `text/plain`, else the
    /// Prometheus text format (also without the header, as other Prometheus clients do).
    #[must_use]
    pub fn negotiate(accept: Option<&str>) -> Self {
        let mut openmetrics = 0.0_f32;
        let mut text = 0.0_f32;
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(quality);
            } else if media.eq_ignore_ascii_case("text/plain") {
                text = text.max(quality);
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// The `Content-Type` of this format.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => CONTENT_TYPE,
            Self::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// The OpenMetrics text `openmetrics` as the Prometheus text format 0.0.4: the metadata of a
/// counter names its samples (`mcp_policy_reloads_total`, not `mcp_policy_reloads`), help
/// texts keep their quotes unescaped, and the `# UNIT` and `# EOF` lines go. Samples are
/// written alike in both formats.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut counters = HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name);
        }
    }
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        let metadata = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match metadata {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                text.push_str(prefix);
                text.push_str(name);
                if counters.contains(name) {
                    text.push_str("_total");
                }
                text.push(' ');
                if prefix == "# HELP " {
                    text.push_str(&tail.replace("\\\"", "\""));
                } else {
                    text.push_str(if tail == "unknown" { "untyped" } else { tail });
                }
            }
            None if line == "# EOF" || line.starts_with("# UNIT ") => continue,
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use cedar_policy::Decision;
    use policy_layer::Mode;
    use policy_layer::engine::{AuthorizeError, EngineError, Outcome};
    use serde_json::Value;

    use super::*;

    fn outcome(decision: Decision, determining: &[&str]) -> Outcome {
        Outcome {
            decision,
            determining: determining.iter().map(|&p| p.to_owned()).collect(),
            errors: vec![],
            shadow_matched: vec![],
            shadow_flipping: vec![],
        }
    }

    fn call<'a>(
        mode: Mode,
        tool: &'a str,
        outcome: Result<&'a Outcome, &'a AuthorizeError>,
    ) -> CallRecord<'a> {
        CallRecord {
            engine: "RefundPolicyEngine",
            mode,
            method: "tools/call",
            principal: "AgentCore::OAuthUser::\"alice\"".to_owned(),
            tool,
            action: format!("RefundTool___{tool}"),
            request_id: &Value::Null,
            outcome,
            arguments: None,
            temporal: None,
            forwarded: false,
            latency: Duration::from_micros(12),
        }
    }

    #[test]
    fn encodes_the_named_families() {
        let metrics = Metrics::new();
        let denied = outcome(Decision::Deny, &[]);
        metrics.call(&call(Mode::Enforce, "process_refund", Ok(&denied)));
        metrics.reload(None);
        metrics.upstream(Some(200));
        metrics.upstream(None);
        metrics.jwt_failure("expired");
        metrics.session_refusal("changed");
        let mut temporal = call(Mode::Enforce, "transfer_funds", Ok(&denied));
        temporal.temporal = Some(policy_layer::TemporalRecord {
            session: "s-1".to_owned(),
            conditions: "c0=true(p)".to_owned(),
            latency: Duration::from_micros(3),
        });
        metrics.call(&temporal);
        metrics.list(3, 1, false);
        metrics.throttled("refunds-per-user", "exceeded");
        metrics.store_error("deny");
        metrics.limits_reload(Some(2));
        metrics.store_up(true);
        let text = metrics.encode();
        for line in [
            r#"mcp_policy_decisions_total{decision="DENY",mode="ENFORCE",tool="process_refund"} 1"#,
            r#"mcp_policy_decisions_total{decision="DENY",mode="ENFORCE",tool="transfer_funds"} 1"#,
            r#"mcp_policy_denials_total{mode="ENFORCE",policy="_no_permit"} 2"#,
            r#"mcp_policy_reloads_total{result="failure"} 1"#,
            "mcp_policy_last_reload_successful 0",
            r#"mcp_policy_upstream_responses_total{status="200"} 1"#,
            r#"mcp_policy_upstream_responses_total{status="error"} 1"#,
            r#"mcp_policy_jwt_failures_total{reason="expired"} 1"#,
            r#"mcp_policy_list_filtered_tools_total{result="allowed"} 3"#,
            "mcp_policy_evaluation_seconds_count 2",
            "mcp_policy_temporal_evaluation_seconds_count 1",
            r#"mcp_policy_session_refusals_total{reason="changed"} 1"#,
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
    fn counts_denials_once_per_determining_forbid_and_never_allows_or_errors() {
        let metrics = Metrics::new();
        let two_forbids = outcome(Decision::Deny, &["orders_no_delete", "after_hours"]);
        let allowed = outcome(Decision::Allow, &["orders_read"]);
        let error = AuthorizeError::Engine(EngineError::Request("boom".to_owned()));
        metrics.call(&call(Mode::Enforce, "delete_order", Ok(&two_forbids)));
        metrics.call(&call(Mode::LogOnly, "delete_order", Ok(&two_forbids)));
        metrics.call(&call(Mode::Enforce, "get_order", Ok(&allowed)));
        metrics.call(&call(Mode::Enforce, "get_order", Err(&error)));
        let text = metrics.encode();
        for line in [
            r#"mcp_policy_denials_total{mode="ENFORCE",policy="orders_no_delete"} 1"#,
            r#"mcp_policy_denials_total{mode="ENFORCE",policy="after_hours"} 1"#,
            r#"mcp_policy_denials_total{mode="LOG_ONLY",policy="orders_no_delete"} 1"#,
            r#"mcp_policy_denials_total{mode="LOG_ONLY",policy="after_hours"} 1"#,
            r#"mcp_policy_decisions_total{decision="ERROR",mode="ENFORCE",tool="get_order"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        let denial_lines = text
            .lines()
            .filter(|l| l.starts_with("mcp_policy_denials_total{"))
            .count();
        assert_eq!(denial_lines, 4, "only the denials count: {text}");
    }

    #[test]
    fn last_reload_successful_follows_the_latest_load() {
        let metrics = Metrics::new();
        metrics.reload(Some(4));
        assert!(
            metrics
                .encode()
                .contains("mcp_policy_last_reload_successful 1\n")
        );
        metrics.reload(None);
        let text = metrics.encode();
        assert!(
            text.contains("mcp_policy_last_reload_successful 0\n"),
            "{text}"
        );
        assert!(text.contains("mcp_policy_policies_loaded 4\n"), "{text}");
        metrics.reload(Some(5));
        assert!(
            metrics
                .encode()
                .contains("mcp_policy_last_reload_successful 1\n")
        );
    }

    #[test]
    fn text_format_names_counters_by_their_samples_and_drops_eof() {
        let metrics = Metrics::new();
        metrics.reload(Some(2));
        metrics.jwt_failure("expired");
        let text = metrics.encode_as(Format::Text);
        for line in [
            "# HELP mcp_policy_reloads_total Policy loads (start and hot reload) by result \
             (success, failure).",
            "# TYPE mcp_policy_reloads_total counter",
            r#"mcp_policy_reloads_total{result="success"} 1"#,
            "# TYPE mcp_policy_jwt_failures_total counter",
            "# TYPE mcp_policy_evaluation_seconds histogram",
            "mcp_policy_evaluation_seconds_count 0",
            "# TYPE mcp_policy_policies_loaded gauge",
            "mcp_policy_policies_loaded 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            !text.contains("# TYPE mcp_policy_reloads counter"),
            "{text}"
        );
        let openmetrics = metrics.encode_as(Format::OpenMetrics);
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        assert!(openmetrics.contains("# TYPE mcp_policy_reloads counter\n"));
    }

    #[test]
    fn text_format_unescapes_quotes_in_help_and_renames_unknown_types() {
        let openmetrics = "# HELP a_thing Says \\\"hi\\\" and \\\\n.\n# TYPE a_thing unknown\n\
                           # UNIT a_thing seconds\na_thing 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(openmetrics),
            "# HELP a_thing Says \"hi\" and \\\\n.\n# TYPE a_thing untyped\na_thing 1\n"
        );
    }

    #[test]
    fn negotiates_openmetrics_only_when_asked_for() {
        // What Prometheus 2.42 sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,\
                          application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        for accept in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5"),
            Some("application/openmetrics-text;q=0"),
            Some("application/json"),
        ] {
            assert_eq!(Format::negotiate(accept), Format::Text, "{accept:?}");
        }
        assert_eq!(Format::Text.content_type(), TEXT_CONTENT_TYPE);
        assert_eq!(Format::OpenMetrics.content_type(), CONTENT_TYPE);
    }

    #[test]
    fn tool_labels_are_bounded() {
        let metrics = Metrics::new();
        for i in 0..MAX_TOOL_LABELS {
            assert_eq!(metrics.tool_labels.label(&format!("t{i}")), format!("t{i}"));
        }
        assert_eq!(metrics.tool_labels.label("one_more"), OTHER_TOOL);
        assert_eq!(metrics.tool_labels.label("t1"), "t1");
    }

    #[test]
    fn policy_labels_are_bounded() {
        let metrics = Metrics::new();
        for i in 0..MAX_POLICY_LABELS {
            let denied = outcome(Decision::Deny, &[&format!("p{i}")]);
            metrics.call(&call(Mode::Enforce, "t", Ok(&denied)));
        }
        let denied = outcome(Decision::Deny, &["one_more"]);
        metrics.call(&call(Mode::Enforce, "t", Ok(&denied)));
        let text = metrics.encode();
        assert!(
            text.contains(r#"mcp_policy_denials_total{mode="ENFORCE",policy="_other"} 1"#),
            "{text}"
        );
        assert!(!text.contains("one_more"));
    }
}
