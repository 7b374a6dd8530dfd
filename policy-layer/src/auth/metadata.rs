//! RFC 9728 protected resource metadata, served at the exact URL that a 401's
//! `WWW-Authenticate` advertises, naming the resource by the scheme and host the client used
//! (a fixed public URL, or the request's host; forwarded headers only from trusted proxies),
//! so an MCP client can follow the header to the authorization server.

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri};
use serde_json::Value;

use crate::protocol::TrustedProxies;
use crate::reply;

/// Where RFC 9728 protected resource metadata is served (and below it, the resource's path).
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The metadata document and where the resource is.
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    /// The document (`authorization_servers`, scopes, ...); `resource` is set per request.
    document: Value,
    /// The MCP endpoint's path (`/mcp`).
    path: String,
    /// `https://mcp.example.com` and its path, when the public URL is fixed.
    public: Option<(String, String)>,
}

impl ProtectedResource {
    /// Serves `document`, whose `resource` names the MCP endpoint; its path is kept, its
    /// scheme and host become those the client used (see [`Self::with_public_url`]).
    #[must_use]
    pub fn new(document: Value) -> Self {
        let path = document
            .get("resource")
            .and_then(Value::as_str)
            .and_then(|r| r.parse::<Uri>().ok())
            .map_or_else(|| "/".to_owned(), |u| u.path().to_owned());
        Self {
            document,
            path,
            public: None,
        }
    }

    /// Names the resource by `url` whatever host the request came to (the URL clients use
    /// behind a load balancer or ingress).
    #[must_use]
    pub fn with_public_url(mut self, url: &Uri) -> Self {
        if let (Some(scheme), Some(authority)) = (url.scheme_str(), url.authority()) {
            let path = match url.path() {
                "" | "/" => self.path.clone(),
                p => p.to_owned(),
            };
            self.public = Some((format!("{scheme}://{authority}"), path));
        }
        self
    }

    /// The origin and path of the resource, as the client of `parts` reaches it.
    fn locate(&self, parts: &Parts, proxies: &TrustedProxies) -> (String, String) {
        if let Some((origin, path)) = &self.public {
            return (origin.clone(), path.clone());
        }
        let (scheme, host) = proxies.client_origin(parts);
        (format!("{scheme}://{host}"), self.path.clone())
    }

    /// The metadata URL a 401 advertises (RFC 9728 section 3.1: the well-known path, then
    /// the resource's path).
    #[must_use]
    pub fn metadata_url(&self, parts: &Parts, proxies: &TrustedProxies) -> String {
        let (origin, path) = self.locate(parts, proxies);
        let path = if path == "/" { "" } else { path.as_str() };
        format!("{origin}{RESOURCE_METADATA_PATH}{path}")
    }

    /// The document, for a GET of the metadata URL (or of the bare well-known path).
    #[must_use]
    pub fn serve<B: From<Bytes>>(
        &self,
        parts: &Parts,
        proxies: &TrustedProxies,
    ) -> Option<Response<B>> {
        if parts.method != Method::GET || !parts.uri.path().starts_with(RESOURCE_METADATA_PATH) {
            return None;
        }
        let (origin, path) = self.locate(parts, proxies);
        let mut document = self.document.clone();
        document["resource"] = Value::from(format!("{origin}{path}"));
        Some(reply::http_json(
            StatusCode::OK,
            Bytes::from(document.to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use serde_json::json;

    fn get(path: &str, host: &str) -> Parts {
        Request::get(path)
            .header("host", host)
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    fn document() -> Value {
        json!({"resource": "http://127.0.0.1:8080/mcp", "authorization_servers": ["https://issuer"]})
    }

    #[test]
    fn the_advertised_url_serves_the_document_for_the_host_used() {
        let resource = ProtectedResource::new(document());
        let proxies = TrustedProxies::default();
        let request = get("/mcp", "localhost:9999");
        let url = resource.metadata_url(&request, &proxies);
        assert_eq!(
            url,
            "http://localhost:9999/.well-known/oauth-protected-resource/mcp"
        );
        let metadata = get(
            "/.well-known/oauth-protected-resource/mcp",
            "localhost:9999",
        );
        let reply: Response<Bytes> = resource.serve(&metadata, &proxies).expect("served");
        let body: Value = serde_json::from_slice(reply.body()).expect("json");
        assert_eq!(body["resource"], "http://localhost:9999/mcp");
        assert_eq!(body["authorization_servers"][0], "https://issuer");
        assert!(
            resource
                .serve::<Bytes>(&get("/mcp", "h"), &proxies)
                .is_none()
        );
    }

    #[test]
    fn a_public_url_fixes_scheme_host_and_path() {
        let public: Uri = "https://mcp.example.com/tools/mcp".parse().expect("uri");
        let resource = ProtectedResource::new(document()).with_public_url(&public);
        let proxies = TrustedProxies::default();
        let request = get("/mcp", "10.0.0.1:8080");
        assert_eq!(
            resource.metadata_url(&request, &proxies),
            "https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp"
        );
        let reply: Response<Bytes> = resource
            .serve(&get("/.well-known/oauth-protected-resource", "x"), &proxies)
            .expect("served");
        let body: Value = serde_json::from_slice(reply.body()).expect("json");
        assert_eq!(body["resource"], "https://mcp.example.com/tools/mcp");
    }
}
