//! The upstream client: the [`Upstream`] service that the policy layer wraps, forwarding each
//! request to the upstream URL (query string kept) and streaming the answer back.
//!
//! - Hop-by-hop headers are dropped both ways; `Host` becomes the upstream's authority (the
//!   upstream is local and may check it); everything else passes, including `Mcp-Session-Id`,
//!   `MCP-Protocol-Version`, `Last-Event-ID` and `traceparent` (which, when traces are exported,
//!   names the sidecar's request span as parent). `Authorization` is dropped unless
//!   `[upstream] forward_authorization = true`: the token was for the sidecar.
//! - Bodies stream both ways; only the tools/list answer the layer filters is buffered.
//! - An upstream that is down, refuses or times out gives 502 with a JSON-RPC error.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use policy_layer::auth::Identity;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::body::{ProxyBody, StreamWatch};
use super::error::{INTERNAL_ERROR, error_chain, rpc_error};
use crate::config::{IdentityField, UpstreamSettings};
use crate::observe::metrics::Metrics;
use crate::observe::telemetry;

/// The HTTP client to the upstream: pooled, HTTP/1.1.
pub type HttpClient = Client<HttpConnector, ProxyBody>;

/// How long an idle pooled connection to the upstream is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// A pooled client with `connect_timeout`.
#[must_use]
pub fn client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The innermost service: sends a request to the upstream URL and streams its answer back.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<UpstreamInner>,
}

struct UpstreamInner {
    client: HttpClient,
    settings: UpstreamSettings,
    metrics: Arc<Metrics>,
    list_changed: Arc<Notify>,
    shutdown: CancellationToken,
}

impl Upstream {
    /// A service sending to the upstream of `settings` through `client`; `list_changed` is
    /// woken when a tool list change passes in an event stream, and `shutdown` ends open GET
    /// event streams.
    #[must_use]
    pub fn new(
        client: HttpClient,
        settings: UpstreamSettings,
        metrics: Arc<Metrics>,
        list_changed: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(UpstreamInner {
                client,
                settings,
                metrics,
                list_changed,
                shutdown,
            }),
        }
    }

    /// The upstream URI for a request to `uri`: the upstream URL with the request's query.
    fn target(&self, uri: &Uri) -> Uri {
        let url = &self.inner.settings.url;
        let Some(query) = uri.query() else {
            return url.clone();
        };
        let path = url.path();
        let mut parts = url.clone().into_parts();
        parts.path_and_query = format!("{path}?{query}").parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| url.clone())
    }
}

impl tower::Service<Request<ProxyBody>> for Upstream {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(request).await) })
    }
}

impl Upstream {
    async fn forward(&self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        let inner = &self.inner;
        let (mut parts, body) = request.into_parts();
        let method = parts.method.clone();
        parts.uri = self.target(&parts.uri);
        strip_hop_by_hop(&mut parts.headers);
        // The client sets Host from the URI.
        parts.headers.remove(header::HOST);
        if !inner.settings.forward_authorization {
            parts.headers.remove(header::AUTHORIZATION);
        }
        identify(
            &inner.settings.identity_headers,
            parts.extensions.get::<Arc<Identity>>().map(|i| &**i),
            &mut parts.headers,
        );
        // The tool server's spans join the trace, as children of the request span.
        telemetry::inject(&mut parts.headers);
        parts.version = http::Version::HTTP_11;
        let timeout = inner.settings.timeout;
        let sent = tokio::time::timeout(
            timeout,
            inner.client.request(Request::from_parts(parts, body)),
        )
        .await;
        let response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return self.unavailable(&error_chain(&e)),
            Err(_) => {
                return self.unavailable(&format!("no answer within {} ms", timeout.as_millis()));
            }
        };
        inner.metrics.upstream(Some(response.status().as_u16()));
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let body = if is_sse {
            // A GET stream never ends by itself: end it at shutdown. A POST's stream is the
            // answer to a request in flight, which shutdown lets finish.
            let shutdown =
                (method == Method::GET).then(|| inner.shutdown.clone().cancelled_owned());
            ProxyBody::watched(
                body,
                StreamWatch::new(Arc::clone(&inner.list_changed), shutdown),
            )
        } else {
            ProxyBody::incoming(body)
        };
        Response::from_parts(parts, body)
    }

    fn unavailable(&self, why: &str) -> Response<ProxyBody> {
        self.inner.metrics.upstream(None);
        tracing::warn!(upstream = %self.inner.settings.url, error = why, "upstream unavailable");
        rpc_error(
            StatusCode::BAD_GATEWAY,
            INTERNAL_ERROR,
            &format!("upstream unavailable: {why}"),
        )
    }
}

