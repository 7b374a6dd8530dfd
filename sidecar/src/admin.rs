//! The admin listener: `/livez` (the process serves), `/readyz` (policies and, with
//! `schema = "upstream"`, the tool catalog are loaded) and `/metrics` (OpenMetrics
//! when asked for, as Prometheus does, else the Prometheus text format).

use std::convert::Infallible;
use std::sync::Arc;

use policy_layer::auth::Authenticator;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::metrics::{self, Metrics};
use crate::state::EngineFeed;

/// The admin service.
#[derive(Clone)]
pub struct Admin {
    metrics: Arc<Metrics>,
    feed: EngineFeed,
    authenticator: Option<Authenticator>,
}

impl Admin {
    /// Serves `metrics` and the readiness of `feed`.
    #[must_use]
    pub fn new(
        metrics: Arc<Metrics>,
        feed: EngineFeed,
        authenticator: Option<Authenticator>,
    ) -> Self {
        Self {
            metrics,
            feed,
            authenticator,
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
            "/readyz" if self.authenticator.as_ref().is_some_and(|a| !a.is_ready()) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: waiting for the issuers' signing keys\n".to_owned(),
            ),
            "/readyz" if self.feed.is_ready() => text(StatusCode::OK, "ready\n".to_owned()),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: waiting for {}\n", self.feed.waiting_for()),
            ),
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
