//! `policy-sidecar`: runs the policy layer as a localhost reverse proxy in front of an existing
//! MCP tool server (SPEC section 9).
//!
//! Run with: cargo run -p policy-sidecar -- run --config policy-sidecar.toml

mod admin;
mod auth;
mod body;
mod cli;
mod config;
mod decision_log;
mod metrics;
mod policy_files;
mod policy_test;
mod proxy;
mod reload;
mod route;
mod server;
mod shutdown;
mod state;
mod telemetry;
mod tools_source;
mod upstream_tools;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use policy_layer::engine;
use policy_layer::model::ToolCatalog;
use policy_layer::model::schema::GatewaySchema;
use policy_layer::{PolicyEngine, PolicyLayer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::Layer;

use crate::cli::{Cli, Command};
use crate::config::{Config, SchemaSource};
use crate::decision_log::{DecisionLog, Observer};
use crate::metrics::Metrics;
use crate::state::EngineFeed;

/// Exit status of a bad configuration or bad policies at start (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status of `validate` with policy errors and of `test` with a failing case.
const EXIT_FAILED: u8 = 1;

/// A failure that ends the process with a given status.
struct Exit {
    status: u8,
    message: String,
}

impl Exit {
    fn config(message: impl std::fmt::Display) -> Self {
        Self {
            status: EXIT_CONFIG,
            message: message.to_string(),
        }
    }
}

impl From<anyhow::Error> for Exit {
    fn from(error: anyhow::Error) -> Self {
        Self {
            status: EXIT_FAILED,
            message: format!("{error:#}"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("policy-sidecar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(&args.config).await,
            Command::Validate(args) => validate(&args.config).await,
            Command::Schema(args) => schema(&args.config.config, args.tools.as_deref()).await,
            Command::Test(args) => {
                test(
                    &args.config.config,
                    args.tools.as_deref(),
                    &args.cases,
                    args.promote_shadow,
                )
                .await
            }
        }
    });
    // Requests still being drained past the grace period are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if !exit.message.is_empty() {
                eprintln!("policy-sidecar: {}", exit.message);
            }
            ExitCode::from(exit.status)
        }
    }
}

fn load_config(file: &std::path::Path) -> Result<Config, Exit> {
    Config::load(file).map_err(Exit::config)
}

/// Logs to stderr through `filter`; with an exporter, spans also go to OpenTelemetry (with a
/// filter of their own, so the log level does not decide what is traced).
fn init_logging(filter: &str, telemetry: &telemetry::Telemetry) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config::DEFAULT_LOG_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let Some(otel) = telemetry.layer() else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .try_init();
        return;
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
}

