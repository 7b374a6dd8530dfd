//! Response rewriting: tools/list results filtered by PartiallyAuthorizeActions (SPEC section
//! 5), and local answers merged into the upstream's reply to a batch.

pub mod sse;

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use serde_json::value::RawValue;
use tracing::field;

use crate::auth::Identity;
use crate::config::{Mode, Settings};
use crate::engine::Snapshot;
use crate::record::{DecisionObserver, ListRecord};
use crate::response;

/// What rewriting an upstream reply needs: the pending tools/list ids and the local answers.
pub struct Rewrite {
    /// Ids of tools/list requests whose responses are still to be filtered.
    pub list_ids: Vec<Value>,
    /// Answers made locally (denials, errors) to merge into the reply.
    pub local_answers: Vec<String>,
    /// Whether the request was a batch.
    pub batch: bool,
    /// Whether results carry `"resultType":"complete"` (protocol 2026-07-28 and later).
    pub marked: bool,
    pub(crate) snapshot: Option<Arc<Snapshot>>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) observer: Arc<dyn DecisionObserver>,
    /// The request span: the parent of `PartiallyAuthorizeActions`, which runs after the
    /// upstream answered (possibly while its event stream is read).
    pub(crate) span: tracing::Span,
}

impl std::fmt::Debug for Rewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewrite")
            .field("list_ids", &self.list_ids)
            .field("local_answers", &self.local_answers.len())
            .finish_non_exhaustive()
    }
}

/// A rewrite for the unit tests and the fuzz targets in `fuzz/` (which cannot set the crate's
/// own fields): lists filtered by `snapshot` for an anonymous caller under default settings.
/// Compiled only for tests and under `cfg(fuzzing)`, which `cargo fuzz` sets.
#[cfg(any(test, fuzzing))]
impl Rewrite {
    /// Pending `list_ids`, `local_answers` to send first, and the policies to filter with.
    #[must_use]
    pub fn for_testing(
        list_ids: Vec<Value>,
        local_answers: Vec<String>,
        snapshot: Option<Arc<Snapshot>>,
    ) -> Self {
        Self {
            list_ids,
            local_answers,
            batch: false,
            marked: false,
            snapshot,
            identity: Arc::new(Identity::anonymous()),
            settings: Arc::new(Settings::default()),
            observer: Arc::new(crate::record::NoObserver),
            span: tracing::Span::none(),
        }
    }
}

impl Rewrite {
    /// Whether anything needs rewriting.
    #[must_use]
    pub fn is_needed(&self) -> bool {
        !self.list_ids.is_empty() || !self.local_answers.is_empty()
    }

