//! The decision log (see `sidecar/README.md`): one JSON object per line on stdout for every tools/call
//! decision (a call refused by a rate limit included) and tools/list filtering, and the
//! [`DecisionObserver`] that feeds it and the metrics.
//!
//! Each line is serialized straight into a shared buffer (no intermediate JSON value, no
//! allocation per line once the buffer has grown) that a writer thread of its own empties to
//! stdout, so a slow stdout never delays a request. The writer writes what has piled up every
//! [`FLUSH_INTERVAL`], with one call, and is woken sooner only when [`FLUSH_BYTES`] are
//! waiting: a request never wakes a thread (under load, waking the writer for each line cost
//! as much CPU as the decision itself). When the buffer is full a line is dropped and counted
//! in the next line written; at shutdown, [`DecisionLog::close`] writes what is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::SystemTime;

use policy_layer::limit::ThrottleCause;
use policy_layer::{
    CallRecord, DecisionObserver, LimitOutcome, LimitRecord, ListRecord, Mode, Throttled,
};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::metrics::Metrics;
use super::recording::Recording;

/// Bytes of lines waiting for the writer thread at most.
pub const BUFFER_BYTES: usize = 8 << 20;
/// How often the writer writes what has piled up: a line reaches stdout within this.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// Bytes waiting that wake the writer before the interval is over.
pub const FLUSH_BYTES: usize = 256 << 10;
/// The capacity each of the two buffers keeps once written out.
const IDLE_BUFFER_BYTES: usize = 64 << 10;

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

/// Runs `f` with the current request's trace id (empty outside a request).
pub(super) fn with_trace_id<R>(f: impl FnOnce(&str) -> R) -> R {
    let mut f = Some(f);
    TRACE_ID
        .try_with(|id| (f.take().expect("called once"))(id))
        .unwrap_or_else(|_| (f.take().expect("called once"))(""))
}

/// Writes JSON lines on stdout from a thread of its own.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<Pending>,
    /// Signalled when the buffer stops being empty, and on close.
    wake: Condvar,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// Lines dropped since the last one buffered.
    dropped: u64,
    closed: bool,
}

impl DecisionLog {
    /// Starts the writer thread, writing to stdout.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(std::io::stdout())
    }

    /// Starts the writer thread, writing to `out` (the recording file of
    /// [`super::recording`]).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start_with(out: impl Write + Send + 'static) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            writer: Mutex::new(None),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("decision-log".to_owned())
                .spawn(move || shared.write_lines(out))?
        };
        *lock(&shared.writer) = Some(writer);
        Ok(Self { shared })
    }

    /// Buffers one line; `dropped_before`, when lines were dropped since the last one.
    pub(super) fn write<L: Serialize>(&self, line: impl FnOnce(Option<u64>) -> L) {
        let mut pending = lock(&self.shared.state);
        if pending.closed || pending.lines.len() >= BUFFER_BYTES {
            pending.dropped += 1;
            return;
        }
        let below = pending.lines.len() < FLUSH_BYTES;
        let dropped = std::mem::take(&mut pending.dropped);
        let before = pending.lines.len();
        let line = line((dropped > 0).then_some(dropped));
        if serde_json::to_writer(&mut pending.lines, &line).is_ok() {
            pending.lines.push(b'\n');
        } else {
            // Unreachable for these types (no map with non-string keys); never half a line.
            pending.lines.truncate(before);
            pending.dropped = dropped + 1;
        }
        let crossed = below && pending.lines.len() >= FLUSH_BYTES;
        drop(pending);
        if crossed {
            self.shared.wake.notify_one();
        }
    }

    /// Writes the lines still buffered and stops the writer; lines after this are dropped.
    pub fn close(&self) {
        let dropped = {
            let mut pending = lock(&self.shared.state);
            pending.closed = true;
            std::mem::take(&mut pending.dropped)
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "decision-log lines dropped since the last one written"
            );
        }
        self.shared.wake.notify_one();
        if let Some(writer) = lock(&self.shared.writer).take() {
            let _ = writer.join();
        }
    }
}

