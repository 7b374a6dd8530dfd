//! The server's requests to the client, on any stream (the SSE reply of a POST, the GET
//! stream, a resumed one), when `server_requests` is governed: `sampling/createMessage` as
//! `CreateMessage`, `elicitation/create` as `Elicit`, `roots/list` as `ListRoots`, by the
//! principal whose stream carries them (`docs/request-flow.md`).
//!
//! A denied request never reaches the client: its event is dropped, and the sidecar answers
//! the server itself with the JSON-RPC error a denied call gets, as a POST in the same
//! session ([`ServerAnswers`]), so the tool call waiting on it ends cleanly. Protocol
//! 2026-07-28 asks for such input inside a result (`resultType: "input_required"`,
//! `inputRequests`): when one of them is denied, the whole result is replaced by the denial,
//! under the id of the client's request.
//!
//! The answers of one stream are sent in order by one task, started at the first denial;
//! at most [`MAX_QUEUED_ANSWERS`] wait at once. Beyond that (a server flooding the stream
//! with requests the policy denies) an answer is dropped and logged: the request is still
//! kept from the client, and the server's own timeout ends it.

use std::fmt;
use std::sync::Arc;
#[cfg(test)]
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;

use super::Rewrite;
use crate::decide::authorize_fixed;
use crate::model::{Capability, McpAction, params};
use crate::reply;

/// Sends one JSON-RPC message (an answer to a server's request) to the inner service, as a
/// POST in the session of the stream it answers.
pub type Post = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;

/// At most this many answers of one stream wait to be sent.
pub const MAX_QUEUED_ANSWERS: usize = 64;

/// Where the answers to the server's denied requests go, in order.
pub struct ServerAnswers {
    post: Post,
    queue: Option<mpsc::Sender<String>>,
    /// Answers dropped because too many were waiting.
    dropped: u64,
}

impl fmt::Debug for ServerAnswers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAnswers")
            .field("started", &self.queue.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerAnswers {
    /// Answers sent with `post`.
    #[must_use]
    pub fn new(post: Post) -> Self {
        Self {
            post,
            queue: None,
            dropped: 0,
        }
    }

    /// Queues `answer`; the task sending them starts with the first.
    fn send(&mut self, answer: String) {
        if self.queue.is_none() {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                tracing::warn!("no runtime to answer the server's denied request; it is dropped");
                return;
            };
            let (queue, mut answers) = mpsc::channel::<String>(MAX_QUEUED_ANSWERS);
            let post = Arc::clone(&self.post);
            runtime.spawn(async move {
                while let Some(answer) = answers.recv().await {
                    post(answer).await;
                }
            });
            self.queue = Some(queue);
        }
        if let Some(queue) = &self.queue
            && queue.try_send(answer).is_err()
        {
            self.dropped += 1;
            tracing::warn!(
                limit = MAX_QUEUED_ANSWERS,
                "too many answers to the server's denied requests waiting; one is dropped (the request still never reaches the client)"
            );
        }
    }
}

impl Rewrite {
    /// Decides a server's request to the client, when governed: `None` lets it pass (allowed,
    /// LOG_ONLY, or not a governed request); an empty string drops it, its answer sent to the
    /// server.
    pub(super) fn server_request(&mut self, message: &Value) -> Option<String> {
        if !self
            .exchange
            .shared
            .engine
            .govern()
            .governs(Capability::ServerRequests)
        {
            return None;
        }
        let method = message.get("method")?.as_str()?;
        let action = McpAction::of_server_request(method)?;
        // A notification of that name asks nothing of the client.
        let id = message.get("id")?;
        let answer = self.decide_server_request(action, method, id, message.get("params"))?;
        match &mut self.server_answers {
            Some(answers) => answers.send(answer),
            None => tracing::warn!(
                method,
                "the server's denied request is dropped; nothing answers it in this reply"
            ),
        }
        Some(String::new())
    }