    /// Rewrites one upstream JSON-RPC message (as text) if a client could take it for the
    /// answer to a pending list; a batch (an array, which MCP 2025-03-26 allowed in an SSE
    /// event) element by element. Returns `None` when the message passes unchanged.
    pub fn message(&mut self, text: &str) -> Option<String> {
        if self.list_ids.is_empty() {
            return None;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(text) else {
            return Some(self.fail_pending());
        };
        let Value::Array(items) = &mut value else {
            return self.answer(&mut value);
        };
        let mut changed = false;
        let items: Vec<String> = items
            .iter_mut()
            .map(|item| {
                self.answer(item)
                    .inspect(|_| changed = true)
                    .unwrap_or_else(|| item.to_string())
            })
            .collect();
        changed.then(|| format!("[{}]", items.join(",")))
    }

    /// Filters `message` if a client could take it for the answer to a pending list. Only a
    /// response (`result` or `error`, no `method`) with the list's own id settles the list: a
    /// server's request that happens to reuse the id (`ping`, sampling) never does. A reply a
    /// client might still match (`1.0` for `1`, or a `method` beside a `result`) is filtered
    /// as well, but the list stays pending.
    fn answer(&mut self, message: &mut Value) -> Option<String> {
        if message.get("result").is_none() && message.get("error").is_none() {
            return None;
        }
        let id = message.get("id")?;
        let exact = message
            .get("method")
            .is_none()
            .then(|| self.list_ids.iter().position(|l| l == id))
            .flatten();
        if let Some(pos) = exact {
            let id = self.list_ids.swap_remove(pos);
            return Some(self.filter_list(id, message));
        }
        let id = self.list_ids.iter().find(|l| same_id(l, id))?.clone();
        Some(self.filter_list(id, message))
    }

    /// Rewrites a whole JSON body (one message or a batch) and merges the local answers.
    /// With `complete`, the body is a success reply that must answer every pending list: a
    /// body that cannot be decoded, or that leaves a list unanswered, fails those lists closed.
    /// Without it (an upstream error reply), lists it does not answer are left unanswered.
    pub fn json_body(&mut self, body: &[u8], complete: bool) -> bytes::Bytes {
        let text = std::str::from_utf8(body).ok();
        let mut out: Vec<String> = Vec::new();
        match text.map(|t| serde_json::from_str::<Vec<&RawValue>>(t.trim())) {
            Some(Ok(items)) => {
                for item in items {
                    let text = item.get();
                    out.push(self.message(text).unwrap_or_else(|| text.to_owned()));
                }
            }
            _ => match text.filter(|t| !t.trim().is_empty()) {
                Some(t) if serde_json::from_str::<&RawValue>(t.trim()).is_ok() => {
                    out.push(
                        self.message(t.trim())
                            .unwrap_or_else(|| t.trim().to_owned()),
                    );
                }
                Some(_) | None if complete && !self.list_ids.is_empty() => {
                    out.push(self.fail_pending());
                }
                // An error reply we cannot read is passed on as it came.
                Some(t) if !complete => out.push(t.to_owned()),
                _ => {}
            },
        }
        if complete && !self.list_ids.is_empty() {
            // The upstream never answered a list it was asked for: fail it closed too.
            out.push(self.fail_pending());
        }
        self.list_ids.clear();
        out.append(&mut self.local_answers);
        response::join(&out, self.batch || out.len() > 1)
    }

    /// Answers every pending list with the list failure (an undecodable event or body).
    pub fn fail_pending(&mut self) -> String {
        let answers: Vec<String> = self
            .list_ids
            .drain(..)
            .map(|id| {
                response::tool_error(&id, response::LIST_EVALUATION_FAILED, None, self.marked)
            })
            .collect();
        self.observe_list(
            String::new(),
            Vec::new(),
            Vec::new(),
            Some("the upstream reply could not be decoded".to_owned()),
            std::time::Duration::ZERO,
        );
        tracing::warn!("tools/list reply could not be decoded; failing closed");
        if answers.len() == 1 {
            answers.into_iter().next().unwrap_or_default()
        } else {
            format!("[{}]", answers.join(","))
        }
    }

    fn filter_list(&self, id: Value, message: &mut Value) -> String {
        let started = Instant::now();
        let settings = &self.settings;
        let span = tracing::info_span!(
            parent: &self.span,
            "PartiallyAuthorizeActions",
            otel.kind = "internal",
            policy.engine = %settings.engine_name,
            policy.mode = settings.mode.as_str(),
            enduser.id = field::Empty,
            policy.allowed_tools = field::Empty,
            policy.denied_tools = field::Empty,
            policy.allowed_tools.count = field::Empty,
            policy.denied_tools.count = field::Empty,
            policy.errors = field::Empty,
        );
        let _entered = span.enter();
        let Some(snapshot) = &self.snapshot else {
            span.record("policy.errors", "no usable policy set");
            return response::tool_error(&id, response::LIST_EVALUATION_FAILED, None, self.marked);
        };
        let principal = snapshot.model().principal_uid(&self.identity).to_string();
        span.record("enduser.id", principal.as_str());
        let Some(tools) = message
            .get_mut("result")
            .and_then(|r| r.get_mut("tools"))
            .and_then(Value::as_array_mut)
        else {
            // An error reply, or no tools: nothing to filter.
            return message.to_string();
        };
        let mut allowed = Vec::with_capacity(tools.len());
        let mut denied = Vec::new();
        let mut keep = Vec::with_capacity(tools.len());
        let lister = snapshot.lister(&self.identity);
        for tool in tools.iter() {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                keep.push(false);
                continue;
            };
            match lister.listing(name) {
                Ok(listing) if listing.listed() => {
                    allowed.push(name.to_owned());
                    keep.push(true);
                }
                Ok(_) => {
                    denied.push(name.to_owned());
                    keep.push(settings.mode == Mode::LogOnly);
                }
                Err(e) => {
                    span.record("policy.errors", e.as_str());
                    self.observe_list(principal, allowed, denied, Some(e), started.elapsed());
                    return response::tool_error(
                        &id,
                        response::LIST_EVALUATION_FAILED,
                        None,
                        self.marked,
                    );
                }
            }
        }
        let mut flags = keep.into_iter();
        tools.retain(|_| flags.next().unwrap_or(false));
        span.record("policy.allowed_tools", allowed.join(",").as_str());
        span.record("policy.denied_tools", denied.join(",").as_str());
        span.record("policy.allowed_tools.count", allowed.len());
        span.record("policy.denied_tools.count", denied.len());
        self.observe_list(principal, allowed, denied, None, started.elapsed());
        message.to_string()
    }

    /// Hands one list record to the observer.
    fn observe_list(
        &self,
        principal: String,
        allowed: Vec<String>,
        denied: Vec<String>,
        error: Option<String>,
        latency: std::time::Duration,
    ) {
        self.observer.on_list(&ListRecord {
            engine: &self.settings.engine_name,
            mode: self.settings.mode,
            principal,
            allowed,
            denied,
            error,
            latency,
        });
    }
}

/// Whether a client could match reply id `b` to request id `a`: JavaScript (and Python)
/// compare numbers by value, so `1.0` answers `1`.
fn same_id(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}
