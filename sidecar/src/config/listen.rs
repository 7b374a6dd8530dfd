//! `[listen]`: where MCP clients connect, how long they get to finish at shutdown, and who on
//! the other end is believed: which browser origins may call, which proxies' forwarded
//! headers count, the URL clients use, and how many sessions are bound at once.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use policy_layer::protocol::IpNet;
use policy_layer::protocol::origin::Origins;
use policy_layer::protocol::session::{DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE, SessionLimits};
use serde::Deserialize;

use super::error::KeyError;
use super::value;

/// Default MCP listen address.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8080";
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// The section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    address: Option<String>,
    path: Option<String>,
    shutdown_grace_ms: Option<u64>,
    public_url: Option<String>,
    allowed_origins: Option<Vec<String>>,
    trusted_proxies: Option<Vec<String>>,
    max_sessions: Option<usize>,
    session_idle_ms: Option<u64>,
}

/// The MCP listener's settings.
#[derive(Debug, Clone)]
pub struct ListenSettings {
    /// Where MCP clients connect.
    pub address: SocketAddr,
    /// The path MCP clients use; `None`: the upstream URL's path.
    pub path: Option<String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// The URL clients reach the endpoint at (behind a load balancer), when fixed.
    pub public_url: Option<Uri>,
    /// The browser origins that may call; `None`: the listener's own (see [`Self::origins`]).
    pub allowed_origins: Option<Vec<String>>,
    /// Peers whose forwarded headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Sessions bound to their principals at once, and for how long unused.
    pub sessions: SessionLimits,
}

impl ListenSettings {
    /// The origins allowed to call a listener bound at `bound`: `listen.allowed_origins`, or
    /// else the listener's own (`http://<bound>`, and on a loopback or any-address listener
    /// `http://localhost:<port>`, `http://127.0.0.1:<port>`, `http://[::1]:<port>`) and
    /// `listen.public_url`'s.
    ///
    /// # Errors
    /// A [`KeyError`] for an entry that is not an origin.
    pub fn origins(&self, bound: SocketAddr) -> Result<Origins, KeyError> {
        if let Some(list) = &self.allowed_origins {
            return Origins::new(list)
                .map_err(|e| KeyError::new("listen.allowed_origins", e.to_string()));
        }
        let port = bound.port();
        let mut own = vec![format!("http://{bound}")];
        let ip = bound.ip();
        if ip.is_loopback() || ip.is_unspecified() {
            own.extend([
                format!("http://localhost:{port}"),
                format!("http://127.0.0.1:{port}"),
                format!("http://[::1]:{port}"),
            ]);
        }
        if let Some(url) = &self.public_url
            && let (Some(scheme), Some(authority)) = (url.scheme_str(), url.authority())
        {
            own.push(format!("{scheme}://{authority}"));
        }
        Origins::new(own).map_err(|e| KeyError::new("listen.allowed_origins", e.to_string()))
    }
}

impl ListenSection {
    /// Validates the section.
    ///
    /// # Errors
    /// A [`KeyError`] naming the key.
    pub fn settings(self) -> Result<ListenSettings, KeyError> {
        let address = value::address("listen.address", self.address, DEFAULT_ADDRESS)?;
        let path = match self.path {
            Some(path) if !path.starts_with('/') => {
                return Err(KeyError::new(
                    "listen.path",
                    format!("\"{path}\" must start with /"),
                ));
            }
            path => path,
        };
        let public_url = match self.public_url {
            Some(text) => {
                let url: Uri = text.parse().map_err(|e| {
                    KeyError::new("listen.public_url", format!("\"{text}\" is not a URL: {e}"))
                })?;
                if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none()
                {
                    return Err(KeyError::new(
                        "listen.public_url",
                        format!("\"{text}\" must be an http:// or https:// URL with a host"),
                    ));
                }
                Some(url)
            }
            None => None,
        };
        if let Some(list) = &self.allowed_origins {
            Origins::new(list)
                .map_err(|e| KeyError::new("listen.allowed_origins", e.to_string()))?;
        }
        let trusted_proxies = self
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|net| {
                net.parse::<IpNet>()
                    .map_err(|e| KeyError::new("listen.trusted_proxies", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sessions = SessionLimits {
            max_sessions: value::positive(
                "listen.max_sessions",
                self.max_sessions,
                DEFAULT_MAX_SESSIONS,
            )?,
            idle: Duration::from_millis(value::positive(
                "listen.session_idle_ms",
                self.session_idle_ms,
                u64::try_from(DEFAULT_SESSION_IDLE.as_millis()).unwrap_or(u64::MAX),
            )?),
        };
        Ok(ListenSettings {
            address,
            path,
            shutdown_grace: Duration::from_millis(
                self.shutdown_grace_ms.unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
            ),
            public_url,
            allowed_origins: self.allowed_origins,
            trusted_proxies,
            sessions,
        })
    }
}
