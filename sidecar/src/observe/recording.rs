//! The recording (`log.record_arguments_to`, off by default; `docs/replay.md`): one JSON line
//! per tools/call decided by Cedar and per tools/list filtered, with what `policy-sidecar
//! replay` needs to decide it again: the caller's identity (subject and every claim, as the
//! principal's tags), the call's arguments and the time the decision saw.
//!
//! The ordinary decision log never carries claims, and arguments only with
//! `log.log_arguments`; the recording is a separate file, created owner-only (mode 0600),
//! written by a writer thread of its own exactly as the decision log is
//! ([`DecisionLog::start_with`]), so recording never waits on the disk on the request path.
//!
//! The identity is the one the layer authenticated: when recording is on, the router
//! authenticates each request with the same [`Authenticator`] before the layer does (the
//! layer's check is then a hit in the verified-token cache) and makes the identity available
//! to the observer as [`CALLER`]. A request that fails authentication is refused by the layer
//! and decides nothing, so nothing is recorded for it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

use policy_layer::auth::{Authenticator, Identity, PrincipalKind};
use policy_layer::{CallRecord, Clock, ListRecord, Timestamp};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::decision_log::{DecisionLog, TRACE_ID, with_trace_id};

tokio::task_local! {
    /// The authenticated caller of the request being handled, when recording is on.
    pub static CALLER: Option<Arc<Identity>>;
}

/// How the router learns the caller's identity for the recording.
#[derive(Debug, Clone)]
pub enum Identify {
    /// `auth.mode = "none"`: every caller is anonymous.
    Anonymous,
    /// JWT: the layer's own authenticator (its verified-token cache answers the layer).
    Jwt(Authenticator),
}

