//! The refund tool server of `examples/refund-tool` with `PolicyLayer` in front of it: the few
//! lines an axum app needs to enforce AgentCore-style Cedar policies on its own MCP endpoint.

use policy_layer::auth::Authenticator;
use policy_layer::engine::{LoadErrors, PolicySource};
use policy_layer::model::{ModelConfig, ToolCatalog};
use policy_layer::{PolicyEngine, PolicyLayer};
use refund_tool::{CallLog, Options};
use tokio_util::sync::CancellationToken;

/// The example's policies.
pub const POLICIES: &str = include_str!("../refund.cedar");

/// The app: refund tools at `/mcp`, every request decided by `PolicyLayer`.
///
/// # Errors
/// [`LoadErrors`] when the policies do not load.
pub fn app(
    authenticator: Authenticator,
    shutdown: CancellationToken,
) -> Result<axum::Router, LoadErrors> {
    // 1. The Cedar model: actions are `RefundTool___<tool>`.
    let model = ModelConfig {
        target: "RefundTool".into(),
        gateway_id: "refund-gateway".into(),
        ..ModelConfig::default()
    };
    // 2. The policies, and the tools that type `context.input`.
    let engine = PolicyEngine::from_sources(model, &[PolicySource::new("refund.cedar", POLICIES)])?;
    let tools = serde_json::to_value(refund_tool::tools::tools()).unwrap_or_default();
    let _findings = engine.set_catalog(ToolCatalog::from_list(&tools));
    // 3. The layer, around the MCP app.
    let options = Options::default();
    Ok(refund_tool::app(&options, CallLog::default(), shutdown)
        .layer(PolicyLayer::new(engine).authenticator(authenticator)))
}
