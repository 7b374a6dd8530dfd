//! Demo MCP tool server for the refund scenario: `process_refund`, `get_order`, `update_order`
//! and `delete_order` over MCP Streamable HTTP at `/mcp` (rmcp), plus `GET /calls`, the record
//! of every tool call it executed.

pub mod calls;
mod json_response;
pub mod tools;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio_util::sync::CancellationToken;

pub use calls::CallLog;
pub use tools::RefundTools;

/// How the MCP endpoint answers.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Answer POSTs with `application/json` instead of `text/event-stream`.
    pub json_response: bool,
    /// Serve every request on its own, without `Mcp-Session-Id` sessions.
    pub stateless: bool,
    /// Extra `Host` header values to accept besides the loopback names; `*` accepts any.
    pub allowed_hosts: Vec<String>,
}

/// The whole HTTP app: `/mcp` and `/calls`. Cancelling `shutdown` closes every MCP session
/// (so open event streams end and a graceful shutdown can finish).
pub fn app(options: &Options, calls: CallLog, shutdown: CancellationToken) -> Router {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(!options.stateless)
        .with_json_response(options.json_response)
        .with_cancellation_token(shutdown);
    if options.allowed_hosts.iter().any(|host| host == "*") {
        config = config.disable_allowed_hosts();
    } else {
        config
            .allowed_hosts
            .extend(options.allowed_hosts.iter().cloned());
    }

    let tools = RefundTools::new(calls.clone());
    let mcp = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    // rmcp only answers in JSON when stateless; with sessions, convert its SSE answers here.
    let mcp = if options.json_response && !options.stateless {
        Router::new()
            .fallback_service(mcp)
            .layer(axum::middleware::from_fn(json_response::sse_to_json))
    } else {
        Router::new().fallback_service(mcp)
    };

    Router::new()
        .nest("/mcp", mcp)
        .route("/calls", get(calls::list).delete(calls::clear))
        .with_state(calls)
}
