//! Principal, action and resource entities of the `AgentCore` namespace (`docs/cedar-model.md`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use std::sync::Arc;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid};

use super::actions::{Govern, McpAction, ToolGroup, ToolGroups};
use super::tools::ToolCatalog;
use super::values;

use crate::auth::{Identity, PrincipalKind};

/// Default target name when none is configured.
pub const DEFAULT_TARGET: &str = "Target";
/// Default gateway id when none is configured.
pub const DEFAULT_GATEWAY_ID: &str = "gateway";
/// The separator between target and tool in an action id (three underscores).
pub const ACTION_SEPARATOR: &str = "___";

/// What names the Cedar entities: the target, the gateway and extra action groups; and which
/// capabilities the policy governs (their actions exist only then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// The target name: actions are `<target>___<tool>`.
    pub target: String,
    /// The gateway id: the resource is `AgentCore::Gateway::"<id>"`.
    pub gateway_id: String,
    /// Extra action groups: group name -> tools it contains.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The capabilities the policy decides (tools only by default, as AgentCore).
    pub govern: Govern,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            target: DEFAULT_TARGET.to_owned(),
            gateway_id: DEFAULT_GATEWAY_ID.to_owned(),
            groups: BTreeMap::new(),
            govern: Govern::default(),
        }
    }
}

/// An action a request is decided as: a tool's, or one of the fixed [`McpAction`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionRef<'a> {
    /// `<target>___<tool>`, for a call of this upstream tool.
    Tool(&'a str),
    /// A fixed action (`ReadResource`, ...).
    Mcp(McpAction),
}

impl ActionRef<'_> {
    /// The action id (`<target>___<tool>` or the fixed name).
    #[must_use]
    pub fn id(self, model: &ActionModel) -> String {
        match self {
            Self::Tool(tool) => model.action_id(tool),
            Self::Mcp(action) => action.id().to_owned(),
        }
    }
}

fn type_name(name: &str) -> EntityTypeName {
    // The names are constants of this module; they always parse.
    EntityTypeName::from_str(name).unwrap_or_else(|_| unreachable!("constant entity type {name}"))
}

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

/// The entity types and fixed entities of a model: built once per policy snapshot.
#[derive(Debug, Clone)]
pub struct ActionModel {
    config: ModelConfig,
    action_type: EntityTypeName,
    oauth_user: EntityTypeName,
    unauthenticated: EntityTypeName,
    resource: Entity,
    /// `Mcp`, `CallTool`, `<target>`, the annotation groups and the extra groups, with their
    /// parents.
    group_entities: Vec<Entity>,
    /// The annotation groups of the tools the catalog knows (any other tool: MCP's defaults).
    tool_groups: Arc<HashMap<String, ToolGroups>>,
}

impl ActionModel {
    /// The model for a configuration, with the annotation groups of the tools in `catalog`
    /// (`docs/cedar-model.md`): re-derived whenever the catalog changes.
    #[must_use]
    pub fn with_catalog(config: ModelConfig, catalog: &ToolCatalog) -> Self {
        let mut model = Self::new(config);
        model.tool_groups = Arc::new(
            catalog
                .iter()
                .map(|tool| (tool.name.clone(), tool.groups))
                .collect(),
        );
        model
    }

    /// The model for a configuration, no tool known (each in the annotation groups of MCP's
    /// defaults).
    #[must_use]
    pub fn new(config: ModelConfig) -> Self {
        let action_type = type_name("AgentCore::Action");
        let resource = Entity::with_uid(uid(&type_name("AgentCore::Gateway"), &config.gateway_id));
        let mcp = uid(&action_type, "Mcp");
        let call_tool = uid(&action_type, "CallTool");
        let target = uid(&action_type, &config.target);
        let mut group_entities = vec![
            Entity::new_no_attrs(mcp.clone(), HashSet::new()),
            Entity::new_no_attrs(call_tool.clone(), HashSet::from([mcp])),
            Entity::new_no_attrs(target, HashSet::from([call_tool.clone()])),
        ];
        group_entities.extend(
            ToolGroup::ALL
                .iter()
                .map(|g| g.id())
                .chain(
                    config
                        .groups
                        .keys()
                        .map(String::as_str)
                        .filter(|g| *g != config.target),
                )
                .map(|g| {
                    Entity::new_no_attrs(uid(&action_type, g), HashSet::from([call_tool.clone()]))
                }),
        );
        Self {
            config,
            action_type,
            oauth_user: type_name("AgentCore::OAuthUser"),
            unauthenticated: type_name("AgentCore::UnauthenticatedUser"),
            resource,
            group_entities,
            tool_groups: Arc::new(HashMap::new()),
        }
    }