    /// Decides the input a 2026-07-28 result requires (`inputRequests`), when governed:
    /// `None` when all of it is allowed, else the denial of the first denied request under
    /// `id`, the client's request it would have come back to.
    pub(super) fn input_required(&mut self, id: &Value, message: &Value) -> Option<String> {
        if !self
            .exchange
            .shared
            .engine
            .govern()
            .governs(Capability::ServerRequests)
        {
            return None;
        }
        let requests = message
            .get("result")?
            .get("inputRequests")?
            .as_object()?
            .clone();
        requests.values().find_map(|request| {
            let method = request.get("method").and_then(Value::as_str)?;
            let action = McpAction::of_server_request(method)?;
            self.decide_server_request(action, method, id, request.get("params"))
        })
    }

    /// One server request's decision: `None` when it may reach the client, else the answer
    /// made in the client's place.
    fn decide_server_request(
        &self,
        action: McpAction,
        method: &str,
        id: &Value,
        params: Option<&Value>,
    ) -> Option<String> {
        let exchange = &self.exchange;
        let text = params.map(Value::to_string);
        let result = authorize_fixed(
            exchange,
            action,
            method,
            id,
            "",
            text.as_deref(),
            params::server_request(action, params),
        );
        reply::for_request(id, result.as_ref(), exchange.settings(), exchange.marking())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::engine::{PolicyEngine, PolicySource};
    use crate::filter::sse::SseRewriter;
    use crate::model::{Govern, ModelConfig};

    /// Posts that never finish, counting how many started.
    fn stuck(started: &Arc<AtomicUsize>) -> Post {
        let started = Arc::clone(started);
        Arc::new(move |_answer| {
            started.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        })
    }

    #[tokio::test]
    async fn answers_wait_in_a_bounded_queue_sent_one_at_a_time() {
        let started = Arc::new(AtomicUsize::new(0));
        let mut answers = ServerAnswers::new(stuck(&started));
        for i in 0..200 {
            answers.send(format!("answer {i}"));
        }
        // The sending task has not run yet (one thread): the queue holds what it can.
        assert_eq!(answers.dropped, 200 - MAX_QUEUED_ANSWERS as u64);
        tokio::task::yield_now().await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "one post at a time, in order"
        );
    }

    #[tokio::test]
    async fn a_denied_request_is_dropped_and_its_answer_sent_in_order() {
        let engine = PolicyEngine::from_sources(
            ModelConfig {
                govern: Govern::all(),
                ..ModelConfig::default()
            },
            &[PolicySource::new(
                "p.cedar",
                r#"permit(principal, action == AgentCore::Action::"ListRoots", resource);"#,
            )],
        )
        .expect("policies");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let post: Post = {
            let sent = Arc::clone(&sent);
            Arc::new(move |answer| {
                sent.lock().expect("lock").push(answer);
                Box::pin(async {})
            })
        };
        let snapshot = engine.snapshot();
        let rewrite = Rewrite::for_testing_with(
            engine,
            Vec::new(),
            Vec::new(),
            snapshot,
            Some(ServerAnswers::new(post)),
        );
        let mut sse = SseRewriter::new(rewrite, 1 << 16);
        let stream = concat!(
            "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"sampling/createMessage\",\"params\":{\"maxTokens\":1}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"roots/list\"}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":\"c\",\"method\":\"elicitation/create\",\"params\":{\"message\":\"m\"}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"sampling/createMessage\"}\n\n",
        );
        let mut out = sse.feed(bytes::Bytes::from(stream)).expect("fits").to_vec();
        out.extend_from_slice(&sse.finish());
        let out = String::from_utf8(out).expect("utf8");
        assert_eq!(
            out,
            concat!(
                "id: 1\n\n",
                "data: {\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"roots/list\"}\n\n",
                "data: {\"jsonrpc\":\"2.0\",\"method\":\"sampling/createMessage\"}\n\n",
            ),
            "denied requests dropped (their id kept for resumption), notifications pass"
        );
        drop(sse);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while sent.lock().expect("lock").len() < 2 && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        let sent: Vec<Value> = sent
            .lock()
            .expect("lock")
            .iter()
            .map(|a| serde_json::from_str(a).expect("json"))
            .collect();
        assert_eq!(sent.len(), 2);
        assert_eq!(
            (sent[0]["id"].clone(), sent[1]["id"].clone()),
            (json!("a"), json!("c"))
        );
        assert_eq!(sent[0]["error"]["code"], -32002);
    }
}
