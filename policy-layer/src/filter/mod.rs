//! Reply rewriting: every list answer the upstream sends is filtered by
//! PartiallyAuthorizeActions ([`list`]: tools always, resources, resource templates and
//! prompts when governed), wherever it arrives: in the reply to the POST that asked, in the
//! reply to another request, on the standalone GET stream or a resumed one. An upstream
//! message is taken for a list answer by what it is (a reply whose `result` has `tools`), not
//! by which connection carries it or which id it names; a list still pending when its reply
//! ends fails closed. The server's own requests to the client (sampling, elicitation, roots)
//! are decided when governed ([`server_request`]): a denied one is dropped and answered to the
//! server in the client's place. Local answers (batch denials) are merged in here too. JSON
//! replies are read whole ([`Rewrite::json_body`]), event streams event by event ([`sse`]); a
//! reply in a form the filter cannot read never leaves (`docs/threat-model.md`).

pub mod list;
mod prompts;
mod resources;
pub mod server_request;
pub mod sse;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::body::{BoxError, PolicyBody};
use crate::exchange::Exchange;
use crate::jsonrpc::same_id;
use crate::model::Capability;
use crate::reply::{self, Refusal};
pub use list::{ListKind, PendingList};
pub use server_request::{Post, ServerAnswers};
use sse::SseRewriter;

/// What rewriting an upstream reply needs: the pending list requests, the local answers, and
/// the request they belong to.
pub struct Rewrite {
    /// List requests whose responses are still to come in this reply.
    pub lists: Vec<PendingList>,
    /// Answers made locally (denials, errors) to merge into the reply.
    pub local_answers: Vec<String>,
    /// Whether the request was a batch.
    pub batch: bool,
    pub(crate) exchange: Exchange,
    /// Where the answers to the server's denied requests go (`None`: nowhere, they are only
    /// dropped).
    pub(crate) server_answers: Option<ServerAnswers>,
    /// Forwarded calls whose completion a temporal condition reads: recorded as their
    /// answers pass (`decide/temporal.rs`).
    pub(crate) completions: crate::decide::temporal::Completions,
}

impl std::fmt::Debug for Rewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewrite")
            .field("lists", &self.lists)
            .field("local_answers", &self.local_answers.len())
            .finish_non_exhaustive()
    }
}

/// A rewrite for the unit tests and the fuzz targets in `fuzz/` (which cannot set the crate's
/// own fields): lists filtered by `snapshot` for an anonymous caller under default settings.
/// Compiled only for tests and under `cfg(fuzzing)`, which `cargo fuzz` sets.
#[cfg(any(test, fuzzing))]
impl Rewrite {
    /// Pending tools/list `list_ids`, `local_answers` to send first, and the policies to
    /// filter with.
    #[must_use]
    pub fn for_testing(
        list_ids: Vec<Value>,
        local_answers: Vec<String>,
        snapshot: Option<std::sync::Arc<crate::engine::Snapshot>>,
    ) -> Self {
        Self::for_testing_with(
            crate::engine::PolicyEngine::new(crate::model::ModelConfig::default()),
            list_ids
                .into_iter()
                .map(|id| PendingList {
                    id,
                    kind: ListKind::Tools,
                })
                .collect(),
            local_answers,
            snapshot,
            None,
        )
    }

    /// [`Self::for_testing`] with the engine (which says what is governed), pending lists of
    /// any kind, and where the server's denied requests are answered.
    #[must_use]
    pub fn for_testing_with(
        engine: crate::engine::PolicyEngine,
        lists: Vec<PendingList>,
        local_answers: Vec<String>,
        snapshot: Option<std::sync::Arc<crate::engine::Snapshot>>,
        server_answers: Option<ServerAnswers>,
    ) -> Self {
        use crate::protocol::session::{SessionLimits, Sessions};
        use std::sync::Arc;
        let shared = crate::exchange::Shared {
            engine,
            settings: Arc::new(crate::config::Settings::default()),
            observer: Arc::new(crate::record::NoObserver),
            gate: crate::auth::gate::Gate {
                source: crate::auth::gate::IdentitySource::Extension,
                metadata: None,
                public_url: None,
                proxies: crate::protocol::TrustedProxies::default(),
            },
            origins: crate::protocol::origin::Origins::default(),
            sessions: Arc::new(Sessions::new(SessionLimits {
                max_sessions: 1,
                ..SessionLimits::default()
            })),
            clock: Arc::new(crate::clock::SystemClock),
            limits: None,
            session_store: None,
        };
        Self {
            lists,
            local_answers,
            batch: false,
            exchange: Exchange {
                shared: Arc::new(shared),
                identity: Arc::new(crate::auth::Identity::anonymous()),
                snapshot,
                version: crate::protocol::ProtocolVersion::default(),
                span: tracing::Span::none(),
            },
            server_answers,
            completions: crate::decide::temporal::Completions::default(),
        }
    }
}

