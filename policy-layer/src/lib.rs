//! `policy-layer`: a tower layer that enforces AgentCore-compatible Cedar policies on MCP
//! tool calls.
//!
//! The request flow, one module per step: [`jsonrpc`] parses the body, [`auth`] proves who the
//! caller is, [`model`] builds the Cedar request, [`engine`] decides (AuthorizeAction for
//! `tools/call`, PartiallyAuthorizeActions for `tools/list`), [`response`] answers denials, and
//! [`PolicyLayer`] / [`PolicyService`] tie it into any tower HTTP service.

#![warn(missing_docs)]

pub mod auth;
pub mod body;
pub mod config;
pub mod engine;
pub mod filter;
pub mod jsonrpc;
pub mod layer;
pub mod model;
pub mod record;
pub mod response;
pub mod service;
pub mod temporal;

pub use body::PolicyBody;
pub use config::{DenyStyle, ExceptionLevel, Mode, Settings};
pub use engine::{PolicyEngine, PolicySource};
pub use layer::PolicyLayer;
pub use record::{CallRecord, DecisionObserver, ListRecord};
pub use service::PolicyService;
