//! `[upstream]`: the MCP tool server the sidecar stands in front of.

use std::time::Duration;

use http::Uri;
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
        })
    }
}
