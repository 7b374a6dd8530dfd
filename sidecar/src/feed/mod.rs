//! What feeds the engine: the policy files and their reload, the tools that type call inputs
//! (a file or the upstream), and the [`engine::EngineFeed`] that hands both to the engine in
//! the order readiness needs; and the rate limits, re-read from the config file
//! ([`limits`]); and `tools.lock` ([`pins`]).

pub mod engine;
pub mod limits;
pub mod pins;
pub mod policy_files;
pub mod reload;
pub mod tools;
pub mod upstream_tools;
