//! [`PolicyService`]: reads each MCP request, decides its tool calls, forwards what is allowed
//! and answers the rest itself (SPEC section 2).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;
use tower_service::Service;
use tracing::{Instrument, field};

use crate::auth::{AuthError, Identity};
use crate::body::{BoxError, PolicyBody};
use crate::config::Mode;
use crate::engine::{AuthorizeError, Snapshot};
use crate::filter::Rewrite;
use crate::filter::sse::SseRewriter;
use crate::jsonrpc::{self, Envelope, INVALID_PARAMS, INVALID_REQUEST, Message};
use crate::layer::{IdentitySource, Shared};
use crate::record::CallRecord;
use crate::response;

/// Header of stateless (2026-07-28) requests naming the method.
pub const MCP_METHOD: &str = "mcp-method";
/// Header of stateless (2026-07-28) requests naming the tool, prompt or resource.
pub const MCP_NAME: &str = "mcp-name";
/// The protocol version header.
pub const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// The first protocol version whose requests carry `Mcp-Method` / `Mcp-Name`.
pub const STATELESS_VERSION: &str = "2026-07-28";

/// A tower service that enforces Cedar policies on the MCP messages sent to `inner`.
pub struct PolicyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for PolicyService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for PolicyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> PolicyService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

type Reply<B> = Response<PolicyBody<B>>;

impl<S, B, ResB> Service<Request<B>> for PolicyService<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Reply<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(handle(shared, inner, req))
    }
}

/// Where RFC 9728 protected resource metadata is served.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// JSON-RPC error code of a request refused by authentication.
pub const UNAUTHORIZED_CODE: i64 = -32001;

/// A reply made by the layer itself.
fn local<B>(status: StatusCode, body: Bytes) -> Reply<B> {
    response::http_json(status, body)
}

fn rpc_error<B>(status: StatusCode, code: i64, message: &str) -> Reply<B> {
    local(
        status,
        Bytes::from(response::jsonrpc_error(&Value::Null, code, message)),
    )
}

async fn handle<S, B, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<B>,
) -> Result<Reply<ResB>, S::Error>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    B: Body + From<Bytes>,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    if let Some(document) = &shared.resource_metadata
        && parts.method == Method::GET
        && parts.uri.path().starts_with(RESOURCE_METADATA_PATH)
    {
        return Ok(local(StatusCode::OK, Bytes::from(document.to_string())));
    }
    let identity = match authenticate(&shared, &parts).await {
        Ok(identity) => identity,
        Err(reply) => return Ok(reply),
    };
    if parts.method != Method::POST {
        // GET event streams and DELETE of a session carry no tool call.
        let reply = inner.call(Request::from_parts(parts, body)).await?;
        return Ok(reply.map(|body| PolicyBody::Inner { body }));
    }
    if !is_json(&parts.headers) {
        return Ok(rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_REQUEST,
            "unsupported content type: expected application/json",
        ));
    }
    let settings = &shared.settings;
    let bytes = match Limited::new(body, settings.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            let message = format!("request body exceeds {} bytes", settings.max_body_bytes);
            return Ok(rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID_REQUEST,
                &message,
            ));
        }
        Err(_) => {
            return Ok(rpc_error(
                StatusCode::BAD_REQUEST,
                jsonrpc::PARSE_ERROR,
                "request body could not be read",
            ));
        }
    };
    let envelope = match jsonrpc::parse(&bytes, settings.max_batch) {
        Ok(envelope) => envelope,
        Err(e) => return Ok(rpc_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string())),
    };
    if let Err(message) = check_stateless_headers(&parts.headers, &envelope) {
        return Ok(rpc_error(
            StatusCode::BAD_REQUEST,
            jsonrpc::HEADER_MISMATCH,
            &message,
        ));
    }

    let snapshot = shared.engine.snapshot();
    let marked = protocol_version(&parts.headers).is_some_and(|v| v >= STATELESS_VERSION);
    let span = request_span(&envelope, &parts.headers);
    let mut forward: Vec<bool> = Vec::with_capacity(envelope.messages.len());
    let mut answers = Vec::new();
    let mut list_ids = Vec::new();
    span.in_scope(|| {
        for message in &envelope.messages {
            let answer = match (message.method(), message.id()) {
                (Some("tools/call"), Some(id)) => {
                    decide_call(&shared, snapshot.as_deref(), &identity, message, id, marked)
                }
                (Some("tools/call"), None) => {
                    // A call nobody can be answered about is never forwarded undecided.
                    Some(response::jsonrpc_error(
                        &Value::Null,
                        INVALID_REQUEST,
                        "invalid request: tools/call must be a request with an id",
                    ))
                }
                (Some("tools/list"), Some(id)) => {
                    list_ids.push(id.clone());
                    None
                }
                _ => None,
            };
            forward.push(answer.is_none());
            answers.extend(answer);
        }
    });

    if forward.iter().all(|f| !f) {
        return Ok(local(
            StatusCode::OK,
            response::join(&answers, envelope.batch),
        ));
    }
    let body = if answers.is_empty() {
        bytes
    } else {
        forward_subset(&envelope, &forward)
    };
    let rewrite = Rewrite {
        list_ids,
        local_answers: answers,
        batch: envelope.batch,
        marked,
        snapshot,
        identity,
        settings: Arc::clone(&shared.settings),
        observer: Arc::clone(&shared.observer),
        span: span.clone(),
    };
    let mut upstream = Request::from_parts(parts, B::from(body));
    upstream.headers_mut().remove(header::CONTENT_LENGTH);
    let reply = inner.call(upstream).instrument(span).await?;
    if !rewrite.is_needed() {
        return Ok(reply.map(|body| PolicyBody::Inner { body }));
    }
    Ok(rewrite_reply(reply, rewrite, shared.settings.max_list_bytes).await)
}

