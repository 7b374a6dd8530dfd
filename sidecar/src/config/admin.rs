//! `[admin]`: where `/livez`, `/readyz` and `/metrics` are served.

use std::net::SocketAddr;

use serde::Deserialize;

use super::error::KeyError;
use super::value;

/// Default admin listen address.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9090";

/// The section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    address: Option<String>,
}

/// The admin listener's settings.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where the admin endpoints are served.
    pub address: SocketAddr,
}

impl AdminSection {
    /// Validates the section.
    ///
    /// # Errors
    /// A [`KeyError`] naming the key.
    pub fn settings(self) -> Result<AdminSettings, KeyError> {
        Ok(AdminSettings {
            address: value::address("admin.address", self.address, DEFAULT_ADDRESS)?,
        })
    }
}