    /// The annotation groups of `tool`.
    #[must_use]
    pub fn tool_groups(&self, tool: &str) -> ToolGroups {
        self.tool_groups
            .get(tool)
            .copied()
            .unwrap_or(ToolGroups::DEFAULTS)
    }

    /// The uid of an action.
    #[must_use]
    pub fn uid_of(&self, action: ActionRef<'_>) -> EntityUid {
        match action {
            ActionRef::Tool(tool) => self.action_uid(tool),
            ActionRef::Mcp(action) => uid(&self.action_type, action.id()),
        }
    }

    /// The groups an action is in, nearest first.
    #[must_use]
    pub fn ancestors_of(&self, action: ActionRef<'_>) -> Vec<EntityUid> {
        match action {
            ActionRef::Tool(tool) => self.ancestors(tool),
            ActionRef::Mcp(action) if action.in_mcp() => vec![uid(&self.action_type, "Mcp")],
            ActionRef::Mcp(_) => Vec::new(),
        }
    }

    /// The entities every request for `action` needs (see [`Self::action_entities`]).
    #[must_use]
    pub fn entities_of(&self, action: ActionRef<'_>) -> Vec<Entity> {
        match action {
            ActionRef::Tool(tool) => self.action_entities(tool),
            ActionRef::Mcp(fixed) => {
                let parents: HashSet<EntityUid> = self.ancestors_of(action).into_iter().collect();
                let mut out = Vec::with_capacity(self.group_entities.len() + 2);
                out.push(Entity::new_no_attrs(
                    uid(&self.action_type, fixed.id()),
                    parents,
                ));
                out.extend(self.group_entities.iter().cloned());
                out.push(self.resource.clone());
                out
            }
        }
    }

    /// The configuration this model was built from.
    #[must_use]
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The action id for a tool: `<target>___<tool>`.
    #[must_use]
    pub fn action_id(&self, tool: &str) -> String {
        format!("{}{ACTION_SEPARATOR}{tool}", self.config.target)
    }