impl Shared {
    fn write_lines(&self, mut out: impl Write) {
        let mut batch = Vec::new();
        loop {
            {
                let mut pending = lock(&self.state);
                if !pending.closed && pending.lines.len() < FLUSH_BYTES {
                    pending = self
                        .wake
                        .wait_timeout(pending, FLUSH_INTERVAL)
                        .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
                }
                if pending.lines.is_empty() {
                    if pending.closed {
                        return; // closed, and all written
                    }
                    continue;
                }
                std::mem::swap(&mut batch, &mut pending.lines);
            }
            if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
                lock(&self.state).closed = true;
                return;
            }
            // A burst may have grown the buffer to megabytes: do not keep that for good.
            batch.clear();
            batch.shrink_to(IDLE_BUFFER_BYTES);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The time now, RFC 3339 with microseconds, UTC.
pub(super) struct Now;

impl Serialize for Now {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_micros(SystemTime::now()))
    }
}

/// One line of the decision log, in the order its fields are written.
#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Call(CallLine<'a>),
    List(ListLine<'a>),
    Throttled(ThrottledLine<'a>),
}

/// The fields every line starts with.
#[derive(Serialize)]
struct Head<'a> {
    time: Now,
    kind: &'a str,
    trace_id: &'a str,
    engine: &'a str,
    mode: &'static str,
    principal: &'a str,
}

impl<'a> Head<'a> {
    fn new(
        kind: &'a str,
        trace_id: &'a str,
        engine: &'a str,
        mode: Mode,
        principal: &'a str,
    ) -> Self {
        Self {
            time: Now,
            kind,
            trace_id,
            engine,
            mode: mode.as_str(),
            principal,
        }
    }
}

/// The temporal part of a call's line.
#[derive(Serialize)]
struct TemporalField<'a> {
    session_id: &'a str,
    conditions: &'a str,
}

#[derive(Serialize)]
struct CallLine<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    /// The tool of a tools/call.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    /// What another request names: a resource uri, a prompt name.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    action: &'a str,
    request_id: &'a Value,
    decision: &'static str,
    /// What the call's temporal conditions came to (`docs/temporal.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    temporal: Option<TemporalField<'a>>,
    forwarded: bool,
    latency_us: u64,
    determining_policies: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Errors<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_matched: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_flipping: Option<&'a [String]>,
    arguments: Arguments<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_before: Option<u64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Errors<'a> {
    Policies(&'a [String]),
    Failed([String; 1]),
}

#[derive(Serialize)]
#[serde(untagged)]
enum Arguments<'a> {
    Logged(Option<&'a RawValue>),
    Redacted(&'static str),
}

#[derive(Serialize)]
struct ListLine<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    allowed_tools: &'a [String],
    denied_tools: &'a [String],
    latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_before: Option<u64>,
}

/// A tools/call the rate limits refused: it was never decided by Cedar nor forwarded.
#[derive(Serialize)]
struct ThrottledLine<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    tool: &'a str,
    request_id: &'a Value,
    decision: &'static str,
    forwarded: bool,
    latency_us: u64,
    rate_limit: RateLimitField<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_before: Option<u64>,
}

/// Which limit refused a call, as the throttled reply's `data` says it, and why.
#[derive(Serialize)]
struct RateLimitField<'a> {
    id: &'a str,
    key: &'a str,
    metric: &'static str,
    cause: &'static str,
    retry_after: u64,
}

fn micros(latency: std::time::Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)
}

