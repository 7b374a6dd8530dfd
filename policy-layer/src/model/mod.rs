//! The Cedar model of `docs/cedar-model.md`: who (principal), which tool (action), where (resource)
//! and with what (context), built directly as Cedar values.

pub mod context;
pub mod entities;
pub mod schema;
pub mod tools;
pub mod values;

pub use context::{InputError, TypedInput};
pub use entities::{ActionModel, ModelConfig};
pub use tools::{ToolCatalog, ToolSchema};
