//! The upstream's tools, fetched as an MCP client: `initialize`, `notifications/initialized`,
//! `tools/list` page by page (and `prompts/list` when prompts are governed and the upstream
//! serves them, whose declared arguments type `GetPrompt`), then `DELETE` of the session.
//! Answers may come as JSON or as an event stream. [`ToolsRefresher`] fetches at start
//! (retrying with backoff until the upstream answers), again when a
//! `notifications/tools/list_changed` or `notifications/prompts/list_changed` passes through
//! the proxy, and on a timer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Limited};
use policy_layer::model::ToolCatalog;
use serde_json::{Value, json};
use sse_stream::SseStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::engine::EngineFeed;
use crate::proxy::body::ProxyBody;
use crate::proxy::upstream::HttpClient;

/// The protocol version the sidecar asks for when it speaks to the upstream itself.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// Largest answer read while fetching tools.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// At most this many `tools/list` pages are read.
pub const MAX_PAGES: usize = 100;
/// First retry delay when the upstream does not answer; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why the tools could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer (refused, reset, timed out).
    #[error("{method}: {message}")]
    Unreachable {
        /// The MCP method being sent.
        method: &'static str,
        /// Why.
        message: String,
    },
    /// An answer that is not what MCP says.
    #[error("{method}: {message}")]
    Protocol {
        /// The MCP method being sent.
        method: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// Fetched tools (and prompts): the definitions as listed.
#[derive(Debug, Clone, Default)]
pub struct FetchedTools {
    /// The tools, in the order listed.
    pub tools: Vec<Value>,
    /// The prompts, in the order listed (none unless prompts are governed).
    pub prompts: Vec<Value>,
}

impl FetchedTools {
    /// The catalog that types call inputs and prompt arguments.
    #[must_use]
    pub fn catalog(&self) -> ToolCatalog {
        ToolCatalog::from_list(&Value::Array(self.tools.clone()))
            .with_prompts(&Value::Array(self.prompts.clone()))
    }
}

/// One MCP client session with the upstream.
struct Session<'a> {
    client: &'a HttpClient,
    url: &'a Uri,
    timeout: Duration,
    session_id: Option<HeaderValue>,
    protocol: String,
    next_id: u64,
}

impl Session<'_> {
    async fn send(
        &mut self,
        method: &'static str,
        params: Value,
        notification: bool,
    ) -> Result<Option<Value>, FetchError> {
        let unreachable = |message: String| FetchError::Unreachable { method, message };
        let protocol = |message: String| FetchError::Protocol { method, message };
        let id = self.next_id;
        self.next_id += 1;
        let message = if notification {
            json!({"jsonrpc": "2.0", "method": method, "params": params})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        if method != "initialize" {
            request = request.header("mcp-protocol-version", self.protocol.as_str());
        }
        if let Some(session) = &self.session_id {
            request = request.header("mcp-session-id", session.clone());
        }
        let request = request
            .body(ProxyBody::full(message.to_string()))
            .map_err(|e| protocol(e.to_string()))?;
        let answer = tokio::time::timeout(self.timeout, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            if let Some(session) = response.headers().get("mcp-session-id") {
                self.session_id = Some(session.clone());
            }
            let status = response.status();
            if notification {
                return if status.is_success() {
                    Ok(None)
                } else {
                    Err(protocol(format!("HTTP {status}")))
                };
            }
            if !status.is_success() {
                return Err(protocol(format!("HTTP {status}")));
            }
            let sse = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let value = if sse {
                // The stream is read event by event, bounded by the request timeout.
                answer_in_stream(response.into_body(), id)
                    .await
                    .map_err(protocol)?
            } else {
                let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(|e| unreachable(e.to_string()))?
                    .to_bytes();
                serde_json::from_slice(&bytes).map_err(|e| protocol(format!("not JSON: {e}")))?
            };
            Ok(Some(value))
        })
        .await
        .map_err(|_| unreachable(format!("no answer within {} ms", self.timeout.as_millis())))??;
        let Some(answer) = answer else {
            return Ok(None);
        };
        if let Some(error) = answer.get("error") {
            return Err(protocol(format!("JSON-RPC error {error}")));
        }
        answer
            .get("result")
            .cloned()
            .map(Some)
            .ok_or_else(|| protocol("answer without result".to_owned()))
    }

    async fn close(&self) {
        let Some(session) = &self.session_id else {
            return;
        };
        let Ok(request) = Request::builder()
            .method(Method::DELETE)
            .uri(self.url.clone())
            .header("mcp-session-id", session.clone())
            .header("mcp-protocol-version", self.protocol.as_str())
            .body(ProxyBody::full(Bytes::new()))
        else {
            return;
        };
        let _ = tokio::time::timeout(self.timeout, self.client.request(request)).await;
    }
}

