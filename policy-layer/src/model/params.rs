//! The context of each action beyond tool calls, built from the request's params as written
//! (`docs/cedar-model.md`):
//!
//! | Action | Context |
//! |---|---|
//! | `ReadResource` | `{ uri: String }` |
//! | `GetPrompt` | `{ name: String, arguments: { <the prompt's declared arguments>: String } }` |
//! | `CreateMessage` | `{ maxTokens: Long, systemPrompt?: String, includeContext?: String, temperature?: decimal, stopSequences?: Set<String> }` |
//! | `Elicit` | `{ message: String, mode: String, url?: String }` (`mode` is `"form"` when absent) |
//! | `ListRoots` | `{}` |
//! | `InvokeGateway` | `{ sourceIp: ipaddr, method: String }` |
//!
//! Only the attributes listed are read from the params, typed as the JSON-to-Cedar mapping of
//! `context.input` types them; a value that does not fit is an [`InputError`] (the request is
//! answered, never forwarded undecided).

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use cedar_policy::{Context, RestrictedExpression};
use cedar_policy_core::ast::RestrictedExpr;
use cedar_policy_core::extensions::Extensions;
use serde_json::{Map, Value};
use smol_str::SmolStr;

use super::actions::McpAction;
use super::context::{InputError, TypedInput};
use super::tools::{Attribute, InputType, RecordType, ToolCatalog};
use super::values;

/// A context ready to be put into a Cedar request (concrete, or with unknowns for a list).
#[derive(Debug, Clone)]
pub struct RequestContext(pub(crate) Context);

impl RequestContext {
    /// The Cedar context, without `system` (what the params say).
    #[must_use]
    pub fn into_context(self) -> Context {
        self.0
    }

    /// The Cedar context with `system` added: `{ now }` at a decision, or an unknown while a
    /// list is partially evaluated, as a tool call's context has it.
    ///
    /// # Errors
    /// Cedar's message when the record cannot be built.
    pub fn with_system(self, system: RestrictedExpr) -> Result<Context, String> {
        let core: cedar_policy_core::ast::Context = self.0.as_ref().clone();
        let pairs = core
            .into_iter()
            .filter(|(name, _)| name != "system")
            .chain([(SmolStr::new_static("system"), system)]);
        cedar_policy_core::ast::Context::from_pairs(pairs, Extensions::all_available())
            .map(Context::from)
            .map_err(|e| e.to_string())
    }
}

fn record(attributes: &[(&str, InputType, bool)]) -> InputType {
    InputType::Record(Arc::new(RecordType {
        attributes: attributes
            .iter()
            .map(|(name, ty, required)| Attribute {
                name: (*name).to_owned(),
                ty: ty.clone(),
                required: *required,
            })
            .collect(),
    }))
}

/// The params `CreateMessage` reads (MCP's `CreateMessageRequest`).
static CREATE_MESSAGE: LazyLock<InputType> = LazyLock::new(|| {
    record(&[
        ("maxTokens", InputType::Long, true),
        ("systemPrompt", InputType::String, false),
        ("includeContext", InputType::String, false),
        ("temperature", InputType::Decimal, false),
        (
            "stopSequences",
            InputType::Set(Box::new(InputType::String)),
            false,
        ),
    ])
});

/// The params `Elicit` reads (MCP's `ElicitRequest`, form or URL mode).
static ELICIT: LazyLock<InputType> = LazyLock::new(|| {
    record(&[
        ("message", InputType::String, true),
        ("mode", InputType::String, true),
        ("url", InputType::String, false),
    ])
});

/// The params `ReadResource` reads.
static READ_RESOURCE: LazyLock<InputType> =
    LazyLock::new(|| record(&[("uri", InputType::String, true)]));

/// The declared attributes of a record type, for [`typed`].
fn declared(ty: &InputType) -> &[Attribute] {
    match ty {
        InputType::Record(record) => &record.attributes,
        _ => &[],
    }
}

/// Types the attributes `ty` declares of `params` (an object; others are left out) and makes
/// them the context. `path` names the object in messages (`params`).
fn typed(params: &Map<String, Value>, ty: &InputType, path: &str) -> Result<Context, InputError> {
    let mut picked = Map::new();
    for attribute in declared(ty) {
        if let Some(value) = params.get(&attribute.name) {
            picked.insert(attribute.name.clone(), value.clone());
        }
    }
    let text = Value::Object(picked).to_string();
    let value = TypedInput::from_json(Some(&text), ty)
        .map_err(|e| renamed(e, path))?
        .into_value();
    values::record_context(value).ok_or_else(|| InputError {
        path: path.to_owned(),
        problem: "must be an object".to_owned(),
    })
}

/// An error of the typing, whose paths start at `input`, named from `path` instead.
fn renamed(mut error: InputError, path: &str) -> InputError {
    if let Some(rest) = error.path.strip_prefix("input") {
        error.path = format!("{path}{rest}");
    }
    error
}

