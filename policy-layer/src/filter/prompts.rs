//! Which listed prompts a caller could get (`prompts/list`), when prompts are governed: each
//! is decided as `GetPrompt` with its `name` known and its `arguments` unknown, so a prompt
//! whose permit depends on the arguments stays listed and is decided when it is got.

use crate::engine::{EngineError, Lister, Listing};
use crate::model::{ActionRef, McpAction, params};

/// Whether getting the prompt `name` could be allowed.
pub(super) fn listing(lister: &Lister<'_>, name: &str) -> Result<Listing, EngineError> {
    let context = params::listed_prompt(name).map_err(EngineError::Request)?;
    lister.listing_of(ActionRef::Mcp(McpAction::GetPrompt), Some(context))
}
