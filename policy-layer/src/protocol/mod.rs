//! Protocol checks made before anything is decided or forwarded: which HTTP methods carry
//! what ([`method`]), which MCP headers a request may carry and how often ([`headers`]), whose
//! pages may call ([`origin`]), which principal a session belongs to ([`session`]), and who
//! is on the other end ([`forwarded`]).
//!
//! Each check answers with a [`Refusal`](crate::reply::Refusal) that becomes the HTTP reply;
//! nothing refused reaches the inner service (`docs/threat-model.md`).

pub mod forwarded;
pub mod headers;
pub mod method;
pub mod origin;
pub mod session;

use std::fmt;

pub use forwarded::{IpNet, PeerAddr, TrustedProxies};
pub use headers::{MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
pub use method::Route;

/// The MCP protocol versions the layer knows, oldest first. A request naming any other
/// version is refused, never handled as an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ProtocolVersion {
    /// 2025-03-26: the first streamable HTTP transport; what a request without the header
    /// speaks.
    #[default]
    V2025_03_26,
    /// 2025-06-18.
    V2025_06_18,
    /// 2025-11-25.
    V2025_11_25,
    /// 2026-07-28: stateless requests carry `Mcp-Method` / `Mcp-Name`; results carry
    /// `"resultType":"complete"`.
    V2026_07_28,
}

impl ProtocolVersion {
    /// Every known version, oldest first.
    pub const ALL: [Self; 4] = [
        Self::V2025_03_26,
        Self::V2025_06_18,
        Self::V2025_11_25,
        Self::V2026_07_28,
    ];

    /// The version as written in `MCP-Protocol-Version`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2025_03_26 => "2025-03-26",
            Self::V2025_06_18 => "2025-06-18",
            Self::V2025_11_25 => "2025-11-25",
            Self::V2026_07_28 => "2026-07-28",
        }
    }

    /// The known version written `text`, compared exactly (never by string order).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }

    /// Whether requests name their method (and tool) in `Mcp-Method` / `Mcp-Name`.
    #[must_use]
    pub fn routes_by_header(self) -> bool {
        self >= Self::V2026_07_28
    }

    /// How results made by the layer are marked in this version.
    #[must_use]
    pub fn results(self) -> ResultMarking {
        if self >= Self::V2026_07_28 {
            ResultMarking::Complete
        } else {
            ResultMarking::Unmarked
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a result the layer makes carries `"resultType":"complete"` (protocol 2026-07-28
/// and later) or is written exactly as AgentCore writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultMarking {
    /// As AgentCore writes it: no `resultType`.
    #[default]
    Unmarked,
    /// With `"resultType":"complete"`.
    Complete,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_known_exactly_not_by_string_order() {
        assert_eq!(
            ProtocolVersion::parse("2025-06-18"),
            Some(ProtocolVersion::V2025_06_18)
        );
        for unknown in ["2025-06-19", "2099-01-01", "2026-07-28 ", "", "2024-11-05"] {
            assert_eq!(ProtocolVersion::parse(unknown), None, "{unknown:?}");
        }
        assert!(ProtocolVersion::V2026_07_28.routes_by_header());
        assert!(!ProtocolVersion::V2025_11_25.routes_by_header());
        assert_eq!(
            ProtocolVersion::V2026_07_28.results(),
            ResultMarking::Complete
        );
        assert_eq!(
            ProtocolVersion::default().results(),
            ResultMarking::Unmarked
        );
    }
}
