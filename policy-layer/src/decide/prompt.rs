//! `prompts/get` as `GetPrompt` (context `{ name, arguments }`), when prompts are governed:
//! the arguments typed by the prompt's declared arguments when the upstream listed it
//! (strings; the required ones required), as JSON types map otherwise. A prompt the upstream
//! never listed is decided all the same: the policy decides by name.

use serde_json::Value;

use super::{Verdict, authorize_fixed};
use crate::exchange::Exchange;
use crate::jsonrpc::{INVALID_PARAMS, Message};
use crate::model::{McpAction, ToolCatalog, params};
use crate::reply;

/// AuthorizeAction for one prompts/get.
pub(super) fn get(exchange: &Exchange, message: &Message, id: &Value) -> Verdict {
    let Some(name) = message.params().and_then(|p| p.name.as_deref()) else {
        return Verdict::Answer(reply::jsonrpc_error(
            id,
            INVALID_PARAMS,
            "invalid params: `params.name` must be a string",
        ));
    };
    decide(
        exchange,
        id,
        "prompts/get",
        name,
        message.arguments(),
        false,
    )
}

/// Decides getting prompt `name` with `arguments` (JSON text) for a request of `method`;
/// `partial` for a completion, whose arguments are resolved one by one (none required).
pub(super) fn decide(
    exchange: &Exchange,
    id: &Value,
    method: &str,
    name: &str,
    arguments: Option<&str>,
    partial: bool,
) -> Verdict {
    let empty = ToolCatalog::default();
    let catalog = exchange
        .snapshot
        .as_deref()
        .map_or(&empty, |s| &**s.catalog());
    let context = params::get_prompt(name, arguments, catalog, partial);
    let result = authorize_fixed(
        exchange,
        McpAction::GetPrompt,
        method,
        id,
        name,
        arguments,
        context,
    );
    reply::for_request(id, result.as_ref(), exchange.settings(), exchange.marking())
        .map_or(Verdict::Forward, Verdict::Answer)
}
