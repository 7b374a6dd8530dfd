//! The MCP listener's service: the MCP path goes through the policy layer to the upstream (the
//! layer decides every method), and so does a GET of the RFC 9728 metadata the layer serves
//! when authentication is on; anything else is 404. The request's W3C trace id is made available to the decision log and,
//! when traces are exported, its trace context becomes the parent of the request span.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use opentelemetry::context::FutureExt as _;
use policy_layer::auth::RESOURCE_METADATA_PATH;
use policy_layer::{PolicyBody, PolicyService};
use tower::ServiceExt;

use super::body::ProxyBody;
use super::error::{NOT_FOUND_CODE, rpc_error};
use super::upstream::Upstream;
use crate::observe::decision_log::{TRACE_ID, trace_id_from_traceparent};
use crate::observe::recording::{CALLER, Identify, ScopedBody};
use crate::observe::telemetry;

/// Routes client requests.
#[derive(Clone)]
pub struct McpService {
    path: Arc<str>,
    /// Whether the layer serves RFC 9728 metadata (authentication is on).
    metadata: bool,
    policy: PolicyService<Upstream>,
    /// With a recording: how the caller's identity is learnt for it.
    identify: Option<Identify>,
}

impl McpService {
    /// Serves `path` with `policy`, and the metadata paths when `metadata`.
    #[must_use]
    pub fn new(path: &str, metadata: bool, policy: PolicyService<Upstream>) -> Self {
        Self {
            path: Arc::from(path),
            metadata,
            policy,
            identify: None,
        }
    }

    /// Makes each request's authenticated caller available to the recording
    /// (`log.record_arguments_to`) as [`CALLER`].
    #[must_use]
    pub fn identify(self, identify: Option<Identify>) -> Self {
        Self { identify, ..self }
    }

    /// Whether the request goes to the layer.
    fn routes(&self, request: &Request<Incoming>) -> bool {
        let path = request.uri().path();
        path == &*self.path
            || (self.metadata
                && request.method() == http::Method::GET
                && path.starts_with(RESOURCE_METADATA_PATH))
    }
}

impl tower::Service<Request<Incoming>> for McpService {
    type Response = Response<ScopedBody<PolicyBody<ProxyBody>>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        if !self.routes(&request) {
            let response = rpc_error(
                StatusCode::NOT_FOUND,
                NOT_FOUND_CODE,
                &format!("not found: the MCP endpoint is {}", self.path),
            );
            return Box::pin(async move { Ok(response.map(|body| ScopedBody::new(body, None))) });
        }
        let trace_id = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(trace_id_from_traceparent)
            .unwrap_or_default();
        let remote = telemetry::remote_context(request.headers());
        let policy = self.policy.clone();
        let call: BoxFuture<'static, _> = match self.identify.clone() {
            None => Box::pin(async move {
                let response = TRACE_ID
                    .scope(trace_id, policy.oneshot(request.map(ProxyBody::incoming)))
                    .await;
                response.map(|response| response.map(|body| ScopedBody::new(body, None)))
            }),
            // A list is filtered while its body is polled: the body keeps the scope too.
            Some(identify) => Box::pin(async move {
                let caller = identify.caller(request.headers()).await;
                let scope = (caller.clone(), trace_id.clone());
                let call = policy.oneshot(request.map(ProxyBody::incoming));
                let response = CALLER.scope(caller, TRACE_ID.scope(trace_id, call)).await;
                response.map(|response| response.map(|body| ScopedBody::new(body, Some(scope))))
            }),
        };
        match remote {
            // The request span, made inside, takes the client's span as its parent.
            Some(context) => Box::pin(call.with_context(context)),
            None => Box::pin(call),
        }
    }
}