impl Rewrite {
    /// A rewrite of a reply that answers no request of its own (a GET stream): only list
    /// answers and server requests found in it are filtered.
    pub(crate) fn stream(exchange: Exchange, server_answers: Option<ServerAnswers>) -> Self {
        Self {
            lists: Vec::new(),
            local_answers: Vec::new(),
            batch: false,
            exchange,
            server_answers,
            completions: crate::decide::temporal::Completions::default(),
        }
    }

    /// Whether a message's text may hold something the filter reads: a list answer (it
    /// names `tools`, or `resource`/`prompts` when governed), a governed server request (it
    /// names `sampling`, `elicitation`, `roots`, or carries `inputRequests`), or it hides a
    /// name behind a `\u` escape. Anything else passes without being parsed.
    pub(crate) fn may_concern(&self, text: &str) -> bool {
        let govern = self.exchange.shared.engine.govern();
        !self.completions.is_empty()
            || text.contains("tools")
            || text.contains("\\u")
            || (govern.governs(Capability::Resources) && text.contains("resource"))
            || (govern.governs(Capability::Prompts) && text.contains("prompts"))
            || (govern.governs(Capability::ServerRequests)
                && ["sampling", "elicitation", "roots", "inputRequests"]
                    .iter()
                    .any(|word| text.contains(word)))
    }