/// `run`: serve until SIGTERM/SIGINT.
async fn run(file: &std::path::Path) -> Result<(), Exit> {
    let config = load_config(file)?;
    let telemetry = telemetry::Telemetry::from_env().map_err(Exit::config)?;
    init_logging(&config.log_filter, &telemetry);
    telemetry.log_start();

    let (sources, policies) =
        policy_files::load(&config.policy_paths, true).map_err(Exit::config)?;
    if policies.policies.is_empty() {
        tracing::warn!("no policies found: every tool call is denied");
    }
    let file_tools = match &config.schema {
        SchemaSource::File(path) => {
            Some(tools_source::read_tools_file(path).map_err(Exit::config)?)
        }
        SchemaSource::Upstream | SchemaSource::None | SchemaSource::CedarSchema(_) => None,
    };

    let metrics = Arc::new(Metrics::new());
    let engine = engine_for(&config)?;
    let feed = EngineFeed::new(
        engine.clone(),
        config.schema == SchemaSource::Upstream,
        Arc::clone(&metrics),
    );
    if let Some(tools) = file_tools {
        feed.set_catalog(ToolCatalog::from_list(&Value::Array(tools)));
    }
    metrics.reload(Some(policies.policies.len()));
    feed.set_policies(policies).map_err(|refused| {
        Exit::config(format!(
            "policies refused by validation (policy.validation = FAIL_ON_ANY_FINDINGS):\n{refused}"
        ))
    })?;

    let log = if config.log_decisions {
        Some(DecisionLog::start().context("starting the decision log")?)
    } else {
        None
    };
    let observer = Observer::new(Arc::clone(&metrics), log.clone(), config.log_arguments);
    let layer = PolicyLayer::new(engine)
        .settings(config.layer.clone())
        .observer(Arc::new(observer));
    let (layer, authenticator) = auth::apply(layer, &config.auth, &config.public_resource())
        .await
        .map_err(|e| Exit::config(format!("{}: {e}", config.file.display())))?;

    let shutdown = CancellationToken::new();
    let list_changed = Arc::new(Notify::new());
    let client = proxy::client(config.upstream_connect_timeout);
    let upstream = proxy::Upstream::new(
        client.clone(),
        config.upstream.clone(),
        config.upstream_timeout,
        config.forward_authorization,
        Arc::clone(&metrics),
        Arc::clone(&list_changed),
        shutdown.clone(),
    );
    let mcp = route::McpService::new(&config.mcp_path, layer.layer(upstream));

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen.address: binding {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin)
        .await
        .with_context(|| format!("admin.address: binding {}", config.admin))?;
    shutdown::on_signal(shutdown.clone()).context("installing signal handlers")?;
    let mcp_addr = listener.local_addr().context("listen.address")?;
    let admin_addr = admin_listener.local_addr().context("admin.address")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "policy-sidecar listening on http://{mcp_addr}{}",
            config.mcp_path
        )
        .and_then(|()| writeln!(out, "admin listening on http://{admin_addr}"))
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    }
    tracing::info!(
        upstream = %config.upstream,
        mode = %config.layer.mode,
        policy_files = sources.len(),
        "serving"
    );

    let reloader = reload::Reloader::new(
        config.policy_paths.clone(),
        feed.clone(),
        Arc::clone(&metrics),
        config.reload_poll,
        sources,
    );
    tokio::spawn(reloader.run(shutdown.clone()));
    if config.schema == SchemaSource::Upstream {
        let refresher = upstream_tools::ToolsRefresher {
            client,
            url: config.upstream.clone(),
            timeout: config.upstream_timeout,
            feed: feed.clone(),
            list_changed,
            every: config.tools_refresh,
        };
        tokio::spawn(refresher.run(shutdown.clone()));
    }

    let admin = admin::Admin::new(Arc::clone(&metrics), feed, authenticator);
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        admin,
        shutdown.clone(),
        std::time::Duration::from_secs(1),
    ));
    let drained = server::serve(listener, mcp, shutdown, config.shutdown_grace).await;
    let _ = admin_task.await;
    match drained {
        server::Drained::All => tracing::info!("all requests finished; bye"),
        server::Drained::TimedOut => tracing::warn!(
            grace_ms = u64::try_from(config.shutdown_grace.as_millis()).unwrap_or(u64::MAX),
            "grace period over; closing the connections still open"
        ),
    }
    if let Some(log) = log {
        log.close();
    }
    telemetry.shutdown().await;
    Ok(())
}

/// `validate`: load the config and the policies, validate them against the schema (from the
/// tools file, a `.cedarschema`, or the upstream when it answers); report every error.
async fn validate(file: &std::path::Path) -> Result<(), Exit> {
    let config = load_config(file)?;
    let (sources, loaded) = match policy_files::load(&config.policy_paths, true) {
        Ok(loaded) => loaded,
        Err(policy_files::PolicyFilesError::Load(errors)) => {
            for error in &errors.0 {
                println!("{error}");
            }
            return Err(Exit {
                status: EXIT_FAILED,
                message: format!("{} error(s)", errors.0.len()),
            });
        }
        Err(other) => {
            return Err(Exit {
                status: EXIT_FAILED,
                message: other.to_string(),
            });
        }
    };
    let engine = engine_for(&config)?;
    match tools_source::tools_for(&config, None).await {
        Ok(Some(tools)) => {
            let _ = engine.set_catalog(ToolCatalog::from_list(&Value::Array(tools)));
        }
        Ok(None) => {}
        Err(e) => println!("warning: {e}; policies are checked without the upstream's schema"),
    }
    let count = loaded.policies.len();
    let validation = config.validation;
    match engine.set_policies(loaded) {
        Ok(report) => {
            for note in &report.notes {
                println!("note: {note}");
            }
            for finding in &report.findings {
                println!("warning: {finding}");
            }
            if let Some(analysis) = &report.analysis {
                println!("{analysis}");
            }
            println!("ok: {count} policies in {} files", sources.len());
            Ok(())
        }
        Err(refused) => {
            for note in &refused.notes {
                println!("note: {note}");
            }
            for finding in &refused.findings {
                println!("{finding}");
            }
            Err(Exit {
                status: EXIT_FAILED,
                message: format!(
                    "{} finding(s) (policy.validation = {validation})",
                    refused.findings.len()
                ),
            })
        }
    }
}

