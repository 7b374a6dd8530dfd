//! The `POLICY_SIDECAR_<SECTION>_<KEY>` environment variables, which win over the file.

use super::error::ConfigError;
use super::keys::{Key, Kind};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "POLICY_SIDECAR_";

/// One override: the variable, the key it sets and its value as TOML.
#[derive(Debug, Clone)]
pub struct Override {
    /// The variable, for messages.
    pub var: String,
    /// The key it sets.
    pub key: Key,
    /// The value, read as the key's [`Kind`] says.
    pub value: toml::Value,
}

/// The overrides in `env` for `keys`, sorted by variable name.
///
/// # Errors
/// [`ConfigError::Env`] for a `POLICY_SIDECAR_*` variable that names no key or whose value
/// cannot be read as the key's kind.
pub fn overrides(
    env: impl IntoIterator<Item = (String, String)>,
    keys: &[Key],
) -> Result<Vec<Override>, ConfigError> {
    let mut overrides = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some(&key) = keys
            .iter()
            .find(|key| rest == format!("{}_{}", key.section, key.name))
        else {
            return Err(ConfigError::Env {
                var,
                message: "no such config key".to_owned(),
            });
        };
        if key.repeated {
            return Err(ConfigError::Env {
                var,
                message: format!(
                    "[[{}]] tables are set in the config file only (a variable cannot say which table it means)",
                    key.section
                ),
            });
        }
        let value = read(key.kind, value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        overrides.push(Override { var, key, value });
    }
    overrides.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(overrides)
}

/// `value` as a TOML value of `kind`.
fn read(kind: Kind, value: String) -> Result<toml::Value, String> {
    match kind {
        Kind::Str => Ok(toml::Value::String(value)),
        Kind::Int => value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected an integer, got \"{value}\"")),
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got \"{value}\"")),
        },
        Kind::List => Ok(toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        )),
        Kind::Json => serde_json::from_str::<serde_json::Value>(&value)
            .map_err(|e| format!("expected JSON: {e}"))
            .and_then(|json| {
                toml::Value::try_from(json).map_err(|e| format!("not a TOML value: {e}"))
            }),
    }
}
