//! The decision log (SPEC section 9): one JSON object per line on stdout for every tools/call
//! decision and tools/list filtering, and the [`DecisionObserver`] that feeds it and the
//! metrics.
//!
//! Lines are handed to a writer thread through a bounded queue, so a slow stdout never delays
//! a request; when the queue is full a line is dropped and counted in the next line written.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use policy_layer::{CallRecord, DecisionObserver, ListRecord};
use serde_json::{Value, json};

use crate::metrics::Metrics;

/// Lines waiting for the writer thread at most.
pub const QUEUE_LINES: usize = 8_192;

tokio::task_local! {
    /// The W3C trace id of the request being handled (empty when the client sent none).
    pub static TRACE_ID: String;
}

/// The trace id in a W3C `traceparent` header (`00-<trace id>-<parent id>-<flags>`).
#[must_use]
pub fn trace_id_from_traceparent(header: &str) -> Option<String> {
    let mut parts = header.trim().split('-');
    let _version = parts.next()?;
    let trace_id = parts.next()?;
    let valid = trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id.bytes().any(|b| b != b'0');
    valid.then(|| trace_id.to_ascii_lowercase())
}

fn current_trace_id() -> String {
    TRACE_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Writes JSON lines on stdout from a thread of its own.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    sender: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl DecisionLog {
    /// Starts the writer thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start() -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("decision-log".to_owned())
            .spawn(move || write_lines(&receiver))?;
        Ok(Self {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    fn write(&self, mut entry: Value) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            entry["dropped_before"] = json!(dropped);
        }
        let line = entry.to_string();
        match self.sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
            }
        }
    }
}

fn write_lines(receiver: &Receiver<String>) {
    let stdout = std::io::stdout();
    while let Ok(line) = receiver.recv() {
        let mut out = stdout.lock();
        let mut result = writeln!(out, "{line}");
        // Write what is queued already before flushing once.
        while let Ok(line) = receiver.try_recv() {
            result = result.and_then(|()| writeln!(out, "{line}"));
        }
        if result.and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// The time now, RFC 3339 with microseconds, UTC.
fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Feeds the metrics and the decision log from the layer's decision records.
#[derive(Debug, Clone)]
pub struct Observer {
    metrics: Arc<Metrics>,
    log: Option<DecisionLog>,
    log_arguments: bool,
}

impl Observer {
    /// An observer counting in `metrics` and, when `log` is given, writing decision lines.
    #[must_use]
    pub fn new(metrics: Arc<Metrics>, log: Option<DecisionLog>, log_arguments: bool) -> Self {
        Self {
            metrics,
            log,
            log_arguments,
        }
    }
}

/// The decision-log entry of a call record.
#[must_use]
pub fn call_entry(record: &CallRecord<'_>, log_arguments: bool, trace_id: &str) -> Value {
    let mut entry = json!({
        "time": now(),
        "kind": "tools/call",
        "trace_id": trace_id,
        "engine": record.engine,
        "mode": record.mode.as_str(),
        "principal": record.principal,
        "tool": record.tool,
        "action": record.action,
        "request_id": record.request_id,
        "decision": record.decision(),
        "forwarded": record.forwarded,
        "latency_us": u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX),
    });
    match record.outcome {
        Ok(outcome) => {
            entry["determining_policies"] = json!(outcome.determining);
            if !outcome.allowed() {
                entry["reason"] = json!(outcome.deny_reason());
            }
            if !outcome.errors.is_empty() {
                entry["errors"] = json!(outcome.errors);
            }
            entry["shadow_matched"] = json!(outcome.shadow_matched);
            entry["shadow_flipping"] = json!(outcome.shadow_flipping);
        }
        Err(error) => {
            entry["determining_policies"] = json!([]);
            entry["errors"] = json!([error.to_string()]);
        }
    }
    entry["arguments"] = match (log_arguments, record.arguments) {
        (true, Some(arguments)) => arguments.clone(),
        (true, None) => Value::Null,
        (false, _) => json!("[redacted]"),
    };
    entry
}

impl DecisionObserver for Observer {
    fn on_call(&self, record: &CallRecord<'_>) {
        self.metrics.decision(
            record.decision(),
            record.mode.as_str(),
            record.tool,
            record.latency,
        );
        if let Some(log) = &self.log {
            log.write(call_entry(record, self.log_arguments, &current_trace_id()));
        }
    }

    fn on_list(&self, record: &ListRecord<'_>) {
        self.metrics.list(
            record.allowed.len(),
            record.denied.len(),
            record.error.is_some(),
        );
        if let Some(log) = &self.log {
            let mut entry = json!({
                "time": now(),
                "kind": "tools/list",
                "trace_id": current_trace_id(),
                "engine": record.engine,
                "mode": record.mode.as_str(),
                "principal": record.principal,
                "allowed_tools": record.allowed,
                "denied_tools": record.denied,
                "latency_us": u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX),
            });
            if let Some(error) = &record.error {
                entry["error"] = json!(error);
            }
            log.write(entry);
        }
    }

    fn on_auth_failure(&self, reason: &'static str) {
        self.metrics.jwt_failure(reason);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cedar_policy::Decision;
    use policy_layer::Mode;
    use policy_layer::engine::Outcome;

    use super::*;

    fn record<'a>(outcome: &'a Outcome, id: &'a Value, args: &'a Value) -> CallRecord<'a> {
        CallRecord {
            engine: "RefundPolicyEngine",
            mode: Mode::Enforce,
            principal: "AgentCore::OAuthUser::\"alice\"".to_owned(),
            tool: "process_refund",
            action: "RefundTool___process_refund".to_owned(),
            request_id: id,
            outcome: Ok(outcome),
            arguments: Some(args),
            forwarded: false,
            latency: Duration::from_micros(42),
        }
    }

    #[test]
    fn call_entry_redacts_arguments_unless_enabled() {
        let outcome = Outcome {
            decision: Decision::Deny,
            determining: vec!["forbid_large".to_owned()],
            errors: vec![],
            shadow_matched: vec![],
            shadow_flipping: vec![],
        };
        let (id, args) = (json!(7), json!({"amount": 5000}));
        let entry = call_entry(&record(&outcome, &id, &args), false, "abc");
        assert_eq!(entry["decision"], "DENY");
        assert_eq!(entry["determining_policies"], json!(["forbid_large"]));
        assert_eq!(
            entry["reason"],
            "Policy evaluation denied due to forbid_large"
        );
        assert_eq!(entry["arguments"], "[redacted]");
        assert_eq!(entry["latency_us"], 42);
        assert_eq!(entry["trace_id"], "abc");
        assert_eq!(entry["request_id"], 7);
        let entry = call_entry(&record(&outcome, &id, &args), true, "");
        assert_eq!(entry["arguments"], json!({"amount": 5000}));
    }

    #[test]
    fn trace_id_comes_from_a_valid_traceparent_only() {
        assert_eq!(
            trace_id_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_from_traceparent("garbage"), None);
    }
}