/// A policy engine for `config`, validating against the configured schema source.
fn engine_for(config: &Config) -> Result<PolicyEngine, Exit> {
    let source = match &config.schema {
        SchemaSource::Upstream | SchemaSource::File(_) => engine::SchemaSource::FromTools,
        SchemaSource::None => engine::SchemaSource::Disabled,
        SchemaSource::CedarSchema(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Exit::config(format!("policy.schema: {}: {e}", path.display())))?;
            let schema = GatewaySchema::from_cedarschema(&text)
                .map_err(|e| Exit::config(format!("policy.schema: {}: {e}", path.display())))?;
            engine::SchemaSource::Fixed(Arc::new(schema))
        }
    };
    let engine = PolicyEngine::new(config.model.clone());
    engine.configure_validation(source, config.validation);
    engine.configure_analysis(config.solver.clone(), config.analysis_budget);
    Ok(engine)
}

/// `schema`: print the tools the Cedar schema comes from.
async fn schema(file: &std::path::Path, tools: Option<&std::path::Path>) -> Result<(), Exit> {
    let config = load_config(file)?;
    let tools = tools_source::tools_for(&config, tools)
        .await
        .map_err(|e| Exit {
            status: EXIT_FAILED,
            message: e.to_string(),
        })?;
    let Some(tools) = tools else {
        return Err(Exit {
            status: EXIT_FAILED,
            message: "policy.schema = \"none\": no tools to print (pass --tools FILE)".to_owned(),
        });
    };
    let catalog = ToolCatalog::from_list(&Value::Array(tools));
    let schema = GatewaySchema::generate(&config.model, &catalog).map_err(|e| Exit {
        status: EXIT_FAILED,
        message: e.to_string(),
    })?;
    println!("{}", schema.text);
    Ok(())
}

/// `test`: run the policy unit tests of a cases file.
async fn test(
    file: &std::path::Path,
    tools: Option<&std::path::Path>,
    cases: &std::path::Path,
    promote_shadow: bool,
) -> Result<(), Exit> {
    let config = load_config(file)?;
    let (_, mut policies) = policy_files::load(&config.policy_paths, true).map_err(Exit::config)?;
    if promote_shadow {
        for policy in &mut policies.policies {
            if policy.enforcement == engine::Enforcement::LogOnly {
                eprintln!("promoting shadow policy `{}`", policy.policy.id());
                policy.enforcement = engine::Enforcement::Enforce;
            }
        }
    }
    let tools = tools_source::tools_for(&config, tools)
        .await
        .map_err(|e| Exit {
            status: EXIT_FAILED,
            message: format!("{e} (pass --tools FILE to test without the upstream)"),
        })?;
    let cases = policy_test::read_cases(cases).map_err(|e| Exit {
        status: EXIT_FAILED,
        message: e.to_string(),
    })?;
    // Cases test decisions; findings are `validate`'s business, so here they only warn.
    let mut config = config;
    config.validation = policy_layer::config::Validation::IgnoreAllFindings;
    let engine = engine_for(&config)?;
    if let Some(tools) = tools {
        let _ = engine.set_catalog(ToolCatalog::from_list(&Value::Array(tools)));
    }
    let report = engine.set_policies(policies).map_err(|refused| Exit {
        status: EXIT_FAILED,
        message: refused.to_string(),
    })?;
    for finding in &report.findings {
        eprintln!("warning: {finding}");
    }
    let snapshot = engine.snapshot().context("no policy snapshot")?;
    let mut out = std::io::stdout().lock();
    let (_, failed) = policy_test::run(&snapshot, &cases, &mut out).context("writing to stdout")?;
    if failed > 0 {
        return Err(Exit {
            status: EXIT_FAILED,
            message: String::new(),
        });
    }
    Ok(())
}
