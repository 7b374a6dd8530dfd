//! How the sections read their values: setting words, numbers above zero, socket addresses.

use std::net::SocketAddr;

use policy_layer::config::UnknownValue;

use super::error::KeyError;

/// A setting word of the policy layer (`ENFORCE`, `tool_result`, ...), or `default`.
///
/// # Errors
/// The word is not one of the setting's words.
pub fn word<T>(key: &'static str, value: Option<String>, default: &str) -> Result<T, KeyError>
where
    T: std::str::FromStr<Err = UnknownValue>,
{
    value
        .as_deref()
        .unwrap_or(default)
        .parse()
        .map_err(|e: UnknownValue| KeyError::new(key, e.to_string()))
}

/// A number that must be above zero, or `default`.
///
/// # Errors
/// The number is zero.
pub fn positive<T: Default + PartialEq>(
    key: &'static str,
    value: Option<T>,
    default: T,
) -> Result<T, KeyError> {
    match value {
        Some(zero) if zero == T::default() => Err(KeyError::new(key, "must be greater than 0")),
        Some(value) => Ok(value),
        None => Ok(default),
    }
}

/// An IP address and port, or `default`.
///
/// # Errors
/// The text is not an IP address and port.
pub fn address(
    key: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<SocketAddr, KeyError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    value.parse().map_err(|e| {
        KeyError::new(
            key,
            format!("\"{value}\" is not an IP address and port: {e}"),
        )
    })
}

/// A text that must be set and not empty.
///
/// # Errors
/// The key is missing or empty.
pub fn required(key: &'static str, value: Option<String>) -> Result<String, KeyError> {
    value
        .filter(|s| !s.is_empty())
        .ok_or_else(|| KeyError::new(key, "missing"))
}
