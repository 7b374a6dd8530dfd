//! The sidecar's TOML configuration (SPEC section 9): read, overridden from the environment
//! (`POLICY_SIDECAR_<SECTION>_<KEY>`), and validated into typed [`Config`].
//!
//! Errors name the file and the key (and the line and column when the TOML itself is wrong).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use policy_layer::config::{
    DEFAULT_ENGINE_NAME, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_LIST_BYTES,
};
use policy_layer::engine::{Budget, Solver};
use policy_layer::model::ModelConfig;
use policy_layer::{DenyStyle, ExceptionLevel, Mode, Settings};
use serde::Deserialize;

/// Default MCP listen address.
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:8080";
/// Default admin listen address (`/livez`, `/readyz`, `/metrics`).
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9090";
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Default limit for the upstream's response headers (the body then streams without limit).
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 30_000;
/// Default limit for connecting to the upstream.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default policy paths, relative to the config file's folder.
pub const DEFAULT_POLICY_PATHS: &[&str] = &["policies"];
/// Default schema source.
pub const DEFAULT_SCHEMA: &str = "upstream";
/// Default time budget of the semantic analysis of a policy set.
pub const DEFAULT_ANALYSIS_TIMEOUT_MS: u64 = 120_000;
/// Default interval of the policy files poll (the fallback beside file notifications).
pub const DEFAULT_RELOAD_POLL_MS: u64 = 2_000;
/// Default interval of the periodic re-fetch of the upstream's tools (0 turns it off).
pub const DEFAULT_TOOLS_REFRESH_MS: u64 = 300_000;
/// Default tracing filter of the sidecar's own (non-decision) log on stderr.
pub const DEFAULT_LOG_FILTER: &str = "warn,policy_sidecar=info";
/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "POLICY_SIDECAR_";