/// The decision-log line of a call record.
fn call_line<'a>(
    record: &'a CallRecord<'a>,
    log_arguments: bool,
    trace_id: &'a str,
    dropped_before: Option<u64>,
) -> Line<'a> {
    const NONE: &[String] = &[];
    let (determining, reason, errors, shadow) = match record.outcome {
        Ok(outcome) => (
            outcome.determining.as_slice(),
            (!outcome.allowed()).then(|| outcome.deny_reason()),
            (!outcome.errors.is_empty()).then_some(Errors::Policies(&outcome.errors)),
            Some((
                outcome.shadow_matched.as_slice(),
                outcome.shadow_flipping.as_slice(),
            )),
        ),
        Err(error) => (NONE, None, Some(Errors::Failed([error.to_string()])), None),
    };
    let tools = record.method == "tools/call";
    Line::Call(CallLine {
        head: Head::new(
            record.method,
            trace_id,
            record.engine,
            record.mode,
            &record.principal,
        ),
        tool: tools.then_some(record.tool),
        name: (!tools && !record.tool.is_empty()).then_some(record.tool),
        action: &record.action,
        request_id: record.request_id,
        decision: record.decision(),
        temporal: record.temporal.as_ref().map(|t| TemporalField {
            session_id: &t.session,
            conditions: &t.conditions,
        }),
        forwarded: record.forwarded,
        latency_us: micros(record.latency),
        determining_policies: determining,
        reason,
        errors,
        shadow_matched: shadow.map(|s| s.0),
        shadow_flipping: shadow.map(|s| s.1),
        arguments: if log_arguments {
            // The arguments as the client wrote them (checked JSON text).
            Arguments::Logged(record.arguments.and_then(|a| serde_json::from_str(a).ok()))
        } else {
            Arguments::Redacted("[redacted]")
        },
        dropped_before,
    })
}

/// The decision-log line of a call refused by a rate limit.
fn throttled_line<'a>(
    record: &'a LimitRecord<'a>,
    throttled: &'a Throttled,
    trace_id: &'a str,
    dropped_before: Option<u64>,
) -> Line<'a> {
    Line::Throttled(ThrottledLine {
        head: Head::new(
            "tools/call",
            trace_id,
            record.engine,
            record.mode,
            &record.principal,
        ),
        tool: record.tool,
        request_id: record.request_id,
        decision: "THROTTLED",
        forwarded: false,
        latency_us: micros(record.latency),
        rate_limit: RateLimitField {
            id: &throttled.limit,
            key: &throttled.limit_key,
            metric: throttled.metric.as_str(),
            cause: throttled.cause.as_str(),
            retry_after: throttled.retry_after,
        },
        dropped_before,
    })
}

/// The decision-log line of a list record.
fn list_line<'a>(
    record: &'a ListRecord<'a>,
    trace_id: &'a str,
    dropped_before: Option<u64>,
) -> Line<'a> {
    Line::List(ListLine {
        head: Head::new(
            record.method,
            trace_id,
            record.engine,
            record.mode,
            &record.principal,
        ),
        allowed_tools: &record.allowed,
        denied_tools: &record.denied,
        latency_us: micros(record.latency),
        error: record.error.as_deref(),
        dropped_before,
    })
}

/// Feeds the metrics and the decision log from the layer's decision records.
#[derive(Debug, Clone)]
pub struct Observer {
    metrics: Arc<Metrics>,
    log: Option<DecisionLog>,
    log_arguments: bool,
    recording: Option<Recording>,
}

impl Observer {
    /// An observer counting in `metrics` and, when `log` is given, writing decision lines.
    #[must_use]
    pub fn new(metrics: Arc<Metrics>, log: Option<DecisionLog>, log_arguments: bool) -> Self {
        Self {
            metrics,
            log,
            log_arguments,
            recording: None,
        }
    }

    /// Also writes every call and list decision to `recording` (`log.record_arguments_to`).
    #[must_use]
    pub fn with_recording(self, recording: Option<Recording>) -> Self {
        Self { recording, ..self }
    }
}

impl DecisionObserver for Observer {
    fn on_call(&self, record: &CallRecord<'_>) {
        self.metrics.call(record);
        if let Some(log) = &self.log {
            with_trace_id(|trace_id| {
                log.write(|dropped| call_line(record, self.log_arguments, trace_id, dropped));
            });
        }
        if let Some(recording) = &self.recording {
            recording.call(record);
        }
    }

    fn on_list(&self, record: &ListRecord<'_>) {
        if record.method == "tools/list" {
            self.metrics.list(
                record.allowed.len(),
                record.denied.len(),
                record.error.is_some(),
            );
        }
        if let Some(log) = &self.log {
            with_trace_id(|trace_id| {
                log.write(|dropped| list_line(record, trace_id, dropped));
            });
        }
        if let Some(recording) = &self.recording {
            recording.list(record);
        }
    }

