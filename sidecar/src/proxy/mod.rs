//! The request path: the [`listener`] accepts and drains connections, the [`router`] sends the
//! MCP path through the [`policy`] layer to the [`upstream`] and answers anything else; the
//! proxy's own answers are built in [`error`], bodies are [`body::ProxyBody`], [`clock`] says
//! where `context.system.now` comes from, and [`shutdown`] turns SIGTERM into the drain.

pub mod body;
pub mod clock;
pub mod error;
pub mod listener;
pub mod policy;
pub mod router;
pub mod shutdown;
pub mod upstream;
