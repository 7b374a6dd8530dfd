//! `policy-layer`: a tower layer that enforces AgentCore-compatible Cedar policies on MCP
//! tool calls.
//!
//! The request flow, one module per step (`docs/request-flow.md`): [`protocol`] checks the
//! method, headers, version, origin and session; [`auth`] proves who the caller is;
//! [`jsonrpc`] parses the body; [`decide`] decides the request (`InvokeGateway`) and each
//! message with the [`engine`] over the Cedar [`model`] (AuthorizeAction: tool calls, and
//! the other capabilities `policy.govern` names); [`filter`] rewrites the reply
//! (PartiallyAuthorizeActions on every list answer, the server's own requests decided);
//! [`reply`] writes every answer the layer makes itself;
//! [`telemetry`] owns the spans. [`limit`] holds the rate limits, counted in the [`state`]
//! store (memory, or Redis with the `redis` feature) and checked for every tools/call after
//! authentication and before Cedar. [`clock`] is where `context.system.now` comes from;
//! [`temporal`] reads session-aware (Dogwood) policies into plain Cedar and their
//! conditions. [`PolicyLayer`] / [`PolicyService`] tie
//! it into any tower HTTP service.

#![warn(missing_docs)]

pub mod auth;
pub mod body;
pub mod clock;
pub mod config;
mod decide;
pub mod engine;
mod exchange;
pub mod filter;
pub mod jsonrpc;
pub mod layer;
pub mod limit;
pub mod model;
pub mod protocol;
pub mod record;
pub mod reply;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod temporal;

pub use body::PolicyBody;
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use config::{DenyStyle, ExceptionLevel, Mode, Settings};
pub use engine::{PolicyEngine, PolicySource};
pub use layer::PolicyLayer;
pub use limit::{Admitted, Limits, Throttled};
pub use protocol::PeerAddr;
pub use record::{
    CallRecord, DecisionObserver, LimitOutcome, LimitRecord, ListRecord, TemporalRecord,
};
pub use service::PolicyService;
