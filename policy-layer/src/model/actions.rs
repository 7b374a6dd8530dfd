//! The MCP capabilities a policy can govern beyond tool calls, their Cedar actions, and the
//! action groups derived from tool annotations (`docs/cedar-model.md`).
//!
//! AgentCore governs tool calls only, and that stays the default: [`Govern`] says which other
//! capabilities the policy decides (`policy.govern`). Each governed capability is default
//! deny, like tools. The actions are fixed names in the `AgentCore` namespace, beside
//! `CallTool` in `Mcp` (all but `InvokeGateway`, which is decided per HTTP request before any
//! MCP message is read).

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// A capability the policy may govern (`policy.govern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// `tools/call` and `tools/list` (always governed: AgentCore's behaviour).
    Tools,
    /// `resources/read`, `resources/list`, `resources/templates/list`, resource completions.
    Resources,
    /// `prompts/get`, `prompts/list`, prompt completions.
    Prompts,
    /// The server's requests to the client: sampling, elicitation, roots.
    ServerRequests,
    /// Every HTTP request, as `InvokeGateway`, before any JSON-RPC is read.
    Invoke,
}

impl Capability {
    /// Every capability, in the order they are documented.
    pub const ALL: [Self; 5] = [
        Self::Tools,
        Self::Resources,
        Self::Prompts,
        Self::ServerRequests,
        Self::Invoke,
    ];

    /// The word in `policy.govern`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Resources => "resources",
            Self::Prompts => "prompts",
            Self::ServerRequests => "server_requests",
            Self::Invoke => "invoke",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected one of tools, resources, prompts, server_requests, invoke, got \"{0}\"")]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;

    fn from_str(s: &str) -> Result<Self, UnknownCapability> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCapability(s.to_owned()))
    }
}

/// The capabilities the policy decides. Tools are always among them; the default is tools
/// only, as in AgentCore.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Govern(u8);

impl Govern {
    /// Tools only (AgentCore's behaviour, the default).
    pub const TOOLS: Self = Self(1);

    /// Tools and `capabilities`.
    #[must_use]
    pub fn new(capabilities: impl IntoIterator<Item = Capability>) -> Self {
        let bits = capabilities
            .into_iter()
            .fold(Capability::Tools.bit(), |bits, c| bits | c.bit());
        Self(bits)
    }

    /// Every capability.
    #[must_use]
    pub fn all() -> Self {
        Self::new(Capability::ALL)
    }

    /// Whether the policy decides `capability`.
    #[must_use]
    pub fn governs(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// The governed capabilities, in documentation order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.governs(*c))
    }

    /// Whether only tools are governed (AgentCore's behaviour).
    #[must_use]
    pub fn tools_only(self) -> bool {
        self == Self::TOOLS
    }
}

impl Default for Govern {
    fn default() -> Self {
        Self::TOOLS
    }
}

impl fmt::Debug for Govern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The Cedar actions beyond tool calls: fixed names in the `AgentCore` namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum McpAction {
    /// `resources/read`: context `{ uri }`.
    ReadResource,
    /// `prompts/get`: context `{ name, arguments }`.
    GetPrompt,
    /// The server's `sampling/createMessage`.
    CreateMessage,
    /// The server's `elicitation/create`.
    Elicit,
    /// The server's `roots/list`.
    ListRoots,
    /// Any HTTP request to the MCP endpoint: context `{ sourceIp, method }`.
    InvokeGateway,
}

impl McpAction {
    /// Every action.
    pub const ALL: [Self; 6] = [
        Self::ReadResource,
        Self::GetPrompt,
        Self::CreateMessage,
        Self::Elicit,
        Self::ListRoots,
        Self::InvokeGateway,
    ];

    /// The action's id: `AgentCore::Action::"<id>"`.
    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::ReadResource => "ReadResource",
            Self::GetPrompt => "GetPrompt",
            Self::CreateMessage => "CreateMessage",
            Self::Elicit => "Elicit",
            Self::ListRoots => "ListRoots",
            Self::InvokeGateway => "InvokeGateway",
        }
    }

    /// The action of that id.
    #[must_use]
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == id)
    }

    /// The MCP method it decides (`invoke` for [`Self::InvokeGateway`], which is no MCP
    /// method): what decision records and test cases name.
    #[must_use]
    pub fn method(self) -> &'static str {
        match self {
            Self::ReadResource => "resources/read",
            Self::GetPrompt => "prompts/get",
            Self::CreateMessage => "sampling/createMessage",
            Self::Elicit => "elicitation/create",
            Self::ListRoots => "roots/list",
            Self::InvokeGateway => "invoke",
        }
    }

    /// The action deciding `method` (a client's request, a server's request, or `invoke`).
    #[must_use]
    pub fn for_method(method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.method() == method)
    }

    /// The action deciding a server's request to the client of that method.
    #[must_use]
    pub fn of_server_request(method: &str) -> Option<Self> {
        Self::for_method(method).filter(|a| a.capability() == Capability::ServerRequests)
    }

    /// The capability that must be governed for the action to be decided.
    #[must_use]
    pub fn capability(self) -> Capability {
        match self {
            Self::ReadResource => Capability::Resources,
            Self::GetPrompt => Capability::Prompts,
            Self::CreateMessage | Self::Elicit | Self::ListRoots => Capability::ServerRequests,
            Self::InvokeGateway => Capability::Invoke,
        }
    }

    /// Whether the action is in `AgentCore::Action::"Mcp"` (all but `InvokeGateway`).
    #[must_use]
    pub fn in_mcp(self) -> bool {
        self != Self::InvokeGateway
    }
}

