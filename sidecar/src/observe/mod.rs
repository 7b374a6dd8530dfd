//! What observes the sidecar: the decision log and the metrics fed by every decision, trace
//! export, the sidecar's own log on stderr, the state store's health, and the admin endpoints
//! that serve readiness and metrics.

pub mod admin;
pub mod decision_log;
pub mod logging;
pub mod metrics;
pub mod recording;
pub mod store_health;
pub mod telemetry;
