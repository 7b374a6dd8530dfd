//! The `[auth]` configuration (`sidecar/README.md`) and its validation into typed settings.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

/// Default clock skew allowed for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
/// Largest accepted `leeway_secs`: more would make expiry meaningless.
pub const MAX_LEEWAY_SECS: u64 = 600;
/// How long a key set is used when the JWKS response carries no `Cache-Control: max-age`.
pub const DEFAULT_JWKS_TTL: Duration = Duration::from_secs(5 * 60);
/// Longest time a key set is used before it is refetched, whatever `max-age` says.
pub const MAX_JWKS_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest time between two background refreshes, whatever `max-age` says.
pub const DEFAULT_MIN_JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// A token with an unknown `kid` triggers at most one refetch per this interval.
pub const DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Time limit for one JWKS or discovery request, connection included.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How many verified tokens are kept so a hot token costs no signature check.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: usize = 10_000;

/// Whether callers must present a JWT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request needs a valid bearer JWT (the default).
    #[default]
    Jwt,
    /// Every caller is `UnauthenticatedUser::"anonymous"`: local development only.
    None,
}

/// The `[auth]` section, as written in the sidecar's TOML (`sidecar/README.md`).
///
/// One issuer can be configured inline (`issuer`, one of `discovery_url` / `jwks_url` /
/// `jwks_file`, `audiences`, ...), more in `issuers = [...]`; a token is matched to its issuer
/// by its `iss` claim. [`AuthConfig::validate`] checks it; the error names the offending key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `"jwt"` (default) or `"none"`.
    pub mode: AuthMode,
    /// The inline issuer: must equal the tokens' `iss` exactly.
    pub issuer: Option<String>,
    /// OIDC discovery document whose `jwks_uri` gives the inline issuer's keys.
    pub discovery_url: Option<String>,
    /// The inline issuer's JWKS URL.
    pub jwks_url: Option<String>,
    /// A local JWKS file with the inline issuer's keys (tests, air-gapped setups).
    pub jwks_file: Option<PathBuf>,
    /// Accepted `aud` values for the inline issuer (any one suffices).
    pub audiences: Vec<String>,
    /// When non-empty, the token's `client_id` or `azp` must be one of these.
    pub allowed_clients: Vec<String>,
    /// When non-empty, the token's `scope` must contain at least one of these.
    pub allowed_scopes: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Further issuers, each with its own key source and checks.
    pub issuers: Vec<IssuerConfig>,
    /// Intervals and sizes that are not part of the TOML file; [`AuthTuning::default`] fits
    /// production, tests shorten the intervals.
    #[serde(skip)]
    pub tuning: AuthTuning,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Jwt,
            issuer: None,
            discovery_url: None,
            jwks_url: None,
            jwks_file: None,
            audiences: Vec::new(),
            allowed_clients: Vec::new(),
            allowed_scopes: Vec::new(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            issuers: Vec::new(),
            tuning: AuthTuning::default(),
        }
    }
}

/// One entry of `issuers = [...]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Must equal the tokens' `iss` exactly.
    pub issuer: String,
    /// OIDC discovery document whose `jwks_uri` gives this issuer's keys.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// This issuer's JWKS URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A local JWKS file with this issuer's keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Accepted `aud` values (any one suffices).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// When non-empty, the token's `client_id` or `azp` must be one of these.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// When non-empty, the token's `scope` must contain at least one of these.
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
}

/// Intervals and sizes of the JWKS and token caches; not read from TOML.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthTuning {
    /// At most one refetch per this interval is triggered by tokens with an unknown `kid`.
    pub unknown_kid_refetch_interval: Duration,
    /// Floor for the background refresh interval taken from `Cache-Control: max-age`.
    pub min_jwks_refresh_interval: Duration,
    /// Time limit for one JWKS or discovery request.
    pub http_timeout: Duration,
    /// Number of verified tokens kept; 0 turns the token cache off.
    pub token_cache_capacity: usize,
}