/// A configuration that cannot be used; its message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The config file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse, or a key is unknown or of the wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Toml {
        /// The config file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A key's value is not usable.
    #[error("{file}: {key}: {message}")]
    Key {
        /// The config file.
        file: String,
        /// `section.key`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An environment override is unknown or cannot be used.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// The file as written: every section and key of SPEC section 9 plus the documented extras.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    listen: ListenSection,
    #[serde(default)]
    upstream: UpstreamSection,
    #[serde(default)]
    admin: AdminSection,
    #[serde(default)]
    gateway: GatewaySection,
    #[serde(default)]
    policy: PolicySection,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    log: LogSection,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenSection {
    address: Option<String>,
    path: Option<String>,
    shutdown_grace_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamSection {
    url: Option<String>,
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    forward_authorization: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewaySection {
    id: Option<String>,
    target: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    engine: Option<String>,
    mode: Option<String>,
    paths: Option<Vec<String>>,
    schema: Option<String>,
    validation: Option<String>,
    solver: Option<String>,
    analysis_timeout_ms: Option<u64>,
    deny_style: Option<String>,
    exception_level: Option<String>,
    groups: Option<BTreeMap<String, Vec<String>>>,
    reload_poll_ms: Option<u64>,
    tools_refresh_ms: Option<u64>,
    max_body_bytes: Option<usize>,
    max_batch: Option<usize>,
    max_list_bytes: Option<usize>,
}

/// The `[auth]` section. It mirrors `policy_layer::auth::AuthConfig` key for key, so that the
/// JWT build can deserialize the same table into it (see [`AuthSettings`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read to check names and types; the JWT build reads the raw table
struct AuthSection {
    mode: Option<String>,
    issuer: Option<String>,
    discovery_url: Option<String>,
    jwks_url: Option<String>,
    jwks_file: Option<String>,
    audiences: Option<Vec<String>>,
    allowed_clients: Option<Vec<String>>,
    allowed_scopes: Option<Vec<String>>,
    leeway_secs: Option<u64>,
    issuers: Option<Vec<toml::Table>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    decisions: Option<bool>,
    log_arguments: Option<bool>,
    filter: Option<String>,
}

/// How a key's value is written in an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated.
    List,
    /// JSON text (tables and arrays of tables).
    Json,
}

/// Every key that can be set, with how its environment override is read.
const KEYS: &[(&str, &str, Kind)] = &[
    ("listen", "address", Kind::Str),
    ("listen", "path", Kind::Str),
    ("listen", "shutdown_grace_ms", Kind::Int),
    ("upstream", "url", Kind::Str),
    ("upstream", "timeout_ms", Kind::Int),
    ("upstream", "connect_timeout_ms", Kind::Int),
    ("upstream", "forward_authorization", Kind::Bool),
    ("admin", "address", Kind::Str),
    ("gateway", "id", Kind::Str),
    ("gateway", "target", Kind::Str),
    ("policy", "engine", Kind::Str),
    ("policy", "mode", Kind::Str),
    ("policy", "paths", Kind::List),
    ("policy", "schema", Kind::Str),
    ("policy", "validation", Kind::Str),
    ("policy", "solver", Kind::Str),
    ("policy", "analysis_timeout_ms", Kind::Int),
    ("policy", "deny_style", Kind::Str),
    ("policy", "exception_level", Kind::Str),
    ("policy", "groups", Kind::Json),
    ("policy", "reload_poll_ms", Kind::Int),
    ("policy", "tools_refresh_ms", Kind::Int),
    ("policy", "max_body_bytes", Kind::Int),
    ("policy", "max_batch", Kind::Int),
    ("policy", "max_list_bytes", Kind::Int),
    ("auth", "mode", Kind::Str),
    ("auth", "issuer", Kind::Str),
    ("auth", "discovery_url", Kind::Str),
    ("auth", "jwks_url", Kind::Str),
    ("auth", "jwks_file", Kind::Str),
    ("auth", "audiences", Kind::List),
    ("auth", "allowed_clients", Kind::List),
    ("auth", "allowed_scopes", Kind::List),
    ("auth", "leeway_secs", Kind::Int),
    ("auth", "issuers", Kind::Json),
    ("log", "decisions", Kind::Bool),
    ("log", "log_arguments", Kind::Bool),
    ("log", "filter", Kind::Str),
];

/// Where the tools that type `context.input` come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaSource {
    /// The upstream's `tools/list`, fetched at start and when it changes.
    Upstream,
    /// A `tools.json` file: a `tools/list` result or the array of tools.
    File(PathBuf),
    /// A `.cedarschema` file policies are validated against (inputs are typed directly).
    CedarSchema(PathBuf),
    /// No schema: JSON types map directly.
    None,
}

pub use policy_layer::config::Validation;

/// The `[auth]` settings.
#[derive(Debug, Clone)]
pub enum AuthSettings {
    /// Every caller is `UnauthenticatedUser::"anonymous"` (development only).
    None,
    /// Bearer JWTs. The table is the `[auth]` section (after environment overrides), to be
    /// deserialized into `policy_layer::auth::AuthConfig` (`src/auth.rs`).
    Jwt(toml::Table),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file, for messages.
    pub file: PathBuf,
    /// Where MCP clients connect.
    pub listen: SocketAddr,
    /// The path MCP clients use (default: the upstream URL's path).
    pub mcp_path: String,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// The upstream MCP endpoint.
    pub upstream: Uri,
    /// Limit for the upstream's response headers.
    pub upstream_timeout: Duration,
    /// Limit for connecting to the upstream.
    pub upstream_connect_timeout: Duration,
    /// Whether the client's `Authorization` header is passed on to the upstream.
    pub forward_authorization: bool,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The Cedar model: target, gateway id, groups.
    pub model: ModelConfig,
    /// The layer's settings.
    pub layer: Settings,
    /// Policy files and folders (absolute).
    pub policy_paths: Vec<PathBuf>,
    /// Where the tool schema comes from.
    pub schema: SchemaSource,
    /// What validation findings do.
    pub validation: Validation,
    /// The SMT solver of the semantic analysis (`FAIL_ON_ANY_FINDINGS`).
    pub solver: Solver,
    /// What the semantic analysis may spend.
    pub analysis_budget: Budget,
    /// Poll interval of the policy files.
    pub reload_poll: Duration,
    /// Periodic re-fetch of the upstream's tools (`None`: off).
    pub tools_refresh: Option<Duration>,
    /// Authentication.
    pub auth: AuthSettings,
    /// Whether decisions are logged as JSON lines on stdout.
    pub log_decisions: bool,
    /// Whether the decision log carries the call arguments.
    pub log_arguments: bool,
    /// Tracing filter of the sidecar's own log.
    pub log_filter: String,
}

impl Config {
    /// The protected resource's URL, for RFC 9728 metadata: the MCP endpoint as listened on.
    #[must_use]
    pub fn public_resource(&self) -> String {
        format!("http://{}{}", self.listen, self.mcp_path)
    }
}

impl Config {
    /// Reads, overrides from the process environment and validates `file`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file and key.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.display().to_string(),
            source,
        })?;
        Self::from_text(file, &text, std::env::vars())
    }

    /// Parses `text` (the content of `file`) with `env` as the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file and key.
    pub fn from_text(
        file: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let name = file.display().to_string();
        let toml_error = |e: &toml::de::Error| {
            let (line, column) = e
                .span()
                .map_or((0, 0), |span| line_column(text, span.start));
            ConfigError::Toml {
                file: name.clone(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        };
        // The file alone first: its errors carry line and column.
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(&e))?;
        let overrides = env_overrides(env)?;
        let mut auth_table = toml::from_str::<toml::Table>(text)
            .map_err(|e| toml_error(&e))?
            .remove("auth")
            .and_then(|v| match v {
                toml::Value::Table(t) => Some(t),
                _ => None,
            })
            .unwrap_or_default();
        if !overrides.is_empty() {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| toml_error(&e))?;
            for (var, section, key, value) in overrides {
                let entry = table
                    .entry(section.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(section_table) = entry else {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("[{section}] is not a table in {name}"),
                    });
                };
                section_table.insert(key.to_owned(), value.clone());
                if section == "auth" {
                    auth_table.insert(key.to_owned(), value);
                }
            }
            raw = RawConfig::deserialize(table).map_err(|e| ConfigError::Env {
                var: "POLICY_SIDECAR_*".to_owned(),
                message: e.message().trim().to_owned(),
            })?;
        }
        validate(file, raw, auth_table)
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