impl Identify {
    /// The caller of a request with `headers`; `None` when the token is refused (the layer
    /// then refuses the request too).
    pub async fn caller(&self, headers: &http::HeaderMap) -> Option<Arc<Identity>> {
        match self {
            Self::Anonymous => Some(Arc::new(Identity::anonymous())),
            Self::Jwt(authenticator) => authenticator.authenticate(headers).await.ok(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body polled with its request's caller and trace id in scope: a tools/list
    /// answer is filtered (and recorded) while the body is polled, after the request's future
    /// has finished.
    pub struct ScopedBody<B> {
        #[pin]
        inner: B,
        scope: Option<(Option<Arc<Identity>>, String)>,
    }
}

impl<B> ScopedBody<B> {
    /// `inner`, polled with `caller` and `trace_id` in scope when `scope` is given.
    pub fn new(inner: B, scope: Option<(Option<Arc<Identity>>, String)>) -> Self {
        Self { inner, scope }
    }
}

impl<B: Body> Body for ScopedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.scope {
            None => this.inner.poll_frame(cx),
            Some((caller, trace_id)) => CALLER.sync_scope(caller.clone(), || {
                TRACE_ID.sync_scope(trace_id.clone(), || this.inner.poll_frame(cx))
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The identity as a recording line holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedIdentity {
    /// `OAuthUser` or `UnauthenticatedUser`.
    pub kind: String,
    /// The subject (`sub`).
    pub sub: String,
    /// Every other claim, as the principal's tag holds it.
    pub tags: BTreeMap<String, String>,
    /// `exp`, when the token had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

const OAUTH_USER: &str = "OAuthUser";
const UNAUTHENTICATED_USER: &str = "UnauthenticatedUser";

impl RecordedIdentity {
    /// The recorded form of `identity`.
    #[must_use]
    pub fn of(identity: &Identity) -> Self {
        Self {
            kind: match identity.kind {
                PrincipalKind::OAuthUser => OAUTH_USER,
                PrincipalKind::Unauthenticated => UNAUTHENTICATED_USER,
            }
            .to_owned(),
            sub: identity.subject.clone(),
            tags: identity.tags.iter().cloned().collect(),
            exp: identity.expires_at,
        }
    }

    /// The identity again; `None` for an unknown kind.
    #[must_use]
    pub fn identity(self) -> Option<Identity> {
        let kind = match self.kind.as_str() {
            OAUTH_USER => PrincipalKind::OAuthUser,
            UNAUTHENTICATED_USER => PrincipalKind::Unauthenticated,
            _ => return None,
        };
        Some(Identity {
            kind,
            subject: self.sub,
            // A BTreeMap iterates sorted by claim name, as `Identity::tag` needs.
            tags: self.tags.into_iter().collect(),
            expires_at: self.exp,
        })
    }
}

/// A timestamp written as RFC 3339 (UTC, milliseconds).
struct Rfc3339(Timestamp);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

#[derive(Serialize)]
struct CallEntry<'a> {
    time: Rfc3339,
    kind: &'a str,
    trace_id: &'a str,
    engine: &'a str,
    principal: &'a str,
    identity: Option<RecordedIdentity>,
    tool: &'a str,
    request_id: &'a Value,
    decision: &'static str,
    determining_policies: &'a [String],
    arguments: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_before: Option<u64>,
}

#[derive(Serialize)]
struct ListEntry<'a> {
    time: Rfc3339,
    kind: &'a str,
    trace_id: &'a str,
    engine: &'a str,
    principal: &'a str,
    identity: Option<RecordedIdentity>,
    allowed_tools: &'a [String],
    denied_tools: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_before: Option<u64>,
}

/// Writes the recording file.
#[derive(Debug, Clone)]
pub struct Recording {
    log: DecisionLog,
    clock: Arc<dyn Clock>,
}

impl Recording {
    /// Opens `path` for appending (created owner-only) and starts its writer; lines carry the
    /// time `clock` gives (the clock `context.system.now` is read from).
    ///
    /// # Errors
    /// When the file cannot be opened or the writer thread started.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        Ok(Self {
            log: DecisionLog::start_with(file)?,
            clock,
        })
    }

    /// The caller of the request being handled, as recorded.
    fn caller() -> Option<RecordedIdentity> {
        CALLER
            .try_with(|caller| caller.as_deref().map(RecordedIdentity::of))
            .ok()
            .flatten()
    }

    /// Records one decision (a call that could not be decided is recorded as `ERROR`); `kind`
    /// is the method decided (`tools/call`, or another governed capability's).
    pub fn call(&self, record: &CallRecord<'_>) {
        const NONE: &[String] = &[];
        let identity = Self::caller();
        let time = Rfc3339(self.clock.now());
        let determining = record
            .outcome
            .map_or(NONE, |outcome| outcome.determining.as_slice());
        let arguments = record
            .arguments
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
        with_trace_id(|trace_id| {
            self.log.write(|dropped_before| CallEntry {
                time,
                kind: record.method,
                trace_id,
                engine: record.engine,
                principal: &record.principal,
                identity,
                tool: record.tool,
                request_id: record.request_id,
                decision: record.decision(),
                determining_policies: determining,
                arguments,
                dropped_before,
            });
        });
    }

    /// Records one list filtering (`kind`: `tools/list`, or another capability's list).
    pub fn list(&self, record: &ListRecord<'_>) {
        let identity = Self::caller();
        let time = Rfc3339(self.clock.now());
        with_trace_id(|trace_id| {
            self.log.write(|dropped_before| ListEntry {
                time,
                kind: record.method,
                trace_id,
                engine: record.engine,
                principal: &record.principal,
                identity,
                allowed_tools: &record.allowed,
                denied_tools: &record.denied,
                error: record.error.as_deref(),
                dropped_before,
            });
        });
    }

    /// Writes what is left and stops the writer.
    pub fn close(&self) {
        self.log.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cedar_policy::Decision;
    use policy_layer::engine::Outcome;
    use policy_layer::{ManualClock, Mode};
    use serde_json::json;

    use super::*;

    fn alice() -> Identity {
        Identity {
            kind: PrincipalKind::OAuthUser,
            subject: "alice".to_owned(),
            tags: vec![
                ("role".to_owned(), "refund-agent".to_owned()),
                ("tier".to_owned(), "3".to_owned()),
            ],
            expires_at: Some(1_900_000_000),
        }
    }

    #[test]
    fn a_recorded_identity_reads_back_as_the_same_identity() {
        let recorded = RecordedIdentity::of(&alice());
        let text = serde_json::to_string(&recorded).expect("serializes");
        let back: RecordedIdentity = serde_json::from_str(&text).expect("reads");
        assert_eq!(back.identity(), Some(alice()));
        let anonymous = RecordedIdentity::of(&Identity::anonymous());
        assert_eq!(anonymous.identity(), Some(Identity::anonymous()));
        let unknown = RecordedIdentity {
            kind: "Robot".to_owned(),
            ..RecordedIdentity::of(&alice())
        };
        assert_eq!(unknown.identity(), None);
    }

    #[tokio::test]
    async fn a_call_is_recorded_with_its_caller_arguments_and_decision_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("recording.jsonl");
        let now = Timestamp::parse_rfc3339("2025-01-15T10:00:00Z").expect("time");
        let recording = Recording::open(&file, Arc::new(ManualClock::new(now))).expect("opens");
        let outcome = Outcome {
            decision: Decision::Allow,
            determining: vec!["refund_small".to_owned()],
            errors: vec![],
            shadow_matched: vec![],
            shadow_flipping: vec![],
        };
        let id = json!(3);
        let record = CallRecord {
            engine: "RefundPolicyEngine",
            mode: Mode::Enforce,
            method: "tools/call",
            principal: "AgentCore::OAuthUser::\"alice\"".to_owned(),
            tool: "process_refund",
            action: "RefundTool___process_refund".to_owned(),
            request_id: &id,
            outcome: Ok(&outcome),
            arguments: Some(r#"{"amount": 500}"#),
            forwarded: true,
            latency: Duration::from_micros(5),
            temporal: None,
        };
        CALLER
            .scope(Some(Arc::new(alice())), async { recording.call(&record) })
            .await;
        // Outside a request (no caller known) the line says so: replay skips it.
        recording.call(&record);
        recording.close();
        let text = std::fs::read_to_string(&file).expect("written");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["time"], "2025-01-15T10:00:00.000Z");
        assert_eq!(lines[0]["kind"], "tools/call");
        assert_eq!(lines[0]["decision"], "ALLOW");
        assert_eq!(lines[0]["arguments"], json!({"amount": 500}));
        assert_eq!(lines[0]["determining_policies"], json!(["refund_small"]));
        assert_eq!(
            lines[0]["identity"],
            json!({"kind": "OAuthUser", "sub": "alice", "exp": 1_900_000_000u64,
                   "tags": {"role": "refund-agent", "tier": "3"}})
        );
        assert_eq!(lines[1]["identity"], Value::Null);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "owner-only");
        }
    }
}
