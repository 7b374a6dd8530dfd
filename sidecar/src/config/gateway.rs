//! `[gateway]`: the names the Cedar model is built from, as AgentCore has them.

use serde::Deserialize;

use super::error::KeyError;
use super::value;

/// The section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    id: Option<String>,
    target: Option<String>,
}

/// The gateway's names.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The Cedar resource `AgentCore::Gateway::"<id>"`.
    pub id: String,
    /// Actions are `AgentCore::Action::"<target>___<tool>"`.
    pub target: String,
}

impl GatewaySection {
    /// Validates the section.
    ///
    /// # Errors
    /// A [`KeyError`] naming the key.
    pub fn settings(self) -> Result<GatewaySettings, KeyError> {
        let id = value::required("gateway.id", self.id)?;
        let target = value::required("gateway.target", self.target)?;
        if target.contains("___") || target.contains('"') {
            return Err(KeyError::new(
                "gateway.target",
                format!("\"{target}\" must not contain `___` or quotes"),
            ));
        }
        if policy_layer::model::actions::is_reserved(&target) {
            return Err(KeyError::new(
                "gateway.target",
                format!("\"{target}\" is an action of the model itself; choose another name"),
            ));
        }
        Ok(GatewaySettings { id, target })
    }
}