type Override = (String, &'static str, &'static str, toml::Value);

/// The `POLICY_SIDECAR_<SECTION>_<KEY>` variables, as TOML values for their keys.
fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut overrides = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some(&(section, key, kind)) = KEYS
            .iter()
            .find(|(section, key, _)| rest == format!("{section}_{key}"))
        else {
            return Err(ConfigError::Env {
                var,
                message: "no such config key".to_owned(),
            });
        };
        let parsed = match kind {
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
        .map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        overrides.push((var, section, key, parsed));
    }
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(overrides)
}

fn validate(file: &Path, raw: RawConfig, auth_table: toml::Table) -> Result<Config, ConfigError> {
    let name = file.display().to_string();
    let err = |key: &str, message: String| ConfigError::Key {
        file: name.clone(),
        key: key.to_owned(),
        message,
    };
    // Relative paths resolve against the config file's folder ("" for a bare file name).
    let base = file.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let address = |key: &str, value: Option<String>, default: &str| {
        let value = value.unwrap_or_else(|| default.to_owned());
        value.parse::<SocketAddr>().map_err(|e| {
            err(
                key,
                format!("\"{value}\" is not an IP address and port: {e}"),
            )
        })
    };
    let listen = address("listen.address", raw.listen.address, DEFAULT_LISTEN_ADDRESS)?;
    let admin = address("admin.address", raw.admin.address, DEFAULT_ADMIN_ADDRESS)?;
    if listen == admin && listen.port() != 0 {
        return Err(err(
            "admin.address",
            "must differ from listen.address".to_owned(),
        ));
    }

    let url = raw
        .upstream
        .url
        .ok_or_else(|| err("upstream.url", "missing".to_owned()))?;
    let upstream: Uri = url
        .parse()
        .map_err(|e| err("upstream.url", format!("\"{url}\" is not a URL: {e}")))?;
    if upstream.scheme_str() != Some("http") || upstream.authority().is_none() {
        return Err(err(
            "upstream.url",
            format!("\"{url}\" must be an http:// URL with a host (the upstream is local)"),
        ));
    }
    let mcp_path = match raw.listen.path {
        Some(path) if path.starts_with('/') => path,
        Some(path) => return Err(err("listen.path", format!("\"{path}\" must start with /"))),
        None => upstream.path().to_owned(),
    };

    let gateway_id = raw
        .gateway
        .id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("gateway.id", "missing".to_owned()))?;
    let target = raw
        .gateway
        .target
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("gateway.target", "missing".to_owned()))?;
    if target.contains("___") || target.contains('"') {
        return Err(err(
            "gateway.target",
            format!("\"{target}\" must not contain `___` or quotes"),
        ));
    }

    let policy = raw.policy;
    let mode: Mode = word(policy.mode, "ENFORCE").map_err(|e| err("policy.mode", e))?;
    let deny_style: DenyStyle =
        word(policy.deny_style, "jsonrpc_error").map_err(|e| err("policy.deny_style", e))?;
    let exception_level: ExceptionLevel =
        word(policy.exception_level, "NONE").map_err(|e| err("policy.exception_level", e))?;
    let validation: Validation =
        word(policy.validation, "FAIL_ON_ANY_FINDINGS").map_err(|e| err("policy.validation", e))?;
    let solver = match policy.solver.as_deref().unwrap_or("auto") {
        "auto" => Solver::Auto,
        "none" => Solver::Disabled,
        "" => return Err(err("policy.solver", "must not be empty".to_owned())),
        // A bare name is looked up on the PATH, a path is relative to the config file.
        name if !name.contains('/') => Solver::Path(PathBuf::from(name)),
        path => Solver::Path(base.join(path)),
    };
    let analysis_budget = Budget {
        total: Duration::from_millis(
            positive_ms("", policy.analysis_timeout_ms, DEFAULT_ANALYSIS_TIMEOUT_MS)
                .map_err(|m| err("policy.analysis_timeout_ms", m))?,
        ),
        ..Budget::default()
    };
    let paths = policy.paths.unwrap_or_else(|| {
        DEFAULT_POLICY_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect()
    });
    if paths.is_empty() {
        return Err(err(
            "policy.paths",
            "must name at least one file or folder".to_owned(),
        ));
    }
    let policy_paths = paths.iter().map(|p| base.join(p)).collect();
    let schema = match policy.schema.as_deref().unwrap_or(DEFAULT_SCHEMA) {
        "upstream" => SchemaSource::Upstream,
        "none" => SchemaSource::None,
        "" => return Err(err("policy.schema", "must not be empty".to_owned())),
        path if path.ends_with(".cedarschema") => SchemaSource::CedarSchema(base.join(path)),
        path => SchemaSource::File(base.join(path)),
    };
    let groups: BTreeMap<String, Vec<String>> = policy.groups.unwrap_or_default();
    let model = ModelConfig {
        target,
        gateway_id,
        groups: groups.into_iter().collect(),
    };
    let positive = |key: &str, value: Option<usize>, default: usize| match value {
        Some(0) => Err(err(key, "must be greater than 0".to_owned())),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let layer = Settings {
        engine_name: policy
            .engine
            .unwrap_or_else(|| DEFAULT_ENGINE_NAME.to_owned()),
        mode,
        deny_style,
        exception_level,
        max_body_bytes: positive(
            "policy.max_body_bytes",
            policy.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
        )?,
        max_batch: positive("policy.max_batch", policy.max_batch, DEFAULT_MAX_BATCH)?,
        max_list_bytes: positive(
            "policy.max_list_bytes",
            policy.max_list_bytes,
            DEFAULT_MAX_LIST_BYTES,
        )?,
    };
    let reload_poll_ms = policy.reload_poll_ms.unwrap_or(DEFAULT_RELOAD_POLL_MS);
    if reload_poll_ms < 100 {
        return Err(err(
            "policy.reload_poll_ms",
            format!("{reload_poll_ms} is below 100"),
        ));
    }
    let tools_refresh = match policy.tools_refresh_ms.unwrap_or(DEFAULT_TOOLS_REFRESH_MS) {
        0 => None,
        ms if ms < 1000 => {
            return Err(err(
                "policy.tools_refresh_ms",
                format!("{ms} is below 1000 (0 turns it off)"),
            ));
        }
        ms => Some(Duration::from_millis(ms)),
    };

    let auth = match raw.auth.mode.as_deref().unwrap_or("jwt") {
        "none" => AuthSettings::None,
        "jwt" => {
            let mut table = auth_table;
            // Relative key files resolve against the config file's folder, like `paths`.
            if let Some(toml::Value::String(f)) = table.get("jwks_file") {
                let resolved = base.join(f).display().to_string();
                table.insert("jwks_file".to_owned(), toml::Value::String(resolved));
            }
            AuthSettings::Jwt(table)
        }
        other => {
            return Err(err(
                "auth.mode",
                format!("expected one of jwt, none, got \"{other}\""),
            ));
        }
    };

    Ok(Config {
        file: file.to_path_buf(),
        listen,
        mcp_path,
        shutdown_grace: Duration::from_millis(
            raw.listen
                .shutdown_grace_ms
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
        ),
        upstream,
        upstream_timeout: Duration::from_millis(
            positive_ms(
                "upstream.timeout_ms",
                raw.upstream.timeout_ms,
                DEFAULT_UPSTREAM_TIMEOUT_MS,
            )
            .map_err(|m| err("upstream.timeout_ms", m))?,
        ),
        upstream_connect_timeout: Duration::from_millis(
            positive_ms(
                "upstream.connect_timeout_ms",
                raw.upstream.connect_timeout_ms,
                DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
            )
            .map_err(|m| err("upstream.connect_timeout_ms", m))?,
        ),
        forward_authorization: raw.upstream.forward_authorization.unwrap_or(false),
        admin,
        model,
        layer,
        policy_paths,
        schema,
        validation,
        solver,
        analysis_budget,
        reload_poll: Duration::from_millis(reload_poll_ms),
        tools_refresh,
        auth,
        log_decisions: raw.log.decisions.unwrap_or(true),
        log_arguments: raw.log.log_arguments.unwrap_or(false),
        log_filter: raw
            .log
            .filter
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned()),
    })
}

