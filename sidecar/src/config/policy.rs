//! `[policy]`: where the policies and the tool schema come from, how they are checked, and
//! the policy layer's settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use policy_layer::config::{
    DEFAULT_ENGINE_NAME, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_LIST_BYTES,
    Validation,
};
use policy_layer::engine::{Budget, Solver};
use policy_layer::model::Govern;
use policy_layer::model::actions::{Capability, is_reserved};
use policy_layer::{DenyStyle, ExceptionLevel, Mode, Settings};
use serde::Deserialize;

use super::error::KeyError;
use super::value;

/// Default policy paths, relative to the config file's folder.
pub const DEFAULT_PATHS: &[&str] = &["policies"];
/// Default schema source.
pub const DEFAULT_SCHEMA: &str = "upstream";
/// Default time budget of the semantic analysis of a policy set.
pub const DEFAULT_ANALYSIS_TIMEOUT_MS: u64 = 120_000;
/// Default interval of the policy files poll (the fallback beside file notifications).
pub const DEFAULT_RELOAD_POLL_MS: u64 = 2_000;
/// Shortest interval of the policy files poll.
pub const MIN_RELOAD_POLL_MS: u64 = 100;
/// Default interval of the periodic re-fetch of the upstream's tools (0 turns it off).
pub const DEFAULT_TOOLS_REFRESH_MS: u64 = 300_000;
/// Shortest interval of the periodic re-fetch of the upstream's tools.
pub const MIN_TOOLS_REFRESH_MS: u64 = 1_000;

/// The section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
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
    govern: Option<Vec<String>>,
    reload_poll_ms: Option<u64>,
    tools_refresh_ms: Option<u64>,
    max_body_bytes: Option<usize>,
    max_batch: Option<usize>,
    max_list_bytes: Option<usize>,
    tools_lock: Option<String>,
}

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

/// The policies' settings.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// The layer's settings.
    pub layer: Settings,
    /// Policy files and folders (absolute).
    pub paths: Vec<PathBuf>,
    /// Where the tool schema comes from.
    pub schema: SchemaSource,
    /// What validation findings do.
    pub validation: Validation,
    /// The SMT solver of the semantic analysis (`FAIL_ON_ANY_FINDINGS`).
    pub solver: Solver,
    /// What the semantic analysis may spend.
    pub analysis_budget: Budget,
    /// Extra action groups: group name -> its tools.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The capabilities the policy decides (`tools` always).
    pub govern: Govern,
    /// Poll interval of the policy files.
    pub reload_poll: Duration,
    /// Periodic re-fetch of the upstream's tools (`None`: off).
    pub tools_refresh: Option<Duration>,
    /// `tools.lock`, enforced when set (absolute).
    pub tools_lock: Option<PathBuf>,
}

impl PolicySection {
    /// Validates the section; relative paths resolve against `base`, the config file's folder.
    ///
    /// # Errors
    /// A [`KeyError`] naming the key.
    pub fn settings(self, base: &Path) -> Result<PolicySettings, KeyError> {
        let mode: Mode = value::word("policy.mode", self.mode, "ENFORCE")?;
        let deny_style: DenyStyle =
            value::word("policy.deny_style", self.deny_style, "jsonrpc_error")?;
        let exception_level: ExceptionLevel =
            value::word("policy.exception_level", self.exception_level, "NONE")?;
        let validation: Validation =
            value::word("policy.validation", self.validation, "FAIL_ON_ANY_FINDINGS")?;
        let solver = solver(self.solver.as_deref(), base)?;
        let analysis_timeout_ms = value::positive(
            "policy.analysis_timeout_ms",
            self.analysis_timeout_ms,
            DEFAULT_ANALYSIS_TIMEOUT_MS,
        )?;
        let paths = self
            .paths
            .unwrap_or_else(|| DEFAULT_PATHS.iter().map(|p| (*p).to_owned()).collect());
        if paths.is_empty() {
            return Err(KeyError::new(
                "policy.paths",
                "must name at least one file or folder",
            ));
        }
        let schema = schema(self.schema.as_deref(), base)?;
        if self.tools_lock.is_some()
            && matches!(schema, SchemaSource::None | SchemaSource::CedarSchema(_))
        {
            return Err(KeyError::new(
                "policy.tools_lock",
                "pins are checked against the tools' definitions: set policy.schema to \"upstream\" or a tools file",
            ));
        }
        let govern = govern(self.govern.as_deref())?;
        let groups = self.groups.unwrap_or_default();
        if let Some(group) = groups.keys().find(|g| is_reserved(g)) {
            return Err(KeyError::new(
                "policy.groups",
                format!("\"{group}\" is an action of the model itself; choose another name"),
            ));
        }
        let layer = Settings {
            engine_name: self
                .engine
                .unwrap_or_else(|| DEFAULT_ENGINE_NAME.to_owned()),
            mode,
            deny_style,
            exception_level,
            max_body_bytes: value::positive(
                "policy.max_body_bytes",
                self.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
            )?,
            max_batch: value::positive("policy.max_batch", self.max_batch, DEFAULT_MAX_BATCH)?,
            max_list_bytes: value::positive(
                "policy.max_list_bytes",
                self.max_list_bytes,
                DEFAULT_MAX_LIST_BYTES,
            )?,
        };
        let reload_poll_ms = self.reload_poll_ms.unwrap_or(DEFAULT_RELOAD_POLL_MS);
        if reload_poll_ms < MIN_RELOAD_POLL_MS {
            return Err(KeyError::new(
                "policy.reload_poll_ms",
                format!("{reload_poll_ms} is below {MIN_RELOAD_POLL_MS}"),
            ));
        }
        let tools_refresh = match self.tools_refresh_ms.unwrap_or(DEFAULT_TOOLS_REFRESH_MS) {
            0 => None,
            ms if ms < MIN_TOOLS_REFRESH_MS => {
                return Err(KeyError::new(
                    "policy.tools_refresh_ms",
                    format!("{ms} is below {MIN_TOOLS_REFRESH_MS} (0 turns it off)"),
                ));
            }
            ms => Some(Duration::from_millis(ms)),
        };
        Ok(PolicySettings {
            layer,
            paths: paths.iter().map(|p| base.join(p)).collect(),
            schema,
            validation,
            solver,
            analysis_budget: Budget {
                total: Duration::from_millis(analysis_timeout_ms),
                ..Budget::default()
            },
            groups,
            govern,
            reload_poll: Duration::from_millis(reload_poll_ms),
            tools_refresh,
            tools_lock: self.tools_lock.map(|p| base.join(p)),
        })
    }
}

