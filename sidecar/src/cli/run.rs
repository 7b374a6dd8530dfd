//! `run`: serve until SIGTERM/SIGINT. Wires the rooms together: the config feeds the engine,
//! the proxy decides with it, the observers watch both, and the listeners serve until the
//! shutdown signal, then drain.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use policy_layer::auth::Authenticator;
use policy_layer::limit::Limits;
use policy_layer::model::Capability;
use policy_layer::state::{BackendSettings, Store};
use policy_layer::{Clock, Mode, PolicyLayer, PolicySource};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::Layer;

use super::args::ConfigArg;
use super::exit::Exit;
use crate::config::{Config, SchemaSource};
use crate::feed::engine::{self, EngineFeed};
use crate::feed::limits::LimitsReloader;
use crate::feed::reload::Reloader;
use crate::feed::upstream_tools::ToolsRefresher;
use crate::feed::{pins, policy_files, tools};
use crate::observe::admin::{Admin, Readiness};
use crate::observe::decision_log::{DecisionLog, Observer};
use crate::observe::logging;
use crate::observe::metrics::Metrics;
use crate::observe::store_health::StoreHealth;
use crate::observe::telemetry::Telemetry;
use crate::proxy::listener::{self, Drained};
use crate::proxy::router::McpService;
use crate::proxy::upstream::{self, HttpClient, Upstream};
use crate::proxy::{clock, policy, shutdown};

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
    let (clock, test_clock) = clock::from_env().map_err(Exit::config)?;
    if test_clock {
        shared.metrics.test_clock();
    }
    let limits = rate_limits(&config, &shared.metrics)?;
    let listeners =
        listener::bind_workers(config.listen.address, config.listen.workers).map_err(|e| {
            Exit::failed(format!(
                "listen.address: binding {}: {e}",
                config.listen.address
            ))
        })?;
    let bound = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .ok_or_else(|| Exit::failed("listen.address: no address bound"))?;
    let (layer, authenticator) = policy_layer(
        &config,
        &feed,
        (log.clone(), limits.clone(), clock),
        &shared,
        bound,
    )
    .await?;
    let admin_listener = bind("admin.address", config.admin.address).await?;
    shutdown::on_signal(shared.shutdown.clone())
        .map_err(|e| Exit::failed(format!("installing signal handlers: {e}")))?;
    announce(&config, bound, &admin_listener)?;
    tracing::info!(
        upstream = %config.upstream.url,
        mode = %config.policy.layer.mode,
        policy_files = sources.len(),
        workers = listeners.len(),
        "serving"
    );
    spawn_feeders(&config, &feed, sources, &shared);
    let reloader = LimitsReloader::new(
        config.file.clone(),
        limits.clone(),
        Arc::clone(&shared.metrics),
        config.policy.reload_poll,
    );
    tokio::spawn(reloader.run(shared.shutdown.clone()));
    let store_health = StoreHealth::new(limits, Arc::clone(&shared.metrics));
    tokio::spawn(Arc::clone(&store_health).run(shared.shutdown.clone()));

    let mut ready: Vec<Arc<dyn Readiness>> = Vec::new();
    if let Some(authenticator) = &authenticator {
        ready.push(Arc::new(authenticator.clone()));
    }
    ready.push(Arc::new(feed));
    ready.push(store_health);
    let admin = Admin::new(Arc::clone(&shared.metrics), ready);
    let admin_task = tokio::spawn(listener::serve(
        admin_listener,
        admin,
        shared.shutdown.clone(),
        ADMIN_GRACE,
    ));
    let grace = config.listen.shutdown_grace;
    let metadata = authenticator.is_some();
    let workers = spawn_workers(&config, listeners, &layer, metadata, &shared)?;
    let drained = tokio::task::spawn_blocking(move || {
        listener::worst(
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap_or(Drained::TimedOut)),
        )
    })
    .await
    .unwrap_or(Drained::TimedOut);
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
    if let Some(path) = &config.policy.tools_lock {
        let lock = pins::read_lock(path).map_err(Exit::config)?;
        tracing::info!(pinned = lock.len(), "tools.lock enforced");
        engine.set_tools_lock(Some(lock));
    }
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

