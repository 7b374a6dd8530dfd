//! `[listen]`: where MCP clients connect, and how long they get to finish at shutdown.

use std::net::SocketAddr;
use std::time::Duration;

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
        Ok(ListenSettings {
            address,
            path,
            shutdown_grace: Duration::from_millis(
                self.shutdown_grace_ms.unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
            ),
        })
    }
}
