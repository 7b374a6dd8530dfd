//! `InvokeGateway`: who may call at all (the seeds' resource-based policy), when `invoke` is
//! governed. Every HTTP request is decided after authentication and before its session or
//! any of its JSON-RPC is read, with context `{ sourceIp, method }`: the peer's address, or
//! the forwarded one from a configured trusted proxy only (`protocol/forwarded.rs`). A
//! denial is 403 and nothing is forwarded; a request whose address is unknown (the server set
//! no `PeerAddr`) is refused the same way (fail closed). Explicit deny wins over any allow,
//! as Cedar decides.

use std::sync::Arc;

use http::request::Parts;
use serde_json::{Value, json};
use tracing::Span;

use super::authorize_fixed;
use crate::auth::Identity;
use crate::config::Mode;
use crate::engine::AuthorizeError;
use crate::exchange::{Exchange, Shared};
use crate::model::{Capability, InputError, McpAction, params};
use crate::protocol::ProtocolVersion;
use crate::reply::{EVALUATION_FAILED, Refusal};

/// Decides the HTTP request of `parts` by `identity` as `InvokeGateway`.
///
/// # Errors
/// [`Refusal::InvocationRefused`] when the policy denies it, no decision can be made, or the
/// client's address is unknown (ENFORCE only: LOG_ONLY records and lets it through).
pub(crate) fn invoke(
    shared: &Arc<Shared>,
    parts: &Parts,
    identity: &Arc<Identity>,
    version: ProtocolVersion,
) -> Result<(), Refusal> {
    if !shared.engine.govern().governs(Capability::Invoke) {
        return Ok(());
    }
    let exchange = Exchange::new(shared, Arc::clone(identity), version, Span::current());
    let method = parts.method.as_str();
    let address = shared.gate.proxies.client_ip(parts);
    let text = json!({
        "sourceIp": address.map(|ip| ip.to_string()),
        "method": method,
    })
    .to_string();
    let context = address
        .ok_or_else(|| InputError {
            path: "sourceIp".to_owned(),
            problem: "the client's address is unknown".to_owned(),
        })
        .and_then(|ip| params::invoke(ip, method));
    let result = authorize_fixed(
        &exchange,
        McpAction::InvokeGateway,
        McpAction::InvokeGateway.method(),
        &Value::Null,
        "",
        Some(&text),
        context,
    );
    if shared.settings.mode == Mode::LogOnly {
        return Ok(());
    }
    let refused = |why: String| Err(Refusal::InvocationRefused(why));
    match result {
        Ok(outcome) if outcome.allowed() => Ok(()),
        Ok(outcome) => refused(format!(
            "Gateway invocation not allowed due to policy enforcement [{}]",
            outcome.deny_reason()
        )),
        Err(AuthorizeError::Input(e)) => {
            refused(format!("Gateway invocation not allowed: {}", e.problem))
        }
        Err(AuthorizeError::Engine(_)) => refused(format!(
            "Gateway invocation not allowed: {EVALUATION_FAILED}"
        )),
    }
}
