//! The sidecar's own log on stderr (`log.filter`, `RUST_LOG` wins) and, when traces are
//! exported, the layer that turns spans into OpenTelemetry spans.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::telemetry::Telemetry;
use crate::config::DEFAULT_LOG_FILTER;

/// Logs to stderr through `filter` (the default filter when it does not parse); with an
/// exporter, spans also go to OpenTelemetry, with a filter of their own so that the log level
/// does not decide what is traced.
pub fn init(filter: &str, telemetry: &Telemetry) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
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
