//! How the layer enforces: engine mode, deny style, exception level and request limits.

use std::fmt;
use std::str::FromStr;

/// Default limit on a request body (`docs/request-flow.md`): 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default limit on the number of messages in one JSON-RPC batch.
pub const DEFAULT_MAX_BATCH: usize = 100;
/// Default limit on one upstream message read whole to be checked (a JSON reply, or one
/// event of a stream): 16 MiB.
pub const DEFAULT_MAX_LIST_BYTES: usize = 16 * 1024 * 1024;
/// Default policy engine name reported on spans, logs and metrics.
pub const DEFAULT_ENGINE_NAME: &str = "PolicyEngine";

/// The engine mode (`docs/cedar-model.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A deny is answered locally; the upstream never sees the call.
    #[default]
    Enforce,
    /// Every call is evaluated and recorded, and always forwarded.
    LogOnly,
}

/// How a denied call is answered (`docs/replies.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyStyle {
    /// A JSON-RPC error, code -32002.
    #[default]
    JsonRpcError,
    /// A tool result with `isError: true`.
    ToolResult,
}

/// How much a denial tells the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExceptionLevel {
    /// Only the reason.
    #[default]
    None,
    /// The reason plus determining policies and evaluation errors.
    Debug,
}

/// What findings of policy validation do (`[policy] validation` in `sidecar/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validation {
    /// A policy set with any finding is refused (at start and on reload).
    #[default]
    FailOnAnyFindings,
    /// Findings are logged as warnings and the set loads.
    IgnoreAllFindings,
}

/// A setting value that is not one of the allowed words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected one of {expected}, got \"{got}\"")]
pub struct UnknownValue {
    expected: &'static str,
    got: String,
}

macro_rules! words {
    ($ty:ty, $expected:literal, $($word:literal => $variant:expr),+) => {
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                $(if s.eq_ignore_ascii_case($word) { return Ok($variant); })+
                Err(UnknownValue { expected: $expected, got: s.to_owned() })
            }
        }
        impl $ty {
            /// The setting's word, as written in config and reported in telemetry.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                $(if self == $variant { return $word; })+
                unreachable!()
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words!(Mode, "ENFORCE, LOG_ONLY", "ENFORCE" => Mode::Enforce, "LOG_ONLY" => Mode::LogOnly);
words!(DenyStyle, "jsonrpc_error, tool_result",
    "jsonrpc_error" => DenyStyle::JsonRpcError, "tool_result" => DenyStyle::ToolResult);
words!(Validation, "FAIL_ON_ANY_FINDINGS, IGNORE_ALL_FINDINGS",
    "FAIL_ON_ANY_FINDINGS" => Validation::FailOnAnyFindings,
    "IGNORE_ALL_FINDINGS" => Validation::IgnoreAllFindings);
words!(ExceptionLevel, "NONE, DEBUG", "NONE" => ExceptionLevel::None, "DEBUG" => ExceptionLevel::Debug);

/// Everything the layer needs besides the engine and the authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The policy engine name reported on spans, logs and metrics.
    pub engine_name: String,
    /// ENFORCE or LOG_ONLY.
    pub mode: Mode,
    /// How denials are answered.
    pub deny_style: DenyStyle,
    /// How much denials tell.
    pub exception_level: ExceptionLevel,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Largest JSON-RPC batch accepted.
    pub max_batch: usize,
    /// Largest upstream message read to be checked: a JSON reply, or one event of a stream
    /// (every list answer is filtered wherever it arrives, so every message is read whole).
    pub max_list_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            engine_name: DEFAULT_ENGINE_NAME.to_owned(),
            mode: Mode::default(),
            deny_style: DenyStyle::default(),
            exception_level: ExceptionLevel::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
            max_list_bytes: DEFAULT_MAX_LIST_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        assert_eq!("LOG_ONLY".parse::<Mode>(), Ok(Mode::LogOnly));
        assert_eq!(Mode::Enforce.as_str(), "ENFORCE");
        assert_eq!(
            "tool_result".parse::<DenyStyle>(),
            Ok(DenyStyle::ToolResult)
        );
        assert_eq!(
            "MAYBE".parse::<Mode>().expect_err("bad").to_string(),
            "expected one of ENFORCE, LOG_ONLY, got \"MAYBE\""
        );
    }
}