impl Default for AuthTuning {
    fn default() -> Self {
        Self {
            unknown_kid_refetch_interval: DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL,
            min_jwks_refresh_interval: DEFAULT_MIN_JWKS_REFRESH_INTERVAL,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            token_cache_capacity: DEFAULT_TOKEN_CACHE_CAPACITY,
        }
    }
}

/// A configuration value that cannot work; the message starts with the key, e.g.
/// `auth.jwks_url: must use https (http only for localhost)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The offending key, e.g. `auth.issuers[1].audiences`.
    pub key: String,
    /// What is wrong with it, in lower case.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl AuthConfig {
    /// JWT mode for one issuer; add a key source and audiences with the `with_*` methods.
    #[must_use]
    pub fn jwt(issuer: impl Into<String>) -> Self {
        Self {
            issuer: Some(issuer.into()),
            ..Self::default()
        }
    }

    /// Anonymous mode (`mode = "none"`): local development only.
    #[must_use]
    pub fn none() -> Self {
        Self {
            mode: AuthMode::None,
            ..Self::default()
        }
    }

    /// Sets the inline issuer's JWKS URL.
    #[must_use]
    pub fn with_jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Sets the inline issuer's OIDC discovery URL.
    #[must_use]
    pub fn with_discovery_url(mut self, url: impl Into<String>) -> Self {
        self.discovery_url = Some(url.into());
        self
    }

    /// Sets the inline issuer's local JWKS file.
    #[must_use]
    pub fn with_jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.jwks_file = Some(path.into());
        self
    }

    /// Adds an accepted audience for the inline issuer.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Adds an allowed client for the inline issuer.
    #[must_use]
    pub fn with_allowed_client(mut self, client: impl Into<String>) -> Self {
        self.allowed_clients.push(client.into());
        self
    }

    /// Adds an accepted scope for the inline issuer.
    #[must_use]
    pub fn with_allowed_scope(mut self, scope: impl Into<String>) -> Self {
        self.allowed_scopes.push(scope.into());
        self
    }

    /// Adds a further issuer.
    #[must_use]
    pub fn with_issuer(mut self, issuer: IssuerConfig) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Sets the clock skew allowed for `exp` and `nbf`.
    #[must_use]
    pub fn with_leeway_secs(mut self, leeway_secs: u64) -> Self {
        self.leeway_secs = leeway_secs;
        self
    }

    /// Replaces the cache intervals and sizes.
    #[must_use]
    pub fn with_tuning(mut self, tuning: AuthTuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// Checks the configuration without starting anything (for `policy-sidecar validate`).
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(|_| ())
    }

    /// Every issuer a token may come from, in configuration order (empty in mode `none`).
    pub(crate) fn issuer_names(&self) -> Vec<&str> {
        if self.mode == AuthMode::None {
            return Vec::new();
        }
        self.issuer
            .as_deref()
            .into_iter()
            .chain(self.issuers.iter().map(|i| i.issuer.as_str()))
            .collect()
    }

    /// Validates into typed settings.
    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        if self.mode == AuthMode::None {
            return Ok(Settings::Anonymous);
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(ConfigError::new(
                "auth.leeway_secs",
                format!("must be at most {MAX_LEEWAY_SECS} seconds"),
            ));
        }
        let mut issuers = Vec::with_capacity(1 + self.issuers.len());
        let inline_set = self.discovery_url.is_some()
            || self.jwks_url.is_some()
            || self.jwks_file.is_some()
            || !self.audiences.is_empty()
            || !self.allowed_clients.is_empty()
            || !self.allowed_scopes.is_empty();
        match &self.issuer {
            Some(issuer) => issuers.push(IssuerSettings::new(
                "auth.",
                issuer,
                self.discovery_url.as_deref(),
                self.jwks_url.as_deref(),
                self.jwks_file.as_ref(),
                &self.audiences,
                &self.allowed_clients,
                &self.allowed_scopes,
            )?),
            None if inline_set => {
                return Err(ConfigError::new(
                    "auth.issuer",
                    "required when the key source, audiences, clients or scopes are set inline",
                ));
            }
            None => {}
        }
        for (index, entry) in self.issuers.iter().enumerate() {
            issuers.push(IssuerSettings::new(
                &format!("auth.issuers[{index}]."),
                &entry.issuer,
                entry.discovery_url.as_deref(),
                entry.jwks_url.as_deref(),
                entry.jwks_file.as_ref(),
                &entry.audiences,
                &entry.allowed_clients,
                &entry.allowed_scopes,
            )?);
        }
        if issuers.is_empty() {
            return Err(ConfigError::new(
                "auth.issuer",
                "required when auth.mode = \"jwt\" (or list auth.issuers)",
            ));
        }
        let mut seen = HashSet::new();
        for (index, settings) in issuers.iter().enumerate() {
            if !seen.insert(settings.issuer.as_str()) {
                let key = match (&self.issuer, index) {
                    (Some(_), 0) => "auth.issuer".to_owned(),
                    (Some(_), i) => format!("auth.issuers[{}].issuer", i - 1),
                    (None, i) => format!("auth.issuers[{i}].issuer"),
                };
                return Err(ConfigError::new(key, "issuer is configured twice"));
            }
        }
        if self.tuning.http_timeout.is_zero() {
            return Err(ConfigError::new(
                "auth.tuning.http_timeout",
                "must be more than zero",
            ));
        }
        Ok(Settings::Jwt(JwtSettings {
            issuers,
            leeway_secs: self.leeway_secs,
            tuning: self.tuning.clone(),
        }))
    }
}