impl fmt::Display for McpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// An action group derived from a tool's `annotations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ToolGroup {
    /// `readOnlyHint: true`.
    ReadOnly,
    /// Not read-only, and `destructiveHint` not `false` (MCP's default is `true`).
    Destructive,
    /// Read-only (calling it again changes nothing), or `idempotentHint: true`.
    Idempotent,
    /// `openWorldHint` not `false` (MCP's default is `true`).
    OpenWorld,
}

impl ToolGroup {
    /// Every annotation group.
    pub const ALL: [Self; 4] = [
        Self::ReadOnly,
        Self::Destructive,
        Self::Idempotent,
        Self::OpenWorld,
    ];

    /// The group's action id.
    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::ReadOnly => "ReadOnlyTools",
            Self::Destructive => "DestructiveTools",
            Self::Idempotent => "IdempotentTools",
            Self::OpenWorld => "OpenWorldTools",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The annotation groups one tool is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ToolGroups(u8);

impl ToolGroups {
    /// The groups of a tool whose annotations say nothing (or that the catalog does not
    /// know): MCP's defaults, destructive and open world.
    pub const DEFAULTS: Self =
        Self(1 << ToolGroup::Destructive as u8 | 1 << ToolGroup::OpenWorld as u8);

    /// The groups a tool's `annotations` object puts it in; a hint that is absent, or not a
    /// boolean, takes MCP's default.
    #[must_use]
    pub fn of_annotations(annotations: Option<&Value>) -> Self {
        let hint = |name: &str| {
            annotations
                .and_then(|a| a.get(name))
                .and_then(Value::as_bool)
        };
        let read_only = hint("readOnlyHint") == Some(true);
        let mut groups = Self(0);
        let mut put = |group: ToolGroup, member: bool| {
            if member {
                groups.0 |= group.bit();
            }
        };
        put(ToolGroup::ReadOnly, read_only);
        put(
            ToolGroup::Destructive,
            !read_only && hint("destructiveHint") != Some(false),
        );
        put(
            ToolGroup::Idempotent,
            read_only || hint("idempotentHint") == Some(true),
        );
        put(ToolGroup::OpenWorld, hint("openWorldHint") != Some(false));
        groups
    }

    /// Whether the tool is in `group`.
    #[must_use]
    pub fn contains(self, group: ToolGroup) -> bool {
        self.0 & group.bit() != 0
    }

    /// The groups, in documentation order.
    pub fn iter(self) -> impl Iterator<Item = ToolGroup> {
        ToolGroup::ALL
            .into_iter()
            .filter(move |g| self.contains(*g))
    }
}

impl Default for ToolGroups {
    fn default() -> Self {
        Self::DEFAULTS
    }
}

/// The action ids the model defines itself: no target or configured group may take them.
#[must_use]
pub fn is_reserved(name: &str) -> bool {
    matches!(name, "Mcp" | "CallTool")
        || McpAction::from_id(name).is_some()
        || ToolGroup::ALL.iter().any(|g| g.id() == name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tools_are_always_governed_and_words_parse() {
        assert!(Govern::default().tools_only());
        let govern = Govern::new(["resources".parse::<Capability>().expect("word")]);
        assert!(govern.governs(Capability::Tools));
        assert!(govern.governs(Capability::Resources));
        assert!(!govern.governs(Capability::Invoke));
        assert_eq!(format!("{govern:?}"), "[Tools, Resources]");
        assert_eq!(
            "sampling"
                .parse::<Capability>()
                .expect_err("no such word")
                .to_string(),
            "expected one of tools, resources, prompts, server_requests, invoke, got \"sampling\""
        );
    }

    #[test]
    fn methods_map_to_actions() {
        assert_eq!(
            McpAction::for_method("resources/read"),
            Some(McpAction::ReadResource)
        );
        assert_eq!(
            McpAction::of_server_request("sampling/createMessage"),
            Some(McpAction::CreateMessage)
        );
        assert_eq!(McpAction::of_server_request("resources/read"), None);
        assert_eq!(McpAction::for_method("tools/call"), None);
        assert!(!McpAction::InvokeGateway.in_mcp());
        assert!(is_reserved("ReadOnlyTools") && is_reserved("CallTool"));
        assert!(!is_reserved("RefundTool"));
    }

    #[test]
    fn annotations_follow_mcp_defaults() {
        let groups = |a: Value| {
            ToolGroups::of_annotations(Some(&a))
                .iter()
                .map(ToolGroup::id)
                .collect::<Vec<_>>()
        };
        assert_eq!(groups(json!({})), ["DestructiveTools", "OpenWorldTools"]);
        assert_eq!(ToolGroups::of_annotations(None), ToolGroups::DEFAULTS);
        assert_eq!(
            groups(json!({"readOnlyHint": true, "destructiveHint": true})),
            ["ReadOnlyTools", "IdempotentTools", "OpenWorldTools"],
            "a read-only tool destroys nothing, whatever its destructive hint says"
        );
        assert_eq!(
            groups(
                json!({"destructiveHint": false, "idempotentHint": true, "openWorldHint": false})
            ),
            ["IdempotentTools"]
        );
        assert_eq!(
            groups(json!({"readOnlyHint": "yes", "openWorldHint": 0})),
            ["DestructiveTools", "OpenWorldTools"],
            "hints that are not booleans take the defaults"
        );
    }
}
