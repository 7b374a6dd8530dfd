//! `run`: serve until SIGTERM/SIGINT. Wires the rooms together: the config feeds the engine,
//! the proxy decides with it, the observers watch both, and the listeners serve until the
//! shutdown signal, then drain.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use policy_layer::PolicySource;
use policy_layer::auth::Authenticator;
use policy_layer::model::Capability;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::Layer;

use super::args::ConfigArg;
use super::exit::Exit;
use crate::config::{Config, SchemaSource};
use crate::feed::engine::{self, EngineFeed};
use crate::feed::reload::Reloader;
use crate::feed::upstream_tools::ToolsRefresher;
use crate::feed::{policy_files, tools};
use crate::observe::admin::{Admin, Readiness};
use crate::observe::decision_log::{DecisionLog, Observer};
use crate::observe::logging;
use crate::observe::metrics::Metrics;
use crate::observe::telemetry::Telemetry;
use crate::proxy::listener::{self, Drained};
use crate::proxy::router::McpService;
use crate::proxy::upstream::{self, HttpClient, Upstream};
use crate::proxy::{policy, shutdown};

/// How long admin requests get to finish at shutdown.
const ADMIN_GRACE: Duration = Duration::from_secs(1);

/// What the pieces of a running sidecar share.
struct Shared {
    metrics: Arc<Metrics>,
    /// The pooled client to the upstream (the proxy's and the tools fetch's).
    client: HttpClient,
    /// Woken when `notifications/tools/list_changed` passes through the proxy.
    list_changed: Arc<Notify>,
    /// Cancelled by SIGTERM/SIGINT.
    shutdown: CancellationToken,
}

/// Serves the configuration in `args` until SIGTERM or SIGINT, then drains.
///
/// # Errors
/// Exit 64 for a configuration, policies or tools that cannot be used at start; exit 1 when a
/// port cannot be bound or stdout cannot be written.
pub async fn run(args: &ConfigArg) -> Result<(), Exit> {
    let config = Config::load(&args.config)?;
    let telemetry = Telemetry::from_env()?;
    logging::init(&config.log.filter, &telemetry);
    telemetry.log_start();

    let shared = Shared {
        metrics: Arc::new(Metrics::new()),
        client: upstream::client(config.upstream.connect_timeout),
        list_changed: Arc::new(Notify::new()),
        shutdown: CancellationToken::new(),
    };
    let (feed, sources) = feed_engine(&config, &shared.metrics)?;
    let log = config
        .log
        .decisions
        .then(DecisionLog::start)
        .transpose()
        .map_err(|e| Exit::failed(format!("starting the decision log: {e}")))?;
    let listener = bind("listen.address", config.listen.address).await?;
    let bound = listener
        .local_addr()
        .map_err(|e| Exit::failed(format!("listen.address: {e}")))?;
    let (mcp, authenticator) = mcp_service(&config, &feed, log.clone(), &shared, bound).await?;

    let admin_listener = bind("admin.address", config.admin.address).await?;
    shutdown::on_signal(shared.shutdown.clone())
        .map_err(|e| Exit::failed(format!("installing signal handlers: {e}")))?;
    announce(&config, &listener, &admin_listener)?;
    tracing::info!(
        upstream = %config.upstream.url,
        mode = %config.policy.layer.mode,
        policy_files = sources.len(),
        "serving"
    );
    spawn_feeders(&config, &feed, sources, &shared);

    let mut ready: Vec<Arc<dyn Readiness>> = Vec::new();
    if let Some(authenticator) = authenticator {
        ready.push(Arc::new(authenticator));
    }
    ready.push(Arc::new(feed));
    let admin = Admin::new(Arc::clone(&shared.metrics), ready);
    let admin_task = tokio::spawn(listener::serve(
        admin_listener,
        admin,
        shared.shutdown.clone(),
        ADMIN_GRACE,
    ));
    let grace = config.listen.shutdown_grace;
    let drained = listener::serve(listener, mcp, shared.shutdown, grace).await;
    let _ = admin_task.await;
    match drained {
        Drained::All => tracing::info!("all requests finished; bye"),
        Drained::TimedOut => tracing::warn!(
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "grace period over; closing the connections still open"
        ),
    }
    if let Some(log) = log {
        log.close();
    }
    telemetry.shutdown().await;
    Ok(())
}