/// Rewrites the upstream's reply: filters list responses and merges local answers.
async fn rewrite_reply<ResB>(reply: Response<ResB>, mut rewrite: Rewrite, max: usize) -> Reply<ResB>
where
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let (mut parts, body) = reply.into_parts();
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
    if !success && !content_type.starts_with("application/json") {
        // An upstream (or proxy) error that is not JSON-RPC: it answers nothing, pass it on.
        return Response::from_parts(parts, PolicyBody::Inner { body });
    }
    let bytes = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body = if content_type.starts_with("application/json") || bytes.is_empty() {
        rewrite.json_body(&bytes, success)
    } else {
        rewrite.json_body(b"", success)
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if parts.status == StatusCode::ACCEPTED {
        parts.status = StatusCode::OK;
    }
    Response::from_parts(parts, PolicyBody::full(body))
}

/// The body to forward when some messages were answered locally.
fn forward_subset(envelope: &Envelope, forward: &[bool]) -> Bytes {
    let kept: Vec<&serde_json::Map<String, Value>> = envelope
        .messages
        .iter()
        .zip(forward)
        .filter(|(_, f)| **f)
        .map(|(m, _)| &m.value)
        .collect();
    let bytes = if envelope.batch {
        serde_json::to_vec(&kept)
    } else {
        serde_json::to_vec(kept[0])
    };
    Bytes::from(bytes.unwrap_or_default())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Proves who the caller is; a refusal is the 401/403 reply itself.
async fn authenticate<B>(
    shared: &Shared,
    parts: &http::request::Parts,
) -> Result<Arc<Identity>, Reply<B>> {
    // RFC 6750 section 2.3 tokens are never accepted, and a request carrying one is refused
    // outright, so the token is not forwarded upstream in the URL either.
    let query_token = parts.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("access_token"))
    });
    let error = match &shared.identity {
        _ if query_token => AuthError::Malformed("a token in the query string is never accepted"),
        IdentitySource::Authenticator(authenticator) => {
            match authenticator.authenticate(&parts.headers).await {
                Ok(identity) => return Ok(identity),
                Err(e) => e,
            }
        }
        IdentitySource::Extension => match parts.extensions.get::<Arc<Identity>>() {
            Some(identity) => return Ok(Arc::clone(identity)),
            None => AuthError::MissingToken,
        },
    };
    shared.observer.on_auth_failure(error.reason());
    tracing::info!(reason = error.reason(), "request refused: {error}");
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let metadata_url = format!("http://{host}{RESOURCE_METADATA_PATH}");
    let message = format!("unauthorized: {error}");
    let mut reply = rpc_error(error.status(), UNAUTHORIZED_CODE, &message);
    reply.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        error.www_authenticate(&metadata_url),
    );
    Err(reply)
}