/// `policy.govern`: the capabilities the policy decides; `["tools"]` when absent. Tools must
/// be among them: a tool call is never forwarded undecided.
fn govern(words: Option<&[String]>) -> Result<Govern, KeyError> {
    let Some(words) = words else {
        return Ok(Govern::default());
    };
    let capabilities = words
        .iter()
        .map(|word| word.parse::<Capability>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KeyError::new("policy.govern", e.to_string()))?;
    if !capabilities.contains(&Capability::Tools) {
        return Err(KeyError::new(
            "policy.govern",
            "must include \"tools\": tool calls are always governed",
        ));
    }
    Ok(Govern::new(capabilities))
}

/// `policy.solver`: `auto`, `none`, a command looked up on the `PATH`, or a path relative to
/// `base`.
fn solver(value: Option<&str>, base: &Path) -> Result<Solver, KeyError> {
    Ok(match value.unwrap_or("auto") {
        "auto" => Solver::Auto,
        "none" => Solver::Disabled,
        "" => return Err(KeyError::new("policy.solver", "must not be empty")),
        name if !name.contains('/') => Solver::Path(PathBuf::from(name)),
        path => Solver::Path(base.join(path)),
    })
}

/// `policy.schema`: `upstream`, `none`, a `.cedarschema` file or a tools file, relative to
/// `base`.
fn schema(value: Option<&str>, base: &Path) -> Result<SchemaSource, KeyError> {
    Ok(match value.unwrap_or(DEFAULT_SCHEMA) {
        "upstream" => SchemaSource::Upstream,
        "none" => SchemaSource::None,
        "" => return Err(KeyError::new("policy.schema", "must not be empty")),
        path if path.ends_with(".cedarschema") => SchemaSource::CedarSchema(base.join(path)),
        path => SchemaSource::File(base.join(path)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MINIMAL, parse};

    #[test]
    fn govern_names_capabilities_and_always_includes_tools() {
        use policy_layer::model::Capability;
        let config = parse(MINIMAL, &[]).expect("valid");
        assert!(
            config.model().govern.tools_only(),
            "AgentCore's behaviour by default"
        );
        let text =
            format!("{MINIMAL}\n[policy]\ngovern = [\"tools\", \"resources\", \"invoke\"]\n");
        let govern = parse(&text, &[]).expect("valid").model().govern;
        assert!(govern.governs(Capability::Resources) && govern.governs(Capability::Invoke));
        assert!(!govern.governs(Capability::Prompts));
        let env = parse(
            MINIMAL,
            &[(
                "POLICY_SIDECAR_POLICY_GOVERN",
                "tools,prompts,server_requests",
            )],
        )
        .expect("valid")
        .model()
        .govern;
        assert!(env.governs(Capability::ServerRequests));
        let err = parse(
            &format!("{MINIMAL}\n[policy]\ngovern = [\"resources\"]\n"),
            &[],
        )
        .expect_err("tools missing")
        .to_string();
        assert!(
            err.ends_with("policy.govern: must include \"tools\": tool calls are always governed"),
            "{err}"
        );
        let err = parse(
            &format!("{MINIMAL}\n[policy]\ngovern = [\"tools\", \"sampling\"]\n"),
            &[],
        )
        .expect_err("unknown")
        .to_string();
        assert!(err.contains("policy.govern: expected one of tools, resources, prompts, server_requests, invoke, got \"sampling\""), "{err}");
        let err = parse(
            &format!("{MINIMAL}\n[policy]\ngroups = {{ ReadOnlyTools = [\"a\"] }}\n"),
            &[],
        )
        .expect_err("reserved")
        .to_string();
        assert!(
            err.contains("policy.groups: \"ReadOnlyTools\" is an action of the model itself"),
            "{err}"
        );
    }

    #[test]
    fn a_target_named_as_an_action_of_the_model_is_refused() {
        let err = parse(&MINIMAL.replace("RefundTool", "ReadResource"), &[])
            .expect_err("reserved")
            .to_string();
        assert!(err.ends_with("gateway.target: \"ReadResource\" is an action of the model itself; choose another name"), "{err}");
    }
}
