//! The admin listener: `/livez` (the process serves), `/readyz` (the issuers' keys, the
//! policies and, with `schema = "upstream"`, the tool catalog are loaded; a state store that
//! does not answer is reported in its text, not its status) and `/metrics` (OpenMetrics when
//! asked for, as Prometheus does, else the Prometheus text format).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use policy_layer::auth::Authenticator;

use super::metrics::{self, Metrics};

/// Something `/readyz` waits for.
pub trait Readiness: Send + Sync {
    /// What is still missing (`None`: ready), as `/readyz` says it: `waiting for <this>`.
    fn waiting_for(&self) -> Option<&'static str>;

    /// A line `/readyz` adds to its text without changing its status (a degraded dependency).
    fn detail(&self) -> Option<String> {
        None
    }
}

impl Readiness for Authenticator {
    fn waiting_for(&self) -> Option<&'static str> {
        (!self.is_ready()).then_some("the issuers' signing keys")
    }
}

/// The admin service.
#[derive(Clone)]
pub struct Admin {
    metrics: Arc<Metrics>,
    ready: Arc<[Arc<dyn Readiness>]>,
}

impl Admin {
    /// Serves `metrics`, and `/readyz` once everything in `ready` is (the first that is not
    /// is named).
    #[must_use]
    pub fn new(metrics: Arc<Metrics>, ready: Vec<Arc<dyn Readiness>>) -> Self {
        Self {
            metrics,
            ready: ready.into(),
        }
    }

    /// Answers one admin request.
    #[must_use]
    pub fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String| {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        };
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".to_owned(),
            );
        }
        match request.uri().path() {
            "/livez" => text(StatusCode::OK, "ok\n".to_owned()),
            "/readyz" => match self.ready.iter().find_map(|r| r.waiting_for()) {
                None => {
                    let mut body = "ready\n".to_owned();
                    for detail in self.ready.iter().filter_map(|r| r.detail()) {
                        body.push_str(&detail);
                        body.push('\n');
                    }
                    text(StatusCode::OK, body)
                }
                Some(missing) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: waiting for {missing}\n"),
                ),
            },
            "/metrics" => {
                let accept = request
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let format = metrics::Format::negotiate(accept);
                let mut response = text(StatusCode::OK, self.metrics.encode_as(format));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    http::HeaderValue::from_static(format.content_type()),
                );
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /livez /readyz /metrics\n".to_owned(),
            ),
        }
    }
}

impl<B> tower::Service<Request<B>> for Admin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        std::future::ready(Ok(self.answer(&request)))
    }
}