/// The request's `MCP-Protocol-Version`.
fn protocol_version(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
}

/// Stateless requests name their method (and tool) in headers too: both must agree.
fn check_stateless_headers(headers: &HeaderMap, envelope: &Envelope) -> Result<(), String> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let method_header = header(MCP_METHOD);
    let name_header = header(MCP_NAME);
    let stateless = header(MCP_PROTOCOL_VERSION).is_some_and(|v| v >= STATELESS_VERSION);
    if method_header.is_none() && name_header.is_none() && !stateless {
        return Ok(());
    }
    let [message] = envelope.messages.as_slice() else {
        return Err("a stateless request carries exactly one message".to_owned());
    };
    let Some(method) = message.method() else {
        return Ok(());
    };
    if stateless && method_header.is_none() {
        return Err(format!(
            "header Mcp-Method is required by protocol {STATELESS_VERSION}"
        ));
    }
    if let Some(h) = method_header.filter(|h| *h != method) {
        return Err(format!(
            "header Mcp-Method `{h}` does not match the body's method `{method}`"
        ));
    }
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return Ok(()),
    };
    let body_name = message
        .params()
        .and_then(|p| p.get(key))
        .and_then(Value::as_str);
    match (name_header, body_name) {
        (Some(h), Some(b)) if h == b => Ok(()),
        (None, _) if !stateless => Ok(()),
        (h, b) => Err(format!(
            "header Mcp-Name `{}` does not match the body's {key} `{}`",
            h.unwrap_or_default(),
            b.unwrap_or_default()
        )),
    }
}

/// The request span, named per the OTel MCP semantic conventions: `{method} {tool}`.
fn request_span(envelope: &Envelope, headers: &HeaderMap) -> tracing::Span {
    let first = envelope.messages.first();
    let method = first.and_then(Message::method).unwrap_or("response");
    let tool = first
        .filter(|_| method == "tools/call")
        .and_then(Message::params)
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str);
    let name = match tool {
        Some(tool) => format!("{method} {tool}"),
        None => method.to_owned(),
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    tracing::info_span!(
        "mcp.request",
        otel.name = %name,
        otel.kind = "server",
        mcp.method.name = method,
        gen_ai.tool.name = tool,
        jsonrpc.request.id = first.and_then(Message::id).map(|id| field::display(id.to_string())),
        mcp.session.id = header("mcp-session-id"),
        mcp.protocol.version = header(MCP_PROTOCOL_VERSION),
        mcp.batch.size = envelope.messages.len(),
    )
}

