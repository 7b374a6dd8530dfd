//! The Cedar model of `docs/cedar-model.md`: who (principal), which tool or capability
//! (action), where (resource) and with what (context), built directly as Cedar values.

pub mod actions;
pub mod context;
pub mod entities;
pub mod params;
pub mod pin;
pub mod schema;
pub mod tools;
pub mod values;

pub use actions::{Capability, Govern, McpAction, ToolGroup, ToolGroups};
pub use context::{InputError, TypedInput};
pub use entities::{ActionModel, ActionRef, ModelConfig};
pub use params::RequestContext;
pub use pin::{Drift, Pins, ToolsLock};
pub use tools::{PromptSchema, ToolCatalog, ToolSchema};