    /// The tool named by an action id of this target, if it is one.
    #[must_use]
    pub fn tool_of_action<'a>(&self, action_id: &'a str) -> Option<&'a str> {
        action_id
            .strip_prefix(self.config.target.as_str())?
            .strip_prefix(ACTION_SEPARATOR)
    }

    /// The action entity uid for a tool.
    #[must_use]
    pub fn action_uid(&self, tool: &str) -> EntityUid {
        uid(&self.action_type, &self.action_id(tool))
    }

    /// Whether a uid is an `AgentCore::Action`.
    #[must_use]
    pub fn is_action(&self, uid: &EntityUid) -> bool {
        *uid.type_name() == self.action_type
    }

    /// The uids of the groups a tool's action is in, nearest first (target, extra groups,
    /// annotation groups, `CallTool`, `Mcp`).
    #[must_use]
    pub fn ancestors(&self, tool: &str) -> Vec<EntityUid> {
        let mut out = vec![uid(&self.action_type, &self.config.target)];
        out.extend(
            self.config
                .groups
                .iter()
                .filter(|(g, tools)| **g != self.config.target && tools.iter().any(|t| t == tool))
                .map(|(g, _)| uid(&self.action_type, g)),
        );
        out.extend(
            self.tool_groups(tool)
                .iter()
                .map(|g| uid(&self.action_type, g.id())),
        );
        out.push(uid(&self.action_type, "CallTool"));
        out.push(uid(&self.action_type, "Mcp"));
        out
    }

    /// The entities every request for this tool needs: the action with its parents, every
    /// group entity, and the gateway resource.
    #[must_use]
    pub fn action_entities(&self, tool: &str) -> Vec<Entity> {
        let parents: HashSet<EntityUid> = self
            .ancestors(tool)
            .into_iter()
            .filter(|a| {
                let id = a.id().unescaped();
                id != "CallTool" && id != "Mcp"
            })
            .collect();
        let mut out = Vec::with_capacity(self.group_entities.len() + 2);
        out.push(Entity::new_no_attrs(self.action_uid(tool), parents));
        out.extend(self.group_entities.iter().cloned());
        out.push(self.resource.clone());
        out
    }

    /// The resource uid.
    #[must_use]
    pub fn resource_uid(&self) -> EntityUid {
        self.resource.uid()
    }

    /// The principal uid for an identity.
    #[must_use]
    pub fn principal_uid(&self, identity: &Identity) -> EntityUid {
        let ty = match identity.kind {
            PrincipalKind::OAuthUser => &self.oauth_user,
            PrincipalKind::Unauthenticated => &self.unauthenticated,
        };
        uid(ty, &identity.subject)
    }

    /// The principal entity: attrs `{ id }`, every other claim as a String tag.
    #[must_use]
    pub fn principal_entity(&self, identity: &Identity) -> Arc<cedar_policy_core::ast::Entity> {
        values::leaf_entity(
            self.principal_uid(identity),
            &[("id", identity.subject.as_str())],
            &identity.tags,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ids_use_three_underscores() {
        let model = ActionModel::new(ModelConfig {
            target: "RefundTool".into(),
            ..ModelConfig::default()
        });
        assert_eq!(
            model.action_uid("process_refund").to_string(),
            r#"AgentCore::Action::"RefundTool___process_refund""#
        );
        assert_eq!(
            model.tool_of_action("RefundTool___process_refund"),
            Some("process_refund")
        );
        assert_eq!(model.tool_of_action("Other___process_refund"), None);
    }

    #[test]
    fn extra_groups_are_ancestors_of_their_tools() {
        let model = ActionModel::new(ModelConfig {
            target: "Orders".into(),
            groups: [("ReadOnly".to_owned(), vec!["get_order".to_owned()])].into(),
            ..ModelConfig::default()
        });
        let ids: Vec<String> = model
            .ancestors("get_order")
            .iter()
            .map(|u| u.id().unescaped().to_owned())
            .collect();
        assert_eq!(
            ids,
            [
                "Orders",
                "ReadOnly",
                "DestructiveTools",
                "OpenWorldTools",
                "CallTool",
                "Mcp"
            ]
        );
        assert_eq!(model.ancestors("update_order").len(), 5);
    }

    #[test]
    fn annotation_groups_come_from_the_catalog_and_fixed_actions_sit_in_mcp() {
        let catalog = ToolCatalog::from_list(&serde_json::json!([
            {"name": "get_order", "annotations": {"readOnlyHint": true, "openWorldHint": false}}
        ]));
        let model = ActionModel::with_catalog(ModelConfig::default(), &catalog);
        let ids = |uids: Vec<EntityUid>| {
            uids.iter()
                .map(|u| u.id().unescaped().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(model.ancestors("get_order")),
            [
                "Target",
                "ReadOnlyTools",
                "IdempotentTools",
                "CallTool",
                "Mcp"
            ]
        );
        assert_eq!(
            ids(model.ancestors_of(ActionRef::Mcp(McpAction::ReadResource))),
            ["Mcp"]
        );
        assert!(
            model
                .ancestors_of(ActionRef::Mcp(McpAction::InvokeGateway))
                .is_empty()
        );
        assert_eq!(
            model
                .uid_of(ActionRef::Mcp(McpAction::GetPrompt))
                .to_string(),
            r#"AgentCore::Action::"GetPrompt""#
        );
    }
}