fn object(params: Option<&Value>, path: &str) -> Result<Map<String, Value>, InputError> {
    match params {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(InputError {
            path: path.to_owned(),
            problem: "must be an object".to_owned(),
        }),
    }
}

/// The context of `ReadResource` for `uri`.
#[must_use]
pub fn read_resource(uri: &str) -> RequestContext {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(smol_str::SmolStr::new_static("uri"), values::string(uri));
    RequestContext(values::record_context(values::record(fields)).unwrap_or_else(Context::empty))
}

/// The context of `GetPrompt` for prompt `name` with `arguments` as the client wrote them
/// (JSON text; absent: `{}`), typed by the prompt's declared arguments when the catalog knows
/// it (strings, the required ones required unless `partial`, as for a completion), else as
/// JSON types map.
///
/// # Errors
/// [`InputError`] naming the first argument that does not fit.
pub fn get_prompt(
    name: &str,
    arguments: Option<&str>,
    catalog: &ToolCatalog,
    partial: bool,
) -> Result<RequestContext, InputError> {
    let relaxed;
    let ty = match catalog.prompt(name) {
        Some(prompt) if partial => {
            relaxed = InputType::Record(Arc::new(RecordType {
                attributes: declared(&prompt.input)
                    .iter()
                    .map(|a| Attribute {
                        required: false,
                        ..a.clone()
                    })
                    .collect(),
            }));
            &relaxed
        }
        Some(prompt) => &prompt.input,
        None => &InputType::Untyped,
    };
    let arguments = TypedInput::from_json(arguments, ty)
        .map_err(|e| renamed(e, "params.arguments"))?
        .into_value();
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(smol_str::SmolStr::new_static("name"), values::string(name));
    fields.insert(smol_str::SmolStr::new_static("arguments"), arguments);
    Ok(RequestContext(
        values::record_context(values::record(fields)).unwrap_or_else(Context::empty),
    ))
}

/// The context of `GetPrompt` for listing prompt `name`: its arguments unknown (partial
/// evaluation keeps a prompt whose permit depends on them).
///
/// # Errors
/// Cedar's message when the context cannot be built.
pub fn listed_prompt(name: &str) -> Result<RequestContext, String> {
    Context::from_pairs([
        (
            "name".to_owned(),
            RestrictedExpression::new_string(name.to_owned()),
        ),
        (
            "arguments".to_owned(),
            RestrictedExpression::new_unknown("arguments"),
        ),
    ])
    .map(RequestContext)
    .map_err(|e| e.to_string())
}

/// The context of a server's request to the client (`CreateMessage`, `Elicit`,
/// `ListRoots`) from its params.
///
/// # Errors
/// [`InputError`] when a value the context reads does not fit (the request is then denied:
/// it never reaches the client).
pub fn server_request(
    action: McpAction,
    params: Option<&Value>,
) -> Result<RequestContext, InputError> {
    let mut params = object(params, "params")?;
    let ty: &InputType = match action {
        McpAction::CreateMessage => &CREATE_MESSAGE,
        McpAction::Elicit => {
            // MCP: an elicitation without a mode is a form.
            params
                .entry("mode")
                .or_insert_with(|| Value::String("form".to_owned()));
            &ELICIT
        }
        _ => &InputType::Record(Arc::default()),
    };
    typed(&params, ty, "params").map(RequestContext)
}

/// The context of `InvokeGateway`.
///
/// # Errors
/// When the address cannot be made a Cedar `ipaddr` (cannot happen for a parsed address).
pub fn invoke(source_ip: IpAddr, method: &str) -> Result<RequestContext, InputError> {
    let ip = values::ipaddr(source_ip).map_err(|problem| InputError {
        path: "sourceIp".to_owned(),
        problem,
    })?;
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(smol_str::SmolStr::new_static("sourceIp"), ip);
    fields.insert(
        smol_str::SmolStr::new_static("method"),
        values::string(method),
    );
    Ok(RequestContext(
        values::record_context(values::record(fields)).unwrap_or_else(Context::empty),
    ))
}

/// The context of `action` from params given as a value (policy test cases, solver
/// examples): what the layer builds from the same params on the wire. `InvokeGateway` reads
/// `{ "sourceIp": "<address>", "method": "<HTTP method>" }`.
///
/// # Errors
/// [`InputError`] when the params do not fit the action's context.
pub fn from_params(
    action: McpAction,
    params: Option<&Value>,
    catalog: &ToolCatalog,
) -> Result<RequestContext, InputError> {
    let missing = |name: &str| InputError {
        path: format!("params.{name}"),
        problem: "missing or not a string".to_owned(),
    };
    let string = |name: &'static str| {
        params
            .and_then(|p| p.get(name))
            .and_then(Value::as_str)
            .ok_or_else(|| missing(name))
    };
    match action {
        McpAction::ReadResource => {
            let map = object(params, "params")?;
            typed(&map, &READ_RESOURCE, "params")?;
            Ok(read_resource(string("uri")?))
        }
        McpAction::GetPrompt => {
            let arguments = params
                .and_then(|p| p.get("arguments"))
                .filter(|a| !a.is_null())
                .map(Value::to_string);
            get_prompt(string("name")?, arguments.as_deref(), catalog, false)
        }
        McpAction::CreateMessage | McpAction::Elicit | McpAction::ListRoots => {
            server_request(action, params)
        }
        McpAction::InvokeGateway => {
            let address = string("sourceIp")?;
            let ip: IpAddr = address.parse().map_err(|_| InputError {
                path: "params.sourceIp".to_owned(),
                problem: format!("`{address}` is not an IP address"),
            })?;
            invoke(ip, string("method")?)
        }
    }
}