/// The rate limits of `[[rate_limit]]`, counted in the store `[state]` names (a Redis store
/// is created even when Redis is down: calls then follow `state.on_error`).
fn rate_limits(config: &Config, metrics: &Metrics) -> Result<Limits, Exit> {
    let store = Store::from_settings(&config.state)
        .map_err(|e| Exit::config(format!("{}: state.url: {e}", config.file.display())))?;
    let count = config.rate_limits.limits().len();
    metrics.limits_reload(Some(count));
    let location = match &config.state.backend {
        BackendSettings::Memory => "memory".to_owned(),
        BackendSettings::Redis(url) => url.redacted(),
    };
    tracing::info!(
        rate_limits = count,
        store = %location,
        on_error = config.state.on_error.as_str(),
        "rate limits"
    );
    if count > 0 && config.policy.layer.mode == Mode::LogOnly {
        tracing::info!(
            "policy.mode = LOG_ONLY concerns policies only: rate limits still refuse the calls they throttle"
        );
    }
    Ok(Limits::new(
        config.rate_limits.clone(),
        store,
        config.state.on_error,
    ))
}

/// The policy layer for the listener bound at `bound` (observed by the metrics and the
/// decision log, with the rate limits and the clock), and the authenticator, for `/readyz`.
async fn policy_layer(
    config: &Config,
    feed: &EngineFeed,
    (log, limits, clock): (Option<DecisionLog>, Limits, Arc<dyn Clock>),
    shared: &Shared,
    bound: SocketAddr,
) -> Result<(PolicyLayer, Option<Authenticator>), Exit> {
    let observer = Observer::new(Arc::clone(&shared.metrics), log, config.log.arguments);
    let parts = policy::Parts {
        engine: feed.engine().clone(),
        observer: Arc::new(observer),
        limits,
        clock,
    };
    policy::layer(config, parts, bound)
        .await
        .map_err(|e| Exit::config(format!("{}: {e}", config.file.display())))
}
/// Starts one MCP worker per listener: a thread with a single-threaded runtime serving the
/// router, the layer and an upstream with connections of its own, until shutdown; each
/// returns how its drain ended.
fn spawn_workers(
    config: &Config,
    listeners: Vec<std::net::TcpListener>,
    layer: &PolicyLayer,
    metadata: bool,
    shared: &Shared,
) -> Result<Vec<std::thread::JoinHandle<Drained>>, Exit> {
    let mut workers = Vec::with_capacity(listeners.len());
    for (index, socket) in listeners.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Exit::failed(format!("starting worker {index}: {e}")))?;
        let upstream = config.upstream.clone();
        let path = config.mcp_path().to_owned();
        let layer = layer.clone();
        let metrics = Arc::clone(&shared.metrics);
        let list_changed = Arc::clone(&shared.list_changed);
        let shutdown = shared.shutdown.clone();
        let grace = config.listen.shutdown_grace;
        let worker = std::thread::Builder::new()
            .name(format!("mcp-worker-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(socket) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!(worker = index, error = %e, "listener unusable");
                            shutdown.cancel();
                            return Drained::All;
                        }
                    };
                    let client = upstream::client(upstream.connect_timeout);
                    let upstream =
                        Upstream::new(client, upstream, metrics, list_changed, shutdown.clone());
                    let mcp = McpService::new(&path, metadata, layer.layer(upstream));
                    listener::serve(listener, mcp, shutdown, grace).await
                })
            })
            .map_err(|e| Exit::failed(format!("starting worker {index}: {e}")))?;
        workers.push(worker);
    }
    Ok(workers)
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
    )
    .with_lock(config.policy.tools_lock.clone());
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
fn announce(config: &Config, mcp: SocketAddr, admin: &TcpListener) -> Result<(), Exit> {
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
