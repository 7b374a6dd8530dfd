//! The `[state]` section: its raw serde form, which mirrors the TOML, and its validation into
//! [`StateSettings`].

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Default command timeout of the Redis store: a call waits at most this long for Redis before
/// `on_error` decides.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// Default number of multiplexed Redis connections (each one pipelines every caller's commands).
pub const DEFAULT_POOL_SIZE: usize = 2;
/// Default cap on live keys in the memory store.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Default namespace of every Redis key this project writes.
pub const DEFAULT_KEY_PREFIX: &str = "mcp-policy:";
/// Default lease of an in-flight slot in Redis: renewed while the call runs, so a replica that
/// dies frees its slots after this long at most.
pub const DEFAULT_CONNECTION_LEASE: Duration = Duration::from_secs(30);

const MAX_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_POOL_SIZE: usize = 64;
const MIN_LEASE: Duration = Duration::from_secs(1);
const MAX_LEASE: Duration = Duration::from_secs(3600);

/// `[state]` as written in the config file. Every key but `url` and `on_error` is an optional
/// tuning knob with the default above.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `memory` (default) or `redis://host:port/db`.
    pub url: Option<String>,
    /// `deny` (default) or `allow`: what a call gets when the store cannot answer.
    pub on_error: Option<String>,
    /// Redis command timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Number of Redis connections.
    pub pool_size: Option<usize>,
    /// Cap on live keys in the memory store.
    pub max_keys: Option<usize>,
    /// Namespace of the Redis keys (several deployments can share one Redis).
    pub key_prefix: Option<String>,
    /// Lease of an in-flight slot in Redis, in seconds.
    pub connection_lease_secs: Option<u64>,
}

/// What a call gets when the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Refuse the call (fail closed): HTTP 503 with `Retry-After`.
    #[default]
    Deny,
    /// Let the call through unlimited, and count it.
    Allow,
}

impl OnError {
    /// `deny` or `allow`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

/// A Redis URL; its `Debug` and `Display` hide any password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL as configured, password included: for the client only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any user information replaced by `***`.
    #[must_use]
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "***".to_owned();
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Which backend `[state] url` names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackendSettings {
    /// In this process.
    #[default]
    Memory,
    /// A Redis server shared by every replica.
    Redis(RedisUrl),
}

/// `[state]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// The backend.
    pub backend: BackendSettings,
    /// What a call gets when the store cannot answer.
    pub on_error: OnError,
    /// Redis command timeout.
    pub timeout: Duration,
    /// Number of Redis connections.
    pub pool_size: usize,
    /// Cap on live keys in the memory store.
    pub max_keys: usize,
    /// Namespace of the Redis keys.
    pub key_prefix: String,
    /// Lease of an in-flight slot in Redis.
    pub connection_lease: Duration,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            backend: BackendSettings::Memory,
            on_error: OnError::Deny,
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            max_keys: DEFAULT_MAX_KEYS,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connection_lease: DEFAULT_CONNECTION_LEASE,
        }
    }
}

/// A `[state]` value that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state.{key}: {message}")]
pub struct StateConfigError {
    key: &'static str,
    message: String,
}

impl StateConfigError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }

    /// The key of `[state]` at fault.
    #[must_use]
    pub fn key(&self) -> &'static str {
        self.key
    }
}

impl StateConfig {
    /// Validates the section into settings, with the defaults for what is absent.
    ///
    /// # Errors
    /// The first key whose value cannot be used.
    pub fn validate(&self) -> Result<StateSettings, StateConfigError> {
        let mut settings = StateSettings::default();
        if let Some(url) = &self.url {
            settings.backend = parse_url(url)?;
        }
        if let Some(on_error) = &self.on_error {
            settings.on_error = match on_error.to_ascii_lowercase().as_str() {
                "deny" => OnError::Deny,
                "allow" => OnError::Allow,
                _ => {
                    return Err(StateConfigError::new(
                        "on_error",
                        format!("expected one of deny, allow, got \"{on_error}\""),
                    ));
                }
            };
        }
        if let Some(ms) = self.timeout_ms {
            let timeout = Duration::from_millis(ms);
            if timeout.is_zero() || timeout > MAX_TIMEOUT {
                return Err(StateConfigError::new(
                    "timeout_ms",
                    format!("must be between 1 and {}", MAX_TIMEOUT.as_millis()),
                ));
            }
            settings.timeout = timeout;
        }
        if let Some(size) = self.pool_size {
            if !(1..=MAX_POOL_SIZE).contains(&size) {
                return Err(StateConfigError::new(
                    "pool_size",
                    format!("must be between 1 and {MAX_POOL_SIZE}"),
                ));
            }
            settings.pool_size = size;
        }
        if let Some(max_keys) = self.max_keys {
            if max_keys == 0 {
                return Err(StateConfigError::new("max_keys", "must be at least 1"));
            }
            settings.max_keys = max_keys;
        }
        if let Some(prefix) = &self.key_prefix {
            if prefix.len() > 128 || prefix.chars().any(char::is_control) {
                return Err(StateConfigError::new(
                    "key_prefix",
                    "must be at most 128 bytes without control characters",
                ));
            }
            settings.key_prefix.clone_from(prefix);
        }
        if let Some(secs) = self.connection_lease_secs {
            let lease = Duration::from_secs(secs);
            if lease < MIN_LEASE || lease > MAX_LEASE {
                return Err(StateConfigError::new(
                    "connection_lease_secs",
                    format!(
                        "must be between {} and {}",
                        MIN_LEASE.as_secs(),
                        MAX_LEASE.as_secs()
                    ),
                ));
            }
            settings.connection_lease = lease;
        }
        Ok(settings)
    }
}

