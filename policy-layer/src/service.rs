//! [`PolicyService`]: the order of the steps, and nothing else (`docs/request-flow.md`).
//!
//! 1. [`protocol`](crate::protocol): the method, the headers that decide something, the
//!    protocol version and the `Origin`; refused requests go no further.
//! 2. The RFC 9728 metadata document, for whoever asks ([`crate::auth::metadata`]).
//! 3. [`auth`](crate::auth): who calls; whether they may call at all (`InvokeGateway`, when
//!    governed); then whether the session presented is theirs.
//! 4. GET and DELETE go on without a body; a POST is read, parsed ([`crate::jsonrpc`]), the
//!    policy session header of temporal policies checked, each tools/call checked against the
//!    rate limits ([`crate::limit`]), the policy session opened (`decide/temporal.rs`) and each
//!    message decided
//!    ([`crate::decide`]), the session's new events recorded; what is allowed goes on, the rest is answered here. What goes on
//!    carries the verified caller as an `Arc<Identity>` request extension, for the inner
//!    service to read (never a header the client could write).
//! 5. The reply is rewritten ([`crate::filter`]): list answers filtered, the server's
//!    requests decided (a denied one answered to the server through a clone of the inner
//!    service), local answers merged; a session it hands out is bound to the caller.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower_service::Service;
use tracing::Instrument;

use crate::body::{BoxError, PolicyBody};
use crate::decide::{self, Verdict};
use crate::exchange::{Exchange, Shared};
use crate::filter::{self, ListKind, PendingList, Post, Rewrite, ServerAnswers};
use crate::jsonrpc::{self, Envelope};
use crate::limit;
use crate::model::Capability;
use crate::protocol::session::session_id;
use crate::protocol::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID, Route, headers, method};
use crate::reply::{self, Refusal};
use crate::telemetry;

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
        Box::pin(async move {
            match handle(&shared, inner, req).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(refusal)) => Ok(refusal.into_response()),
                Err(e) => Err(e),
            }
        })
    }
}