/// Decides one tools/call: `None` forwards it, `Some(answer)` answers it locally.
fn decide_call(
    shared: &Shared,
    snapshot: Option<&Snapshot>,
    identity: &Identity,
    message: &Message,
    id: &Value,
    marked: bool,
) -> Option<String> {
    let settings = &shared.settings;
    let Some(params) = message.params() else {
        return Some(response::jsonrpc_error(
            id,
            INVALID_PARAMS,
            "invalid params: `params` must be an object",
        ));
    };
    let Some(tool) = params.get("name").and_then(Value::as_str) else {
        return Some(response::jsonrpc_error(
            id,
            INVALID_PARAMS,
            "invalid params: `params.name` must be a string",
        ));
    };
    let arguments = params.get("arguments");
    let started = Instant::now();
    let span = tracing::info_span!(
        "AuthorizeAction",
        otel.kind = "internal",
        policy.engine = %settings.engine_name,
        policy.mode = settings.mode.as_str(),
        policy.action = field::Empty,
        gen_ai.tool.name = tool,
        enduser.id = field::Empty,
        policy.decision = field::Empty,
        policy.reason = field::Empty,
        policy.determining_policies = field::Empty,
        policy.errors = field::Empty,
        policy.log_only.matched_policies = field::Empty,
        policy.log_only.flipping_policies = field::Empty,
    );
    let _entered = span.enter();
    let enforce = settings.mode == Mode::Enforce;
    let Some(snapshot) = snapshot else {
        let error = AuthorizeError::Engine("no usable policy set".to_owned());
        span.record("policy.decision", "ERROR");
        span.record("policy.errors", "no usable policy set");
        observe(
            shared,
            None,
            identity,
            tool,
            id,
            Err(&error),
            arguments,
            !enforce,
            started,
        );
        return enforce.then(|| {
            response::evaluation_failed(
                id,
                "no usable policy set",
                settings.exception_level,
                marked,
            )
        });
    };
    let model = snapshot.model();
    if !span.is_disabled() {
        span.record("policy.action", model.action_id(tool).as_str());
        span.record("enduser.id", field::display(model.principal_uid(identity)));
    }
    let result = snapshot.authorize(identity, tool, arguments);
    let answer = match &result {
        Ok(outcome) => {
            span.record(
                "policy.decision",
                if outcome.allowed() { "ALLOW" } else { "DENY" },
            );
            if !outcome.determining.is_empty() {
                span.record(
                    "policy.determining_policies",
                    outcome.determining.join(",").as_str(),
                );
            }
            if !outcome.errors.is_empty() {
                span.record("policy.errors", outcome.errors.join("; ").as_str());
            }
            if !outcome.shadow_matched.is_empty() {
                span.record(
                    "policy.log_only.matched_policies",
                    outcome.shadow_matched.join(",").as_str(),
                );
                span.record(
                    "policy.log_only.flipping_policies",
                    outcome.shadow_flipping.join(",").as_str(),
                );
            }
            if outcome.allowed() {
                None
            } else {
                span.record("policy.reason", outcome.deny_reason().as_str());
                enforce.then(|| {
                    response::denied(
                        id,
                        outcome,
                        settings.deny_style,
                        settings.exception_level,
                        marked,
                    )
                })
            }
        }
        Err(e) => {
            span.record("policy.decision", "ERROR");
            span.record("policy.errors", field::display(e));
            enforce.then(|| match e {
                AuthorizeError::Input(e) => response::validation_failed(id, &e.to_string(), marked),
                AuthorizeError::Engine(e) => {
                    response::evaluation_failed(id, e, settings.exception_level, marked)
                }
            })
        }
    };
    observe(
        shared,
        Some(snapshot),
        identity,
        tool,
        id,
        result.as_ref(),
        arguments,
        answer.is_none(),
        started,
    );
    answer
}

#[allow(clippy::too_many_arguments)]
fn observe(
    shared: &Shared,
    snapshot: Option<&Snapshot>,
    identity: &Identity,
    tool: &str,
    id: &Value,
    outcome: Result<&crate::engine::Outcome, &AuthorizeError>,
    arguments: Option<&Value>,
    forwarded: bool,
    started: Instant,
) {
    if !shared.observer.enabled() {
        return;
    }
    let (principal, action) = match snapshot {
        Some(s) => (
            s.model().principal_uid(identity).to_string(),
            s.model().action_id(tool),
        ),
        None => (identity.subject.clone(), tool.to_owned()),
    };
    shared.observer.on_call(&CallRecord {
        engine: &shared.settings.engine_name,
        mode: shared.settings.mode,
        principal,
        tool,
        action,
        request_id: id,
        outcome,
        arguments,
        forwarded,
        latency: started.elapsed(),
    });
}