    /// Rewrites one upstream JSON-RPC message (as text) if a client could take it for a list
    /// answer, or it is a governed server request; a batch (an array, which MCP 2025-03-26
    /// allowed in an SSE event) element by element. Returns `None` when the message passes
    /// unchanged, and an empty string when it is dropped (a denied server request, answered
    /// to the server instead).
    pub fn message(&mut self, text: &str) -> Option<String> {
        if self.lists.is_empty() && !self.may_concern(text) {
            return None;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(text) else {
            // No client reads an answer from it; a list still waiting for one fails closed.
            return self.fail_pending();
        };
        self.completions.observe(&value);
        let Value::Array(items) = &mut value else {
            return self.answer(&mut value);
        };
        let mut changed = false;
        let items: Vec<String> = items
            .iter_mut()
            .filter_map(|item| match self.answer(item) {
                Some(rewritten) => {
                    changed = true;
                    (!rewritten.is_empty()).then_some(rewritten)
                }
                None => Some(item.to_string()),
            })
            .collect();
        if !changed {
            return None;
        }
        Some(if items.is_empty() {
            String::new()
        } else {
            format!("[{}]", items.join(","))
        })
    }

    /// Filters `message` if a client could take it for a list answer: a reply (`result` or
    /// `error`) whose `result` has `tools` (or another governed list), or that carries the id
    /// of a pending list. Only a response (no `method`) with a pending list's own id settles
    /// that list: a server's request that reuses the id (`ping`, sampling) never does, and a
    /// reply a client might still match (`1.0` for `1`, or a `method` beside a `result`) is
    /// filtered while the list stays pending. A governed server request is decided.
    fn answer(&mut self, message: &mut Value) -> Option<String> {
        if message.get("result").is_none() && message.get("error").is_none() {
            return self.server_request(message);
        }
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        if message.get("method").is_none()
            && let Some(pos) = self.lists.iter().position(|l| l.id == id)
        {
            let pending = self.lists.swap_remove(pos);
            return Some(self.filter_result(&pending.id, message, Some(pending.kind)));
        }
        if let Some(pending) = self.lists.iter().find(|l| same_id(&l.id, &id)).cloned() {
            return Some(self.filter_result(&pending.id, message, Some(pending.kind)));
        }
        let govern = self.exchange.shared.engine.govern();
        let lists = ListKind::ALL.into_iter().any(|kind| {
            govern.governs(kind.capability())
                && message
                    .get("result")
                    .and_then(|r| r.get(kind.key()))
                    .is_some_and(Value::is_array)
        });
        if lists {
            return Some(self.filter_result(&id, message, None));
        }
        self.input_required(&id, message)
    }

    /// Filters the lists of one reply and decides the input it requires; the reply as it now
    /// reads, or the failure in its place.
    fn filter_result(
        &mut self,
        id: &Value,
        message: &mut Value,
        expected: Option<ListKind>,
    ) -> String {
        if let Err(failure) = self.filter_lists(id, message, expected) {
            return failure;
        }
        self.input_required(id, message)
            .unwrap_or_else(|| message.to_string())
    }

    /// Rewrites a whole JSON body (one message or a batch) and merges the local answers;
    /// `None` when it passes exactly as it came.
    ///
    /// With `complete`, the body is a success reply that must answer every pending list: a
    /// body that cannot be decoded, or that leaves a list unanswered, fails those lists closed.
    /// Without it (an upstream error reply), lists it does not answer are left unanswered.
    pub fn json_body(&mut self, body: &[u8], complete: bool) -> Option<Bytes> {
        // As a client decodes the body: bytes that are not UTF-8 read as U+FFFD.
        let decoded = String::from_utf8_lossy(body);
        if self.lists.is_empty() && self.local_answers.is_empty() && !self.may_concern(&decoded) {
            // Nothing to answer here and nothing a client could take for a list: as it came.
            return None;
        }
        let text = Some(decoded.trim()).filter(|t| !t.is_empty());
        let mut out: Vec<String> = Vec::new();
        let mut changed = false;
        match text.map(|t| (t, batch_items(t))) {
            Some((_, Ok(items))) => {
                for item in items {
                    let text = item.get();
                    let rewritten = self.message(text);
                    changed |= rewritten.is_some();
                    match rewritten {
                        Some(rewritten) if rewritten.is_empty() => {}
                        Some(rewritten) => out.push(rewritten),
                        None => out.push(text.to_owned()),
                    }
                }
            }
            Some((t, Err(_))) if serde_json::from_str::<&RawValue>(t).is_ok() => {
                let rewritten = self.message(t);
                changed |= rewritten.is_some();
                match rewritten {
                    Some(rewritten) if rewritten.is_empty() => {}
                    Some(rewritten) => out.push(rewritten),
                    None => out.push(t.to_owned()),
                }
            }
            // Not JSON: no client reads a message from it.
            _ if self.lists.is_empty() && self.local_answers.is_empty() => return None,
            Some(_) | None if complete && !self.lists.is_empty() => {
                out.push(self.fail_pending().unwrap_or_default());
                changed = true;
            }
            // An error reply we cannot read is passed on as it came.
            Some((t, _)) if !complete => out.push(t.to_owned()),
            _ => changed = true,
        }
        if complete && !self.lists.is_empty() {
            // The upstream never answered a list it was asked for: fail it closed too.
            out.extend(self.fail_pending());
            changed = true;
        }
        self.lists.clear();
        changed |= !self.local_answers.is_empty();
        if !changed {
            return None;
        }
        out.append(&mut self.local_answers);
        Some(reply::join(&out, self.batch || out.len() > 1))
    }

    /// Answers every pending list with the list failure (an undecodable event or body);
    /// `None` when none is pending.
    pub fn fail_pending(&mut self) -> Option<String> {
        if self.lists.is_empty() {
            return None;
        }
        let pending = std::mem::take(&mut self.lists);
        let answers: Vec<String> = pending
            .iter()
            .map(|list| self.list_failed(&list.id, list.kind))
            .collect();
        for kind in ListKind::ALL {
            if pending.iter().any(|list| list.kind == kind) {
                self.observe_list(
                    kind,
                    String::new(),
                    Vec::new(),
                    Vec::new(),
                    Some("the upstream reply could not be decoded".to_owned()),
                    std::time::Duration::ZERO,
                );
            }
        }
        tracing::warn!("list reply could not be decoded; failing closed");
        Some(if answers.len() == 1 {
            answers.into_iter().next().unwrap_or_default()
        } else {
            format!("[{}]", answers.join(","))
        })
    }
}

/// The messages of a batch body, when it is one.
fn batch_items(text: &str) -> Result<Vec<&RawValue>, ()> {
    if text.starts_with('[') {
        serde_json::from_str(text).map_err(|_| ())
    } else {
        Err(())
    }
}

/// Rewrites the inner service's reply: every list answer in it filtered, pending lists
/// answered, local answers merged. A reply the filter cannot read (compressed, or a JSON body
/// over `max_list_bytes`) is refused with 502.
pub(crate) async fn rewrite<B>(reply: Response<B>, mut rewrite: Rewrite) -> Response<PolicyBody<B>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let max = rewrite.exchange.settings().max_list_bytes;
    let (mut parts, body) = reply.into_parts();
    if let Some(encoding) = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|e| e != "identity")
    {
        rewrite.fail_pending();
        return Refusal::UnreadableUpstream(encoding).into_response();
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("text/event-stream") {
        parts.headers.remove(header::CONTENT_LENGTH);
        let rewriter = Box::new(SseRewriter::new(rewrite, max));
        return Response::from_parts(
            parts,
            PolicyBody::Sse {
                body,
                rewriter,
                done: false,
            },
        );
    }
    let success = parts.status.is_success();
    let json = content_type.starts_with("application/json");
    if !success && !json {
        // An upstream (or proxy) error that is not JSON-RPC: it answers nothing, pass it on.
        return Response::from_parts(parts, PolicyBody::Inner { body });
    }
    let bytes = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            rewrite.fail_pending();
            tracing::warn!(limit = max, "upstream reply too large to check; refused");
            return Refusal::UpstreamTooLarge(max).into_response();
        }
    };
    // A success body that is neither JSON nor an event stream is read as JSON all the same
    // (a lenient client might), and what is pending is answered.
    let rewritten = rewrite.json_body(&bytes, success);
    rewrite.completions.flush().await;
    let Some(body) = rewritten else {
        return Response::from_parts(parts, PolicyBody::full(bytes));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if parts.status == StatusCode::ACCEPTED {
        parts.status = StatusCode::OK;
    }
    Response::from_parts(parts, PolicyBody::full(body))
}