#[cfg(test)]
mod tests {
    use cedar_policy::{Authorizer, Decision, Entities, PolicySet, Request};
    use serde_json::json;

    use super::*;

    /// Decides `condition` over `context` with a permit for everything that holds it.
    fn holds(condition: &str, context: RequestContext) -> bool {
        let policies: PolicySet =
            format!("permit(principal, action, resource) when {{ {condition} }};")
                .parse()
                .expect("policy");
        let uid = |t: &str| format!(r#"{t}::"x""#).parse().expect("uid");
        let request = Request::new(uid("P"), uid("A"), uid("R"), context.into_context(), None)
            .expect("request");
        Authorizer::new()
            .is_authorized(&request, &policies, &Entities::empty())
            .decision()
            == Decision::Allow
    }

    fn catalog() -> ToolCatalog {
        ToolCatalog::default().with_prompts(&json!([{"name": "summarize", "arguments": [
            {"name": "topic", "required": true}, {"name": "style"}]}]))
    }

    #[test]
    fn a_prompt_is_typed_by_its_declared_arguments() {
        let context = get_prompt("summarize", Some(r#"{"topic":"cedar"}"#), &catalog(), false)
            .expect("typed");
        assert!(holds(
            r#"context.name == "summarize" && context.arguments.topic == "cedar" && !(context.arguments has style)"#,
            context
        ));
        let missing =
            get_prompt("summarize", Some("{}"), &catalog(), false).expect_err("topic is required");
        assert_eq!(
            missing.to_string(),
            "params.arguments: missing required attribute `topic`"
        );
        let number = get_prompt("summarize", Some(r#"{"topic":5}"#), &catalog(), false)
            .expect_err("arguments are strings");
        assert_eq!(number.path, "params.arguments.topic");
        assert!(
            get_prompt("summarize", Some("{}"), &catalog(), true).is_ok(),
            "a completion resolves arguments one by one"
        );
        let unknown = get_prompt("other", None, &catalog(), false).expect("untyped");
        assert!(holds("context.arguments == {}", unknown));
    }

    #[test]
    fn server_requests_read_their_declared_params_only() {
        let params = json!({"maxTokens": 100, "temperature": 0.5, "includeContext": "allServers",
            "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}],
            "metadata": {"deep": [1.000001]}});
        let context = server_request(McpAction::CreateMessage, Some(&params)).expect("typed");
        assert!(holds(
            r#"context.maxTokens == 100 && context.temperature.lessThan(decimal("0.6")) && context.includeContext == "allServers" && !(context has messages)"#,
            context
        ));
        let error = server_request(
            McpAction::CreateMessage,
            Some(&json!({"maxTokens": "many"})),
        )
        .expect_err("maxTokens is an integer");
        assert_eq!(error.path, "params.maxTokens");
        let context =
            server_request(McpAction::Elicit, Some(&json!({"message": "ok?"}))).expect("typed");
        assert!(holds(r#"context.mode == "form""#, context));
        let context = server_request(McpAction::ListRoots, None).expect("typed");
        assert!(holds("context == {}", context));
    }

    #[test]
    fn invocations_carry_the_source_address() {
        let context = invoke("10.1.2.3".parse().expect("ip"), "POST").expect("context");
        assert!(holds(
            r#"context.sourceIp.isInRange(ip("10.0.0.0/8")) && context.method == "POST""#,
            context
        ));
        let context = from_params(
            McpAction::InvokeGateway,
            Some(&json!({"sourceIp": "192.0.2.1", "method": "GET"})),
            &ToolCatalog::default(),
        )
        .expect("context");
        assert!(!holds(
            r#"context.sourceIp.isInRange(ip("10.0.0.0/8"))"#,
            context
        ));
        assert!(
            from_params(
                McpAction::InvokeGateway,
                Some(&json!({"sourceIp": "nope", "method": "GET"})),
                &ToolCatalog::default()
            )
            .is_err()
        );
    }

    #[test]
    fn resources_are_read_by_uri() {
        let context = from_params(
            McpAction::ReadResource,
            Some(&json!({"uri": "docs://readme"})),
            &ToolCatalog::default(),
        )
        .expect("context");
        assert!(holds(r#"context.uri like "docs://*""#, context));
        assert!(
            from_params(
                McpAction::ReadResource,
                Some(&json!({})),
                &ToolCatalog::default()
            )
            .is_err()
        );
    }
}