/// Validated authentication settings.
#[derive(Debug, Clone)]
pub(crate) enum Settings {
    /// `mode = "none"`.
    Anonymous,
    /// `mode = "jwt"`.
    Jwt(JwtSettings),
}

/// Validated settings for JWT mode.
#[derive(Debug, Clone)]
pub(crate) struct JwtSettings {
    pub(crate) issuers: Vec<IssuerSettings>,
    pub(crate) leeway_secs: u64,
    pub(crate) tuning: AuthTuning,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksSource {
    /// An OIDC discovery document whose `jwks_uri` names the JWKS.
    Discovery(Url),
    /// A JWKS URL.
    Url(Url),
    /// A local JWKS file.
    File(PathBuf),
}

/// One issuer's validated settings.
#[derive(Debug, Clone)]
pub(crate) struct IssuerSettings {
    pub(crate) issuer: String,
    pub(crate) source: JwksSource,
    pub(crate) audiences: Vec<String>,
    pub(crate) allowed_clients: HashSet<String>,
    pub(crate) allowed_scopes: HashSet<String>,
    /// `allowed_scopes` space-separated, for the `WWW-Authenticate` challenge.
    pub(crate) scope_hint: std::sync::Arc<str>,
}

impl IssuerSettings {
    #[allow(clippy::too_many_arguments)]
    fn new(
        prefix: &str,
        issuer: &str,
        discovery_url: Option<&str>,
        jwks_url: Option<&str>,
        jwks_file: Option<&PathBuf>,
        audiences: &[String],
        allowed_clients: &[String],
        allowed_scopes: &[String],
    ) -> Result<Self, ConfigError> {
        let key = |name: &str| format!("{prefix}{name}");
        if issuer.trim().is_empty() {
            return Err(ConfigError::new(key("issuer"), "must not be empty"));
        }
        let source = match (discovery_url, jwks_url, jwks_file) {
            (Some(url), None, None) => {
                JwksSource::Discovery(parse_url(&key("discovery_url"), url)?)
            }
            (None, Some(url), None) => JwksSource::Url(parse_url(&key("jwks_url"), url)?),
            (None, None, Some(path)) => {
                if path.as_os_str().is_empty() {
                    return Err(ConfigError::new(key("jwks_file"), "must not be empty"));
                }
                JwksSource::File(path.clone())
            }
            (None, None, None) => {
                return Err(ConfigError::new(
                    key("jwks_url"),
                    "set one of discovery_url, jwks_url or jwks_file",
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    key("discovery_url"),
                    "set only one of discovery_url, jwks_url or jwks_file",
                ));
            }
        };
        check_entries(&key("audiences"), audiences)?;
        check_entries(&key("allowed_clients"), allowed_clients)?;
        check_entries(&key("allowed_scopes"), allowed_scopes)?;
        if let Some(scope) = allowed_scopes
            .iter()
            .find(|s| s.contains(char::is_whitespace))
        {
            return Err(ConfigError::new(
                key("allowed_scopes"),
                format!("a scope cannot contain spaces: {scope:?}"),
            ));
        }
        if audiences.is_empty() && allowed_clients.is_empty() {
            return Err(ConfigError::new(
                key("audiences"),
                "set audiences or allowed_clients (or both), so that tokens issued for other services are refused",
            ));
        }
        Ok(Self {
            issuer: issuer.to_owned(),
            source,
            audiences: audiences.to_vec(),
            allowed_clients: allowed_clients.iter().cloned().collect(),
            allowed_scopes: allowed_scopes.iter().cloned().collect(),
            scope_hint: allowed_scopes.join(" ").into(),
        })
    }
}

fn check_entries(key: &str, entries: &[String]) -> Result<(), ConfigError> {
    if entries.iter().any(|e| e.trim().is_empty()) {
        return Err(ConfigError::new(key, "entries must not be empty"));
    }
    Ok(())
}

/// Parses a key-source URL: https, or http to a loopback host (tests, local issuers).
pub(crate) fn parse_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(text).map_err(|e| ConfigError::new(key, format!("not a valid url: {e}")))?;
    check_url_scheme(&url).map_err(|message| ConfigError::new(key, message))?;
    Ok(url)
}

