//! `resources/read` as `ReadResource` (context `{ uri }`), when resources are governed. A
//! uri the upstream never listed is decided all the same: the policy decides by uri.

use serde_json::Value;

use super::{Verdict, authorize_fixed};
use crate::exchange::Exchange;
use crate::jsonrpc::{INVALID_PARAMS, Message};
use crate::model::{McpAction, params};
use crate::reply;

/// AuthorizeAction for one resources/read.
pub(super) fn read(exchange: &Exchange, message: &Message, id: &Value) -> Verdict {
    let Some(uri) = message.params().and_then(|p| p.uri.as_deref()) else {
        return Verdict::Answer(reply::jsonrpc_error(
            id,
            INVALID_PARAMS,
            "invalid params: `params.uri` must be a string",
        ));
    };
    decide(exchange, id, "resources/read", uri)
}

/// Decides reading `uri` for a request of `method` (a read, or a completion of a template).
pub(super) fn decide(exchange: &Exchange, id: &Value, method: &str, uri: &str) -> Verdict {
    let result = authorize_fixed(
        exchange,
        McpAction::ReadResource,
        method,
        id,
        uri,
        None,
        Ok(params::read_resource(uri)),
    );
    reply::for_request(id, result.as_ref(), exchange.settings(), exchange.marking())
        .map_or(Verdict::Forward, Verdict::Answer)
}