/// The engine with the policies of `config` (held back until the first catalog when the
/// tools come from the upstream), and the policy sources it was loaded from.
fn feed_engine(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<(EngineFeed, Vec<PolicySource>), Exit> {
    let (sources, policies) =
        policy_files::load(&config.policy.paths, true).map_err(Exit::config)?;
    if policies.policies.is_empty() {
        tracing::warn!("no policies found: every tool call is denied");
    }
    let file_tools = match &config.policy.schema {
        SchemaSource::File(path) => Some(tools::read_tools_file(path).map_err(Exit::config)?),
        SchemaSource::Upstream | SchemaSource::None | SchemaSource::CedarSchema(_) => None,
    };
    let engine = engine::build(config).map_err(Exit::config)?;
    let feed = EngineFeed::new(
        engine,
        config.policy.schema == SchemaSource::Upstream,
        Arc::clone(metrics),
    );
    if let Some(tools) = file_tools {
        feed.set_catalog(tools.catalog());
    }
    metrics.reload(Some(policies.policies.len()));
    feed.set_policies(policies).map_err(|refused| {
        Exit::config(format!(
            "policies refused by validation (policy.validation = FAIL_ON_ANY_FINDINGS):\n{refused}"
        ))
    })?;
    Ok((feed, sources))
}

/// The MCP listener's service for the listener bound at `bound`: router, policy layer
/// (observed by the metrics and `log`), upstream; and the authenticator, for `/readyz`.
async fn mcp_service(
    config: &Config,
    feed: &EngineFeed,
    log: Option<DecisionLog>,
    shared: &Shared,
    bound: SocketAddr,
) -> Result<(McpService, Option<Authenticator>), Exit> {
    let observer = Observer::new(Arc::clone(&shared.metrics), log, config.log.arguments);
    let (layer, authenticator) =
        policy::layer(config, feed.engine().clone(), Arc::new(observer), bound)
            .await
            .map_err(|e| Exit::config(format!("{}: {e}", config.file.display())))?;
    let metadata = authenticator.is_some();
    let upstream = Upstream::new(
        shared.client.clone(),
        config.upstream.clone(),
        Arc::clone(&shared.metrics),
        Arc::clone(&shared.list_changed),
        shared.shutdown.clone(),
    );
    let mcp = McpService::new(config.mcp_path(), metadata, layer.layer(upstream));
    Ok((mcp, authenticator))
}

/// Starts what keeps the engine fed while serving: the policy reload and, with
/// `schema = "upstream"`, the tools refresh; both stop at shutdown.
fn spawn_feeders(config: &Config, feed: &EngineFeed, sources: Vec<PolicySource>, shared: &Shared) {
    let reloader = Reloader::new(
        config.policy.paths.clone(),
        feed.clone(),
        Arc::clone(&shared.metrics),
        config.policy.reload_poll,
        sources,
    );
    tokio::spawn(reloader.run(shared.shutdown.clone()));
    if config.policy.schema == SchemaSource::Upstream {
        let refresher = ToolsRefresher {
            client: shared.client.clone(),
            url: config.upstream.url.clone(),
            timeout: config.upstream.timeout,
            feed: feed.clone(),
            list_changed: Arc::clone(&shared.list_changed),
            every: config.policy.tools_refresh,
            prompts: config.policy.govern.governs(Capability::Prompts),
        };
        tokio::spawn(refresher.run(shared.shutdown.clone()));
    }
}

/// Binds `address`, the value of `key`.
async fn bind(key: &str, address: SocketAddr) -> Result<TcpListener, Exit> {
    TcpListener::bind(address)
        .await
        .map_err(|e| Exit::failed(format!("{key}: binding {address}: {e}")))
}

/// Says on stdout where the listeners are (with the ports the system chose for port 0).
fn announce(config: &Config, mcp: &TcpListener, admin: &TcpListener) -> Result<(), Exit> {
    let mcp = mcp
        .local_addr()
        .map_err(|e| Exit::failed(format!("listen.address: {e}")))?;
    let admin = admin
        .local_addr()
        .map_err(|e| Exit::failed(format!("admin.address: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "policy-sidecar listening on http://{mcp}{}",
        config.mcp_path()
    )
    .and_then(|()| writeln!(out, "admin listening on http://{admin}"))
    .and_then(|()| out.flush())
    .map_err(|e| Exit::failed(format!("writing to stdout: {e}")))
}