/// One request through the steps; a refusal at any step is the reply.
async fn handle<S, B, ResB>(
    shared: &Arc<Shared>,
    mut inner: S,
    req: Request<B>,
) -> Result<Result<Reply<ResB>, Refusal>, S::Error>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let checked = Route::of(&parts.method).and_then(|route| {
        let version = headers::check(&parts.headers)?;
        shared.origins.check(&parts.headers)?;
        Ok((route, version))
    });
    let (route, version) = match checked {
        Ok(checked) => checked,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Some(document) = shared
        .gate
        .metadata
        .as_ref()
        .and_then(|m| m.serve(&parts, &shared.gate.proxies))
    {
        return Ok(Ok(document));
    }
    let identity = match shared.gate.authenticate(&parts).await {
        Ok(identity) => identity,
        Err(refusal) => {
            if let Refusal::Unauthorized { error, .. } = &refusal {
                shared.observer.on_auth_failure(error.reason());
                tracing::info!(reason = error.reason(), "request refused: {error}");
            }
            return Ok(Err(refusal));
        }
    };
    if let Err(refusal) = decide::invoke::invoke(shared, &parts, &identity, version) {
        return Ok(Err(refusal));
    }
    if let Err(refusal) = shared.sessions.check(&parts.headers, &identity) {
        return Ok(Err(refusal));
    }

    if route != Route::Post {
        if let Err(refusal) = method::empty_body(&parts.method, body).await {
            return Ok(Err(refusal));
        }
        let span = telemetry::stream_span(&parts.method, &parts.headers);
        let exchange = Exchange::new(shared, identity, version, span.clone());
        let ending = (route == Route::Delete)
            .then(|| session_id(&parts.headers).map(str::to_owned))
            .flatten();
        let answers = (route == Route::Get)
            .then(|| server_answers(shared, &inner, &parts))
            .flatten();
        upstream_headers(&mut parts.headers);
        parts.extensions.insert(Arc::clone(&exchange.identity));
        let reply = inner
            .call(Request::from_parts(parts, B::from(Bytes::new())))
            .instrument(span)
            .await?;
        if let Some(id) = ending.filter(|_| reply.status().is_success()) {
            shared.sessions.end(&id);
        }
        let rewrite = Rewrite::stream(exchange, answers);
        return Ok(Ok(filter::rewrite(reply, rewrite).await));
    }

    let envelope = match read_post(shared, &parts, body, version).await {
        Ok(envelope) => envelope,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let span = telemetry::request_span(&envelope, &parts.headers);
    let exchange = Exchange::new(shared, identity, version, span.clone());
    // The policy session header first: a request refused for it is not charged by the limits.
    let policy_session = match decide::temporal::session_id(&exchange, &parts.headers, &envelope) {
        Ok(id) => id,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut limited = match limit::step::check(&exchange, &parts.headers, &envelope)
        .instrument(span.clone())
        .await
    {
        Ok(limited) => limited,
        Err(throttled) => return Ok(Ok(throttled)),
    };
    let mut session = match decide::temporal::open(&exchange, policy_session, &envelope)
        .instrument(span.clone())
        .await
    {
        Ok(session) => session,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut keep: Vec<bool> = Vec::with_capacity(envelope.messages.len());
    let mut answers = Vec::new();
    let mut lists = Vec::new();
    let govern = shared.engine.govern();
    span.in_scope(|| {
        for (i, message) in envelope.messages.iter().enumerate() {
            if let (Some(kind), Some(id)) =
                (message.method().and_then(ListKind::of_method), message.id())
                && govern.governs(kind.capability())
            {
                lists.push(PendingList {
                    id: id.clone(),
                    kind,
                });
            }
            if let Some(answer) = limited.refusal(i) {
                keep.push(false);
                answers.push(answer);
                continue;
            }
            match decide::decide(&exchange, message, &mut session) {
                Verdict::Forward => {
                    keep.push(true);
                    limited.forwarded(i);
                }
                Verdict::Answer(answer) => {
                    keep.push(false);
                    answers.push(answer);
                }
            }
        }
    });
    let completions = match session.commit().await {
        Ok(completions) => completions,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if keep.iter().all(|k| !k) {
        let body = reply::join(&answers, envelope.batch);
        return Ok(Ok(reply::http_json(StatusCode::OK, body)));
    }
    let body = envelope.subset(&keep);
    let rewrite = Rewrite {
        lists,
        local_answers: answers,
        batch: envelope.batch,
        exchange,
        server_answers: server_answers(shared, &inner, &parts),
        completions,
    };
    upstream_headers(&mut parts.headers);
    parts
        .extensions
        .insert(Arc::clone(&rewrite.exchange.identity));
    let reply = inner
        .call(Request::from_parts(parts, B::from(body)))
        .instrument(span)
        .await?;
    if let Some(id) = session_id(reply.headers()) {
        shared.sessions.bind(id, &rewrite.exchange.identity);
    }
    Ok(Ok(limited.hold(filter::rewrite(reply, rewrite).await)))
}

/// Reads and parses a POST: JSON, within the size limit, strict JSON-RPC, and routing headers
/// that agree with it.
async fn read_post<B>(
    shared: &Shared,
    parts: &http::request::Parts,
    body: B,
    version: crate::protocol::ProtocolVersion,
) -> Result<Envelope, Refusal>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if !is_json(&parts.headers) {
        return Err(Refusal::UnsupportedMediaType);
    }
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
        return Err(Refusal::UnsupportedEncoding(encoding));
    }
    let settings = &shared.settings;
    let bytes = match Limited::new(body, settings.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(Refusal::TooLarge(settings.max_body_bytes));
        }
        Err(_) => return Err(Refusal::Unreadable),
    };
    let envelope = jsonrpc::parse(&bytes, settings.max_batch)?;
    headers::check_routing(&parts.headers, &envelope, version)?;
    Ok(envelope)
}

/// Largest reply to an answer of ours to a server's request that is read (and dropped).
const MAX_ANSWER_REPLY_BYTES: usize = 64 * 1024;

/// Where the answers to the server's denied requests on this request's stream go, when
/// server requests are governed: POSTs to a clone of `inner`, in the session (and with the
/// credentials and protocol version) of the request whose stream carries them.
fn server_answers<S, B, ResB>(
    shared: &Shared,
    inner: &S,
    parts: &http::request::Parts,
) -> Option<ServerAnswers>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: From<Bytes> + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    if !shared.engine.govern().governs(Capability::ServerRequests) {
        return None;
    }
    let uri = parts.uri.clone();
    let extensions = parts.extensions.clone();
    let mut headers = HeaderMap::new();
    for name in [
        header::AUTHORIZATION.as_str(),
        MCP_SESSION_ID,
        MCP_PROTOCOL_VERSION,
    ] {
        if let Some(value) = parts.headers.get(name)
            && let Ok(name) = http::HeaderName::from_bytes(name.as_bytes())
        {
            headers.insert(name, value.clone());
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    upstream_headers(&mut headers);
    // The closure is shared by the task that sends; the service need not be `Sync`.
    let inner = Mutex::new(inner.clone());
    let post: Post = Arc::new(move |answer: String| {
        let mut service = inner.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut request = Request::new(B::from(Bytes::from(answer)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        *request.extensions_mut() = extensions.clone();
        Box::pin(async move {
            let ready = futures_util::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .is_ok();
            let sent = if ready {
                service.call(request).await.ok()
            } else {
                None
            };
            let Some(reply) = sent else {
                tracing::warn!("the answer to the server's denied request could not be sent");
                return;
            };
            let status = reply.status();
            let _ = Limited::new(reply.into_body(), MAX_ANSWER_REPLY_BYTES)
                .collect()
                .await;
            if !status.is_success() {
                tracing::warn!(%status, "the server refused the answer to its denied request");
            }
        })
    });
    Some(ServerAnswers::new(post))
}

/// What the inner service is sent besides the body: the reply must come in a form the filter
/// reads (no compression), and a body the layer rebuilt has no length of the client's.
fn upstream_headers(headers: &mut http::HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    );
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}
