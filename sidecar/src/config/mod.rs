//! The sidecar's TOML configuration (the reference is `sidecar/README.md`): the file is read
//! once into a TOML document, the `POLICY_SIDECAR_<SECTION>_<KEY>` environment variables
//! override its keys, and each section validates itself into typed settings (one file each).
//!
//! Errors name the file and the key (and the line and column when the TOML itself is wrong).

mod admin;
mod auth;
mod env;
mod error;
mod gateway;
pub mod keys;
mod listen;
mod log;
mod policy;
mod rate_limit;
mod state;
mod upstream;
mod value;

use std::path::{Path, PathBuf};

use policy_layer::auth::AuthConfig;
use policy_layer::limit::LimitSet;
use policy_layer::model::ModelConfig;
use policy_layer::state::StateSettings;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer, ValueDeserializer};

pub use self::admin::AdminSettings;
pub use self::env::ENV_PREFIX;
pub use self::error::{ConfigError, KeyError};
pub use self::gateway::GatewaySettings;
pub use self::listen::ListenSettings;
pub use self::log::{DEFAULT_FILTER as DEFAULT_LOG_FILTER, LogSettings};
pub use self::policy::{PolicySettings, SchemaSource};
pub use self::upstream::{IdentityField, UpstreamSettings};

/// The file's sections, each read by its own file: the table of contents of the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sections {
    #[serde(default)]
    listen: listen::ListenSection,
    #[serde(default)]
    upstream: upstream::UpstreamSection,
    #[serde(default)]
    admin: admin::AdminSection,
    #[serde(default)]
    gateway: gateway::GatewaySection,
    #[serde(default)]
    policy: policy::PolicySection,
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    log: log::LogSection,
    #[serde(default)]
    rate_limit: rate_limit::RateLimitSection,
    #[serde(default)]
    state: state::StateSection,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file, for messages.
    pub file: PathBuf,
    /// `[listen]`: the MCP listener.
    pub listen: ListenSettings,
    /// `[upstream]`: the MCP tool server.
    pub upstream: UpstreamSettings,
    /// `[admin]`: the admin listener.
    pub admin: AdminSettings,
    /// `[gateway]`: the names of the Cedar model.
    pub gateway: GatewaySettings,
    /// `[policy]`: policies, schema, validation and the layer's settings.
    pub policy: PolicySettings,
    /// `[auth]`: the library's authentication settings.
    pub auth: AuthConfig,
    /// `[log]`: the decision log and the sidecar's own log.
    pub log: LogSettings,
    /// `[[rate_limit]]`: the rate limits, checked before Cedar.
    pub rate_limits: LimitSet,
    /// `[state]`: where the limits are counted, and what a call gets when that fails.
    pub state: StateSettings,
}

impl Config {
    /// Every key of the file, with how its environment override is written.
    #[must_use]
    pub fn keys() -> Vec<keys::Key> {
        keys::keys::<Sections>()
    }

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
        let toml_error = |e: toml::de::Error| ConfigError::toml(&name, text, &e);
        let key_error = |e: KeyError| ConfigError::key(&name, e);
        // Read once; the document keeps the positions the file's errors carry.
        let document = DeTable::parse(text).map_err(toml_error)?;
        if let Some(mode) = auth_mode(document.get_ref()) {
            let mode =
                String::deserialize(ValueDeserializer::from(mode.clone())).map_err(toml_error)?;
            auth::check_mode(&mode).map_err(key_error)?;
        }
        // The file alone first: its errors carry line and column.
        let sections =
            Sections::deserialize(Deserializer::from(document.clone())).map_err(toml_error)?;
        let overrides = env::overrides(env, &Self::keys())?;
        if overrides.is_empty() {
            return sections.settings(file).map_err(key_error);
        }
        let mut table =
            toml::Table::deserialize(Deserializer::from(document)).map_err(toml_error)?;
        for env::Override { var, key, value } in overrides {
            if let (("auth", "mode"), Some(mode)) = ((key.section, key.name), value.as_str()) {
                auth::check_mode(mode).map_err(key_error)?;
            }
            let entry = table
                .entry(key.section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(section) = entry else {
                return Err(ConfigError::Env {
                    var,
                    message: format!("[{}] is not a table in {name}", key.section),
                });
            };
            section.insert(key.name.to_owned(), value);
        }
        let sections = Sections::deserialize(table).map_err(|e| ConfigError::Env {
            var: format!("{ENV_PREFIX}*"),
            message: e.message().trim().to_owned(),
        })?;
        sections.settings(file).map_err(key_error)
    }

