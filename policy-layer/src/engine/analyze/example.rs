//! A solver's witness as a policy test case, in the shape of `cases.yaml`, that is replayed
//! through the path a real call takes before it is shown: claims to principal, arguments typed
//! by the tool's inputSchema, the per-tool index, Cedar.
//!
//! The solver may pick values a JSON number cannot carry exactly (a decimal such as
//! `922337203685477.5807`), which typing then rightly rejects. Such values are replaced by
//! plainer ones (0, 1, -1, 1000, then fewer digits) as long as the replay still shows the
//! finding; a witness that cannot be made to replay is not shown at all.

use std::sync::Arc;

use cedar_policy::{Decision, EntityTypeName, EntityUid, EvalResult};
use cedar_policy_symcc::Env;
use serde_json::{Map, Value, json};

use crate::auth::{Identity, PrincipalKind};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::engine::Snapshot;
use crate::engine::policies::{LoadedPolicies, LoadedPolicy};
use crate::model::{ActionModel, ActionRef, McpAction, ToolCatalog};

/// What a witness calls: a tool with its input, or a fixed action with its params.
#[derive(Debug, Clone, Copy)]
enum Called<'a> {
    Tool(&'a str),
    Mcp(McpAction),
}

/// What a replayed example must show.
pub(super) enum Shows<'a> {
    /// The set allows it.
    Allowed,
    /// The set denies it although this permit (alone) allows it.
    DeniedDespite(&'a LoadedPolicy),
}

/// Replays examples against the analysed policies.
pub(super) struct Replay {
    model: ActionModel,
    catalog: Arc<ToolCatalog>,
    enforced: Snapshot,
}

impl Replay {
    pub(super) fn new(
        model: &ActionModel,
        catalog: &Arc<ToolCatalog>,
        policies: &LoadedPolicies,
    ) -> Self {
        Self {
            model: model.clone(),
            catalog: Arc::clone(catalog),
            enforced: Snapshot::new(
                model.clone(),
                Arc::new(policies.clone()),
                Arc::clone(catalog),
                0,
            ),
        }
    }

    fn decides(
        snapshot: &Snapshot,
        identity: &Identity,
        called: Called<'_>,
        input: &Value,
        now: Timestamp,
    ) -> Option<Decision> {
        match called {
            Called::Tool(tool) => snapshot.authorize_at(identity, tool, Some(input), now),
            Called::Mcp(action) => snapshot.authorize_params_at(identity, action, Some(input), now),
        }
        .ok()
        .map(|outcome| outcome.decision)
    }

    /// The witness `env` as a case that shows `shows`, or `None`.
    pub(super) fn case(&self, env: &Env, shows: &Shows<'_>) -> Option<Value> {
        let principal = env.request.principal()?;
        let id = env.request.action()?.id().unescaped().to_owned();
        let called = match (self.model.tool_of_action(&id), McpAction::from_id(&id)) {
            (Some(tool), _) => Called::Tool(tool),
            (None, Some(action)) => Called::Mcp(action),
            (None, None) => return None,
        };
        let context = env.request.context();
        let mut input = match called {
            // A tool's context is `{ input }`; a fixed action's context is its params.
            Called::Tool(_) => context
                .and_then(|c| c.get("input"))
                .map_or_else(|| json!({}), |v| to_json(&v)),
            Called::Mcp(_) => match context.map(AsRef::<cedar_policy_core::ast::Context>::as_ref) {
                Some(cedar_policy_core::ast::Context::Value(fields)) => Value::Object(
                    fields
                        .iter()
                        .map(|(k, v)| (k.to_string(), to_json(&EvalResult::from(v.clone()))))
                        .collect(),
                ),
                _ => json!({}),
            },
        };
        let permit_only = match shows {
            Shows::Allowed => None,
            Shows::DeniedDespite(permit) => Some(Snapshot::new(
                self.model.clone(),
                Arc::new(LoadedPolicies {
                    policies: vec![(*permit).clone()],
                    temporal: Arc::clone(&self.enforced.policies().temporal),
                }),
                Arc::clone(&self.catalog),
                0,
            )),
        };
        // The witness's `context.system.now`, when the policies of the tool read the time.
        let action = match called {
            Called::Tool(tool) => ActionRef::Tool(tool),
            Called::Mcp(action) => ActionRef::Mcp(action),
        };
        let now = self
            .enforced
            .index()
            .for_action(action)
            .reads_system
            .then(|| witness_now(env))
            .flatten();
        let at = now.unwrap_or_else(|| SystemClock.now());
        let holds = |identity: &Identity, input: &Value| {
            let decision = Self::decides(&self.enforced, identity, called, input, at);
            match &permit_only {
                None => decision == Some(Decision::Allow),
                Some(permit) => {
                    decision == Some(Decision::Deny)
                        && Self::decides(permit, identity, called, input, at)
                            == Some(Decision::Allow)
                }
            }
        };
        let identities = identities(env, principal);
        let numbers = number_pointers(&input);
        let original = input.clone();
        for rung in 0..=RUNGS {
            if rung > 0 {
                input = original.clone();
                for pointer in &numbers {
                    if let Some(leaf) = input.pointer_mut(pointer) {
                        *leaf = plainer(leaf, rung - 1);
                    }
                }
            }
            for identity in &identities {
                if holds(identity, &input) {
                    return Some(render(called, identity, input, now, shows));
                }
            }
        }
        tracing::debug!(%env, "a solver witness does not replay as a call; not shown");
        None
    }
}