/// The JSON-RPC answer with id `id` in an event stream.
async fn answer_in_stream<B>(body: B, id: u64) -> Result<Value, String>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut events = SseStream::new(body);
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| format!("reading the event stream: {e}"))?;
        let Some(data) = event.data else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        if value.get("id") == Some(&json!(id)) {
            return Ok(value);
        }
    }
    Err("the event stream ended without the answer".to_owned())
}

/// Fetches every tool of the upstream at `url` once, and every prompt with `prompts`.
///
/// # Errors
/// [`FetchError`] naming the MCP method that failed.
pub async fn fetch(
    client: &HttpClient,
    url: &Uri,
    timeout: Duration,
    prompts: bool,
) -> Result<FetchedTools, FetchError> {
    let mut session = Session {
        client,
        url,
        timeout,
        session_id: None,
        protocol: PROTOCOL_VERSION.to_owned(),
        next_id: 1,
    };
    let result = list_tools(&mut session, prompts).await;
    session.close().await;
    result
}

async fn list_tools(session: &mut Session<'_>, prompts: bool) -> Result<FetchedTools, FetchError> {
    let init = session
        .send(
            "initialize",
            json!({"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                   "clientInfo": {"name": "policy-sidecar", "version": env!("CARGO_PKG_VERSION")}}),
            false,
        )
        .await?
        .unwrap_or_default();
    if let Some(version) = init.get("protocolVersion").and_then(Value::as_str) {
        version.clone_into(&mut session.protocol);
    }
    session
        .send("notifications/initialized", json!({}), true)
        .await?;
    let tools = list_all(session, "tools/list", "tools").await?;
    // A server without the prompts capability has none to list.
    let serves_prompts = init.pointer("/capabilities/prompts").is_some();
    let prompts = if prompts && serves_prompts {
        list_all(session, "prompts/list", "prompts").await?
    } else {
        Vec::new()
    };
    Ok(FetchedTools { tools, prompts })
}

/// Every item of a paginated list (`tools/list`, `prompts/list`), in the order listed.
async fn list_all(
    session: &mut Session<'_>,
    method: &'static str,
    key: &str,
) -> Result<Vec<Value>, FetchError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor
            .as_ref()
            .map_or_else(|| json!({}), |c| json!({"cursor": c}));
        let page = session
            .send(method, params, false)
            .await?
            .unwrap_or_default();
        let Some(listed) = page.get(key).and_then(Value::as_array) else {
            return Err(FetchError::Protocol {
                method,
                message: format!("result without a {key} array"),
            });
        };
        items.extend(listed.iter().cloned());
        cursor = page
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            return Ok(items);
        }
    }
    Err(FetchError::Protocol {
        method,
        message: format!("more than {MAX_PAGES} pages"),
    })
}

/// Fetches with backoff until it succeeds or `shutdown`.
pub async fn fetch_until_answered(
    client: &HttpClient,
    url: &Uri,
    timeout: Duration,
    prompts: bool,
    shutdown: &CancellationToken,
) -> Option<FetchedTools> {
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 0_u32;
    loop {
        match fetch(client, url, timeout, prompts).await {
            Ok(tools) => return Some(tools),
            Err(e) => {
                attempt += 1;
                if attempt == 1 || attempt.is_power_of_two() {
                    tracing::warn!(upstream = %url, error = %e, attempt, "cannot fetch the upstream's tools yet; retrying");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// Keeps the engine's tool catalog in step with the upstream.
pub struct ToolsRefresher {
    /// The client to the upstream.
    pub client: HttpClient,
    /// The upstream MCP URL.
    pub url: Uri,
    /// Limit of one request.
    pub timeout: Duration,
    /// Where catalogs go.
    pub feed: EngineFeed,
    /// Signalled by the proxy when a tool or prompt list change passes.
    pub list_changed: Arc<Notify>,
    /// Periodic re-fetch (`None`: off).
    pub every: Option<Duration>,
    /// Whether the prompts are fetched too (prompts are governed).
    pub prompts: bool,
}

impl ToolsRefresher {
    /// Fetches now, then on every list change and timer tick, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let Some(tools) = fetch_until_answered(
                &self.client,
                &self.url,
                self.timeout,
                self.prompts,
                &shutdown,
            )
            .await
            else {
                return;
            };
            tracing::info!(tools = tools.tools.len(), prompts = tools.prompts.len(), upstream = %self.url, "tool catalog loaded from the upstream");
            // Validating held-back policies may take seconds: off the runtime.
            let (feed, catalog) = (self.feed.clone(), tools.catalog());
            if tokio::task::spawn_blocking(move || feed.set_catalog(catalog))
                .await
                .is_err()
            {
                tracing::error!("tool catalog task failed");
            }
            let timer = async {
                match self.every {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.list_changed.notified() => {
                    tracing::info!("the upstream's tool list changed; fetching it again");
                }
                () = timer => {}
            }
        }
    }
}