    /// The path MCP clients use: `listen.path`, by default the upstream URL's path.
    #[must_use]
    pub fn mcp_path(&self) -> &str {
        self.listen
            .path
            .as_deref()
            .unwrap_or_else(|| self.upstream.url.path())
    }

    /// The Cedar model: the gateway's names and the action groups.
    #[must_use]
    pub fn model(&self) -> ModelConfig {
        ModelConfig {
            target: self.gateway.target.clone(),
            gateway_id: self.gateway.id.clone(),
            groups: self.policy.groups.clone(),
            govern: self.policy.govern,
        }
    }
}

impl Sections {
    /// Validates every section, and what concerns two of them.
    fn settings(self, file: &Path) -> Result<Config, KeyError> {
        // Relative paths resolve against the config file's folder ("" for a bare file name).
        let base = file.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        let listen = self.listen.settings()?;
        let admin = self.admin.settings()?;
        if listen.address == admin.address && listen.address.port() != 0 {
            return Err(KeyError::new(
                "admin.address",
                "must differ from listen.address",
            ));
        }
        Ok(Config {
            file: file.to_path_buf(),
            listen,
            upstream: self.upstream.settings()?,
            admin,
            gateway: self.gateway.settings()?,
            policy: self.policy.settings(&base)?,
            auth: auth::settings(self.auth, &base),
            log: self.log.settings(),
            rate_limits: rate_limit::settings(&self.rate_limit)?,
            state: state::settings(&self.state)?,
        })
    }
}

