//! The command line (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A localhost reverse proxy that enforces AgentCore-compatible Cedar policies on the MCP tool
/// calls sent to an existing MCP tool server.
#[derive(Debug, Parser)]
#[command(name = "policy-sidecar", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: proxy MCP requests to the upstream, deciding every tools/call and filtering
    /// tools/list; admin endpoints /livez, /readyz and /metrics on the admin address. Policy
    /// files hot-reload. SIGTERM drains requests in flight, then exits 0.
    Run(ConfigArg),
    /// Load the config and every policy file and report problems with file:line:column.
    /// Exits 0 when everything loads, 1 on policy errors, 64 on config errors.
    Validate(ConfigArg),
    /// Print the tools the Cedar schema is generated from (fetched from the upstream when
    /// `schema = "upstream"`, or read from the configured tools file), as JSON.
    Schema(SchemaArgs),
    /// Run policy unit tests: each case gives JWT claims, a tool and its input, and the
    /// expected decision (ALLOW or DENY, optionally the determining policy ids). Prints
    /// `PASS name` or `FAIL name: ...` per case and `N passed, N failed`; exits 1 on a failure.
    Test(TestArgs),
    /// Write tools.lock: each tool's name and the hash of its description, inputSchema and
    /// annotations as the upstream (or the tools file) describes them now. With
    /// `policy.tools_lock` set, a tool that no longer matches its pin is denied and dropped
    /// from lists until it is pinned again.
    Pin(PinArgs),
}

/// Arguments of `pin`.
#[derive(Debug, Args)]
pub struct PinArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Read the tools from this file instead of the configured schema source.
    #[arg(long, value_name = "FILE")]
    pub tools: Option<PathBuf>,
    /// Where to write the lock (default: `policy.tools_lock`, else tools.lock beside the
    /// config file).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `--config FILE`.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The TOML configuration file (every key can be overridden by
    /// POLICY_SIDECAR_<SECTION>_<KEY>).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
}

/// Arguments of `schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Read the tools from this file (a tools/list result or an array of tools) instead of
    /// the configured schema source.
    #[arg(long, value_name = "FILE")]
    pub tools: Option<PathBuf>,
}

/// Arguments of `test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Type inputs with the tools in this file (a tools/list result or an array of tools)
    /// instead of the configured schema source.
    #[arg(long, value_name = "FILE")]
    pub tools: Option<PathBuf>,
    /// Enforce the shadow policies (`@enforcement("LOG_ONLY")`) for this run, to see which
    /// cases their promotion would change.
    #[arg(long)]
    pub promote_shadow: bool,
    /// The YAML file of test cases: a list (or `cases:` list) of
    /// `{name, claims, tool, input, expect, determining}`.
    #[arg(value_name = "CASES")]
    pub cases: PathBuf,
}
