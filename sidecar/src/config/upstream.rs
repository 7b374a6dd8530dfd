//! `[upstream]`: the MCP tool server the sidecar stands in front of.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Uri;
use http::header::HeaderName;
use serde::Deserialize;

use super::error::KeyError;
use super::value;

/// Default limit for the upstream's response headers (the body then streams without limit).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default limit for connecting to the upstream.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// The section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    url: Option<String>,
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    forward_authorization: Option<bool>,
    identity_headers: Option<BTreeMap<String, String>>,
}

/// The upstream's settings.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The upstream MCP endpoint.
    pub url: Uri,
    /// Limit for the upstream's response headers.
    pub timeout: Duration,
    /// Limit for connecting to the upstream.
    pub connect_timeout: Duration,
    /// Whether the client's `Authorization` header is passed on to the upstream.
    pub forward_authorization: bool,
    /// Headers carrying the verified caller to the upstream: `principal` (the subject) or a
    /// claim name, and the header that carries it. Always removed from the client's request
    /// first.
    pub identity_headers: Vec<(IdentityField, HeaderName)>,
}

/// What an identity header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityField {
    /// The principal's id (the token's `sub`; `anonymous` without authentication).
    Principal,
    /// A claim, as the principal's tags carry it (strings as they are, other JSON as text).
    Claim(String),
}

/// Headers an identity header must not replace: they frame, route or authenticate the request.
const RESERVED: &[&str] = &[
    "host",
    "authorization",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "accept-encoding",
    "traceparent",
    "tracestate",
    "last-event-id",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
];

fn identity_headers(
    map: Option<BTreeMap<String, String>>,
) -> Result<Vec<(IdentityField, HeaderName)>, KeyError> {
    let key = "upstream.identity_headers";
    let mut out: Vec<(IdentityField, HeaderName)> = Vec::new();
    for (field, header) in map.unwrap_or_default() {
        let name = HeaderName::from_bytes(header.trim().as_bytes())
            .map_err(|_| KeyError::new(key, format!("\"{header}\" is not a header name")))?;
        if RESERVED.contains(&name.as_str()) || name.as_str().starts_with("proxy-") {
            return Err(KeyError::new(
                key,
                format!("\"{header}\" is a header the request itself needs"),
            ));
        }
        if out.iter().any(|(_, n)| *n == name) {
            return Err(KeyError::new(key, format!("\"{header}\" is named twice")));
        }
        let field = match field.as_str() {
            "principal" => IdentityField::Principal,
            "" => return Err(KeyError::new(key, "a claim name is empty")),
            claim => IdentityField::Claim(claim.to_owned()),
        };
        out.push((field, name));
    }
    Ok(out)
}

impl UpstreamSection {
    /// Validates the section.
    ///
    /// # Errors
    /// A [`KeyError`] naming the key.
    pub fn settings(self) -> Result<UpstreamSettings, KeyError> {
        let url = self
            .url
            .ok_or_else(|| KeyError::new("upstream.url", "missing"))?;
        let parsed: Uri = url
            .parse()
            .map_err(|e| KeyError::new("upstream.url", format!("\"{url}\" is not a URL: {e}")))?;
        if parsed.scheme_str() != Some("http") || parsed.authority().is_none() {
            return Err(KeyError::new(
                "upstream.url",
                format!("\"{url}\" must be an http:// URL with a host (the upstream is local)"),
            ));
        }
        let timeout = value::positive("upstream.timeout_ms", self.timeout_ms, DEFAULT_TIMEOUT_MS)?;
        let connect_timeout = value::positive(
            "upstream.connect_timeout_ms",
            self.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT_MS,
        )?;
        Ok(UpstreamSettings {
            url: parsed,
            timeout: Duration::from_millis(timeout),
            connect_timeout: Duration::from_millis(connect_timeout),
            forward_authorization: self.forward_authorization.unwrap_or(false),
            identity_headers: identity_headers(self.identity_headers)?,
        })
    }
}