fn parse_url(url: &str) -> Result<BackendSettings, StateConfigError> {
    if url.eq_ignore_ascii_case("memory") {
        return Ok(BackendSettings::Memory);
    }
    let redis = RedisUrl(url.to_owned());
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "redis+unix" | "unix") => {}
        Some("rediss") => {
            return Err(StateConfigError::new(
                "url",
                format!(
                    "{redis}: TLS (rediss://) is not built in; reach Redis over a local or private network, or a TLS tunnel"
                ),
            ));
        }
        _ => {
            return Err(StateConfigError::new(
                "url",
                format!("expected \"memory\" or a redis:// URL, got \"{redis}\""),
            ));
        }
    }
    #[cfg(feature = "redis")]
    if let Err(e) = ::redis::Client::open(url) {
        // The client's message may quote the URL; say only what kind of error it was.
        return Err(StateConfigError::new(
            "url",
            format!("{redis}: not a usable Redis URL ({:?})", e.kind()),
        ));
    }
    Ok(BackendSettings::Redis(redis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> StateConfig {
        toml::from_str(toml_text).expect("toml")
    }

    #[test]
    fn defaults_to_memory_and_deny() {
        let settings = StateConfig::default().validate().expect("valid");
        assert_eq!(settings, StateSettings::default());
        assert_eq!(settings.backend, BackendSettings::Memory);
        assert_eq!(settings.on_error, OnError::Deny);
    }

    #[test]
    fn reads_the_documented_section() {
        let settings = config("url = \"redis://127.0.0.1:6379/0\"\non_error = \"allow\"\n")
            .validate()
            .expect("valid");
        assert_eq!(
            settings.backend,
            BackendSettings::Redis(RedisUrl("redis://127.0.0.1:6379/0".to_owned()))
        );
        assert_eq!(settings.on_error, OnError::Allow);
    }

    #[test]
    fn rejects_unknown_keys() {
        let error = toml::from_str::<StateConfig>("url = \"memory\"\nonerror = \"allow\"\n")
            .expect_err("unknown key");
        assert!(
            error.to_string().contains("unknown field `onerror`"),
            "{error}"
        );
    }

    #[test]
    fn names_the_key_of_a_bad_value() {
        let error = config("on_error = \"maybe\"").validate().expect_err("bad");
        assert_eq!(
            error.to_string(),
            "state.on_error: expected one of deny, allow, got \"maybe\""
        );
        let error = config("url = \"http://redis\"")
            .validate()
            .expect_err("bad");
        assert_eq!(error.key(), "url");
        let error = config("timeout_ms = 0").validate().expect_err("bad");
        assert_eq!(error.key(), "timeout_ms");
        let error = config("connection_lease_secs = 0")
            .validate()
            .expect_err("bad");
        assert_eq!(error.key(), "connection_lease_secs");
    }

    #[test]
    fn never_prints_a_redis_password() {
        let error = config("url = \"rediss://user:s3cret@redis.internal:6380/0\"")
            .validate()
            .expect_err("no tls");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        let url = RedisUrl("redis://:s3cret@127.0.0.1:6379/0".to_owned());
        assert_eq!(format!("{url:?}"), "redis://***@127.0.0.1:6379/0");
        assert_eq!(url.expose(), "redis://:s3cret@127.0.0.1:6379/0");
    }
}