/// Keys must come over TLS, except from this machine.
pub(crate) fn check_url_scheme(url: &Url) -> Result<(), &'static str> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        _ => Err("must use https (http only for localhost)"),
    }
}

fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(config: &AuthConfig) -> String {
        match config.validate() {
            Err(e) => e.to_string(),
            Ok(()) => String::from("<valid>"),
        }
    }

    fn parse(json: serde_json::Value) -> Result<AuthConfig, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn defaults_are_the_documented_constants() {
        let tuning = AuthTuning::default();
        assert_eq!(
            DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL,
            Duration::from_secs(10)
        );
        assert_eq!(tuning.unknown_kid_refetch_interval, Duration::from_secs(10));
        assert_eq!(DEFAULT_JWKS_TTL, Duration::from_secs(300));
        assert_eq!(DEFAULT_TOKEN_CACHE_CAPACITY, 10_000);
        assert_eq!(AuthConfig::default().leeway_secs, 60);
        assert_eq!(AuthConfig::default().mode, AuthMode::Jwt);
    }

    #[test]
    fn deserializes_the_sidecar_section() {
        let config = parse(serde_json::json!({
            "mode": "jwt",
            "issuer": "https://issuer.example",
            "discovery_url": "https://issuer.example/.well-known/openid-configuration",
            "audiences": ["mcp-gateway"],
            "allowed_clients": [],
            "allowed_scopes": []
        }));
        let config = match config {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(config.leeway_secs, DEFAULT_LEEWAY_SECS);
        assert_eq!(config.tuning, AuthTuning::default());
        assert_eq!(err(&config), "<valid>");
    }

    #[test]
    fn rejects_unknown_keys() {
        let result = parse(serde_json::json!({ "issuer": "x", "jwks_uri": "https://x" }));
        assert!(result.is_err_and(|e| e.to_string().contains("unknown field `jwks_uri`")));
        let result = parse(serde_json::json!({ "issuers": [{ "issuer": "x", "audience": "a" }] }));
        assert!(result.is_err_and(|e| e.to_string().contains("unknown field `audience`")));
    }

    #[test]
    fn mode_none_needs_nothing_else() {
        let config = parse(serde_json::json!({ "mode": "none" })).ok();
        assert!(config.is_some_and(|c| c.validate().is_ok() && c.mode == AuthMode::None));
    }

    #[test]
    fn jwt_mode_requires_an_issuer() {
        assert_eq!(
            err(&AuthConfig::default()),
            "auth.issuer: required when auth.mode = \"jwt\" (or list auth.issuers)"
        );
        let config = AuthConfig {
            audiences: vec!["a".into()],
            ..AuthConfig::default()
        };
        assert!(err(&config).starts_with("auth.issuer: required when"));
    }

    #[test]
    fn requires_exactly_one_key_source() {
        let base = AuthConfig::jwt("https://i.example").with_audience("a");
        assert_eq!(
            err(&base),
            "auth.jwks_url: set one of discovery_url, jwks_url or jwks_file"
        );
        let both = base
            .clone()
            .with_jwks_url("https://i.example/jwks")
            .with_discovery_url("https://i.example/.well-known/openid-configuration");
        assert_eq!(
            err(&both),
            "auth.discovery_url: set only one of discovery_url, jwks_url or jwks_file"
        );
    }

    #[test]
    fn rejects_plain_http_except_loopback() {
        let base = AuthConfig::jwt("https://i.example").with_audience("a");
        let remote = base.clone().with_jwks_url("http://i.example/jwks");
        assert_eq!(
            err(&remote),
            "auth.jwks_url: must use https (http only for localhost)"
        );
        assert_eq!(
            err(&base.clone().with_jwks_url("http://127.0.0.1:8080/jwks")),
            "<valid>"
        );
        assert_eq!(
            err(&base.clone().with_jwks_url("http://localhost/jwks")),
            "<valid>"
        );
        assert!(
            err(&base.with_jwks_url("not a url")).starts_with("auth.jwks_url: not a valid url")
        );
    }

    #[test]
    fn requires_audiences_or_clients() {
        let config = AuthConfig::jwt("https://i.example").with_jwks_url("https://i.example/jwks");
        assert!(err(&config).starts_with("auth.audiences: set audiences or allowed_clients"));
        assert_eq!(err(&config.with_allowed_client("c")), "<valid>");
    }

    #[test]
    fn names_the_issuer_entry_in_errors() {
        let config = AuthConfig::default().with_issuer(IssuerConfig {
            issuer: "https://a.example".into(),
            jwks_url: Some("https://a.example/jwks".into()),
            audiences: vec!["a".into()],
            ..IssuerConfig::default()
        });
        assert_eq!(err(&config), "<valid>");
        let config = config.with_issuer(IssuerConfig {
            issuer: "https://b.example".into(),
            jwks_url: Some("ftp://b.example/jwks".into()),
            audiences: vec!["a".into()],
            ..IssuerConfig::default()
        });
        assert_eq!(
            err(&config),
            "auth.issuers[1].jwks_url: must use https (http only for localhost)"
        );
    }

    #[test]
    fn rejects_duplicate_issuers() {
        let config = AuthConfig::jwt("https://a.example")
            .with_jwks_url("https://a.example/jwks")
            .with_audience("a")
            .with_issuer(IssuerConfig {
                issuer: "https://a.example".into(),
                jwks_url: Some("https://a.example/jwks".into()),
                audiences: vec!["a".into()],
                ..IssuerConfig::default()
            });
        assert_eq!(
            err(&config),
            "auth.issuers[0].issuer: issuer is configured twice"
        );
    }

    #[test]
    fn rejects_scopes_with_spaces_and_large_leeway() {
        let base = AuthConfig::jwt("https://a.example")
            .with_jwks_url("https://a.example/jwks")
            .with_audience("a");
        assert!(
            err(&base.clone().with_allowed_scope("a b"))
                .starts_with("auth.allowed_scopes: a scope cannot contain spaces")
        );
        assert_eq!(
            err(&base.with_leeway_secs(601)),
            "auth.leeway_secs: must be at most 600 seconds"
        );
    }
}