    fn on_limit(&self, record: &LimitRecord<'_>) {
        match record.outcome {
            LimitOutcome::Throttled(throttled) => {
                self.metrics
                    .throttled(&throttled.limit, throttled.cause.as_str());
                if throttled.cause == ThrottleCause::StoreUnavailable {
                    self.metrics.store_error("deny");
                }
                if let Some(log) = &self.log {
                    with_trace_id(|trace_id| {
                        log.write(|dropped| throttled_line(record, throttled, trace_id, dropped));
                    });
                }
            }
            // The call goes on to Cedar, and its decision line.
            LimitOutcome::Unchecked { .. } => self.metrics.store_error("allow"),
        }
    }

    fn on_auth_failure(&self, reason: &'static str) {
        self.metrics.jwt_failure(reason);
    }

    fn on_policy_session_refused(&self, reason: &'static str) {
        self.metrics.session_refusal(reason);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use cedar_policy::Decision;
    use policy_layer::engine::Outcome;
    use serde_json::json;

    use super::*;

    fn record<'a>(outcome: &'a Outcome, id: &'a Value, args: &'a str) -> CallRecord<'a> {
        CallRecord {
            engine: "RefundPolicyEngine",
            mode: Mode::Enforce,
            method: "tools/call",
            principal: "AgentCore::OAuthUser::\"alice\"".to_owned(),
            tool: "process_refund",
            action: "RefundTool___process_refund".to_owned(),
            request_id: id,
            outcome: Ok(outcome),
            arguments: Some(args),
            temporal: None,
            forwarded: false,
            latency: Duration::from_micros(42),
        }
    }

    fn to_value(line: &Line<'_>) -> Value {
        serde_json::to_value(line).expect("serializes")
    }

    #[test]
    fn call_line_redacts_arguments_unless_enabled() {
        let outcome = Outcome {
            decision: Decision::Deny,
            determining: vec!["forbid_large".to_owned()],
            errors: vec![],
            shadow_matched: vec![],
            shadow_flipping: vec![],
        };
        let (id, args) = (json!(7), json!({"amount": 5000}).to_string());
        let record = record(&outcome, &id, &args);
        let entry = to_value(&call_line(&record, false, "abc", None));
        assert_eq!(entry["kind"], "tools/call");
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
        assert_eq!(entry["shadow_flipping"], json!([]));
        assert!(entry.get("errors").is_none() && entry.get("dropped_before").is_none());
        let time = entry["time"].as_str().expect("a time");
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        let entry = to_value(&call_line(&record, true, "", Some(3)));
        assert_eq!(entry["arguments"], json!({"amount": 5000}));
        assert_eq!(entry["dropped_before"], 3);
    }

    #[test]
    fn lines_of_other_methods_name_the_method_and_what_they_read() {
        let outcome = Outcome {
            decision: Decision::Allow,
            determining: vec!["docs".to_owned()],
            errors: vec![],
            shadow_matched: vec![],
            shadow_flipping: vec![],
        };
        let id = json!(3);
        let record = CallRecord {
            method: "resources/read",
            tool: "docs://readme",
            action: "ReadResource".to_owned(),
            ..record(&outcome, &id, "null")
        };
        let entry = to_value(&call_line(&record, false, "", None));
        assert_eq!(entry["kind"], "resources/read");
        assert_eq!(entry["name"], "docs://readme");
        assert_eq!(entry["action"], "ReadResource");
        assert!(entry.get("tool").is_none(), "{entry}");
        let record = CallRecord {
            method: "sampling/createMessage",
            tool: "",
            ..record
        };
        let entry = to_value(&call_line(&record, false, "", None));
        assert!(
            entry.get("name").is_none() && entry.get("tool").is_none(),
            "{entry}"
        );
    }

    #[test]
    fn call_line_of_a_failed_decision_names_the_error() {
        let error = policy_layer::engine::AuthorizeError::Engine(
            policy_layer::engine::EngineError::Request("boom".to_owned()),
        );
        let unused = Outcome {
            decision: Decision::Allow,
            determining: vec![],
            errors: vec![],
            shadow_matched: vec![],
            shadow_flipping: vec![],
        };
        let id = json!("a");
        let record = CallRecord {
            outcome: Err(&error),
            arguments: None,
            ..record(&unused, &id, "null")
        };
        let entry = to_value(&call_line(&record, true, "", None));
        assert_eq!(entry["decision"], "ERROR");
        assert_eq!(entry["errors"], json!(["policy evaluation failed: boom"]));
        assert_eq!(entry["determining_policies"], json!([]));
        assert_eq!(entry["arguments"], Value::Null);
        assert!(entry.get("reason").is_none() && entry.get("shadow_matched").is_none());
    }

    fn list_record(n: usize) -> ListRecord<'static> {
        ListRecord {
            engine: "e",
            mode: Mode::LogOnly,
            method: "tools/list",
            principal: "AgentCore::OAuthUser::\"bob\"".to_owned(),
            allowed: vec![format!("tool_{n}")],
            denied: vec![],
            error: None,
            latency: Duration::from_micros(1),
        }
    }

    /// A writer that hands every write to the test, and blocks on the first until released.
    struct Gated {
        release: Option<mpsc::Receiver<()>>,
        out: mpsc::Sender<Vec<u8>>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(release) = self.release.take() {
                release.recv().expect("released");
            }
            self.out.send(buf.to_vec()).expect("test alive");
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_buffer_drops_lines_counts_them_and_close_writes_the_rest() {
        let (release, gate) = mpsc::channel();
        let (sink, written) = mpsc::channel();
        let log = DecisionLog::start_with(Gated {
            release: Some(gate),
            out: sink,
        })
        .expect("starts");
        let record = list_record(0);
        // The writer takes the first lines and blocks; the rest fill the buffer and overflow.
        let line_bytes = serde_json::to_vec(&list_line(&record, "", None))
            .expect("serializes")
            .len();
        let attempts = 2 * BUFFER_BYTES / line_bytes;
        for _ in 0..attempts {
            log.write(|dropped| list_line(&record, "", dropped));
        }
        release.send(()).expect("writer waiting");
        // Once the writer has taken the buffer, the next line fits and carries the count.
        while !lock(&log.shared.state).lines.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        log.write(|dropped| list_line(&record, "last", dropped));
        log.close();
        log.write(|dropped| list_line(&record, "after close", dropped));

        let bytes: Vec<u8> = written.try_iter().flatten().collect();
        let lines: Vec<Value> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("whole JSON lines"))
            .collect();
        let dropped: u64 = lines
            .iter()
            .filter_map(|l| l["dropped_before"].as_u64())
            .sum();
        assert!(dropped > 0, "the overflow is counted");
        assert_eq!(lines.len() as u64 + dropped, attempts as u64 + 1);
        assert_eq!(lines.last().expect("lines")["trace_id"], "last");
        assert!(bytes.len() <= 2 * BUFFER_BYTES + line_bytes);
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

    #[test]
    fn a_throttled_call_line_names_the_limit_and_was_not_forwarded() {
        use policy_layer::limit::{Metric, Per};
        let throttled = Throttled {
            limit: "refunds-per-user".into(),
            limit_key: "refunds-per-user/alice".to_owned(),
            metric: Metric::Requests(Per::Minute),
            retry_after: 42,
            cause: ThrottleCause::Exceeded,
        };
        let id = json!(7);
        let record = LimitRecord {
            engine: "RefundPolicyEngine",
            mode: Mode::Enforce,
            principal: "AgentCore::OAuthUser::\"alice\"".to_owned(),
            tool: "process_refund",
            request_id: &id,
            outcome: LimitOutcome::Throttled(&throttled),
            latency: Duration::from_micros(3),
        };
        let line = to_value(&throttled_line(&record, &throttled, "", None));
        assert_eq!(line["kind"], "tools/call");
        assert_eq!(line["decision"], "THROTTLED");
        assert_eq!(line["forwarded"], false);
        assert_eq!(line["request_id"], 7);
        assert_eq!(
            line["rate_limit"],
            json!({"id": "refunds-per-user", "key": "refunds-per-user/alice",
                   "metric": "requests", "cause": "exceeded", "retry_after": 42})
        );
    }
}