/// A setting word (`ENFORCE`, `tool_result`, ...), or its default.
fn word<T>(value: Option<String>, default: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err = policy_layer::config::UnknownValue>,
{
    value
        .as_deref()
        .unwrap_or(default)
        .parse()
        .map_err(|e: policy_layer::config::UnknownValue| e.to_string())
}

fn positive_ms(_key: &str, value: Option<u64>, default: u64) -> Result<u64, String> {
    match value {
        Some(0) => Err("must be greater than 0".to_owned()),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[upstream]
url = "http://127.0.0.1:3000/mcp"
[gateway]
id = "gw"
target = "RefundTool"
[auth]
mode = "none"
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_text(
            Path::new("/etc/sidecar/policy-sidecar.toml"),
            text,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let config = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN_ADDRESS);
        assert_eq!(config.admin.to_string(), DEFAULT_ADMIN_ADDRESS);
        assert_eq!(config.mcp_path, "/mcp");
        assert_eq!(
            config.policy_paths,
            [PathBuf::from("/etc/sidecar/policies")]
        );
        assert_eq!(config.schema, SchemaSource::Upstream);
        assert_eq!(config.layer.mode, Mode::Enforce);
        assert_eq!(
            config.reload_poll,
            Duration::from_millis(DEFAULT_RELOAD_POLL_MS)
        );
        assert!(matches!(config.auth, AuthSettings::None));
        assert!(!config.forward_authorization);
        assert!(config.log_decisions && !config.log_arguments);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let text = format!("{MINIMAL}\n[policy]\nmodes = \"ENFORCE\"\n");
        let err = parse(&text, &[]).expect_err("unknown key").to_string();
        assert!(
            err.starts_with("/etc/sidecar/policy-sidecar.toml:11:1: unknown field `modes`"),
            "{err}"
        );
    }

    #[test]
    fn bad_word_names_the_key() {
        let text = format!("{MINIMAL}\n[policy]\nmode = \"MAYBE\"\n");
        let err = parse(&text, &[]).expect_err("bad mode").to_string();
        assert_eq!(
            err,
            "/etc/sidecar/policy-sidecar.toml: policy.mode: expected one of ENFORCE, LOG_ONLY, got \"MAYBE\""
        );
    }

    #[test]
    fn env_overrides_every_kind_of_key() {
        let config = parse(
            MINIMAL,
            &[
                ("POLICY_SIDECAR_POLICY_MODE", "LOG_ONLY"),
                ("POLICY_SIDECAR_POLICY_PATHS", "a, /abs/b"),
                ("POLICY_SIDECAR_LISTEN_SHUTDOWN_GRACE_MS", "250"),
                ("POLICY_SIDECAR_UPSTREAM_FORWARD_AUTHORIZATION", "true"),
                (
                    "POLICY_SIDECAR_POLICY_GROUPS",
                    r#"{"ReadOnly": ["get_order"]}"#,
                ),
                ("UNRELATED", "x"),
            ],
        )
        .expect("valid");
        assert_eq!(config.layer.mode, Mode::LogOnly);
        assert_eq!(
            config.policy_paths,
            [PathBuf::from("/etc/sidecar/a"), PathBuf::from("/abs/b")]
        );
        assert_eq!(config.shutdown_grace, Duration::from_millis(250));
        assert!(config.forward_authorization);
        assert_eq!(config.model.groups["ReadOnly"], ["get_order"]);
    }

    #[test]
    fn unknown_env_key_is_an_error() {
        let err = parse(MINIMAL, &[("POLICY_SIDECAR_POLICY_MOOD", "x")]).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "environment variable POLICY_SIDECAR_POLICY_MOOD: no such config key"
        );
    }

    #[test]
    fn missing_upstream_url_is_named() {
        let err = parse("[gateway]\nid = \"g\"\ntarget = \"T\"\n", &[]).expect_err("missing");
        assert!(err.to_string().ends_with("upstream.url: missing"), "{err}");
    }

    #[test]
    fn jwt_mode_keeps_the_auth_table_with_resolved_key_file() {
        let text = MINIMAL.replace(
            "mode = \"none\"",
            "mode = \"jwt\"\nissuer = \"https://i\"\njwks_file = \"keys/jwks.json\"",
        );
        let config = parse(&text, &[("POLICY_SIDECAR_AUTH_AUDIENCES", "a,b")]).expect("valid");
        let AuthSettings::Jwt(table) = config.auth else {
            panic!("jwt expected")
        };
        assert_eq!(
            table["jwks_file"].as_str(),
            Some("/etc/sidecar/keys/jwks.json")
        );
        assert_eq!(table["audiences"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn schema_path_resolves_against_the_config_folder() {
        let text = format!("{MINIMAL}\n[policy]\nschema = \"tools.json\"\n");
        let config = parse(&text, &[]).expect("valid");
        assert_eq!(
            config.schema,
            SchemaSource::File(PathBuf::from("/etc/sidecar/tools.json"))
        );
    }
}
