//! Which listed resources and resource templates a caller could read (`resources/list`,
//! `resources/templates/list`), when resources are governed: a resource is decided as
//! `ReadResource` with its `uri` known; a template is kept unless every read is a definite
//! deny (`uri` unknown: the template expands to uris not known yet).

use crate::engine::{EngineError, Lister, Listing};
use crate::model::{ActionRef, McpAction, params};

/// Whether reading the resource at `uri` could be allowed.
pub(super) fn listing(lister: &Lister<'_>, uri: &str) -> Result<Listing, EngineError> {
    lister.listing_of(
        ActionRef::Mcp(McpAction::ReadResource),
        Some(params::read_resource(uri)),
    )
}

/// Whether reading some resource could be allowed (a template's uris are not known yet).
pub(super) fn template_listing(lister: &Lister<'_>) -> Result<Listing, EngineError> {
    lister.listing_of(ActionRef::Mcp(McpAction::ReadResource), None)
}