/// The JWT identities that could make this principal: `sub` is both the entity id and its
/// `id` attribute (`docs/cedar-model.md`), so when the solver chose two values, both are tried.
fn identities(env: &Env, principal: &EntityUid) -> Vec<Identity> {
    let oauth: Option<EntityTypeName> = "AgentCore::OAuthUser".parse().ok();
    if Some(principal.type_name()) != oauth.as_ref() {
        return vec![Identity::anonymous()];
    }
    let entity = env.entities.get(principal);
    let mut tags: Vec<(String, String)> = entity
        .map(|e| {
            e.tags()
                .filter_map(|(k, v)| match v.ok()? {
                    EvalResult::String(s) => Some((k.to_owned(), s)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    let mut subjects = vec![principal.id().unescaped().to_owned()];
    if let Some(Ok(EvalResult::String(id))) = entity.and_then(|e| e.attr("id"))
        && id != subjects[0]
    {
        subjects.push(id);
    }
    subjects
        .into_iter()
        .map(|subject| Identity {
            kind: PrincipalKind::OAuthUser,
            subject,
            tags: tags.clone(),
            expires_at: None,
        })
        .collect()
}

/// The witness's `context.system.now`: Cedar writes a datetime as
/// `datetime("1970-01-01").offset(duration("<ms>ms"))` (whatever the order of the call).
fn witness_now(env: &Env) -> Option<Timestamp> {
    let context = env.request.context()?;
    let EvalResult::Record(system) = context.get("system")? else {
        return None;
    };
    match system.get("now")? {
        EvalResult::ExtensionValue(text) => datetime_millis(text).map(Timestamp::from_unix_millis),
        _ => None,
    }
}

/// The milliseconds of a datetime's Cedar text (see [`witness_now`]).
fn datetime_millis(text: &str) -> Option<i64> {
    let start = text.find("duration(\"")? + "duration(\"".len();
    let rest = &text[start..];
    rest[..rest.find("ms\"")?].parse().ok()
}

fn render(
    called: Called<'_>,
    identity: &Identity,
    input: Value,
    now: Option<Timestamp>,
    shows: &Shows<'_>,
) -> Value {
    let mut case = Map::new();
    let what = match called {
        Called::Tool(tool) => tool,
        Called::Mcp(action) => action.method(),
    };
    case.insert("name".into(), json!(format!("solver example: {what}")));
    if identity.kind == PrincipalKind::OAuthUser {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(identity.subject));
        for (k, v) in &identity.tags {
            claims.insert(k.clone(), json!(v));
        }
        case.insert("claims".into(), Value::Object(claims));
    }
    match called {
        Called::Tool(tool) => case.insert("tool".into(), json!(tool)),
        Called::Mcp(action) => case.insert("method".into(), json!(action.method())),
    };
    case.insert("input".into(), input);
    if let Some(now) = now {
        case.insert("now".into(), json!(now.to_string()));
    }
    let expect = match shows {
        Shows::Allowed => "ALLOW",
        Shows::DeniedDespite(_) => "DENY",
    };
    case.insert("expect".into(), json!(expect));
    Value::Object(case)
}

/// How many plainer values `plainer` has for a number.
const RUNGS: usize = 6;

/// The `rung`-th plainer value of `leaf`: 0, 1, -1, 1000, then the value itself with 6, then
/// 3 significant digits.
fn plainer(leaf: &Value, rung: usize) -> Value {
    let value = leaf.as_f64().unwrap_or_default();
    let plain = match rung {
        0 => 0.0,
        1 => 1.0,
        2 => -1.0,
        3 => 1000.0,
        4 => significant(value, 6),
        _ => significant(value, 3),
    };
    serde_json::Number::from_f64(plain).map_or(Value::Null, Value::Number)
}

fn significant(value: f64, digits: i32) -> f64 {
    if value == 0.0 {
        return 0.0;
    }
    // Exponents of finite f64 are within i32.
    #[allow(clippy::cast_possible_truncation)]
    let magnitude = value.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits - 1 - magnitude);
    (value * scale).round() / scale
}

/// JSON pointers of every number in `value`.
fn number_pointers(value: &Value) -> Vec<String> {
    fn walk(value: &Value, at: &mut String, out: &mut Vec<String>) {
        let len = at.len();
        match value {
            Value::Number(_) => out.push(at.clone()),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    at.push_str(&format!("/{i}"));
                    walk(item, at, out);
                    at.truncate(len);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    at.push('/');
                    at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(item, at, out);
                    at.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut String::new(), &mut out);
    out
}

/// A Cedar value as the JSON a tool call would carry (decimals as JSON numbers).
fn to_json(value: &EvalResult) -> Value {
    match value {
        EvalResult::Bool(b) => json!(b),
        EvalResult::Long(n) => json!(n),
        EvalResult::String(s) => json!(s),
        EvalResult::EntityUid(uid) => json!(uid.to_string()),
        EvalResult::Set(set) => Value::Array(set.iter().map(to_json).collect()),
        EvalResult::Record(record) => Value::Object(
            record
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        EvalResult::ExtensionValue(text) => decimal_literal(text)
            .and_then(|n| n.parse::<serde_json::Number>().ok())
            .map_or_else(|| json!(ip_literal(text).unwrap_or(text)), Value::Number),
    }
}

/// `123.4567` from `decimal("123.4567")` (or from the bare number).
fn decimal_literal(text: &str) -> Option<&str> {
    let inner = text
        .strip_prefix("decimal(\"")
        .and_then(|t| t.strip_suffix("\")"))
        .unwrap_or(text);
    (!inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-'))
    .then_some(inner)
}

/// `10.0.0.1` from `ip("10.0.0.1")`: an address as the params carry it. A solver may pick a
/// range (`ip("10.0.0.0/8")`), which no request comes from: its first address stands for it
/// (the replay then checks that it still shows the finding).
fn ip_literal(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("ip(\"")?.strip_suffix("\")")?;
    Some(inner.split('/').next().unwrap_or(inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plainer_numbers_are_round_then_lose_digits() {
        let leaf = json!(922_337_203_685_477.6);
        assert_eq!(plainer(&leaf, 0), json!(0.0));
        assert_eq!(plainer(&leaf, 3), json!(1000.0));
        assert_eq!(plainer(&leaf, 4), json!(922_337_000_000_000.0));
        assert_eq!(plainer(&leaf, 5), json!(922_000_000_000_000.0));
        assert_eq!(plainer(&json!(-0.000_123_456_7), 4), json!(-0.000_123_457));
    }

    #[test]
    fn numbers_are_found_by_pointer() {
        let input = json!({"amount": 1.5, "items": [{"n": 2}, "x"], "a/b": 3, "s": "4"});
        let mut pointers = number_pointers(&input);
        pointers.sort();
        assert_eq!(pointers, ["/amount", "/a~1b", "/items/0/n"]);
    }

    #[test]
    fn a_datetime_is_read_from_its_cedar_text() {
        let value =
            crate::model::values::datetime(Timestamp::from_unix_millis(-1_234)).expect("datetime");
        let text = EvalResult::from(value).to_string();
        assert_eq!(datetime_millis(&text), Some(-1_234), "{text}");
        assert_eq!(datetime_millis(r#"decimal("1.0")"#), None);
    }

    #[test]
    fn decimal_literals_are_read_from_their_cedar_text() {
        assert_eq!(decimal_literal(r#"decimal("-12.5")"#), Some("-12.5"));
        assert_eq!(decimal_literal("7.25"), Some("7.25"));
        assert_eq!(decimal_literal(r#"ip("10.0.0.1")"#), None);
        assert_eq!(decimal_literal(""), None);
        assert_eq!(ip_literal(r#"ip("10.0.0.1")"#), Some("10.0.0.1"));
        assert_eq!(ip_literal(r#"ip("10.0.0.0/8")"#), Some("10.0.0.0"));
    }
}