/// `auth.mode` as written in the document.
fn auth_mode<'d, 'i>(document: &'d DeTable<'i>) -> Option<&'d Spanned<DeValue<'i>>> {
    document.get("auth")?.get_ref().get("mode")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use policy_layer::Mode;
    use policy_layer::auth::AuthMode;

    use super::keys::Kind;
    use super::*;

    pub(super) const MINIMAL: &str = r#"
[upstream]
url = "http://127.0.0.1:3000/mcp"
[gateway]
id = "gw"
target = "RefundTool"
[auth]
mode = "none"
"#;

    pub(super) fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_text(
            Path::new("/etc/sidecar/policy-sidecar.toml"),
            text,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let config = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(config.listen.address.to_string(), listen::DEFAULT_ADDRESS);
        assert_eq!(config.admin.address.to_string(), admin::DEFAULT_ADDRESS);
        assert_eq!(config.mcp_path(), "/mcp");
        assert_eq!(
            config.policy.paths,
            [PathBuf::from("/etc/sidecar/policies")]
        );
        assert_eq!(config.policy.schema, SchemaSource::Upstream);
        assert_eq!(config.policy.layer.mode, Mode::Enforce);
        assert_eq!(
            config.policy.reload_poll,
            Duration::from_millis(policy::DEFAULT_RELOAD_POLL_MS)
        );
        assert_eq!(config.auth.mode, AuthMode::None);
        assert!(!config.upstream.forward_authorization);
        assert!(config.log.decisions && !config.log.arguments);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let text = format!("{MINIMAL}\n[policy]\nmodes = \"ENFORCE\"\n");
        let err = parse(&text, &[]).expect_err("unknown key").to_string();
        assert!(
            err.starts_with("/etc/sidecar/policy-sidecar.toml:11:1: unknown field `modes`"),
            "{err}"
        );
        // The library's `AuthConfig` reads `[auth]`, down to each issuer's keys.
        let text =
            format!("{MINIMAL}\n[[auth.issuers]]\nissuer = \"https://i\"\naudience = \"a\"\n");
        let err = parse(&text, &[]).expect_err("unknown key").to_string();
        assert!(
            err.starts_with("/etc/sidecar/policy-sidecar.toml:12:1: unknown field `audience`"),
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
        assert_eq!(config.policy.layer.mode, Mode::LogOnly);
        assert_eq!(
            config.policy.paths,
            [PathBuf::from("/etc/sidecar/a"), PathBuf::from("/abs/b")]
        );
        assert_eq!(config.listen.shutdown_grace, Duration::from_millis(250));
        assert!(config.upstream.forward_authorization);
        assert_eq!(config.model().groups["ReadOnly"], ["get_order"]);
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
    fn jwt_mode_reads_the_auth_section_with_resolved_key_file() {
        let text = MINIMAL.replace(
            "mode = \"none\"",
            "mode = \"jwt\"\nissuer = \"https://i\"\njwks_file = \"keys/jwks.json\"",
        );
        let config = parse(&text, &[("POLICY_SIDECAR_AUTH_AUDIENCES", "a,b")]).expect("valid");
        assert_eq!(config.auth.mode, AuthMode::Jwt);
        assert_eq!(
            config.auth.jwks_file.as_deref(),
            Some(Path::new("/etc/sidecar/keys/jwks.json"))
        );
        assert_eq!(config.auth.audiences.len(), 2);
    }

    #[test]
    fn schema_path_resolves_against_the_config_folder() {
        let text = format!("{MINIMAL}\n[policy]\nschema = \"tools.json\"\n");
        let config = parse(&text, &[]).expect("valid");
        assert_eq!(
            config.policy.schema,
            SchemaSource::File(PathBuf::from("/etc/sidecar/tools.json"))
        );
    }

    #[test]
    fn unknown_auth_mode_is_named_like_other_words() {
        let text = MINIMAL.replace("mode = \"none\"", "mode = \"oauth\"");
        let err = parse(&text, &[]).expect_err("bad mode").to_string();
        assert_eq!(
            err,
            "/etc/sidecar/policy-sidecar.toml: auth.mode: expected one of jwt, none, got \"oauth\""
        );
        let err = parse(MINIMAL, &[("POLICY_SIDECAR_AUTH_MODE", "oauth")])
            .expect_err("bad mode")
            .to_string();
        assert!(
            err.ends_with("auth.mode: expected one of jwt, none, got \"oauth\""),
            "{err}"
        );
        let text = MINIMAL.replace("mode = \"none\"", "mode = 5");
        let err = parse(&text, &[]).expect_err("not a word").to_string();
        assert_eq!(
            err,
            "/etc/sidecar/policy-sidecar.toml:8:8: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn env_override_of_a_wrong_type_names_the_variables() {
        let err = parse(MINIMAL, &[("POLICY_SIDECAR_POLICY_MAX_BATCH", "-1")])
            .expect_err("negative")
            .to_string();
        assert!(
            err.starts_with("environment variable POLICY_SIDECAR_*: "),
            "{err}"
        );
    }

    #[test]
    fn override_kinds_follow_the_types_of_the_sections() {
        let keys = Config::keys();
        let kind = |section: &str, name: &str| {
            keys.iter()
                .find(|k| k.section == section && k.name == name)
                .map(|k| k.kind)
        };
        assert_eq!(kind("listen", "address"), Some(Kind::Str));
        assert_eq!(kind("listen", "shutdown_grace_ms"), Some(Kind::Int));
        assert_eq!(kind("upstream", "forward_authorization"), Some(Kind::Bool));
        assert_eq!(kind("policy", "paths"), Some(Kind::List));
        assert_eq!(kind("policy", "groups"), Some(Kind::Json));
        assert_eq!(kind("policy", "max_body_bytes"), Some(Kind::Int));
        assert_eq!(kind("auth", "mode"), Some(Kind::Str));
        assert_eq!(kind("auth", "jwks_file"), Some(Kind::Str));
        assert_eq!(kind("auth", "audiences"), Some(Kind::List));
        assert_eq!(kind("auth", "leeway_secs"), Some(Kind::Int));
        assert_eq!(kind("auth", "issuers"), Some(Kind::Json));
        assert_eq!(kind("auth", "tuning"), None, "not a key of the file");
        assert_eq!(kind("log", "filter"), Some(Kind::Str));
    }

    #[test]
    fn rate_limits_and_state_are_read_and_validated() {
        let text = format!(
            r#"{MINIMAL}
[[rate_limit]]
id = "refunds-per-user"
tool = "process_refund"
key = ["jwt.sub"]
rate = 5
per = "minute"

[[rate_limit]]
id = "in-flight"
metric = "connections"
rate = 2

[state]
url = "redis://127.0.0.1:6379/0"
on_error = "allow"
"#
        );
        let config = parse(&text, &[("POLICY_SIDECAR_STATE_TIMEOUT_MS", "100")]).expect("valid");
        let ids: Vec<&str> = config.rate_limits.limits().iter().map(|l| &*l.id).collect();
        assert_eq!(ids, ["refunds-per-user", "in-flight"]);
        assert_eq!(config.state.on_error, policy_layer::state::OnError::Allow);
        assert_eq!(config.state.timeout, Duration::from_millis(100));
        let minimal = parse(MINIMAL, &[]).expect("valid");
        assert!(minimal.rate_limits.is_empty());
        assert_eq!(
            minimal.state.backend,
            policy_layer::state::BackendSettings::Memory
        );
    }

    #[test]
    fn a_bad_rate_limit_or_state_key_is_named() {
        let text = format!(
            "{MINIMAL}\n[[rate_limit]]\nid = \"a\"\nkey = [\"jwt.\"]\nrate = 1\nper = \"second\"\n"
        );
        assert_eq!(
            parse(&text, &[]).expect_err("bad key").to_string(),
            "/etc/sidecar/policy-sidecar.toml: rate_limit: \"a\": key \"jwt.\": jwt.<claim> needs a claim name"
        );
        let text = format!("{MINIMAL}\n[[rate_limit]]\nid = \"a\"\nrate = 1\nburst = 2\n");
        let err = parse(&text, &[]).expect_err("unknown key").to_string();
        assert!(err.contains("unknown field `burst`"), "{err}");
        let text = format!("{MINIMAL}\n[state]\non_error = \"maybe\"\n");
        assert_eq!(
            parse(&text, &[]).expect_err("bad word").to_string(),
            "/etc/sidecar/policy-sidecar.toml: state.on_error: expected one of deny, allow, got \"maybe\""
        );
    }

    #[test]
    fn rate_limit_tables_are_not_set_from_the_environment() {
        let err = parse(MINIMAL, &[("POLICY_SIDECAR_RATE_LIMIT_RATE", "5")])
            .expect_err("repeated")
            .to_string();
        assert_eq!(
            err,
            "environment variable POLICY_SIDECAR_RATE_LIMIT_RATE: [[rate_limit]] tables are set in the config file only (a variable cannot say which table it means)"
        );
        let keys = Config::keys();
        let rate = keys
            .iter()
            .find(|k| k.section == "rate_limit" && k.name == "key")
            .expect("rate_limit.key is a key");
        assert!(rate.repeated);
        assert_eq!(rate.kind, Kind::List);
        assert!(
            keys.iter()
                .any(|k| k.section == "state" && k.name == "on_error" && !k.repeated)
        );
    }

    #[test]
    fn every_key_is_documented_in_the_sidecar_readme() {
        let readme = include_str!("../../README.md");
        let missing: Vec<String> = Config::keys()
            .iter()
            .map(|k| format!("`{}.{}`", k.section, k.name))
            .filter(|key| !readme.contains(key.as_str()))
            .collect();
        assert!(missing.is_empty(), "not in sidecar/README.md: {missing:?}");
    }
}