/// Replaces the identity headers: whatever the client sent under those names is removed, and
/// the verified caller's values (when there is one) take their place. A value a header cannot
/// carry as it is (not visible ASCII) is percent-encoded.
fn identify(
    names: &[(IdentityField, HeaderName)],
    identity: Option<&Identity>,
    headers: &mut HeaderMap,
) {
    for (field, name) in names {
        headers.remove(name);
        let value = match (identity, field) {
            (Some(identity), IdentityField::Principal) => Some(identity.subject.as_str()),
            (Some(identity), IdentityField::Claim(claim)) => identity.tag(claim),
            (None, _) => None,
        };
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&header_text(v)).ok()) {
            headers.insert(name.clone(), value);
        }
    }
}

/// `text` with every byte that is not visible ASCII (or an inner space) percent-encoded, and
/// `%` itself, so the upstream can always decode what it gets.
fn header_text(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for b in text.trim().bytes() {
        if (b.is_ascii_graphic() && b != b'%') || b == b' ' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("mcp-session-id", HeaderValue::from_static("abc"));
        headers.insert("last-event-id", HeaderValue::from_static("7"));
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["mcp-session-id", "last-event-id"]);
    }

    #[tokio::test]
    async fn unreachable_upstream_is_a_502_with_a_jsonrpc_error() {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        // A port nobody listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let metrics = Arc::new(Metrics::new());
        let settings = UpstreamSettings {
            url: format!("http://127.0.0.1:{port}/mcp").parse().expect("uri"),
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            forward_authorization: false,
            identity_headers: Vec::new(),
        };
        let upstream = Upstream::new(
            client(settings.connect_timeout),
            settings,
            Arc::clone(&metrics),
            Arc::new(Notify::new()),
            CancellationToken::new(),
        );
        let request = Request::post("/mcp")
            .body(ProxyBody::full("{}"))
            .expect("request");
        let response = upstream.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["error"]["code"], INTERNAL_ERROR);
        assert!(
            value["error"]["message"]
                .as_str()
                .expect("message")
                .starts_with("upstream unavailable: ")
        );
        assert!(
            metrics
                .encode()
                .contains(r#"mcp_policy_upstream_responses_total{status="error"} 1"#)
        );
    }

    #[test]
    fn identity_headers_replace_what_the_client_sent() {
        let names = vec![
            (
                IdentityField::Principal,
                HeaderName::from_static("x-forwarded-user"),
            ),
            (
                IdentityField::Claim("email".into()),
                HeaderName::from_static("x-forwarded-email"),
            ),
            (
                IdentityField::Claim("groups".into()),
                HeaderName::from_static("x-forwarded-groups"),
            ),
        ];
        let identity = Identity {
            kind: policy_layer::auth::PrincipalKind::OAuthUser,
            subject: "alice".into(),
            tags: vec![
                ("email".into(), "alice@example.com".into()),
                ("groups".into(), r#"["a","b"]"#.into()),
            ],
            expires_at: None,
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-user", HeaderValue::from_static("admin"));
        headers.append("x-forwarded-user", HeaderValue::from_static("root"));
        headers.insert("x-forwarded-email", HeaderValue::from_static("forged"));
        identify(&names, Some(&identity), &mut headers);
        assert_eq!(headers.get_all("x-forwarded-user").iter().count(), 1);
        assert_eq!(headers["x-forwarded-user"], "alice");
        assert_eq!(headers["x-forwarded-email"], "alice@example.com");
        assert_eq!(headers["x-forwarded-groups"], r#"["a","b"]"#);
        // Without a verified caller, forged values are removed and nothing takes their place.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-user", HeaderValue::from_static("admin"));
        identify(&names, None, &mut headers);
        assert!(headers.get("x-forwarded-user").is_none());
        assert_eq!(header_text("Zoë\n%"), "Zo%C3%AB%0A%25");
    }
}
